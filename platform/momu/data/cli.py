"""Data jobs: `momu featurize` and `momu convert-corpus` (molecule libraries and MoMu's corpus to Parquet), and
`momu data build-corpus` / `build-molecules` (training sets with every evaluation molecule removed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from momu.cli import add_config_arguments, config_from_args
from momu.data.corpus_config import CorpusConfig, MoleculesConfig


def register(sub, groups) -> None:
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



    commands = groups["data"]

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
