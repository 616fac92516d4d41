"""`momu finetune property`, `momu finetune property-sweep` and `momu predict property`."""

from __future__ import annotations

import argparse
import json
import sys

from momu.cli import add_job_arguments, config_from_args


def register(sub, groups) -> None:
    from momu.property.config import PropertyFinetuneConfig, PropertySweepConfig

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
    from momu.property.config import PropertyFinetuneConfig
    from momu.property.train import finetune_property

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
    from momu.property.config import PropertySweepConfig
    from momu.property.sweep import run_property_sweep

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
    from momu.property.train import predict_file

    summary = predict_file(args.model, args.input, args.output, smiles_column=args.smiles_column,
                           id_column=args.id_column, batch_size=args.batch_size, max_atoms=args.max_atoms,
                           progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    if summary["rejected"]:
        print(f"{summary['rejected']} molecule(s) skipped ({summary['rejected_by_reason']}); see "
              f"{summary['rejects']}", file=sys.stderr)
    return 0
