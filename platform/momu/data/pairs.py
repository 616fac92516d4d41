"""Molecule-text pairs in memory: read a source, featurize, split off a fixed held-out part."""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter
from typing import Sequence

import numpy as np

from momu.chem.columns import GRAPH_COLUMNS, columns_to_graphs
from momu.chem.featurize import MolGraph, Rejection, featurize_smiles


@dataclasses.dataclass
class PairDataset:
    """Aligned lists: molecule id, its graph, its texts (>= 1)."""

    ids: list[str]
    graphs: list[MolGraph]
    texts: list[list[str]]
    rejected: Counter = dataclasses.field(default_factory=Counter)  # reason -> count (featurization + no text)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: Sequence[int]) -> "PairDataset":
        return PairDataset([self.ids[i] for i in indices], [self.graphs[i] for i in indices],
                           [self.texts[i] for i in indices], Counter())


def load_pair_dataset(path: str, data_format: str = "auto", max_atoms: int = 512):
    """Read pairs with the matching reader, featurize SMILES (or take the corpus' own graphs).

    Returns (PairDataset, ReadReport). Rows that fail featurization or have no text are counted by reason in
    `dataset.rejected`, never dropped silently."""
    from momu.data.readers import read_pairs

    result = read_pairs(path, format=data_format)
    table = result.table
    has_graphs = all(c in table.column_names for c in GRAPH_COLUMNS)
    rows = table.to_pydict()
    corpus_graphs = columns_to_graphs(table.select(list(GRAPH_COLUMNS))) if has_graphs else None
    # A merged corpus (momu data build-corpus) holds graph rows and SMILES rows: null graph = featurize SMILES.
    has_graph = table.column("atom_type").is_valid().to_pylist() if has_graphs else None
    dataset = PairDataset([], [], [])
    for i, mol_id in enumerate(rows["id"]):
        texts = [t for t in (rows["texts"][i] or []) if t and t.strip()]
        if not texts:
            dataset.rejected["no_text"] += 1
            continue
        if corpus_graphs is not None and has_graph[i]:
            graph = corpus_graphs[i]
            if graph.num_nodes > max_atoms:
                dataset.rejected["too_many_atoms"] += 1
                continue
        else:
            graph = featurize_smiles(rows["smiles"][i], max_atoms=max_atoms)
            if isinstance(graph, Rejection):
                dataset.rejected[graph.reason] += 1
                continue
        dataset.ids.append(str(mol_id))
        dataset.graphs.append(graph)
        dataset.texts.append(texts)
    return dataset, result.report


def heldout_mask(ids: Sequence[str], fraction: float) -> np.ndarray:
    """A fixed held-out selection: a row is held out when a hash of its id falls below `fraction`.

    It depends only on the id, so the split is the same whatever the file order, subset or seed."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"heldout fraction must be in (0, 1), got {fraction}")
    buckets = np.fromiter((zlib.crc32(str(i).encode()) % 10_000 for i in ids), dtype=np.int64, count=len(ids))
    return buckets < int(round(fraction * 10_000))
