"""Featurization throughput on ChEBI-20 molecules, single process (= per core), measured in one run.

Prints molecules/s for:
  ceiling   RDKit SMILES parsing alone (Chem.MolFromSmiles): no featurizer can beat it on one core;
  momu      momu.chem.featurize_smiles (SMILES -> MolGraph arrays);
  momu+cols momu featurization plus conversion to Arrow graph columns (what a Ray Data stage emits);
  baseline  pretrain-gnns' mol_to_graph_data_obj_simple as research code writes it (Python lists, .index()
            look-ups, one torch Data object per molecule);
and the ratios momu/ceiling and momu/baseline. Goal from the foundation issue: >= 1,500 molecules/s/core.

Usage: python benchmarks/featurize_throughput.py [--data PATH ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = [REPO.parent / "shared/data/chebi20/validation.txt", REPO.parent / "shared/data/chebi20/test.txt"]
FALLBACK_DATA = [REPO / "data/sample/chebi20/validation_slice.tsv"]


def load_smiles(paths) -> list[str]:
    smiles = []
    for path in paths:
        lines = Path(path).read_text().splitlines()[1:]
        smiles += [line.split("\t")[1] for line in lines if line.count("\t") >= 2]
    return smiles


def baseline_featurize(smiles: str):
    """pretrain-gnns' featurizer, structure kept as published (lists, .index(), torch tensors, Data)."""
    import numpy as np
    import torch
    from rdkit import Chem
    from torch_geometric.data import Data

    atomic_nums = list(range(1, 119))
    chirality = [Chem.ChiralType.CHI_UNSPECIFIED, Chem.ChiralType.CHI_TETRAHEDRAL_CW,
                 Chem.ChiralType.CHI_TETRAHEDRAL_CCW, Chem.ChiralType.CHI_OTHER]
    bonds = [Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC]
    dirs = [Chem.BondDir.NONE, Chem.BondDir.ENDUPRIGHT, Chem.BondDir.ENDDOWNRIGHT]
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    x = torch.tensor(np.array([[atomic_nums.index(a.GetAtomicNum()), chirality.index(a.GetChiralTag())]
                               for a in mol.GetAtoms()]), dtype=torch.long)
    edges, feats = [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        f = [bonds.index(b.GetBondType()), dirs.index(b.GetBondDir()) if b.GetBondDir() in dirs else 0]
        edges += [(i, j), (j, i)]
        feats += [f, f]
    edge_index = torch.tensor(np.array(edges).T, dtype=torch.long) if edges else torch.empty((2, 0), dtype=torch.long)
    edge_attr = torch.tensor(np.array(feats), dtype=torch.long) if feats else torch.empty((0, 2), dtype=torch.long)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr)


def best_rate(fn, items, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", type=Path, help="ChEBI-20 style TSV files (default: shared ChEBI-20 "
                        "validation + test, else the bundled slice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    args = parser.parse_args()

    import torch
    from rdkit import Chem

    from momu.chem.columns import graphs_to_columns
    from momu.chem.featurize import MolGraph, featurize_smiles

    torch.set_num_threads(1)
    paths = args.data or ([p for p in DEFAULT_DATA if p.exists()] or FALLBACK_DATA)
    smiles = load_smiles(paths)

    def parse(items):
        return [Chem.MolFromSmiles(s) for s in items]

    def momu(items):
        return [featurize_smiles(s) for s in items]

    def momu_columns(items):
        return graphs_to_columns([g for g in (featurize_smiles(s) for s in items) if isinstance(g, MolGraph)])

    def baseline(items):
        return [baseline_featurize(s) for s in items]

    rates = {name: best_rate(fn, smiles, args.repeats)
             for name, fn in [("ceiling (RDKit parse only)", parse), ("momu featurize", momu),
                              ("momu featurize + Arrow columns", momu_columns),
                              ("baseline (pretrain-gnns style)", baseline)]}
    print(f"data: {len(smiles)} ChEBI-20 molecules from {', '.join(str(p) for p in paths)}; 1 process, "
          f"1 torch thread, best of {args.repeats}; cpu count {os.cpu_count()}")
    for name, rate in rates.items():
        print(f"  {name:34s} {rate:9,.0f} molecules/s")
    ours, cols = rates["momu featurize"], rates["momu featurize + Arrow columns"]
    print(f"ratio momu / ceiling          {ours / rates['ceiling (RDKit parse only)']:.2f}")
    print(f"ratio momu / baseline         {ours / rates['baseline (pretrain-gnns style)']:.2f}x")
    print(f"ratio momu+columns / baseline {cols / rates['baseline (pretrain-gnns style)']:.2f}x")
    print(f"goal >= 1,500 molecules/s/core: {'met' if ours >= 1500 else 'NOT met'} ({ours:,.0f})")


if __name__ == "__main__":
    main()
