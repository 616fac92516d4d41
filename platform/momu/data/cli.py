"""`momu featurize` and `momu convert-corpus`: molecule libraries and MoMu's corpus to Parquet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
