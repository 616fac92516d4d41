"""Graphs as Arrow-friendly columns (flat arrays + offsets), and the vectorised collate to a PyG `Batch`.

Ray Data moves these columns between processes without pickling Python objects; a `Batch` is built only in
the process that runs the model. Column layout, one row per molecule (list columns are Arrow lists):

    num_nodes   int32
    atom_type   list<uint8>  [N]     chirality   list<uint8> [N]
    edge_src    list<int32>  [E]     edge_dst    list<int32> [E]   (local node indices, both directions)
    bond_type   list<uint8>  [E]     bond_stereo list<uint8> [E]   bond_dir list<uint8> [E]
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import numpy as np
import pyarrow as pa

from momu.chem.featurize import MolGraph

NODE_COLUMNS = ("atom_type", "chirality")
EDGE_COLUMNS = ("edge_src", "edge_dst", "bond_type", "bond_stereo", "bond_dir")
GRAPH_COLUMNS = ("num_nodes",) + NODE_COLUMNS + EDGE_COLUMNS
GRAPH_SCHEMA = pa.schema(
    [("num_nodes", pa.int32())]
    + [(c, pa.list_(pa.uint8())) for c in NODE_COLUMNS]
    + [("edge_src", pa.list_(pa.int32())), ("edge_dst", pa.list_(pa.int32()))]
    + [(c, pa.list_(pa.uint8())) for c in ("bond_type", "bond_stereo", "bond_dir")]
)
_DTYPES = {f.name: (f.type.value_type if pa.types.is_list(f.type) else f.type).to_pandas_dtype() for f in GRAPH_SCHEMA}


def graphs_to_columns(graphs: Sequence[MolGraph]) -> dict[str, pa.Array]:
    """MolGraphs -> {column: pyarrow Array} following GRAPH_SCHEMA (one concatenate per column)."""
    num_nodes = np.fromiter((g.num_nodes for g in graphs), dtype=np.int32, count=len(graphs))
    num_edges = np.fromiter((g.num_edges for g in graphs), dtype=np.int32, count=len(graphs))
    node_offsets = pa.array(_offsets(num_nodes), pa.int32())
    edge_offsets = pa.array(_offsets(num_edges), pa.int32())

    def cat(arrays, dtype):
        return pa.array(np.concatenate(arrays).astype(dtype, copy=False) if len(arrays) else np.zeros(0, dtype))

    cols: dict[str, pa.Array] = {"num_nodes": pa.array(num_nodes, pa.int32())}
    for name in NODE_COLUMNS:
        cols[name] = pa.ListArray.from_arrays(node_offsets, cat([getattr(g, name) for g in graphs], np.uint8))
    cols["edge_src"] = pa.ListArray.from_arrays(edge_offsets, cat([g.edge_index[0] for g in graphs], np.int32))
    cols["edge_dst"] = pa.ListArray.from_arrays(edge_offsets, cat([g.edge_index[1] for g in graphs], np.int32))
    for name in ("bond_type", "bond_stereo", "bond_dir"):
        cols[name] = pa.ListArray.from_arrays(edge_offsets, cat([getattr(g, name) for g in graphs], np.uint8))
    return cols


def graphs_to_table(graphs: Sequence[MolGraph]) -> pa.Table:
    return pa.table(graphs_to_columns(graphs), schema=GRAPH_SCHEMA)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


ColumnBatch = Union[pa.Table, pa.RecordBatch, Mapping[str, object]]


def flat_column(batch: ColumnBatch, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths) of a list column given as Arrow, or as Ray's numpy batch format
    (an object array of per-row arrays)."""
    col = batch[name] if not isinstance(batch, (pa.Table, pa.RecordBatch)) else batch.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if isinstance(col, (pa.ListArray, pa.LargeListArray)):
        values = col.flatten().to_numpy(zero_copy_only=False)
        offsets = col.offsets.to_numpy()
        return values.astype(_DTYPES[name], copy=False), np.diff(offsets)
    rows = list(col)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    values = np.concatenate([np.asarray(r) for r in rows]) if rows else np.zeros(0)
    return values.astype(_DTYPES[name], copy=False), lengths


def columns_to_graphs(batch: ColumnBatch) -> list[MolGraph]:
    """Inverse of graphs_to_columns (for tests and small tools; the model path uses columns_to_pyg_batch)."""
    flat = {name: flat_column(batch, name) for name in NODE_COLUMNS + EDGE_COLUMNS}
    node_off = _offsets(flat["atom_type"][1])
    edge_off = _offsets(flat["edge_src"][1])
    graphs = []
    for i in range(len(node_off) - 1):
        n0, n1, e0, e1 = node_off[i], node_off[i + 1], edge_off[i], edge_off[i + 1]
        graphs.append(MolGraph(
            atom_type=flat["atom_type"][0][n0:n1], chirality=flat["chirality"][0][n0:n1],
            edge_index=np.stack([flat["edge_src"][0][e0:e1], flat["edge_dst"][0][e0:e1]]),
            bond_type=flat["bond_type"][0][e0:e1], bond_stereo=flat["bond_stereo"][0][e0:e1],
            bond_dir=flat["bond_dir"][0][e0:e1],
        ))
    return graphs


class GraphBatch:
    """Graphs batched as MoMu's graph towers read them: the fields of PyG's `Batch` that they use (x [N,2],
    edge_index [2,E] global, edge_attr [E,2], batch, ptr, num_graphs; int64), plus any attribute set later (the
    fingerprint baseline's `fingerprint`). Inference builds it instead of a PyG `Batch`: importing PyG costs a fresh
    process ~2.5 s of CPU, which every embedding actor and Serve replica paid on its first batch."""

    def __init__(self, x, edge_index, edge_attr, batch, ptr, num_graphs: int):
        self.x, self.edge_index, self.edge_attr, self.batch, self.ptr = x, edge_index, edge_attr, batch, ptr
        self.num_graphs = int(num_graphs)

    def to(self, device) -> "GraphBatch":
        """The same batch with every tensor on `device` (a new object, like `torch.Tensor.to`)."""
        import torch

        moved = object.__new__(GraphBatch)
        moved.__dict__.update({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()})
        return moved

    def __repr__(self) -> str:
        return f"GraphBatch(num_graphs={self.num_graphs}, num_nodes={len(self.x)}, num_edges={self.edge_index.shape[1]})"


def columns_to_pyg_batch(batch: ColumnBatch, bond_feature: str = "stereo", pyg: bool = True):
    """Graph columns -> PyG `Batch` (x [N,2], edge_index [2,E] global, edge_attr [E,2], batch, ptr), int64; with
    pyg=False the same tensors in a `GraphBatch` (inference: no PyG import)."""
    import torch

    atom_type, num_nodes = flat_column(batch, "atom_type")
    chirality, _ = flat_column(batch, "chirality")
    src, num_edges = flat_column(batch, "edge_src")
    dst, _ = flat_column(batch, "edge_dst")
    bond_type, _ = flat_column(batch, "bond_type")
    if bond_feature == "stereo":
        second, _ = flat_column(batch, "bond_stereo")
    elif bond_feature == "direction":
        second, _ = flat_column(batch, "bond_dir")
    else:
        raise ValueError(f"bond_feature must be 'stereo' or 'direction', got {bond_feature!r}")

    num_graphs = len(num_nodes)
    ptr = _offsets(num_nodes)
    # Local -> global node ids: shift each edge by the first node id of its graph.
    shift = np.repeat(ptr[:-1], num_edges)
    edge_index = np.stack([src.astype(np.int64) + shift, dst.astype(np.int64) + shift])
    tensors = {"x": torch.from_numpy(np.stack([atom_type, chirality], axis=1).astype(np.int64)),
               "edge_index": torch.from_numpy(edge_index),
               "edge_attr": torch.from_numpy(np.stack([bond_type, second], axis=1).astype(np.int64)),
               "batch": torch.from_numpy(np.repeat(np.arange(num_graphs, dtype=np.int64), num_nodes)),
               "ptr": torch.from_numpy(ptr)}
    if not pyg:
        return GraphBatch(**tensors, num_graphs=num_graphs)
    from torch_geometric.data import Batch

    return Batch(**tensors, _num_graphs=num_graphs)
