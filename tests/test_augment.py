"""Tests for momu.chem.augment: MoMu's drop-nodes and subgraph augmentations (edges removed, nodes kept)."""

from __future__ import annotations

import csv
import itertools
import math
from collections import Counter, deque
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch_geometric.data import Batch

from momu.chem.augment import (
    augment_columns,
    augment_pyg_batch,
    drop_nodes_edge_mask,
    subgraph_edge_mask,
)
from momu.chem.columns import (
    EDGE_COLUMNS,
    columns_to_pyg_batch,
    flat_column,
    graphs_to_columns,
    graphs_to_table,
)
from momu.chem.featurize import MolGraph, featurize_smiles

CHEBI_SLICE = Path(__file__).resolve().parents[1] / "data" / "sample" / "chebi20" / "validation_slice.tsv"
HAND_MADE = ["c1ccccc1", "CCO", "[Na+].[Cl-]", "CCO.CC", "C", "CC", "C.C.C.C.C", "CC(C)CO", "OC(=O)c1ccccc1N"]
MASK_FUNCTIONS = {"drop_nodes": drop_nodes_edge_mask, "subgraph": subgraph_edge_mask}


def _graph(smiles: str) -> MolGraph:
    graph = featurize_smiles(smiles)
    assert isinstance(graph, MolGraph), smiles
    return graph


@pytest.fixture(scope="module")
def chebi_graphs() -> list[MolGraph]:
    with open(CHEBI_SLICE, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    graphs = [featurize_smiles(row[1]) for row in rows[:64]]
    graphs = [g for g in graphs if isinstance(g, MolGraph)]
    assert len(graphs) >= 48
    return graphs


@pytest.fixture(scope="module")
def all_graphs(chebi_graphs) -> list[MolGraph]:
    return [_graph(s) for s in HAND_MADE] + chebi_graphs


def _flat(graphs):
    """Global (src, dst), num_nodes, graph id per node of a batch of graphs."""
    num_nodes = np.array([g.num_nodes for g in graphs])
    shift = np.concatenate(([0], np.cumsum(num_nodes)[:-1]))
    edges = np.concatenate([g.edge_index + s for g, s in zip(graphs, shift)], axis=1).astype(np.int64)
    return edges[0], edges[1], num_nodes, np.repeat(np.arange(len(graphs)), num_nodes)


def _components(src, dst, total):
    """Connected-component label per node (BFS)."""
    adjacency = [[] for _ in range(total)]
    for s, d in zip(src.tolist(), dst.tolist()):
        adjacency[s].append(d)
    label = np.full(total, -1)
    for start in range(total):
        if label[start] >= 0:
            continue
        label[start] = start
        queue = deque([start])
        while queue:
            for nxt in adjacency[queue.popleft()]:
                if label[nxt] < 0:
                    label[nxt] = start
                    queue.append(nxt)
    return label


def _assert_symmetric(src, dst, keep):
    kept = set(zip(src[keep].tolist(), dst[keep].tolist()))
    assert all((d, s) in kept for s, d in kept)
    removed = set(zip(src[~keep].tolist(), dst[~keep].tolist()))
    assert not any((d, s) in kept for s, d in removed)


# --- core masks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 1.0])
def test_drop_nodes_isolates_exactly_the_dropped_nodes(all_graphs, ratio):
    src, dst, num_nodes, graph_of_node = _flat(all_graphs)
    keep, dropped = drop_nodes_edge_mask(src, dst, num_nodes, ratio, np.random.default_rng(1), return_nodes=True)
    assert keep.dtype == bool and keep.shape == src.shape and dropped.shape == (num_nodes.sum(),)
    dropped_per_graph = np.bincount(graph_of_node[dropped], minlength=len(all_graphs))
    np.testing.assert_array_equal(dropped_per_graph, np.floor(ratio * num_nodes).astype(int))
    # Every removed edge touches a dropped node, and every edge touching a dropped node is removed.
    np.testing.assert_array_equal(keep, ~(dropped[src] | dropped[dst]))
    degree_after = np.bincount(src[keep], minlength=len(dropped))
    assert (degree_after[dropped] == 0).all()
    _assert_symmetric(src, dst, keep)


def test_drop_nodes_ratio_zero_keeps_everything(all_graphs):
    src, dst, num_nodes, _ = _flat(all_graphs)
    keep, dropped = drop_nodes_edge_mask(src, dst, num_nodes, 0.0, np.random.default_rng(0), return_nodes=True)
    assert keep.all() and not dropped.any()


def test_drop_nodes_choice_is_uniform():
    # 3000 copies of a 10-atom molecule in one batch: each node is dropped with probability 1/10.
    graph = _graph("OC(=O)c1ccccc1N")
    assert graph.num_nodes == 10
    copies = 3000
    src, dst, num_nodes, _ = _flat([graph] * copies)
    _, dropped = drop_nodes_edge_mask(src, dst, num_nodes, 0.1, np.random.default_rng(5), return_nodes=True)
    per_position = dropped.reshape(copies, 10).sum(axis=0)
    sigma = math.sqrt(copies * 0.1 * 0.9)
    assert np.abs(per_position - copies * 0.1).max() < 5 * sigma


@pytest.mark.parametrize("keep_ratio", [0.8, 0.5, 0.0, 1.0])
def test_subgraph_keeps_a_connected_induced_node_set(all_graphs, keep_ratio):
    src, dst, num_nodes, graph_of_node = _flat(all_graphs)
    total = int(num_nodes.sum())
    keep, kept_nodes = subgraph_edge_mask(
        src, dst, num_nodes, keep_ratio, np.random.default_rng(2), return_nodes=True
    )
    # Induced subgraph: an edge survives iff both endpoints are in the set.
    np.testing.assert_array_equal(keep, kept_nodes[src] & kept_nodes[dst])
    _assert_symmetric(src, dst, keep)

    component = _components(src, dst, total)
    kept_component = _components(src[keep], dst[keep], total)
    target = np.maximum(1, np.floor(keep_ratio * num_nodes).astype(int))
    for g in range(len(all_graphs)):
        nodes = np.flatnonzero((graph_of_node == g) & kept_nodes)
        assert len(nodes) >= 1
        # Connected over the kept edges: one BFS from any kept node reaches all of them.
        assert len(set(kept_component[nodes].tolist())) == 1
        assert len(set(component[nodes].tolist())) == 1
        component_size = int((component == component[nodes[0]]).sum())
        assert len(nodes) == min(target[g], component_size)


def test_subgraph_on_disconnected_and_edgeless_graphs():
    graphs = [_graph(s) for s in ["[Na+].[Cl-]", "CCO.CC", "C", "C.C.C.C.C"]]
    src, dst, num_nodes, graph_of_node = _flat(graphs)
    for seed in range(20):
        keep, kept = subgraph_edge_mask(src, dst, num_nodes, 0.8, np.random.default_rng(seed), return_nodes=True)
        per_graph = np.bincount(graph_of_node[kept], minlength=len(graphs))
        assert per_graph[0] == 1  # salt: the ion has no neighbours
        assert per_graph[1] in (2, 3)  # CCO.CC: target 4, stops at the size of the start's fragment
        assert per_graph[2] == 1 and per_graph[3] == 1
        assert not keep[graph_of_node[src] != 1].any()


def _reference_subgraph_distribution(graph: MolGraph, keep_ratio: float) -> dict[frozenset, float]:
    """Exact probability of each kept node set under the rule (uniform start, uniform frontier choice)."""
    n = graph.num_nodes
    neighbours = {i: set() for i in range(n)}
    for s, d in graph.edge_index.T.tolist():
        neighbours[s].add(d)
    target = max(1, math.floor(keep_ratio * n))
    result: Counter = Counter()

    def grow(nodes: frozenset, p: float):
        frontier = set().union(*(neighbours[v] for v in nodes)) - nodes
        if len(nodes) >= target or not frontier:
            result[nodes] += p
            return
        for v in frontier:
            grow(nodes | {v}, p / len(frontier))

    for start in range(n):
        grow(frozenset([start]), 1.0 / n)
    return dict(result)


@pytest.mark.parametrize("smiles", ["CC(C)CO", "CCCCC", "OC(=O)C(N)C"])
def test_subgraph_distribution_matches_the_rule(smiles):
    # Many copies in one batch; the empirical distribution of kept sets must match the exact one.
    graph = _graph(smiles)
    expected = _reference_subgraph_distribution(graph, 0.8)
    copies = 4000
    src, dst, num_nodes, _ = _flat([graph] * copies)
    _, kept = subgraph_edge_mask(src, dst, num_nodes, 0.8, np.random.default_rng(9), return_nodes=True)
    observed = Counter(frozenset(np.flatnonzero(row).tolist()) for row in kept.reshape(copies, graph.num_nodes))
    assert set(observed) <= set(expected)
    for nodes, p in expected.items():
        sigma = math.sqrt(copies * p * (1 - p))
        assert abs(observed[nodes] - copies * p) < 5 * sigma + 1, (nodes, observed[nodes], copies * p)


@pytest.mark.parametrize("kind", ["drop_nodes", "subgraph"])
def test_masks_are_deterministic_under_seed(all_graphs, kind):
    src, dst, num_nodes, _ = _flat(all_graphs)
    fn = MASK_FUNCTIONS[kind]
    ratio = 0.1 if kind == "drop_nodes" else 0.8
    a = fn(src, dst, num_nodes, ratio, np.random.default_rng(123))
    b = fn(src, dst, num_nodes, ratio, np.random.default_rng(123))
    c = fn(src, dst, num_nodes, ratio, np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", ["drop_nodes", "subgraph"])
def test_masks_on_empty_and_tiny_inputs(kind):
    fn = MASK_FUNCTIONS[kind]
    rng = np.random.default_rng(0)
    empty = np.zeros(0, dtype=np.int64)
    assert fn(empty, empty, np.zeros(0, dtype=int), 0.5, rng).shape == (0,)
    assert fn(empty, empty, np.array([1, 1, 0, 3]), 0.5, rng).shape == (0,)
    keep, nodes = fn(np.array([0, 1]), np.array([1, 0]), np.array([2]), 0.5, rng, return_nodes=True)
    assert keep.shape == (2,) and nodes.shape == (2,)
    assert keep[0] == keep[1]


@pytest.mark.parametrize("kind,arg", [("drop_nodes", "ratio"), ("subgraph", "keep_ratio")])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5"])
def test_ratio_validation(kind, arg, bad):
    edges = np.array([0, 1])
    with pytest.raises(ValueError, match=arg):
        MASK_FUNCTIONS[kind](edges, edges[::-1], np.array([2]), bad, np.random.default_rng(0))


def test_out_of_range_edges_are_rejected():
    with pytest.raises(ValueError, match="global node ids"):
        drop_nodes_edge_mask(np.array([0, 2]), np.array([2, 0]), np.array([2]), 0.5, np.random.default_rng(0))


# --- PyG batches -----------------------------------------------------------------------------------------------


def _edge_records(edge_index, edge_attr):
    return [tuple(r) for r in torch.cat([edge_index.T, edge_attr], dim=1).tolist()]


@pytest.mark.parametrize("kind", ["drop_nodes", "subgraph", "none"])
@pytest.mark.parametrize("bond_feature", ["stereo", "direction"])
def test_pyg_batch_keeps_nodes_and_filters_aligned_edges(all_graphs, kind, bond_feature):
    batch = columns_to_pyg_batch(graphs_to_columns(all_graphs), bond_feature=bond_feature)
    original_edges = batch.edge_index.clone()
    out = augment_pyg_batch(batch, kind, np.random.default_rng(3))

    assert torch.equal(out.x, batch.x) and torch.equal(out.batch, batch.batch) and torch.equal(out.ptr, batch.ptr)
    assert out.num_graphs == batch.num_graphs == len(all_graphs)
    assert torch.equal(batch.edge_index, original_edges)  # input untouched
    before = _edge_records(batch.edge_index, batch.edge_attr)
    after = _edge_records(out.edge_index, out.edge_attr)
    assert len(set(before)) == len(before)  # (src, dst) unique, so records identify edges with their attributes
    assert set(after) <= set(before)
    if kind == "none":
        assert after == before
    else:
        assert len(after) < len(before)
    # Order is preserved: the survivors are a subsequence of the original edges.
    it = iter(before)
    assert all(record in it for record in after)
    src, dst = out.edge_index.numpy()
    assert np.array_equal(out.batch.numpy()[src], out.batch.numpy()[dst])
    _assert_symmetric(src, dst, np.ones(len(src), dtype=bool))


def test_pyg_batch_from_data_list_round_trips(all_graphs):
    batch = Batch.from_data_list([g.to_pyg() for g in all_graphs])
    out = augment_pyg_batch(batch, "subgraph", np.random.default_rng(4))
    assert out.num_graphs == len(all_graphs) and torch.equal(out.ptr, batch.ptr)
    pieces = out.to_data_list()
    assert sum(p.num_edges for p in pieces) == out.num_edges
    for piece, graph in zip(pieces, all_graphs):
        assert piece.num_nodes == graph.num_nodes
        assert piece.edge_attr.shape[0] == piece.edge_index.shape[1]
        if piece.num_edges:
            assert piece.edge_index.max() < graph.num_nodes
    # The original batch's bookkeeping is untouched.
    assert sum(p.num_edges for p in batch.to_data_list()) == batch.num_edges


def test_unknown_kind_and_bad_ratio_in_wrappers(all_graphs):
    batch = columns_to_pyg_batch(graphs_to_columns(all_graphs))
    with pytest.raises(ValueError, match="kind"):
        augment_pyg_batch(batch, "drop_edges", np.random.default_rng(0))
    with pytest.raises(ValueError, match="ratio"):
        augment_pyg_batch(batch, "subgraph", np.random.default_rng(0), ratio=2.0)
    with pytest.raises(ValueError, match="ratio"):
        augment_columns(graphs_to_table(all_graphs), "drop_nodes", np.random.default_rng(0), ratio=-1)


# --- Arrow columns ---------------------------------------------------------------------------------------------


def _with_extra_columns(table: pa.Table) -> pa.Table:
    table = table.append_column("cid", pa.array(np.arange(table.num_rows), pa.int64()))
    return table.append_column("text", pa.array([f"molecule {i}" for i in range(table.num_rows)]))


@pytest.mark.parametrize("kind", ["drop_nodes", "subgraph"])
def test_columns_filter_edges_per_row(all_graphs, kind):
    table = _with_extra_columns(graphs_to_table(all_graphs))
    out = augment_columns(table, kind, np.random.default_rng(6))
    assert isinstance(out, pa.Table) and out.schema == table.schema
    for name in ("num_nodes", "atom_type", "chirality", "cid", "text"):
        assert out.column(name).equals(table.column(name))

    lengths = {name: flat_column(out, name)[1] for name in EDGE_COLUMNS}
    for name in EDGE_COLUMNS:
        np.testing.assert_array_equal(lengths[name], lengths["edge_src"])
    assert (lengths["edge_src"] <= flat_column(table, "edge_src")[1]).all()
    assert lengths["edge_src"].sum() < flat_column(table, "edge_src")[1].sum()

    num_nodes = table.column("num_nodes").to_numpy()
    for row_before, row_after, n in zip(table.to_pylist(), out.to_pylist(), num_nodes):
        records_before = list(zip(*(row_before[c] for c in EDGE_COLUMNS)))
        records_after = list(zip(*(row_after[c] for c in EDGE_COLUMNS)))
        assert set(records_after) <= set(records_before)
        pairs = {(r[0], r[1]) for r in records_after}
        assert all((d, s) in pairs for s, d in pairs)
        assert all(0 <= s < n and 0 <= d < n for s, d in pairs)


@pytest.mark.parametrize("kind", ["drop_nodes", "subgraph"])
@pytest.mark.parametrize("bond_feature", ["stereo", "direction"])
def test_columns_and_pyg_batch_agree(all_graphs, kind, bond_feature):
    table = graphs_to_table(all_graphs)
    via_columns = columns_to_pyg_batch(augment_columns(table, kind, np.random.default_rng(7)), bond_feature)
    via_pyg = augment_pyg_batch(columns_to_pyg_batch(table, bond_feature), kind, np.random.default_rng(7))
    assert torch.equal(via_columns.edge_index, via_pyg.edge_index)
    assert torch.equal(via_columns.edge_attr, via_pyg.edge_attr)
    assert torch.equal(via_columns.x, via_pyg.x)


@pytest.mark.parametrize("kind", ["drop_nodes", "subgraph"])
def test_columns_input_formats_agree(all_graphs, kind):
    table = _with_extra_columns(graphs_to_table(all_graphs))
    expected = augment_columns(table, kind, np.random.default_rng(8))

    # dict of pyarrow arrays
    as_dict = {name: table.column(name).combine_chunks() for name in table.column_names}
    out = augment_columns(as_dict, kind, np.random.default_rng(8))
    assert isinstance(out, dict) and set(out) == set(as_dict)
    assert pa.table(out).equals(expected)
    assert out["text"] is as_dict["text"]

    # a multi-chunk table
    half = table.num_rows // 2
    chunked = pa.concat_tables([table.slice(0, half), table.slice(half)])
    assert augment_columns(chunked, kind, np.random.default_rng(8)).equals(expected)

    # Ray's numpy batch format: object arrays of per-row arrays
    as_numpy = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    out = augment_columns(as_numpy, kind, np.random.default_rng(8))
    for name in EDGE_COLUMNS:
        assert out[name].dtype == object
        assert [r.tolist() for r in out[name]] == expected.column(name).to_pylist()
    assert out["atom_type"] is as_numpy["atom_type"]


def test_columns_determinism_and_edge_cases(all_graphs):
    table = graphs_to_table(all_graphs)
    a = augment_columns(table, "subgraph", np.random.default_rng(11))
    b = augment_columns(table, "subgraph", np.random.default_rng(11))
    c = augment_columns(table, "subgraph", np.random.default_rng(12))
    assert a.equals(b) and not a.equals(c)
    assert augment_columns(table, "none", np.random.default_rng(0)).equals(table)

    empty = graphs_to_table([])
    for kind in ("drop_nodes", "subgraph"):
        assert augment_columns(empty, kind, np.random.default_rng(0)).num_rows == 0
        # single atom and an edgeless salt come through unchanged
        tiny = graphs_to_table([_graph("C"), _graph("[Na+].[Cl-]")])
        assert augment_columns(tiny, kind, np.random.default_rng(0)).equals(tiny)


def test_columns_reject_misaligned_edge_columns(all_graphs):
    table = graphs_to_table(all_graphs[:3])
    shorter = pa.array([row[:-1] for row in table.column("bond_type").to_pylist()], pa.list_(pa.uint8()))
    broken = table.set_column(table.column_names.index("bond_type"), "bond_type", shorter)
    with pytest.raises(ValueError, match="bond_type"):
        augment_columns(broken, "drop_nodes", np.random.default_rng(0))
