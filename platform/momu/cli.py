"""`momu` command line: one subcommand per job, each with its own --help.

Job flags are generated from the job's config object: `--steps 300`, `--model.graph.num_layers 5`, ... use the
same dotted names as the YAML file and the MLflow params. Values are parsed as YAML (1e-4, true, [a, b]).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Optional, Sequence, get_args

from pydantic import BaseModel

from momu.config import ConfigError, load_config


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

# Two-word jobs: `momu evaluate retrieval`, `momu finetune property`, `momu index build`, ...
JOB_GROUPS = {
    "evaluate": "evaluate a model or a predictions file (retrieval, caption, generation)",
    "finetune": "finetune a pretrained model on a downstream task (retrieval, property)",
    "predict": "predict with a finetuned model (property)",
    "index": "build and search a vector index over embedding shards",
    "data": "build training data with every evaluation molecule removed (pair corpus, molecule set)",
}


class JobGroups(dict):
    """name -> the subparsers of a two-word job group, created (and listed in --help) when first used."""

    def __init__(self, sub) -> None:
        super().__init__()
        self._sub = sub

    def __missing__(self, name: str):
        text = JOB_GROUPS[name]
        group = self._sub.add_parser(name, help=text, description=text)
        self[name] = group.add_subparsers(dest="target", metavar="TARGET", required=True)
        return self[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="momu",
        description="MoMu on Ray: pretrain, evaluate, batch-embed and serve a molecule-graph <-> text model.",
        epilog="Each job has its own --help. Config fields can be given in a YAML file (--config) and as flags.",
    )
    sub = parser.add_subparsers(dest="command", metavar="JOB", required=True)
    groups = JobGroups(sub)
    for register in _task_registrars():
        register(sub, groups)
    _add_verbose_flag(parser)
    return parser


def _add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """Every job takes --verbose: Ray's own logging and progress output instead of one progress line."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        if not any("--verbose" in a.option_strings for a in parser._actions):
            parser.add_argument("--verbose", action="store_true",
                                help="Ray's own logging and progress bars (default: one progress line, warnings "
                                     "and the summary)")
        return
    for action in subparsers:
        for child in set(action.choices.values()):
            _add_verbose_flag(child)


def _task_registrars():
    """Each package contributes its own subcommands (`register(sub, groups)`), in --help order."""
    from momu.caption import cli as caption_cli
    from momu.data import cli as data_cli
    from momu.generate import cli as generate_cli
    from momu.embed import cli as embed_cli
    from momu.index import cli as index_cli
    from momu.models import cli as models_cli
    from momu.pretrain import cli as pretrain_cli
    from momu.property import cli as property_cli
    from momu.retrieval import cli as retrieval_cli
    from momu.serve import cli as serve_cli

    return [pretrain_cli.register, data_cli.register, retrieval_cli.register, embed_cli.register,
            index_cli.register, property_cli.register, serve_cli.register, models_cli.register,
            caption_cli.register, generate_cli.register]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from momu.job_output import configure_job_output

    configure_job_output(getattr(args, "verbose", False))
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
