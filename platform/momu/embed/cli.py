"""`momu embed`: batch embedding of molecule libraries or texts on Ray Data."""

from __future__ import annotations

import argparse
import json

from momu.cli import add_config_arguments, config_from_args


def register(sub, groups) -> None:
    from momu.embed.config import EmbedConfig

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


def _cmd_embed(args: argparse.Namespace) -> int:
    from momu.embed.config import EmbedConfig
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
