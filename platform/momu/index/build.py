"""`momu index build`: embedding shards -> a saved RetrievalIndex, with ANN recall@k measured against exact
search, and an MLflow run. No Ray (FAISS and numpy only)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from momu.index.config import IndexBuildConfig
from momu.index.vector_index import (EMBEDDING_COLUMN, RetrievalIndex, _embedding_matrix, _exact_topk, _shard_files,
                                     recall_at_k)


@dataclasses.dataclass
class IndexBuildResult:
    index: RetrievalIndex
    path: Path
    report: dict
    mlflow_run_id: Optional[str] = None


def exact_search_shards(files: list[Path], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over every row of the shards (row numbers in shard order), one shard in memory at a time."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    offset = 0
    for f in files:
        column = pq.read_table(f, columns=[EMBEDDING_COLUMN]).column(EMBEDDING_COLUMN)
        emb = _embedding_matrix(column, queries.shape[1], f)
        s, i = _exact_topk(emb, queries, k, 65_536)
        i = np.where(i >= 0, i + offset, -1)
        best_s, best_i = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1)
        order = np.lexsort((best_i, -best_s), axis=-1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)
        offset += len(emb)
    return best_s, best_i


def sample_rows(files: list[Path], n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n rows drawn uniformly from the shards: (row numbers, their embeddings)."""
    counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
    total = sum(counts)
    picks = np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))
    out, start = [], 0
    for f, count in zip(files, counts):
        local = picks[(picks >= start) & (picks < start + count)] - start
        if len(local):
            out.append(_embedding_matrix(pq.read_table(f, columns=[EMBEDDING_COLUMN]).column(EMBEDDING_COLUMN),
                                         dim, f)[local])
        start += count
    return picks, np.concatenate(out)


def measure_recall(index: RetrievalIndex, files: list[Path], queries: int, k: int, seed: int = 1) -> dict:
    """recall@k of the index against exact search over the shards, on `queries` indexed rows used as queries
    (each query also finds itself), and the search time per query of both."""
    _, q = sample_rows(files, queries, index.dim, seed)
    start = time.perf_counter()
    _, truth = exact_search_shards(files, q, k)
    exact_ms = 1000 * (time.perf_counter() - start) / len(q)
    start = time.perf_counter()
    _, found = index.search(q, k)
    index_ms = 1000 * (time.perf_counter() - start) / len(q)
    return {f"recall_at_{k}": round(recall_at_k(found, truth, k), 4), "queries": len(q),
            "exact_ms_per_query": round(exact_ms, 3), "index_ms_per_query": round(index_ms, 3)}


def build_index(config: IndexBuildConfig, log_to_mlflow: bool = True, progress: bool = True) -> IndexBuildResult:
    params = config.params.model_dump()
    start = time.perf_counter()
    index = RetrievalIndex.from_shards(config.shards, kind=config.kind, params=params, progress=progress)
    seconds = time.perf_counter() - start
    report = {"kind": index.kind, "rows": len(index), "dim": index.dim, "build_seconds": round(seconds, 2),
              "params": index.params, "model_info": index.model_info}
    if index.kind != "exact" and config.recall_queries:
        files, _ = _shard_files(config.shards)
        report["recall"] = measure_recall(index, files, config.recall_queries, config.recall_k)
    path = index.save(config.output)
    report["output"] = str(Path(path).resolve())

    run_id = None
    if log_to_mlflow:
        import mlflow

        from momu.tracking import mlflow_run

        with mlflow_run(config, config.mlflow_experiment, config.mlflow_tracking_uri) as run:
            run_id = run.info.run_id
            metrics = {"rows": len(index), "build_seconds": seconds}
            metrics.update({k: v for k, v in report.get("recall", {}).items() if isinstance(v, (int, float))})
            mlflow.log_metrics(metrics)
            mlflow.set_tags({"index_kind": index.kind, "index_path": report["output"],
                             **{k: str(v) for k, v in index.model_info.items() if k in ("model_name", "model_version")}})
            mlflow.log_dict(report, "index_report.json")
    return IndexBuildResult(index, Path(path), report, run_id)
