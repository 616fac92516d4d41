"""`momu evaluate retrieval` and `momu finetune retrieval`."""

from __future__ import annotations

import argparse
from pathlib import Path

from momu.cli import add_config_arguments, add_job_arguments, config_from_args
from momu.config import ConfigError
from momu.pretrain.cli import print_training_result


def register(sub, groups) -> None:
    from momu.retrieval.config import RetrievalEvalConfig, RetrievalFinetuneConfig

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
    from momu.retrieval.config import RetrievalEvalConfig
    from momu.retrieval.job import run_retrieval_eval

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
    from momu.retrieval.config import RetrievalFinetuneConfig
    from momu.pretrain.ray_train import run_pretrain

    config = config_from_args(RetrievalFinetuneConfig, args)
    print_training_result(run_pretrain(config, output_dir=args.output_dir, log_to_mlflow=not args.no_mlflow), config)
    return 0
