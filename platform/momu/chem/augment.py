"""MoMu's two graph augmentations (from GraphCL), vectorised over a whole batch of graphs.

Both remove EDGES only: every node stays and still counts in mean pooling.

* drop-nodes: in each graph floor(ratio * n) nodes, chosen uniformly without replacement, lose all their edges.
* subgraph: in each graph a connected node set is grown from a uniformly random start node, adding one node
  chosen uniformly from the current frontier (neighbours of the set not in it) per step, until the set has
  max(1, floor(keep_ratio * n)) nodes or the frontier is empty (salts, disconnected molecules stop early).
  Only edges with both endpoints in the set survive (the induced subgraph).
  GraphCL's reference code stops one node late (`while len(idx_sub) <= sub_num` gives sub_num + 1 nodes);
  we use the documented target floor(keep_ratio * n), at least 1 so the start node is always kept.

The rule is node-based, so both directions (i, j), (j, i) of a bond are always kept or removed together.
Core functions work on flat arrays of global node ids; `augment_pyg_batch` and `augment_columns` wrap them for
PyG batches and for Arrow graph columns (a Ray Data `map_batches` stage). Same rng state -> same result, and
for the same seed both wrappers draw the same augmentation.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping

import numpy as np
import pyarrow as pa

from momu.chem.columns import EDGE_COLUMNS, ColumnBatch, flat_column

AUGMENTATIONS = ("drop_nodes", "subgraph", "none")
DEFAULT_RATIOS = {"drop_nodes": 0.1, "subgraph": 0.8}


def drop_nodes_edge_mask(edge_src, edge_dst, num_nodes, ratio: float = 0.1, rng=None, return_nodes: bool = False):
    """bool[E] of edges kept after dropping floor(ratio * n) random nodes per graph.

    edge_src / edge_dst are global node ids (graph g owns ptr[g]..ptr[g+1]-1, ptr = cumsum of num_nodes).
    With return_nodes=True also returns bool[N], True for dropped nodes.
    """
    _check_ratio("ratio", ratio)
    src, dst, num_nodes, ptr = _check_graph_arrays(edge_src, edge_dst, num_nodes)
    rng = np.random.default_rng(rng)
    total = int(ptr[-1])
    graph_of_node = np.repeat(np.arange(len(num_nodes)), num_nodes)
    num_drop = np.floor(ratio * num_nodes).astype(np.int64)

    # A random permutation inside every graph at once: sort by (graph, random key). Nodes are contiguous per
    # graph, so position i of the sorted order still belongs to graph_of_node[i], with local rank i - ptr[g].
    order = np.lexsort((rng.random(total), graph_of_node))
    local_rank = np.arange(total) - ptr[:-1][graph_of_node]
    dropped = np.zeros(total, dtype=bool)
    dropped[order[local_rank < num_drop[graph_of_node]]] = True

    keep = ~(dropped[src] | dropped[dst])
    return (keep, dropped) if return_nodes else keep


def subgraph_edge_mask(edge_src, edge_dst, num_nodes, keep_ratio: float = 0.8, rng=None, return_nodes: bool = False):
    """bool[E] of edges inside a connected node set grown by random neighbour expansion in each graph.

    Arguments as for `drop_nodes_edge_mask`. With return_nodes=True also returns bool[N], True for nodes in the
    kept set. One Python iteration per expansion step, each vectorised over all graphs of the batch.
    """
    _check_ratio("keep_ratio", keep_ratio)
    src, dst, num_nodes, ptr = _check_graph_arrays(edge_src, edge_dst, num_nodes)
    rng = np.random.default_rng(rng)
    total = int(ptr[-1])
    num_graphs = len(num_nodes)
    graph_of_node = np.repeat(np.arange(num_graphs), num_nodes)
    nonempty = num_nodes > 0
    target = np.where(nonempty, np.maximum(1, np.floor(keep_ratio * num_nodes).astype(np.int64)), 0)

    in_set = np.zeros(total, dtype=bool)
    in_set[ptr[:-1][nonempty] + rng.integers(0, num_nodes[nonempty])] = True
    size = nonempty.astype(np.int64)
    frontier = np.zeros(total, dtype=bool)
    frontier[dst[in_set[src]]] = True
    frontier &= ~in_set

    while True:
        frontier_size = np.bincount(graph_of_node[frontier], minlength=num_graphs)
        growing = np.flatnonzero((size < target) & (frontier_size > 0))
        if len(growing) == 0:
            break
        # Pick the r-th frontier node of each growing graph via the running count of frontier nodes.
        pick = rng.integers(0, frontier_size[growing])
        running = np.cumsum(frontier)
        before_graph = np.concatenate(([0], running))[ptr[growing]]
        added = np.searchsorted(running, before_graph + pick + 1)
        in_set[added] = True
        size[growing] += 1
        is_added = np.zeros(total, dtype=bool)
        is_added[added] = True
        frontier[dst[is_added[src]]] = True
        frontier &= ~in_set

    keep = in_set[src] & in_set[dst]
    return (keep, in_set) if return_nodes else keep


def augment_pyg_batch(batch, kind: str, rng=None, ratio: float | None = None):
    """A new PyG `Batch` with edge_index / edge_attr filtered by the augmentation; x, batch, ptr unchanged.

    kind is "drop_nodes", "subgraph" or "none"; ratio defaults to 0.1 (drop_nodes) / 0.8 (subgraph, the kept
    fraction). The input batch is not modified.
    """
    import torch

    out = copy.copy(batch)  # shallow: node tensors are shared, not copied
    if _resolve_ratio(kind, ratio) is None:
        return out
    num_nodes = _pyg_num_nodes(batch)
    edge_index = batch.edge_index.detach().cpu().numpy()
    keep = edge_mask(edge_index[0], edge_index[1], num_nodes, kind, rng, ratio)
    # index_select rather than boolean-mask indexing: the latter goes through torch's thread pool and costs
    # milliseconds per call when the data-loading cores are busy.
    kept = torch.from_numpy(np.flatnonzero(keep)).to(batch.edge_index.device)
    out.edge_index = batch.edge_index.index_select(1, kept)
    if getattr(batch, "edge_attr", None) is not None:
        out.edge_attr = batch.edge_attr.index_select(0, kept)
    slice_dict = getattr(batch, "_slice_dict", None)
    if slice_dict and "edge_index" in slice_dict:
        # Batches from from_data_list remember per-graph edge slices; refresh them so to_data_list still works.
        graph_of_edge = np.repeat(np.arange(len(num_nodes)), np.diff(slice_dict["edge_index"].cpu().numpy()))
        kept_per_graph = np.bincount(graph_of_edge[keep], minlength=len(num_nodes))
        new_slices = torch.from_numpy(np.concatenate(([0], np.cumsum(kept_per_graph))))
        out._slice_dict = dict(slice_dict)
        for key in ("edge_index", "edge_attr"):
            if key in slice_dict:
                out._slice_dict[key] = new_slices
    return out


def augment_columns(table_or_dict: ColumnBatch, kind: str, rng=None, ratio: float | None = None):
    """Graph columns with the edge list columns filtered per row; everything else passed through unchanged.

    Accepts a pyarrow Table / RecordBatch, a dict of pyarrow arrays, or Ray's numpy batch format (a dict of
    object arrays of per-row arrays) and returns the same kind. Needs edge_src, edge_dst and num_nodes (or
    atom_type); filters whichever of EDGE_COLUMNS are present.
    """
    if _resolve_ratio(kind, ratio) is None:
        return table_or_dict
    is_arrow_batch = isinstance(table_or_dict, (pa.Table, pa.RecordBatch))
    names = table_or_dict.column_names if is_arrow_batch else list(table_or_dict)
    edge_names = [c for c in EDGE_COLUMNS if c in names]
    if "edge_src" not in edge_names or "edge_dst" not in edge_names:
        raise ValueError("augment_columns needs the edge_src and edge_dst columns")

    flat = {name: flat_column(table_or_dict, name) for name in edge_names}
    edge_lengths = flat["edge_src"][1]
    for name in edge_names:
        if not np.array_equal(flat[name][1], edge_lengths):
            raise ValueError(f"column {name!r} has per-row lengths different from edge_src")
    num_nodes = _column_num_nodes(table_or_dict, names)
    if len(num_nodes) != len(edge_lengths):
        raise ValueError("num_nodes and the edge columns have different numbers of rows")

    shift = np.repeat(np.cumsum(num_nodes) - num_nodes, edge_lengths)
    keep = edge_mask(flat["edge_src"][0] + shift, flat["edge_dst"][0] + shift, num_nodes, kind, rng, ratio)
    row_of_edge = np.repeat(np.arange(len(edge_lengths)), edge_lengths)
    kept_lengths = np.bincount(row_of_edge[keep], minlength=len(edge_lengths))

    column = table_or_dict.column if is_arrow_batch else table_or_dict.__getitem__
    new = {name: _rebuild_list_column(flat[name][0][keep], kept_lengths, column(name)) for name in edge_names}
    if is_arrow_batch:
        out = table_or_dict
        for name in edge_names:
            out = out.set_column(names.index(name), out.schema.field(name), new[name])
        return out
    return {**table_or_dict, **new}


def edge_mask(edge_src, edge_dst, num_nodes, kind: str, rng=None, ratio: float | None = None) -> np.ndarray:
    """Dispatch to the mask function for `kind` (all-True for "none")."""
    ratio = _resolve_ratio(kind, ratio)
    if kind == "drop_nodes":
        return drop_nodes_edge_mask(edge_src, edge_dst, num_nodes, ratio, rng)
    if kind == "subgraph":
        return subgraph_edge_mask(edge_src, edge_dst, num_nodes, ratio, rng)
    return np.ones(len(edge_src), dtype=bool)


def _resolve_ratio(kind: str, ratio: float | None) -> float | None:
    if kind not in AUGMENTATIONS:
        raise ValueError(f"kind must be one of {AUGMENTATIONS}, got {kind!r}")
    if kind == "none":
        return None
    ratio = DEFAULT_RATIOS[kind] if ratio is None else ratio
    _check_ratio("ratio", ratio)
    return ratio


def _check_ratio(name: str, value: float) -> None:
    if not isinstance(value, (int, float, np.integer, np.floating)) or not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_graph_arrays(edge_src, edge_dst, num_nodes):
    src = np.asarray(edge_src, dtype=np.int64).reshape(-1)
    dst = np.asarray(edge_dst, dtype=np.int64).reshape(-1)
    num_nodes = np.asarray(num_nodes, dtype=np.int64).reshape(-1)
    if src.shape != dst.shape:
        raise ValueError(f"edge_src and edge_dst differ in length ({len(src)} vs {len(dst)})")
    if (num_nodes < 0).any():
        raise ValueError("num_nodes must be non-negative")
    ptr = np.zeros(len(num_nodes) + 1, dtype=np.int64)
    np.cumsum(num_nodes, out=ptr[1:])
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= ptr[-1]):
        raise ValueError(f"edge endpoints must be global node ids in [0, {ptr[-1]})")
    return src, dst, num_nodes, ptr


def _pyg_num_nodes(batch) -> np.ndarray:
    ptr = getattr(batch, "ptr", None)
    if ptr is not None:
        return np.diff(ptr.cpu().numpy())
    if getattr(batch, "batch", None) is not None:
        return np.bincount(batch.batch.cpu().numpy(), minlength=batch.num_graphs)
    return np.array([batch.num_nodes])  # a single Data object


def _column_num_nodes(table_or_dict: ColumnBatch, names) -> np.ndarray:
    if "num_nodes" in names:
        col = table_or_dict["num_nodes"] if isinstance(table_or_dict, Mapping) else table_or_dict.column("num_nodes")
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        return np.asarray(col.to_numpy(zero_copy_only=False) if isinstance(col, pa.Array) else col, dtype=np.int64)
    return flat_column(table_or_dict, "atom_type")[1].astype(np.int64)


def _rebuild_list_column(values: np.ndarray, lengths: np.ndarray, like):
    """Per-row lists from flat values, in the same representation (and Arrow type) as `like`."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if isinstance(like, (pa.Array, pa.ChunkedArray)):
        flat_values = pa.array(values, like.type.value_type)
        if pa.types.is_large_list(like.type):
            return pa.LargeListArray.from_arrays(offsets, flat_values, type=like.type)
        return pa.ListArray.from_arrays(offsets.astype(np.int32), flat_values, type=like.type)
    rows = np.empty(len(lengths), dtype=object)
    for i, row in enumerate(np.split(values, offsets[1:-1])):  # element-wise: equal-length rows must not become 2-D
        rows[i] = row
    return rows
