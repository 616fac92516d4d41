"""momu.index: exact search equals brute force, approximate kinds have sane recall, save/load round trips,
bad k / dims / inputs are clear errors, and building from embedding shards keeps ids, metadata and model info."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from momu.index import RetrievalIndex, recall_at_k


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    """2,000 rows in 40 clusters (like real embeddings, unlike isotropic noise) + 50 queries near rows."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((40, 32))
    x = unit_rows(centers[rng.integers(0, 40, 2000)] + 0.35 * rng.standard_normal((2000, 32)))
    q = unit_rows(x[rng.choice(2000, 50, replace=False)] + 0.2 * rng.standard_normal((50, 32)))
    return x, q


def brute_force(x, q, k):
    scores = q @ x.T
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, idx, axis=1), idx


def test_import_does_not_pull_in_ray():
    code = "import sys, momu.index; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_exact_search_equals_brute_force(clustered):
    x, q = clustered
    index = RetrievalIndex.build(x, [f"m{i}" for i in range(len(x))], kind="exact")
    scores, idx = index.search(q, 10)
    ref_scores, ref_idx = brute_force(x, q, 10)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    # Blocked scoring (tiny blocks) gives the same answer as one block.
    blocked = RetrievalIndex.build(x, [str(i) for i in range(len(x))], params={"exact_block_rows": 7})
    np.testing.assert_array_equal(blocked.search(q, 10)[1], ref_idx)


def test_auto_kind_and_model_info(clustered):
    x, _ = clustered
    small = RetrievalIndex.build(x, [str(i) for i in range(len(x))], kind="auto", model_info={"model_name": "m"})
    assert small.kind == "exact" and small.model_info == {"model_name": "m"} and small.dim == 32 and len(small) == 2000
    big = RetrievalIndex.build(x, [str(i) for i in range(len(x))], kind="auto", params={"exact_max_rows": 1000})
    assert big.kind == "ivf_pq"


@pytest.mark.parametrize("kind,params,floor", [("hnsw", {}, 0.95), ("ivf_pq", {"nprobe": 8, "m": 16}, 0.65),
                                               ("ivf_pq", {"nprobe": 8, "m": 8, "refine_k_factor": 8}, 0.9)])
def test_approximate_recall_is_sane(clustered, kind, params, floor):
    x, q = clustered
    exact = RetrievalIndex.build(x, [str(i) for i in range(len(x))])
    approx = RetrievalIndex.build(x, [str(i) for i in range(len(x))], kind=kind, params=params)
    _, truth = exact.search(q, 10)
    scores, idx = approx.search(q, 10)
    recall = recall_at_k(idx, truth)
    assert floor <= recall <= 1.0, recall
    assert (np.diff(scores[idx >= 0].reshape(len(q), -1), axis=1) <= 1e-5).all()  # best first
    if kind == "ivf_pq":
        approx.set_search_params(nprobe=approx.params["nlist"])  # every list: recall can only rise
        assert recall_at_k(approx.search(q, 10)[1], truth) >= recall - 1e-9


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 1]])) == 1.0
    assert recall_at_k(np.array([[1, 9, -1]]), np.array([[1, 2, 3]])) == pytest.approx(1 / 3)


def test_k_larger_than_rows_pads_with_minus_one():
    x = unit_rows(np.random.default_rng(1).standard_normal((5, 8)))
    for kind in ("exact", "hnsw"):
        index = RetrievalIndex.build(x, list("abcde"), kind=kind)
        scores, idx = index.search(x[:2], 8)
        assert idx.shape == (2, 8) and scores.shape == (2, 8)
        assert sorted(idx[0, :5].tolist()) == [0, 1, 2, 3, 4] and (idx[:, 5:] == -1).all()
        assert np.isneginf(scores[:, 5:]).all() and idx[0, 0] == 0 and idx[1, 0] == 1
    results = index.search_rows(x[0], 8)
    assert len(results) == 1 and len(results[0]) == 5 and results[0][0]["id"] == "a" and results[0][0]["rank"] == 1


def test_bad_queries_and_k_are_value_errors(clustered):
    x, q = clustered
    index = RetrievalIndex.build(x[:100], [str(i) for i in range(100)])
    with pytest.raises(ValueError, match=r"shape \[Q, 32\]"):
        index.search(np.zeros((3, 31), np.float32), 5)
    with pytest.raises(ValueError, match=r"shape \[Q, 32\]"):
        index.search(np.zeros((2, 3, 32), np.float32), 5)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(q, k)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 32), np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="not a row"):
        index.rows([-1])
    assert index.search(q[0], 3)[1].shape == (1, 3)  # a single 1-D query


def test_bad_build_inputs_are_value_errors(clustered):
    x, _ = clustered
    ids = [str(i) for i in range(len(x))]
    with pytest.raises(ValueError, match="L2-normalised"):
        RetrievalIndex.build(x * 3, ids)
    with pytest.raises(ValueError, match="2000 embeddings"):
        RetrievalIndex.build(x, ids[:-1])
    with pytest.raises(ValueError, match="kind must be one of"):
        RetrievalIndex.build(x, ids, kind="annoy")
    with pytest.raises(ValueError, match="unknown index params"):
        RetrievalIndex.build(x, ids, params={"nprobes": 3})
    with pytest.raises(ValueError, match="must divide"):
        RetrievalIndex.build(x, ids, kind="ivf_pq", params={"m": 5})
    with pytest.raises(ValueError, match="metadata has 3 rows"):
        RetrievalIndex.build(x, ids, metadata=pa.table({"smiles": ["C", "CC", "CCC"]}))
    with pytest.raises(ValueError, match="non-empty 2-D"):
        RetrievalIndex.build(np.zeros((0, 4), np.float32), [])


@pytest.mark.parametrize("kind", ["exact", "ivf_pq", "hnsw"])
def test_save_load_round_trip_without_pickle(tmp_path, clustered, kind):
    x, q = clustered
    meta = pa.table({"smiles": [f"C{i}" for i in range(len(x))], "weight": np.arange(len(x), dtype=np.float64)})
    index = RetrievalIndex.build(x, [f"m{i}" for i in range(len(x))], metadata=meta, kind=kind,
                                 model_info={"model_name": "demo", "model_version": "3", "run_id": "r1"})
    before = index.search(q, 10)
    index.save(tmp_path / "ix")
    info = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert info["kind"] == kind and info["rows"] == len(x) and info["model_info"]["model_version"] == "3"
    loaded = RetrievalIndex.load(tmp_path / "ix")
    after = loaded.search(q, 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0])
    assert loaded.kind == kind and loaded.dim == 32 and len(loaded) == len(x) and loaded.model_info == index.model_info
    assert loaded.rows([5, 0]) == [{"id": "m5", "smiles": "C5", "weight": 5.0}, {"id": "m0", "smiles": "C0", "weight": 0.0}]
    # Saving again over an existing index replaces it; a non-index directory is never overwritten.
    loaded.save(tmp_path / "ix")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        loaded.save(tmp_path / "other")
    if kind == "exact":
        mapped = RetrievalIndex.load(tmp_path / "ix", mmap=True)
        np.testing.assert_array_equal(mapped.search(q, 10)[1], before[1])


def test_load_rejects_non_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a retrieval index"):
        RetrievalIndex.load(tmp_path)


def write_shard(path, ids, emb, dtype, model_version="sha256:abc", run_id="run1"):
    n, d = emb.shape
    values = pa.array(emb.astype(dtype).ravel())
    pq.write_table(pa.table({"id": ids, "smiles": [f"S{i}" for i in ids],
                             "embedding": pa.FixedSizeListArray.from_arrays(values, d),
                             "model_name": ["demo"] * n, "model_version": [model_version] * n,
                             "run_id": [run_id] * n}), path)


@pytest.mark.parametrize("kind", ["exact", "ivf_pq", "hnsw"])
def test_from_shards_keeps_ids_metadata_and_model(tmp_path, clustered, kind):
    x, q = clustered
    ids = [f"m{i}" for i in range(len(x))]
    write_shard(tmp_path / "a.parquet", ids[:1200], x[:1200], np.float16)
    write_shard(tmp_path / "b.parquet", ids[1200:], x[1200:], np.float16)
    index = RetrievalIndex.from_shards(tmp_path, kind=kind)
    assert len(index) == 2000 and index.kind == kind and index.columns == ["id", "smiles"]
    assert index.model_info["model_name"] == "demo" and index.model_info["model_version"] == "sha256:abc"
    assert index.rows([1500]) == [{"id": "m1500", "smiles": "Sm1500"}]
    exact = RetrievalIndex.build(x, ids)
    recall = recall_at_k(index.search(q, 10)[1], exact.search(q, 10)[1])
    assert recall >= (0.99 if kind == "exact" else 0.5)  # float16 storage may swap near-ties only
    glob_index = RetrievalIndex.from_shards(str(tmp_path / "*.parquet"), kind="exact")
    assert len(glob_index) == 2000


def test_from_shards_refuses_mixed_models_and_unfinished_runs(tmp_path, clustered):
    x, _ = clustered
    write_shard(tmp_path / "a.parquet", ["a", "b"], x[:2], np.float32, model_version="v1")
    write_shard(tmp_path / "b.parquet", ["c", "d"], x[2:4], np.float32, model_version="v2")
    with pytest.raises(ValueError, match="different models"):
        RetrievalIndex.from_shards(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="has not finished"):
        RetrievalIndex.from_shards(run)
    with pytest.raises(FileNotFoundError):
        RetrievalIndex.from_shards(tmp_path / "missing")
