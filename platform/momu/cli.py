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


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from momu.train.ray_train import run_pretrain

    config = config_from_args(PretrainConfig, args)
    result = run_pretrain(config, output_dir=args.output_dir, log_to_mlflow=not args.no_mlflow)
    m = result.metrics
    print(f"\nrun {result.run_name}: {m.get('step', 0)} steps, epoch {m.get('epoch')}, "
          f"train loss {m.get('train_loss', float('nan')):.3f}")
    if "val_acc_g2t" in m:
        print(f"validation 1-of-{config.eval_batch_size} in-batch accuracy: graph->text {m['val_acc_g2t']:.3f}, "
              f"text->graph {m['val_acc_t2g']:.3f} (chance {m['val_chance']:.3f})")
    print(f"throughput {m.get('samples_per_s_overall', 0):.1f} samples/s, data wait "
          f"{100 * m.get('data_wait_fraction', 0):.1f}% of step time")
    print(f"checkpoint: {result.checkpoint_path}\nmodel:      {result.model_dir}")
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(config.mlflow_tracking_uri)
        print(f"MLflow run: {result.mlflow_run_id} in {uri}" + (f"\nregistered: {result.model_uri}" if result.model_uri else ""))
        print(f"browse:     mlflow ui --backend-store-uri {uri}")
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
    add_config_arguments(p, TrainConfig)
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train_local)

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
    pass


# -- batch embedding and vector index (issue 5) ------------------------------------------------------------------

def _add_embedding_commands(sub, groups) -> None:
    pass


# -- property prediction (issue 7) ------------------------------------------------------------------------------

def _add_property_commands(sub, groups) -> None:
    pass


# -- serving (issue 6) ------------------------------------------------------------------------------------------

def _add_serving_commands(sub, groups) -> None:
    pass


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
