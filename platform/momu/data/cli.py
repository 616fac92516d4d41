"""`momu data ...`: the corpus builders (build-corpus, build-molecules)."""

from __future__ import annotations

import argparse
import json

from momu.cli import add_config_arguments, config_from_args
from momu.data.corpus_config import CorpusConfig, MoleculesConfig


def register(sub, groups) -> None:
    """Add the `data` group (its own subcommands) to the top-level subparsers `sub`. `groups` (the shared
    two-word groups) is not used: `data` is a group of its own."""
    data = sub.add_parser("data", help="build training data: pair corpus, molecule set",
                          description="Build training data sets with evaluation molecules removed.")
    commands = data.add_subparsers(dest="target", metavar="TARGET", required=True)

    p = commands.add_parser(
        "build-corpus", help="merge pair sources into one Parquet corpus, evaluation molecules removed",
        description="Merge molecule-text pair sources (ChEBI-20, PCdes, PubChem324k, MoMu corpus, Parquet) into one "
                    "records Parquet (one row per molecule, every distinct text) that `momu pretrain` reads. "
                    "Evaluation molecules are removed by CID, canonical SMILES and a stereo-free key; a manifest "
                    "JSON accounts for every input row (read = kept + removed + rejected).")
    add_config_arguments(p, CorpusConfig)
    p.set_defaults(func=cmd_build_corpus)

    p = commands.add_parser(
        "build-molecules", help="molecule sources -> one Parquet of unique SMILES, evaluation molecules removed",
        description="Merge molecule-only sources (ZINC250k, MoleculeNet, ChEBI-20 train molecules, any library) into "
                    "one Parquet of unique canonical SMILES for graph-only pretraining, with the same removal and "
                    "manifest as build-corpus.")
    add_config_arguments(p, MoleculesConfig)
    p.set_defaults(func=cmd_build_molecules)


def cmd_build_corpus(args: argparse.Namespace) -> int:
    from momu.data.corpus_job import build_corpus, manifest_path

    config = config_from_args(CorpusConfig, args)
    _print_summary(build_corpus(config), manifest_path(config))
    return 0


def cmd_build_molecules(args: argparse.Namespace) -> int:
    from momu.data.corpus_job import build_molecules, manifest_path

    config = config_from_args(MoleculesConfig, args)
    _print_summary(build_molecules(config), manifest_path(config))
    return 0


def _print_summary(manifest: dict, path) -> None:
    for name, s in manifest["sources"].items():
        print(f"{name:24s} read {s['read']:7d}  kept {s['kept']:7d}  removed {json.dumps(s['removed_by_reason'])}"
              f"  rejected {json.dumps(s['rejected_by_reason'])}")
    out = manifest["output"]
    detail = f", {out['pairs']} pairs" if "pairs" in out else ""
    print(f"output:   {out['path']} ({out['molecules']} molecules{detail}) in {manifest['seconds']['total']:.1f} s")
    print(f"manifest: {path}")
