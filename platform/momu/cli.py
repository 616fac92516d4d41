"""`momu` command line: one subcommand per job, each with its own --help.

Job flags are generated from the job's config object: `--steps 300`, `--model.graph.num_layers 5`, ... use the
same dotted names as the YAML file and the MLflow params. Values are parsed as YAML (1e-4, true, [a, b]).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, get_args

from pydantic import BaseModel

from momu.config import ConfigError, PretrainConfig, TrainConfig, load_config


def _config_fields(cls: type[BaseModel], prefix: str = ""):
    """(dotted name, FieldInfo) for every leaf field of a nested config class."""
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _config_fields(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[BaseModel]) -> None:
    parser.add_argument("--config", metavar="YAML", help="config file; flags below override its fields")
    group = parser.add_argument_group("config fields (same names as in the YAML file and MLflow params)")
    for dotted, field in _config_fields(cls):
        default = field.get_default(call_default_factory=True)
        choices = [c for c in get_args(field.annotation) if isinstance(c, (str, int))] if get_args(field.annotation) else []
        text = (field.description + " " if field.description else "")
        text += f"(default: {json.dumps(default) if not isinstance(default, BaseModel) else '...'}"
        text += f"; one of {', '.join(map(str, choices))})" if choices and len(choices) < 8 else ")"
        group.add_argument(f"--{dotted}", dest=f"cfg:{dotted}", metavar="VALUE", default=argparse.SUPPRESS,
                           help=text.replace("%", "%%"))


def add_job_arguments(parser: argparse.ArgumentParser, cls: type[BaseModel], func: Callable) -> None:
    """The flags every config-driven job shares: its config fields, --no-mlflow and --quiet."""
    add_config_arguments(parser, cls)
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=func)


def config_from_args(cls: type[BaseModel], args: argparse.Namespace):
    import yaml

    overrides: dict[str, Any] = {}
    for key, raw in vars(args).items():
        if key.startswith("cfg:"):
            overrides[key[4:]] = yaml.safe_load(raw) if isinstance(raw, str) and raw.strip() else raw
    return load_config(cls, getattr(args, "config", None), overrides)


# -- jobs -------------------------------------------------------------------------------------------------------

def _cmd_train_local(args: argparse.Namespace) -> int:
    from momu.train.local import train_local

    config = config_from_args(TrainConfig, args)
    result = train_local(config, progress=not args.quiet, log_to_mlflow=not args.no_mlflow)
    m = result.metrics
    before, after = m["heldout_before"], m["heldout_after"]
    print(
        f"\ntrain loss {m['train_loss_first']:.3f} -> {m['train_loss_last']:.3f} over {m['steps']} steps "
        f"({m['pairs_per_second']:.0f} pairs/s)\n"
        f"held-out ({m['data']['heldout_pairs']} pairs, 1-of-{config.eval_batch_size} in-batch accuracy, "
        f"chance {after['chance']:.3f}):\n"
        f"  graph->text {before['acc_g2t']:.3f} -> {after['acc_g2t']:.3f}\n"
        f"  text->graph {before['acc_t2g']:.3f} -> {after['acc_t2g']:.3f}\n"
        f"  loss        {before['loss']:.3f} -> {after['loss']:.3f}\n"
        f"results:  {result.output_dir.resolve()}/metrics.json\n"
        f"model:    {result.model_dir.resolve()}"
    )
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(config.mlflow_tracking_uri, Path(config.output_dir).parent)
        print(f"MLflow:   run {result.mlflow_run_id} in {uri}\n          (browse: mlflow ui --backend-store-uri {uri})")
    return 0


def print_training_result(result, config) -> None:
    """The closing summary of a Ray Train job (pretraining or retrieval finetuning)."""
    m = result.metrics
    print(f"\nrun {result.run_name}: {m.get('step', 0)} steps, epoch {m.get('epoch')}, "
          f"train loss {m.get('train_loss', float('nan')):.3f}")
    if "val_acc_g2t" in m:
        print(f"{'last ' if config.select_best else ''}validation 1-of-{config.eval_batch_size} in-batch accuracy: "
              f"graph->text {m['val_acc_g2t']:.3f}, text->graph {m['val_acc_t2g']:.3f} (chance {m['val_chance']:.3f})")
    key = f"best_val_{config.select_best}"
    if config.select_best and key in m:
        print(f"selected: step {m['best_step']} with held-out {config.select_best} {m[key]:.3f}")
    print(f"throughput {m.get('samples_per_s_overall', 0):.1f} samples/s, data wait "
          f"{100 * m.get('data_wait_fraction', 0):.1f}% of step time")
    print(f"checkpoint: {result.checkpoint_path}\nmodel:      {result.model_dir}")
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(config.mlflow_tracking_uri)
        print(f"MLflow run: {result.mlflow_run_id} in {uri}" + (f"\nregistered: {result.model_uri}" if result.model_uri else ""))
        print(f"browse:     mlflow ui --backend-store-uri {uri}")


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from momu.train.ray_train import run_pretrain

    config = config_from_args(PretrainConfig, args)
    print_training_result(run_pretrain(config, output_dir=args.output_dir, log_to_mlflow=not args.no_mlflow), config)
    return 0


def _cmd_featurize(args: argparse.Namespace) -> int:
    from momu.chem.library import featurize_library

    summary = featurize_library(args.input, args.output, smiles_column=args.smiles_column, id_column=args.id_column,
                                max_atoms=args.max_atoms, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_convert_corpus(args: argparse.Namespace) -> int:
    from momu.data.readers import convert_momu_corpus

    report = convert_momu_corpus(args.corpus_dir, args.output)
    print(report.summary())
    print(f"written: {Path(args.output).resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="momu",
        description="MoMu on Ray: pretrain, evaluate, batch-embed and serve a molecule-graph <-> text model.",
        epilog="Each job has its own --help. Config fields can be given in a YAML file (--config) and as flags.",
    )
    sub = parser.add_subparsers(dest="command", metavar="JOB", required=True)

    p = sub.add_parser("train-local", help="single-process reference contrastive training (CPU-friendly)",
                       description="MoMu contrastive training in one process: read pairs, featurize, train the graph "
                                   "tower (+ the text tower with --text_mode finetune) with MoMu's four InfoNCE losses, "
                                   "report held-out in-batch retrieval accuracy, save the model, log to MLflow.")
    add_job_arguments(p, TrainConfig, _cmd_train_local)

    p = sub.add_parser("pretrain", help="distributed contrastive pretraining on Ray (Ray Data + Ray Train + MLflow)",
                       description="MoMu pretraining on a Ray cluster (local by default; inside `ray job submit` it "
                                   "joins the job's cluster). Objective momu (graph<->text) or graphcl (graph-only "
                                   "initialisation). Checkpoints every --checkpoint_every steps; a failed worker "
                                   "group restarts from the last one; --resume continues an earlier run.")
    add_config_arguments(p, PretrainConfig)
    p.add_argument("--output-dir", default=None, help="where to save the final model (default: in the run's storage)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("featurize", help="molecule library -> Parquet graph columns + rejects",
                       description="Featurize a molecule library (.smi, CSV/TSV, Parquet, SDF, .sdf.gz, a directory "
                                   "or glob) into MoMu graph columns. Every row ends up in the output or in the "
                                   "rejects file with its reason.")
    p.add_argument("input", help="file, directory or glob")
    p.add_argument("output", help="output Parquet path (rejects go to <output stem>.rejects.parquet)")
    p.add_argument("--smiles-column", default=None, help="SMILES column for CSV/TSV/Parquet (default: auto-detect)")
    p.add_argument("--id-column", default=None, help="id column or SDF property (default: auto-detect)")
    p.add_argument("--max-atoms", type=int, default=512, help="molecules with more atoms are rejected (default 512)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_featurize)

    p = sub.add_parser("convert-corpus", help="MoMu pretraining corpus (text/ + graph/) -> one Parquet file",
                       description="Convert MoMu's corpus format (text/text_<i>.txt paragraphs, graph/graph_<i>.pt "
                                   "PyG graphs, loaded without executing pickled code) to Parquet records once.")
    p.add_argument("corpus_dir")
    p.add_argument("output")
    p.set_defaults(func=_cmd_convert_corpus)

    # Two-word jobs: `momu evaluate retrieval`, `momu finetune property`, `momu index build`, ...
    groups = {
        name: sub.add_parser(name, help=text, description=text).add_subparsers(dest="target", metavar="TARGET",
                                                                                required=True)
        for name, text in [
            ("evaluate", "evaluate a model (retrieval, ...)"),
            ("finetune", "finetune a pretrained model on a downstream task (retrieval, property)"),
            ("predict", "predict with a finetuned model (property)"),
            ("index", "build and search a vector index over embedding shards"),
        ]
    }
    _add_retrieval_commands(sub, groups)
    _add_embedding_commands(sub, groups)
    _add_property_commands(sub, groups)
    _add_serving_commands(sub, groups)
    return parser


# -- retrieval evaluation and finetuning (issue 4) ---------------------------------------------------------------

def _add_retrieval_commands(sub, groups) -> None:
    from momu.config import RetrievalEvalConfig, RetrievalFinetuneConfig

    p = groups["evaluate"].add_parser(
        "retrieval", help="graph<->text retrieval: MoMu's protocol, full rank, Text2Mol pool; models vs chance",
        description="Evaluate one or more models on a paired set (ChEBI-20 TSV, PCdes-style SMILES + description "
                    "files aligned by line, MoMu corpus, records Parquet) in both directions: MoMu's 1-of-64 "
                    "in-batch accuracy and Recall@20 (paragraph and sentence level), full-rank MRR / R@k / mean "
                    "and median rank, and with --pool_paths Text2Mol's text -> molecule-pool ranking. Unusable "
                    "pairs are excluded from both sides and counted. Prints a table and writes results.json, "
                    "retrieval_table.md and an MLflow run.",
        epilog="example: momu evaluate retrieval --config configs/evaluate_retrieval_chebi20.yaml "
               "--model momu=models:/momu-chebi20-cpu/1 --model baseline=runs/fp/model")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a model to evaluate (saved dir or models:/ URI); repeatable; added to the config's models")
    add_job_arguments(p, RetrievalEvalConfig, _cmd_evaluate_retrieval)

    p = groups["finetune"].add_parser(
        "retrieval", help="retrieval finetuning on Ray Train (VSE++ hinge, warm-up, best-validation checkpoint)",
        description="Finetune a pretrained MoMu model (--init_from dir or models:/ URI) for graph<->text retrieval "
                    "with MoMu's recipe: VSE++ max-violation hinge on cosine (margin 0.2), lr 5e-5 with 20% "
                    "warm-up then linear decay, batch 64, no graph augmentation. Validates on the fixed held-out "
                    "part (heldout_fraction, by id hash) after every epoch, exports and registers the weights with "
                    "the best held-out 1-of-64 accuracy. Same Ray Train job and flags as `momu pretrain`.",
        epilog="example: momu finetune retrieval --config configs/finetune_retrieval_chebi20.yaml "
               "--init_from models:/momu-chebi20-cpu/1")
    add_config_arguments(p, RetrievalFinetuneConfig)
    p.add_argument("--output-dir", default=None, help="where to save the selected model (default: in the run's storage)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_cmd_finetune_retrieval)


def _cmd_evaluate_retrieval(args: argparse.Namespace) -> int:
    from momu.config import RetrievalEvalConfig
    from momu.eval.retrieval_job import run_retrieval_eval

    extra = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--model {item!r}: expected NAME=PATH (a saved model directory or models:/ URI)")
        extra[name.strip()] = path.strip()
    if extra:
        import yaml

        # --model entries extend `models` from --models or the YAML file (names given twice: --model wins).
        current = yaml.safe_load(getattr(args, "cfg:models")) if hasattr(args, "cfg:models") else None
        if current is None and args.config:
            current = (yaml.safe_load(Path(args.config).read_text()) or {}).get("models")
        setattr(args, "cfg:models", {**(current or {}), **extra})
    config = config_from_args(RetrievalEvalConfig, args)
    result = run_retrieval_eval(config, progress=not args.quiet, log_to_mlflow=not args.no_mlflow)
    print()
    print(result.table)
    print(f"results: {(result.output_dir / 'results.json').resolve()}")
    print(f"table:   {(result.output_dir / 'retrieval_table.md').resolve()}")
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        print(f"MLflow:  run {result.mlflow_run_id} in {resolve_tracking_uri(config.mlflow_tracking_uri)}")
    return 0


def _cmd_finetune_retrieval(args: argparse.Namespace) -> int:
    from momu.config import RetrievalFinetuneConfig
    from momu.train.ray_train import run_pretrain

    config = config_from_args(RetrievalFinetuneConfig, args)
    print_training_result(run_pretrain(config, output_dir=args.output_dir, log_to_mlflow=not args.no_mlflow), config)
    return 0


# -- batch embedding and vector index (issue 5) ------------------------------------------------------------------

def _add_embedding_commands(sub, groups) -> None:
    from momu.config import EmbedConfig, IndexBuildConfig

    p = sub.add_parser(
        "embed", help="batch-embed molecule libraries (or texts) with Ray Data -> Parquet shards + rejects",
        description="Embed a molecule library (.smi, CSV/TSV, Parquet, SDF/.sdf.gz, ChEBI-20 .txt, directories, "
                    "globs) with MoMu's graph tower, or descriptions with its text tower (--mode texts), on Ray Data: "
                    "read -> featurize (CPU tasks) -> model actors (GPU when present) -> Parquet shards with id, "
                    "canonical SMILES (or text), embedding, model name/version and run id. Every row is embedded or "
                    "rejected with its reason (read = embedded + rejected). Re-running the same command resumes: "
                    "completed parts are skipped. Exits non-zero only on infrastructure failure.",
        epilog="example: momu embed --config configs/embed_moleculenet.yaml --model models:/momu/1 "
               "--output_dir runs/embeddings/moleculenet")
    add_config_arguments(p, EmbedConfig)
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=_cmd_embed)

    p = groups["index"].add_parser(
        "build", help="embedding shards -> vector index (exact, FAISS IVF-PQ or HNSW) + recall@k vs exact",
        description="Build a searchable index over the shards of `momu embed` (or any Parquet files with id + "
                    "embedding columns): exact inner product for small sets, FAISS IVF-PQ / HNSW for millions "
                    "(kind auto: exact up to params.exact_max_rows rows). Stores the id/SMILES mapping and the "
                    "model's name/version with it, and reports approximate recall@k against exact search.",
        epilog="example: momu index build --shards runs/embeddings/moleculenet --output runs/index/moleculenet "
               "--kind ivf_pq --params.nprobe 64")
    add_job_arguments(p, IndexBuildConfig, _cmd_index_build)

    p = groups["index"].add_parser(
        "search", help='search an index by text: momu index search "text query" --k 10',
        description="Embed the query with the model recorded in the index (or --model, which must have the same "
                    "weights) and print the top-k rows as a table. A text query uses the text tower; with "
                    "--smiles the query is a SMILES and uses the graph tower (e.g. against an index of "
                    "descriptions).")
    p.add_argument("query", help="text query (or a SMILES with --smiles)")
    p.add_argument("--index", default="runs/index/default", help="index directory (default: runs/index/default)")
    p.add_argument("--k", type=int, default=10, help="results to show (default 10)")
    p.add_argument("--model", default=None, help="model dir or models:/ URI (default: the one recorded in the index)")
    p.add_argument("--smiles", action="store_true", help="the query is a SMILES: embed it with the graph tower")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=_cmd_index_search)


def _cmd_embed(args: argparse.Namespace) -> int:
    from momu.config import EmbedConfig
    from momu.embed.job import format_summary, run_embedding

    config = config_from_args(EmbedConfig, args)
    result = run_embedding(config, log_to_mlflow=not args.no_mlflow)
    if args.json:
        print(json.dumps(result.summary, indent=2))
        return 0
    print("\n" + format_summary(result.summary))
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        print(f"MLflow run: {result.mlflow_run_id} in {resolve_tracking_uri(config.mlflow_tracking_uri)}")
    if result.complete:
        print(f"next: momu index build --shards {result.output_dir} --output runs/index/<name>")
    return 0


def _cmd_index_build(args: argparse.Namespace) -> int:
    from momu.config import IndexBuildConfig
    from momu.index.build import build_index

    config = config_from_args(IndexBuildConfig, args)
    result = build_index(config, log_to_mlflow=not args.no_mlflow, progress=not args.quiet)
    r = result.report
    info = r["model_info"]
    print(f"index: {r['kind']} over {r['rows']:,} rows x {r['dim']} in {r['build_seconds']:.1f} s "
          f"(model {info.get('model_name')} version {info.get('model_version')})")
    if "recall" in r:
        rec = r["recall"]
        name = next(k for k in rec if k.startswith("recall_at_"))
        print(f"{name.replace('_at_', '@')} vs exact: {rec[name]:.3f} over {rec['queries']} queries "
              f"({rec['index_ms_per_query']:.2f} ms/query vs exact {rec['exact_ms_per_query']:.2f} ms/query)")
    print(f"saved: {result.path.resolve()}")
    if result.mlflow_run_id:
        print(f"MLflow run: {result.mlflow_run_id}")
    return 0


def _cmd_index_search(args: argparse.Namespace) -> int:
    from momu.embed.stages import weights_sha256
    from momu.index import RetrievalIndex
    from momu.models.loading import load_momu, resolve_model_dir

    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if not args.query.strip():
        raise ValueError("the query is empty")
    index = RetrievalIndex.load(args.index)
    source = args.model or index.model_info.get("model_source")
    if not source:
        raise ValueError(f"{args.index} records no model; pass --model (the model that made its embeddings)")
    model_dir = resolve_model_dir(source)
    expected = index.model_info.get("weights_sha256")
    if expected and weights_sha256(model_dir) != expected:
        raise ValueError(f"model {source} is not the model the index was built with (weights differ); its "
                         "embeddings would not be comparable. Use the index's model or rebuild the index")
    model = load_momu(model_dir).eval()
    if args.smiles:
        from momu.chem.featurize import Rejection, featurize_smiles

        graph = featurize_smiles(args.query)
        if isinstance(graph, Rejection):
            raise ValueError(f"query SMILES {args.query!r}: {graph.reason} ({graph.detail})")
        query = model.embed_graphs([graph], smiles=[args.query]) if getattr(model, "uses_fingerprints", False) \
            else model.embed_graphs([graph])
    else:
        query = model.embed_texts([args.query])
    results = index.search_rows(query.numpy(), args.k)[0]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    fields = [c for c in index.columns if c != "id"]
    print(f"top {len(results)} of {len(index):,} ({index.kind} index, model {index.model_info.get('model_name')} "
          f"version {index.model_info.get('model_version')}) for {args.query!r}:")
    print(f"{'rank':>4}  {'score':>7}  {'id':<16}  " + "  ".join(fields))
    for r in results:
        extra = "  ".join(str(r.get(f, ""))[:90] for f in fields)
        print(f"{r['rank']:>4}  {r['score']:7.4f}  {str(r['id'])[:16]:<16}  {extra}")
    return 0


# -- property prediction (issue 7) ------------------------------------------------------------------------------

def _add_property_commands(sub, groups) -> None:
    from momu.config import PropertyFinetuneConfig, PropertySweepConfig

    p = groups["finetune"].add_parser(
        "property", help="finetune a GIN (random, graph-only or MoMu init) on a MoleculeNet-style property CSV",
        description="Molecular property prediction with MoMu's recipe: GIN + mean pool + linear head, dropout 0.5, "
                    "Adam lr 1e-3, batch 32, 100 epochs, bond-direction featurization; multi-task binary "
                    "classification with missing labels masked (ROC-AUC) or regression (RMSE). Deterministic "
                    "Bemis-Murcko scaffold split 80/10/10 (or random), saved with the run; unparseable SMILES "
                    "are reported and skipped. Reports the test metric at the best-validation epoch and writes "
                    "metrics.json, history.jsonl, split.json, model/ and an MLflow run.",
        epilog="examples: momu finetune property --config configs/finetune_property_bbbp.yaml\n"
               "          momu finetune property --data.path my_assay.csv --data.task_columns '[active]' "
               "--model.init models:/momu/1")
    add_job_arguments(p, PropertyFinetuneConfig, _cmd_finetune_property)

    p = groups["finetune"].add_parser(
        "property-sweep", help="seeds x datasets x inits of property finetuning as parallel Ray Tune trials + table",
        description="Run every (dataset, init, seed) of property finetuning as a Ray Tune trial (each an MLflow "
                    "child run under one parent run) and print the summary table: mean ± std test ROC-AUC per "
                    "dataset and the average, per initialisation, next to MoMu's published numbers. Writes "
                    "summary.md, summary.csv and trials.csv to output_dir and to the parent run.",
        epilog="examples: momu finetune property-sweep --config configs/property_sweep_tiny.yaml\n"
               "          momu finetune property-sweep --config configs/property_sweep_cpu.yaml --seeds '[0, 1, 2]'")
    add_job_arguments(p, PropertySweepConfig, _cmd_property_sweep)
    p.add_argument("--caption", default="", help="text appended to the table's caption (e.g. the protocol used)")

    p = groups["predict"].add_parser(
        "property", help="per-task probabilities for a molecule file from a finetuned property model",
        description="Predict with a model written by `momu finetune property` (its model/ directory, or an MLflow "
                    "URI such as runs:/<run id>/model). Reads .smi, CSV/TSV, Parquet, SDF, .sdf.gz, directories or "
                    "globs; writes id, smiles and one column per task (probabilities for classification, values "
                    "for regression) as CSV or Parquet (by the output suffix). Unparseable SMILES are reported "
                    "and written to <output stem>.rejects.csv, never predicted.",
        epilog="example: momu predict property runs/finetune-property/model molecules.smi predictions.csv")
    p.add_argument("model", help="finetuned model directory or MLflow artifact URI")
    p.add_argument("input", help="molecule file, directory or glob")
    p.add_argument("output", help="output .csv, .csv.gz or .parquet")
    p.add_argument("--smiles-column", default=None, help="SMILES column for CSV/TSV/Parquet (default: auto-detect)")
    p.add_argument("--id-column", default=None, help="id column or SDF property (default: auto-detect)")
    p.add_argument("--batch-size", type=int, default=256, help="molecules per forward pass (default 256)")
    p.add_argument("--max-atoms", type=int, default=512, help="molecules with more atoms are rejected (default 512)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict_property)


def _cmd_finetune_property(args: argparse.Namespace) -> int:
    from momu.config import PropertyFinetuneConfig
    from momu.train.property import finetune_property

    config = config_from_args(PropertyFinetuneConfig, args)
    result = finetune_property(config, progress=not args.quiet, log_to_mlflow=not args.no_mlflow)
    m = result.metrics
    metric = m["metric"]
    print(f"\n{m['dataset']} ({m['num_tasks']} task(s), {m['split']} split {m['split_sizes']}), init {m['init']}, "
          f"seed {m['seed']}:")
    print(f"  best epoch {m['best_epoch']}/{m['epochs']} (by {m['selected_by']}): valid {metric} "
          f"{m[f'valid_{metric}']:.4f}, test {metric} {m[f'test_{metric}']:.4f} "
          f"({m['test_tasks_scored']} task(s) scored" +
          (f", skipped single-class: {', '.join(m['test_tasks_skipped'][:5])}" if m['test_tasks_skipped'] else "")
          + ")")
    print(f"  {m['train_molecules_per_s']:.0f} training molecules/s, {m['seconds']:.1f} s in all")
    print(f"results: {(result.output_dir / 'metrics.json').resolve()}\nsplit:   "
          f"{(result.output_dir / 'split.json').resolve()}")
    if result.model_dir:
        print(f"model:   {result.model_dir.resolve()}")
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        print(f"MLflow:  run {result.mlflow_run_id} in {resolve_tracking_uri(config.mlflow_tracking_uri)}"
              + (f" (model: runs:/{result.mlflow_run_id}/model)" if result.model_dir else ""))
    return 0


def _cmd_property_sweep(args: argparse.Namespace) -> int:
    from momu.config import PropertySweepConfig
    from momu.train.property_sweep import run_property_sweep

    config = config_from_args(PropertySweepConfig, args)
    result = run_property_sweep(config, progress=not args.quiet, log_to_mlflow=not args.no_mlflow,
                                caption=args.caption)
    print("\n" + result.markdown)
    print(f"table:  {(result.output_dir / 'summary.md')}\ntrials: {(result.output_dir / 'trials.csv')}")
    print(f"{len(result.summary.rows)} trials in {result.seconds / 60:.1f} min")
    if result.parent_run_id:
        print(f"MLflow: parent run {result.parent_run_id} (experiment {config.mlflow_experiment})")
    if result.summary.failed:
        print(f"{len(result.summary.failed)} trial(s) failed (see trials.csv)", file=sys.stderr)
        return 1
    return 0


def _cmd_predict_property(args: argparse.Namespace) -> int:
    from momu.train.property import predict_file

    summary = predict_file(args.model, args.input, args.output, smiles_column=args.smiles_column,
                           id_column=args.id_column, batch_size=args.batch_size, max_atoms=args.max_atoms,
                           progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    if summary["rejected"]:
        print(f"{summary['rejected']} molecule(s) skipped ({summary['rejected_by_reason']}); see "
              f"{summary['rejects']}", file=sys.stderr)
    return 0


# -- serving (issue 6) ------------------------------------------------------------------------------------------

def _add_serving_commands(sub, groups) -> None:
    from momu.config import ServeConfig

    p = sub.add_parser(
        "serve", help="run the Serve app (search/embed HTTP API + web page) locally on 127.0.0.1",
        description="Start the MoMu Ray Serve application (serving/app.py: FastAPI ingress + encoder + index "
                    "deployments) on 127.0.0.1 and block until Ctrl-C. --config takes a Serve config file "
                    "(default serving/config.yaml: its application's args and deployment options are used) or a "
                    "plain args YAML; the flags below override single args fields.",
        epilog="Example: momu serve --model runs/demo/model --molecule_index runs/index/chebi --text_index null")
    add_config_arguments(p, ServeConfig)
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's http_options.port, 8000)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster instead of starting a local one (default: local, on 127.0.0.1)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.set_defaults(func=_cmd_serve)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _cmd_serve(args: argparse.Namespace) -> int:
    import os
    import time

    import yaml

    root = _repo_root()
    if not (root / "serving" / "app.py").is_file():
        raise FileNotFoundError(f"serving/app.py not found under {root}: `momu serve` runs from a source checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from serving.app import compose, load_serve_config, resolve_path

    overrides = {k[4:]: (yaml.safe_load(v) if isinstance(v, str) and v.strip() else v)
                 for k, v in vars(args).items() if k.startswith("cfg:")}
    config_path = args.config or (root / "serving" / "config.yaml")
    config, options, http = load_serve_config(config_path, overrides)
    for field in ("model", "molecule_index", "text_index"):
        value = getattr(config, field)
        local = resolve_path(value)
        if value and "://" not in value and not value.startswith("models:/") and not Path(local).exists():
            raise FileNotFoundError(f"{field}: {local} does not exist (give --{field} <path>"
                                    + (" or null)" if field != "model" else ")"))

    import ray
    from ray import serve

    port = args.port or int(http.get("port", 8000))
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        # Loopback only; the workers must import `serving` from this checkout whatever the current directory.
        path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        from momu.ray_session import start_local_ray

        start_local_ray(args.num_cpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port,
                                  "request_timeout_s": http.get("request_timeout_s")},
                    proxy_location="HeadOnly")
        print(f"starting MoMu on http://127.0.0.1:{port} (model {resolve_path(config.model)}) ...", flush=True)
        try:
            serve.run(compose(config, options), name="momu", route_prefix="/")
        except RuntimeError as err:  # a deployment failed to start (bad model/index, ...): Serve says why
            print(f"momu serve: the application failed to start:\n{err}", file=sys.stderr)
            return 1
        print(f"\nMoMu is serving on http://127.0.0.1:{port}/\n"
              f"  web page  http://127.0.0.1:{port}/\n"
              f"  API docs  http://127.0.0.1:{port}/docs\n"
              f"  health    http://127.0.0.1:{port}/healthz\n"
              "Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"momu {args.command}: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"momu {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
