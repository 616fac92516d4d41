"""`momu generate` (MoMu-guided GA, text -> molecules or editing) and `momu evaluate generation` (score a text ->
molecule predictions file with MolT5's metrics and FCD)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def _wrap(*paragraphs: str) -> str:
    """Help text for RawDescriptionHelpFormatter parsers (raw, so that examples keep their lines)."""
    import textwrap

    return "\n\n".join(textwrap.fill(p, 100) for p in paragraphs)


# (key, label, which direction is better); the order of MolT5's result tables.
_ROWS = [
    ("bleu", "BLEU (SMILES characters)", "higher"),
    ("exact_match", "exact match (InChI)", "higher"),
    ("levenshtein", "Levenshtein", "lower"),
    ("maccs_fts", "MACCS FTS", "higher"),
    ("rdk_fts", "RDK FTS", "higher"),
    ("morgan_fts", "Morgan FTS (r=2, counts)", "higher"),
    ("fcd", "FCD", "lower"),
    ("validity", "validity", "higher"),
]


def _config_job(parent, name: str, cls, func, json_help: str, **parser_kwargs) -> argparse.ArgumentParser:
    """A subcommand driven by one config object: its fields as flags, plus --json and --quiet."""
    from momu.cli import add_config_arguments

    parser = parent.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **parser_kwargs)
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_config_arguments(parser, cls)
    parser.set_defaults(func=func)
    return parser


def _load_model(name: str, command: str):
    """The MoMu model, or None after one error line naming the flag (any load failure: a missing directory, a
    model hub that cannot be reached, a damaged file)."""
    import sys

    from momu.models.loading import load_momu

    try:
        return load_momu(name)
    except Exception as err:
        print(f"{command}: error: cannot load model {name!r} ({(str(err).splitlines() or [''])[0]}); pass --model "
              "NAME_OR_PATH", file=sys.stderr)
        return None


def register(sub, groups) -> None:
    """Add `momu generate` (top level) and `evaluate generation` (to the `evaluate` group)."""
    from momu.cli import add_config_arguments
    from momu.generate.config import GenerateConfig

    g = sub.add_parser(
        "generate", help="text -> molecules: MoMu-guided graph genetic algorithm (or --edit a molecule)",
        description=_wrap("Search molecule space with mol-ga's Graph GA operators for the molecules whose MoMu graph "
                          "embedding is nearest the text's, under chemistry priors (QED, synthetic accessibility, "
                          "heavy-atom window, allowed elements). Starts from pool molecules that are never ChEBI-20 "
                          "test molecules. With --edit SMILES: start from that molecule and add lambda * "
                          "Tanimoto(candidate, input) for each lambda of edit_lambdas, printing the best candidate "
                          "per lambda."),
        epilog='examples:\n  momu generate --text "The molecule is a monocarboxylic acid." --n 5 --budget_seconds 30\n'
               '  momu generate batch --prompts prompts.txt --output runs/generate/prompts.parquet --n 5 '
               '--budget_seconds 20\n(`momu generate batch --help`: many prompts at once, as parallel Ray tasks)',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--text", default=None, help="the prompt (a ChEBI-20 style description); required unless `batch`")
    g.add_argument("--edit", default=None, metavar="SMILES", help="editing mode: the molecule to edit")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.add_argument("--verbose", action="store_true", help="(no Ray here; accepted for symmetry)")
    add_config_arguments(g, GenerateConfig)
    g.set_defaults(func=cmd_generate)
    # `momu generate batch ...`: optional, so `momu generate --text ...` needs no subcommand.
    actions = g.add_subparsers(dest="generate_action", metavar="ACTION", required=False)
    b = actions.add_parser(
        "batch", help="many prompts -> molecules: one parallel Ray task per prompt, results in one Parquet file",
        description=_wrap(
            "Run `momu generate` for every prompt of a file, each prompt as a Ray task (a worker loads the model "
            "once and keeps it for its next prompts), and write one Parquet file.",
            "Prompts: .txt (every line is a prompt; ids are line numbers) or .csv/.tsv/.parquet/.jsonl with a "
            "`text` column and optional `id` (default: the row number) and `edit` (a SMILES: editing mode for that "
            "row) columns. The config fields below apply to every prompt; --budget_seconds and --budget_evaluations "
            "are per prompt.",
            "Output rows: id, text, edit, status, reason, detail, rank, smiles, score (the GA's total), cosine, "
            "qed, sa, lambda and tanimoto (editing), evaluations, generations, seconds, stopped_by. An answered "
            "prompt has one row per molecule (editing: one per lambda); a failed prompt has one row with status "
            "failed and its reason: empty_prompt or invalid_edit_smiles (checked before any work), timeout (its "
            "task ran past --timeout and was cancelled) or exception (detail says which).",
            "It prints answered + failed = total; the same summary is in the file's Parquet metadata "
            "(momu.generate.batch.read_summary)."),
        epilog="examples:\n"
               "  momu generate batch --prompts prompts.txt --output runs/generate/out.parquet --n 5\n"
               "  momu generate batch --prompts prompts.csv --output out.parquet --budget_seconds 20 "
               "--budget_evaluations 1000 --workers 2\n"
               "  momu generate batch --prompts prompts.jsonl --output out.parquet --pool.path "
               "../shared/data/zinc250k/zinc250k.csv.gz --pool.exclude []",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--prompts", required=True, metavar="FILE",
                   help="prompt file: .txt (one per line), .csv, .tsv, .parquet or .jsonl (text[, id, edit] columns)")
    b.add_argument("--output", required=True, metavar="OUT.parquet", help="the Parquet file to write")
    b.add_argument("--workers", type=int, default=None,
                   help="prompts running at once (default: the cluster's CPUs / --cpus-per-task)")
    b.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs reserved per prompt task (default: 1; "
                                                                   "also its torch threads)")
    b.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="cancel a prompt's task after this long and fail it with reason timeout (default: "
                        "budget_seconds + 60, which covers a worker's start and model load)")
    b.add_argument("--overwrite", action="store_true", help="replace OUT.parquet if it exists")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    b.add_argument("--verbose", action="store_true", help="Ray's own logging")
    add_config_arguments(b, GenerateConfig)
    b.set_defaults(func=cmd_generate_batch)

    from momu.generate.text2mol import Text2MolConfig

    _config_job(
        actions, "predict", Text2MolConfig, cmd_generate_predict, "print the summary as JSON", help="Benchmark B: one method's molecules for the first N ChEBI-20 test descriptions, as a "
                        "MolT5-format predictions file",
        description=_wrap(
            "Write a predictions file (description, ground truth, output; tab-separated, MolT5's format) for the "
            "first --limit rows of ChEBI-20 test, with one --method: random (a seeded random ZINC250k molecule), "
            "retrieval (the ChEBI-20 train molecule, test molecules removed, nearest the text by MoMu cosine), ga "
            "(the MoMu-guided GA's best molecule, as `momu generate batch` Ray tasks), moflow (MoMu's MoFlow latent "
            "optimisation, its best seed by MoMu cosine; --moflow_model DIR) or molt5 (MolT5's released "
            "outputs for the same descriptions). Score it with `momu evaluate generation --predictions FILE "
            "--model MODEL`."),
        epilog="examples:\n  momu generate predict --method retrieval --limit 500 --output runs/text2mol/retrieval.tsv\n"
               "  momu generate predict --method ga --budget_seconds 10 --output runs/text2mol/ga.tsv\n"
               "  momu evaluate generation --predictions runs/text2mol/ga.tsv --model momu-cpu")

    p = groups["evaluate"].add_parser(
        "generation", help="text -> molecule generation: MolT5's metrics (BLEU, exact, Levenshtein, FTS, validity) "
                           "and FCD",
        description="Score generated SMILES against ground truth, row by row, with MolT5's recipe: BLEU on SMILES "
                    "characters, InChI exact match, Levenshtein distance, MACCS/RDK/Morgan fingerprint Tanimoto, "
                    "validity, and FCD between the ground-truth set and the valid outputs (both padded to one "
                    "common length: policy common-pad). Input: MolT5's prediction files (tab-separated, columns "
                    "'ground truth' and 'output'), or TSV/CSV/Parquet with columns ground_truth|reference and "
                    "output|smiles.",
        epilog="example: momu evaluate generation --predictions molt5-base-caption2smiles.txt --output metrics.json")
    p.add_argument("--predictions", required=True, metavar="FILE", help="predictions file (.txt/.tsv, .csv, .parquet)")
    p.add_argument("--no-fcd", action="store_true", help="skip FCD (ChemNet; the slow part on CPU)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--output", default=None, metavar="METRICS_JSON", help="also write the metrics to this JSON file")
    p.add_argument("--device", default=None, help="torch device for ChemNet (default: cuda if available, else cpu)")
    p.add_argument("--model", default=None, metavar="MODEL",
                   help="also score MoMu's cosine(description, molecule) with this model (published name, directory "
                        "or models:/ URI), in place of Text2Mol; needs a description column")
    p.set_defaults(func=cmd_evaluate_generation)

    from momu.generate.editing import EditingBenchmarkConfig

    _config_job(
        groups["evaluate"], "editing", EditingBenchmarkConfig, cmd_evaluate_editing,
        "print the results as JSON instead of a table", help="Benchmark A: MoleculeSTM's text-guided editing tasks 101-108, hit ratios against controls",
        description=_wrap(
            "Edit each of MoleculeSTM's 200 ZINC inputs towards each task's prompt ('This molecule is soluble in "
            "water.', ...) and judge the edit by the RDKit descriptor the task names: loose (any move the right way, "
            "MoleculeSTM's rule) and strict (ChatDrug's thresholds: LogP 0.5, QED 0.1, TPSA 10, HBA/HBD 1). Five "
            "candidates per input; a hit if any hits.",
            "Methods: momu-ga (the MoMu-guided GA's lambda sweep), textfree-ga (control: the same GA with the "
            "text's weight 0) and mutate (control: 5 random single graph mutations). First, per task, the Spearman "
            "correlation between cos(prompt, molecule) and the property over a ZINC sample shows whether the model "
            "knows the property at all.",
            "Writes OUTPUT_DIR/results.json (the table, the correlations, the config) and OUTPUT_DIR/"
            "candidates.jsonl (every input x method: candidates, their property values, hits, or why it failed)."),
        epilog="examples:\n  momu evaluate editing --limit 20 --tasks '[101, 102]'\n"
               "  momu evaluate editing --model runs/models/momu --budget_evaluations 500 --output_dir "
               "runs/evaluate-editing/full")

    from momu.cli import add_job_arguments
    from momu.generate.moflow.config import MoFlowTrainConfig

    p = groups["finetune"].add_parser(
        "moflow", help="train MoFlow (the flow MoMu's zero-shot generation decodes from) on ZINC250k with Ray Train",
        description="MoFlow (Zang & Wang 2020) maximum likelihood on ZINC250k: Glow on the kekulized bond tensor, "
                    "graph-conditional flow on the atoms, dequantisation 0.6, learned prior variance. Ray Train "
                    "workers (DDP) with checkpoints and --resume, MLflow params/metrics and the model registered. "
                    "Afterwards samples from the prior and reports validity with and without MoFlow's correction, "
                    "uniqueness, novelty and FCD.",
        epilog="examples: momu finetune moflow --config configs/moflow_tiny.yaml\n"
               "          momu finetune moflow --config configs/moflow_cpu.yaml --resume runs/ray_results/<run>")
    add_job_arguments(p, MoFlowTrainConfig, cmd_finetune_moflow)


def format_table(metrics: dict) -> str:
    """A two-column text table of the metrics present in ``metrics``."""
    lines = [f"{'metric':<26} {'value':>9}  better", f"{'-' * 26} {'-' * 9}  ------"]
    for key, label, better in _ROWS:
        if key in metrics:
            value = metrics[key]
            text = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
            lines.append(f"{label:<26} {text:>9}  {better}")
    if metrics.get("momu_cosine_model"):
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"{'MoMu cosine(text, output)':<26} {fmt(metrics['momu_cosine']):>9}  higher  "
                     f"({metrics['momu_cosine_n']} readable outputs; ground truth "
                     f"{fmt(metrics['momu_cosine_ground_truth'])}; {metrics['momu_cosine_model']})")
    lines.append(f"rows {metrics['n']}, valid outputs {metrics['n_valid']}, "
                 f"fingerprint pairs {metrics['n_fingerprint_pairs']}")
    if "fcd" in metrics:
        lines.append(f"FCD policy {metrics['fcd_policy']} (pad {metrics['fcd_pad_len']}): ground truth "
                     f"{metrics['fcd_n_reference']} vs valid outputs {metrics['fcd_n_prediction']}")
    return "\n".join(lines)


def _json_safe(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def cmd_evaluate_generation(args: argparse.Namespace) -> int:
    from momu.generate.metrics import generation_metrics
    from momu.generate.predictions import read_predictions

    references, predictions = read_predictions(args.predictions)
    start = time.perf_counter()
    metrics = generation_metrics(references, predictions, with_fcd=not args.no_fcd, fcd_device=args.device)
    if args.model:
        import sys

        from momu.generate.metrics import text_molecule_cosine
        from momu.generate.predictions import read_descriptions
        from momu.models.loading import load_momu

        try:
            descriptions = read_descriptions(args.predictions)
            model = load_momu(args.model)
        except Exception as err:  # one line naming the flag or the file
            print(f"momu evaluate generation: error: --model {args.model!r}: {str(err).splitlines()[0]}",
                  file=sys.stderr)
            return 2
        metrics.update(text_molecule_cosine(model, descriptions, references, predictions))
        metrics["momu_cosine_model"] = args.model
    result = {"predictions": str(Path(args.predictions).resolve()),
              **{k: _json_safe(v) for k, v in metrics.items()},
              "seconds": round(time.perf_counter() - start, 2)}
    text = json.dumps(result, indent=2)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(format_table(metrics))
        if args.output:
            print(f"metrics: {Path(args.output).resolve()}")
    return 0


def cmd_evaluate_editing(args: argparse.Namespace) -> int:
    import sys

    from momu.cli import config_from_args
    from momu.generate.editing import EditingBenchmarkConfig, format_results, run_editing_benchmark

    config = config_from_args(EditingBenchmarkConfig, args)
    model = _load_model(config.model, "momu evaluate editing")
    if model is None:
        return 2
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "candidates.jsonl").open("w") as rows:
        try:
            result = run_editing_benchmark(config, model=model, progress=not args.quiet,
                                           on_row=lambda row: rows.write(json.dumps(row) + "\n"))
        except (FileNotFoundError, ValueError) as err:
            print(f"momu evaluate editing: error: {err}", file=sys.stderr)
            return 2
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else format_results(result))
    print(f"results: {(out / 'results.json').resolve()}\ncandidates: {(out / 'candidates.jsonl').resolve()}")
    return 0


def format_generation(result: dict) -> str:
    """The ranked molecules (or the best per lambda) as a text table, with the run's budget line."""
    edit = result["mode"] == "edit"
    if edit and result.get("method") == "moflow":
        return _format_moflow_edit(result)
    head = (f"{'lambda':>6} {'tanimoto':>8} " if edit else f"{'rank':>4} ") + \
        f"{'total':>8} {'cosine':>8} {'QED':>6} {'SA':>5}  SMILES"
    lines = [head]
    for r in result["results"]:
        lead = f"{r['lambda']:>6.2f} {r['tanimoto']:>8.3f} " if edit else f"{r['rank']:>4} "
        lines.append(f"{lead}{r['total']:>8.4f} {r['cosine']:>8.4f} {r['qed']:>6.3f} {r['sa']:>5.2f}  {r['smiles']}"
                     + ("  (input)" if r.get("is_input") else "  (pool)" if r.get("from_pool") else ""))
    w = result["weights"]
    if result.get("method") == "moflow":
        m, o = result["summary"], result["optimise"]
        lines.append(f"MoFlow latent optimisation ({o['mode']}): {m['seeds']} seeds x {o['steps']} steps, "
                     f"{result['seconds']:.1f} s; validity {m['validity']:.2f} with correction, "
                     f"{m['validity_without_correction']:.2f} without; uniqueness {m['uniqueness']:.2f}; ranked "
                     f"by MoMu cosine (no priors)")
        return "\n".join(lines)
    lines.append(f"{result['evaluations']} evaluations, {result['generations']} generations, "
                 f"{result['seconds']:.1f} s, stopped by {result['stopped_by']}; total = {w['cosine']} cosine + "
                 f"{w['qed']} QED - {w['sa']} (SA-1)/9 - {w['size']} per heavy atom outside "
                 f"{result['heavy_atom_window']} (SA: {result['sa_method']})")
    return "\n".join(lines)


def _format_moflow_edit(result: dict) -> str:
    def num(value, width, digits):
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    lines = [f"{'lambda':>6} {'tanimoto':>8} {'cosine':>8} {'QED':>6}  SMILES"]
    for r in result["results"]:
        lines.append(f"{r['lambda']:>6.2f} {num(r['tanimoto'], 8, 3)} {num(r['cosine'], 8, 4)} "
                     f"{num(r.get('qed'), 6, 3)}  {r['smiles'] or '(invalid)'}" + ("  (input)" if r["is_input"] else ""))
    o = result["optimise"]
    lines.append(f"MoFlow latent editing ({o['mode']}): from the input's latent, {len(result['results'])} lambdas x "
                 f"{o['steps']} steps, {result['seconds']:.1f} s; objective cos - lambda * squared latent distance "
                 "(per dimension, prior-variance units)")
    return "\n".join(lines)


def cmd_generate(args: argparse.Namespace) -> int:
    import sys

    from momu.cli import config_from_args
    from momu.generate.config import GenerateConfig

    config = config_from_args(GenerateConfig, args)
    if args.text is None:
        print("momu generate: error: give --text PROMPT (or `momu generate batch --prompts FILE --output "
              "OUT.parquet` for many prompts)", file=sys.stderr)
        return 2
    if not args.text.strip():
        print("momu generate: error: --text is empty", file=sys.stderr)
        return 2
    if args.edit is not None:
        from rdkit import Chem, RDLogger

        RDLogger.DisableLog("rdApp.*")
        if not args.edit.strip() or Chem.MolFromSmiles(args.edit) is None:
            print(f"momu generate: error: --edit {args.edit!r} is not a valid SMILES", file=sys.stderr)
            return 2
    from momu.generate.ga import edit, generate

    model = _load_model(config.model, "momu generate")
    if model is None:
        return 2
    if config.method == "moflow":
        from momu.generate.moflow.model import load_moflow
        from momu.generate.moflow.optimise import edit_ranked, generate_ranked

        try:
            flow = load_moflow(config.moflow.model)
        except Exception as err:  # one line naming the field
            print(f"momu generate: error: moflow.model: cannot load MoFlow {config.moflow.model!r} "
                  f"({(str(err).splitlines() or [''])[0]})", file=sys.stderr)
            return 2
        try:
            result = (edit_ranked(flow, model, args.text, args.edit, config) if args.edit is not None
                      else generate_ranked(flow, model, args.text, config))
        except ValueError as err:  # an input MoFlow cannot represent
            print(f"momu generate: error: --edit: {err}", file=sys.stderr)
            return 2
    elif args.edit is not None:
        result = edit(model, args.text, args.edit, config)
    else:
        result = generate(model, args.text, config)
    print(json.dumps(result, indent=2) if args.json else format_generation(result))
    return 0


def cmd_finetune_moflow(args: argparse.Namespace) -> int:
    from momu.cli import config_from_args
    from momu.generate.moflow.config import MoFlowTrainConfig
    from momu.generate.moflow.train import run_moflow_training

    config = config_from_args(MoFlowTrainConfig, args)
    result = run_moflow_training(config, log_to_mlflow=not args.no_mlflow, progress=not args.quiet)
    m, s = result.metrics, result.sample_metrics
    print(f"\nrun {result.run_name}: MoFlow with {result.parameters:,} parameters, {m.get('step', 0)} steps, "
          f"epoch {m.get('epoch')}, train NLL {m.get('train_loss', float('nan')):.3f} bits/dim (atoms + bonds)")
    if "val_nll" in m:
        print(f"held-out NLL {m['val_nll']:.3f} (atoms {m['val_nll_atoms']:.3f}, bonds {m['val_nll_bonds']:.3f})")
    if s:
        line = (f"{s['n']} samples at temperature {s['temperature']}: validity {s['validity']:.3f} with correction, "
                f"{s['validity_without_correction']:.3f} without; uniqueness {s['uniqueness']:.3f}")
        if "novelty" in s:
            line += f", novelty {s['novelty']:.3f}"
        if s.get("fcd") is not None:
            line += f", FCD {s['fcd']:.2f} (vs {s['fcd_n_reference']} held-out)"
        print(line)
    print(f"checkpoint: {result.checkpoint_path}\nmodel:      {result.model_dir}")
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        print(f"MLflow run: {result.mlflow_run_id} in {resolve_tracking_uri(config.mlflow_tracking_uri)}"
              + (f"\nregistered: {result.model_uri}" if result.model_uri else ""))
    return 0


def cmd_generate_predict(args: argparse.Namespace) -> int:
    import sys

    from momu.cli import config_from_args
    from momu.generate.text2mol import Text2MolConfig, run_predict

    config = config_from_args(Text2MolConfig, args)
    try:
        summary = run_predict(config, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as err:
        print(f"momu generate predict: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['method']}: {summary['rows']} rows ({summary['empty_outputs']} without a molecule) in "
              f"{summary['seconds']:.0f} s -> {summary['output']}")
    return 0


def cmd_generate_batch(args: argparse.Namespace) -> int:
    import sys

    from momu.cli import config_from_args
    from momu.generate.batch import format_summary, run_batch
    from momu.generate.config import GenerateConfig
    from momu.models.loading import resolve_model_dir

    config = config_from_args(GenerateConfig, args)
    try:
        resolve_model_dir(config.model)
    except Exception as err:  # any load failure is one line naming the flag
        print(f"momu generate batch: error: cannot load model {config.model!r} ({str(err).splitlines()[0]}); "
              "pass --model NAME_OR_PATH", file=sys.stderr)
        return 2
    summary = run_batch(args.prompts, args.output, config, workers=args.workers, cpus_per_task=args.cpus_per_task,
                        timeout=args.timeout, overwrite=args.overwrite, progress=not args.json)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
