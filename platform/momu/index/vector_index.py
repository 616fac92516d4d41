"""A searchable index over MoMu embeddings: exact inner product (numpy) or approximate (FAISS IVF-PQ / HNSW).

Embeddings are L2-normalised float32 rows, so the inner product is the cosine similarity and higher is better.
Every index row keeps its id and metadata (canonical SMILES for molecules, the text for descriptions, anything
else the caller passes), and the index records which model made the embeddings (`model_info`).

Kinds
  exact    brute-force inner product in numpy, blocked over rows (exact; fine up to a few million rows)
  ivf_pq   FAISS IndexIVFPQ (inverted lists of product-quantised codes: ~m bytes per row), optionally re-ranked
           exactly by IndexRefineFlat (`refine_k_factor` > 0, which keeps the full vectors too)
  hnsw     FAISS IndexHNSWFlat (graph search over full vectors: fast and accurate, memory ~ 4*D bytes per row)
  auto     exact up to `exact_max_rows` rows, else ivf_pq

Search results always have shape [Q, k]. Where fewer than k rows can be returned (k > len(index), or an
approximate search that finds fewer candidates) the missing entries are padding: row index -1 and score -inf.

On disk (no pickle anywhere): `index.json` (kind, dim, params, model_info), `rows.parquet` (id + metadata, in row
order) and either `embeddings.npy` (exact; loaded with allow_pickle=False) or `index.faiss` (faiss.write_index).

Pure numpy/pyarrow (+ faiss for the approximate kinds, imported lazily); no Ray.
"""

from __future__ import annotations

import glob as _glob
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT = "momu-retrieval-index"
FORMAT_VERSION = 1
INFO_FILE = "index.json"
ROWS_FILE = "rows.parquet"
EMBEDDINGS_FILE = "embeddings.npy"
FAISS_FILE = "index.faiss"
KINDS = ("exact", "ivf_pq", "hnsw")

# Columns of an embedding shard (the embedding job's output) that are not per-row metadata.
EMBEDDING_COLUMN = "embedding"
MODEL_COLUMNS = ("model_name", "model_version", "run_id")
# The embedding job's output directory marks a finished run with this file (model info + list of shards).
EMBED_DONE_FILE = "DONE.json"

# Every accepted parameter with its default; None = derived from the data at build time (see _resolve_params).
DEFAULT_PARAMS: dict[str, Any] = {
    "exact_max_rows": 200_000,  # kind "auto": exact up to this many rows, ivf_pq above
    "exact_block_rows": 65_536,  # exact search scores this many rows at a time (bounds memory)
    # ivf_pq
    "nlist": None,  # inverted lists; default ~4*sqrt(N), at most N/39 (FAISS wants >= 39 training rows per list)
    "m": None,  # PQ sub-quantizers (bytes per row at nbits 8); must divide dim; default dim/4 (or the nearest divisor)
    "nbits": None,  # bits per sub-quantizer code; default 8 (fewer for tiny sets)
    "nprobe": 32,  # lists visited per query (recall/speed trade-off; query-time)
    "train_rows": None,  # rows sampled for k-means/PQ training; default min(N, max(64*nlist, 64*2^nbits, 100k))
    "refine_k_factor": 0,  # > 0: re-rank k*refine_k_factor PQ candidates with exact inner products
    # hnsw
    "hnsw_m": 32,  # graph degree
    "ef_construction": 100,
    "ef_search": 64,  # query-time
    "seed": 0,  # training sample and k-means seed
}
_QUERY_TIME_PARAMS = ("nprobe", "ef_search", "refine_k_factor")

PathLike = Union[str, os.PathLike]


class RetrievalIndex:
    """Top-k inner-product search over normalised embeddings, with per-row id/metadata and model info.

    Build with `RetrievalIndex.build(embeddings, ids, ...)` or `RetrievalIndex.from_shards(embedding_job_output)`;
    persist with `save(directory)` / `RetrievalIndex.load(directory)`.
    """

    def __init__(self, *, kind: str, dim: int, rows: pa.Table, params: dict, model_info: dict,
                 embeddings: Optional[np.ndarray] = None, faiss_index: Any = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if (kind == "exact") != (embeddings is not None) or (kind != "exact") != (faiss_index is not None):
            raise ValueError("an exact index needs `embeddings`, an approximate one a `faiss_index`")
        self.kind = kind
        self.dim = int(dim)
        self.params = dict(params)
        self.model_info = dict(model_info)
        self._rows = rows
        self._embeddings = embeddings
        self._faiss = faiss_index
        if self._faiss is not None:
            self._apply_query_params()

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def build(cls, embeddings: np.ndarray, ids: Sequence[str], metadata: Optional[pa.Table] = None,
              kind: str = "exact", params: Optional[dict] = None,
              model_info: Optional[dict] = None) -> "RetrievalIndex":
        """Index `embeddings` [N, D] (L2-normalised rows; float16/float64 are converted to float32).

        ids: one per row (duplicates are allowed: rows, not ids, are the unit). metadata: an optional Arrow table
        with N rows (e.g. smiles, text); an `id` column in it must equal `ids`. kind: exact | ivf_pq | hnsw | auto.
        params: see DEFAULT_PARAMS (unknown names are a ValueError). model_info: JSON-serialisable description
        of the model that made the embeddings (name, version, run id, ...), kept with the index."""
        emb = _as_matrix(embeddings, "embeddings")
        n, dim = emb.shape
        _check_normalised(emb)
        rows = _rows_table(ids, metadata, n)
        resolved = _resolve_params(params, n, dim)
        kind = _resolve_kind(kind, n, resolved)
        info = _json_safe(model_info or {}, "model_info")
        if kind == "exact":
            return cls(kind=kind, dim=dim, rows=rows, params=resolved, model_info=info, embeddings=emb)
        builder = _FaissBuilder(kind, dim, resolved)
        builder.train(_training_sample(emb, resolved))
        builder.add(emb)
        return cls(kind=kind, dim=dim, rows=rows, params=resolved, model_info=info, faiss_index=builder.index)

    @classmethod
    def from_shards(cls, shard_dir_or_glob: PathLike, kind: str = "auto", params: Optional[dict] = None,
                    progress: bool = False) -> "RetrievalIndex":
        """Build from embedding shards: Parquet files with `id`, `embedding` (fixed-size list of float16/32) and
        any metadata columns (smiles / text ...); `model_name`, `model_version`, `run_id` go to model_info.

        Accepts the embedding job's output directory (it must be finished: its DONE.json lists the shards and
        the model), a directory of Parquet files, or a glob. ivf_pq streams the shards (training sample, then
        one shard at a time), so only the codes and the metadata are held in memory; exact and hnsw hold every
        vector (4*D bytes per row)."""
        files, job_info = _shard_files(shard_dir_or_glob)
        counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
        n = sum(counts)
        if n == 0:
            raise ValueError(f"{shard_dir_or_glob}: the shards hold no rows")
        first = pq.ParquetFile(files[0]).schema_arrow
        for needed in ("id", EMBEDDING_COLUMN):
            if needed not in first.names:
                raise ValueError(f"{files[0]}: not an embedding shard (no {needed!r} column; columns are {first.names})")
        meta_columns = ["id"] + [c for c in first.names if c not in ("id", EMBEDDING_COLUMN, *MODEL_COLUMNS)]
        model_info = dict(job_info.get("model_info", {}))
        model_info.update(_shard_model_info(files))
        model_info.setdefault("source_shards", str(shard_dir_or_glob))

        dim = _embedding_dim(first.field(EMBEDDING_COLUMN).type, files[0])
        resolved = _resolve_params(params, n, dim)
        kind = _resolve_kind(kind, n, resolved)
        bar = _progress(progress, total=n, desc=f"index {kind}")
        meta_parts = []
        if kind in ("exact", "hnsw"):
            emb = np.empty((n, dim), dtype=np.float32)
            pos = 0
            for f in files:
                table = pq.read_table(f, columns=["id", EMBEDDING_COLUMN, *meta_columns[1:]])
                block = _embedding_matrix(table.column(EMBEDDING_COLUMN), dim, f)
                emb[pos:pos + len(block)] = block
                pos += len(block)
                meta_parts.append(table.drop_columns([EMBEDDING_COLUMN]))
                bar.update(len(block))
            bar.close()
            rows = pa.concat_tables(meta_parts)
            return cls.build(emb, rows.column("id").to_pylist(), rows, kind=kind, params=resolved,
                             model_info=model_info)

        builder = _FaissBuilder(kind, dim, resolved)
        builder.train(_sample_from_shards(files, counts, dim, resolved))
        for f in files:
            table = pq.read_table(f, columns=["id", EMBEDDING_COLUMN, *meta_columns[1:]])
            builder.add(_embedding_matrix(table.column(EMBEDDING_COLUMN), dim, f))
            meta_parts.append(table.drop_columns([EMBEDDING_COLUMN]))
            bar.update(table.num_rows)
        bar.close()
        rows = pa.concat_tables(meta_parts)
        rows = _rows_table(rows.column("id"), rows, n)
        return cls(kind=kind, dim=dim, rows=rows, params=resolved, model_info=_json_safe(model_info, "model_info"),
                   faiss_index=builder.index)

    # -- queries ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._rows.num_rows

    @property
    def ids(self) -> pa.ChunkedArray:
        return self._rows.column("id")

    @property
    def columns(self) -> list[str]:
        """Row fields returned by rows(): id first, then the metadata columns."""
        return self._rows.column_names

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product for each query: (scores [Q, k] float32, row indices [Q, k] int64), best
        first (exact ties: lower row first). A single query may be given as a 1-D array [D] (-> Q = 1).
        Entries beyond what the index can return are padding: index -1, score -inf."""
        q = _as_queries(queries, self.dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        if self.kind == "exact":
            scores, idx = _exact_topk(self._embeddings, q, k, int(self.params["exact_block_rows"]))
        else:
            kk = min(k, len(self))
            scores, idx = self._faiss.search(q, kk)
            scores, idx = _pad(scores.astype(np.float32), idx.astype(np.int64), k)
        scores[idx < 0] = -np.inf
        return scores, idx

    def rows(self, row_indices: Iterable[int]) -> list[dict]:
        """id + metadata of the given rows (one dict per index, in order). Padding (-1) or out-of-range indices
        are a ValueError; use search_rows() to get results with the padding already dropped."""
        idx = np.asarray(list(row_indices) if not isinstance(row_indices, np.ndarray) else row_indices,
                         dtype=np.int64).ravel()
        bad = idx[(idx < 0) | (idx >= len(self))]
        if len(bad):
            raise ValueError(f"row index {int(bad[0])} is not a row of this index (0..{len(self) - 1}); "
                             "-1 marks padding in search results")
        return self._rows.take(pa.array(idx)).to_pylist()

    def search_rows(self, queries: np.ndarray, k: int) -> list[list[dict]]:
        """search() + rows(): for each query, a list of up to k dicts {rank, score, row, id, <metadata>...}."""
        scores, idx = self.search(queries, k)
        out = []
        for s_row, i_row in zip(scores, idx):
            keep = i_row >= 0
            records = self.rows(i_row[keep])
            out.append([{"rank": r + 1, "score": float(s), "row": int(i), **rec}
                        for r, (s, i, rec) in enumerate(zip(s_row[keep], i_row[keep], records))])
        return out

    def set_search_params(self, nprobe: Optional[int] = None, ef_search: Optional[int] = None,
                          refine_k_factor: Optional[int] = None) -> None:
        """Change the query-time trade-off of an approximate index (ignored by exact)."""
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search), ("refine_k_factor", refine_k_factor)):
            if value is not None:
                if int(value) < (0 if name == "refine_k_factor" else 1):
                    raise ValueError(f"{name} must be >= {0 if name == 'refine_k_factor' else 1}, got {value}")
                self.params[name] = int(value)
        if self._faiss is not None:
            self._apply_query_params()

    def _apply_query_params(self) -> None:
        import faiss

        index = self._faiss
        if self.kind == "hnsw":
            index.hnsw.efSearch = int(self.params["ef_search"])
        else:
            if isinstance(index, faiss.IndexRefine) and self.params.get("refine_k_factor"):
                index.k_factor = float(self.params["refine_k_factor"])
            faiss.extract_index_ivf(index).nprobe = int(self.params["nprobe"])

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self, directory: PathLike) -> Path:
        """Write the index to `directory` (created; an existing index there is replaced). The files are written
        in a temporary sibling directory and renamed into place, so a reader never sees half an index."""
        directory = Path(directory)
        if directory.exists() and any(directory.iterdir()) and not (directory / INFO_FILE).is_file():
            raise ValueError(f"{directory} exists, is not empty and is not an index; refusing to overwrite it")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            pq.write_table(self._rows, tmp / ROWS_FILE)
            if self.kind == "exact":
                np.save(tmp / EMBEDDINGS_FILE, np.ascontiguousarray(self._embeddings), allow_pickle=False)
                files = {"rows": ROWS_FILE, "embeddings": EMBEDDINGS_FILE}
            else:
                import faiss

                faiss.write_index(self._faiss, str(tmp / FAISS_FILE))
                files = {"rows": ROWS_FILE, "faiss": FAISS_FILE}
            info = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim,
                    "rows": len(self), "params": self.params, "model_info": self.model_info, "files": files,
                    "columns": self.columns, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            if directory.exists():
                os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: PathLike, mmap: bool = False) -> "RetrievalIndex":
        """Read an index written by save(). mmap=True maps an exact index's vectors instead of reading them."""
        directory = Path(directory)
        info_path = directory / INFO_FILE
        if not info_path.is_file():
            raise FileNotFoundError(f"{directory} is not a retrieval index (no {INFO_FILE})")
        info = json.loads(info_path.read_text())
        if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{info_path}: unsupported index format {info.get('format')!r} "
                             f"version {info.get('format_version')!r}")
        rows = pq.read_table(directory / info["files"]["rows"])
        kind, dim = info["kind"], int(info["dim"])
        if kind == "exact":
            emb = np.load(directory / info["files"]["embeddings"], allow_pickle=False, mmap_mode="r" if mmap else None)
            if emb.shape != (rows.num_rows, dim) or emb.dtype != np.float32:
                raise ValueError(f"{directory}: embeddings {emb.shape} {emb.dtype} do not match {rows.num_rows} rows "
                                 f"x {dim} float32")
            return cls(kind=kind, dim=dim, rows=rows, params=info["params"], model_info=info["model_info"],
                       embeddings=emb)
        import faiss

        index = faiss.read_index(str(directory / info["files"]["faiss"]))
        if index.ntotal != rows.num_rows or index.d != dim:
            raise ValueError(f"{directory}: FAISS index has {index.ntotal} rows x {index.d}, metadata {rows.num_rows} "
                             f"rows x {dim}")
        return cls(kind=kind, dim=dim, rows=rows, params=info["params"], model_info=info["model_info"],
                   faiss_index=index)

    def __repr__(self) -> str:
        name = self.model_info.get("model_name")
        return (f"RetrievalIndex(kind={self.kind!r}, rows={len(self)}, dim={self.dim}"
                + (f", model={name!r}" if name else "") + ")")


# -- evaluation -----------------------------------------------------------------------------------------------

def recall_at_k(approx_idx: np.ndarray, exact_idx: np.ndarray, k: Optional[int] = None) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (padding -1 ignored)."""
    approx_idx, exact_idx = np.asarray(approx_idx), np.asarray(exact_idx)
    if approx_idx.shape[0] != exact_idx.shape[0]:
        raise ValueError(f"{approx_idx.shape[0]} approximate vs {exact_idx.shape[0]} exact result rows")
    k = k or exact_idx.shape[1]
    hits = []
    for a, e in zip(approx_idx[:, :k], exact_idx[:, :k]):
        truth = set(e[e >= 0].tolist())
        if truth:
            hits.append(len(truth.intersection(a[a >= 0].tolist())) / len(truth))
    return float(np.mean(hits)) if hits else float("nan")


# -- helpers --------------------------------------------------------------------------------------------------

def _as_matrix(embeddings, what: str) -> np.ndarray:
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty 2-D array [N, D], got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got {emb.dtype}")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        raise ValueError(f"{what} row {int(np.flatnonzero(~finite)[0])} has a NaN or infinite value")
    return emb


def _check_normalised(emb: np.ndarray, tol: float = 1e-2) -> None:
    norms = np.linalg.norm(emb, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > tol)
    if len(bad):
        raise ValueError(f"embeddings must be L2-normalised (score = inner product = cosine); row {int(bad[0])} "
                         f"has norm {norms[bad[0]]:.4f} ({len(bad)} rows off by > {tol}). Normalise them first, "
                         "e.g. emb / np.linalg.norm(emb, axis=1, keepdims=True)")


def _as_queries(queries, dim: int) -> np.ndarray:
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape [Q, {dim}] (or [{dim}]), got {np.asarray(queries).shape}")
    if not np.issubdtype(q.dtype, np.floating):
        raise ValueError(f"queries must be floating point, got {q.dtype}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN or infinite values")
    return q


def _rows_table(ids, metadata: Optional[pa.Table], n: int) -> pa.Table:
    ids = ids.cast(pa.string()) if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(
        [None if i is None else str(i) for i in ids], pa.string())
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} embeddings")
    if metadata is None:
        return pa.table({"id": ids})
    if not isinstance(metadata, pa.Table):
        raise ValueError(f"metadata must be a pyarrow Table, got {type(metadata).__name__}")
    if metadata.num_rows != n:
        raise ValueError(f"metadata has {metadata.num_rows} rows for {n} embeddings")
    if "id" in metadata.column_names:
        if not metadata.column("id").cast(pa.string()).equals(pa.chunked_array([ids]) if isinstance(ids, pa.Array)
                                                             else ids):
            raise ValueError("metadata column 'id' differs from ids")
        metadata = metadata.drop_columns(["id"])
    table = metadata.add_column(0, pa.field("id", pa.string()), ids)
    return table.combine_chunks()


def _resolve_params(params: Optional[dict], n: int, dim: int) -> dict:
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(f"unknown index params {unknown}; known: {sorted(DEFAULT_PARAMS)}")
    out = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if v is not None}}
    for name, value in out.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise ValueError(f"index param {name} must be an integer, got {value!r}")
    minimum = {"refine_k_factor": 0, "seed": 0, "exact_max_rows": 0}
    for name, value in out.items():
        if value is not None and value < minimum.get(name, 1):
            raise ValueError(f"index param {name} must be >= {minimum.get(name, 1)}, got {value}")
    if out["nbits"] is None:
        out["nbits"] = int(min(8, max(1, math.floor(math.log2(max(2, n // 39))))))
    if out["nlist"] is None:
        out["nlist"] = int(max(1, min(round(4 * math.sqrt(n)), n // 39)))
    if out["m"] is None:
        target = max(1, dim // 4)
        divisors = [d for d in range(1, dim + 1) if dim % d == 0]
        out["m"] = int(min(divisors, key=lambda d: (abs(d - target), -d)))
    if dim % out["m"]:
        raise ValueError(f"index param m={out['m']} must divide the embedding dimension {dim}")
    if out["train_rows"] is None:
        out["train_rows"] = int(min(n, max(64 * out["nlist"], 64 * 2 ** out["nbits"], 100_000)))
    out["train_rows"] = int(min(out["train_rows"], n))
    return {k: (int(v) if v is not None else None) for k, v in out.items()}


def _resolve_kind(kind: str, n: int, params: dict) -> str:
    if kind == "auto":
        return "exact" if n <= params["exact_max_rows"] else "ivf_pq"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS + ('auto',)}, got {kind!r}")
    if kind == "ivf_pq":
        if params["nlist"] > n:
            raise ValueError(f"index param nlist={params['nlist']} exceeds the {n} rows to index")
        if 2 ** params["nbits"] > params["train_rows"]:
            raise ValueError(f"index param nbits={params['nbits']} needs >= {2 ** params['nbits']} training rows, "
                             f"have {params['train_rows']}")
    return kind


def _json_safe(info: dict, what: str) -> dict:
    try:
        return json.loads(json.dumps(info))
    except TypeError as err:
        raise ValueError(f"{what} must be JSON-serialisable: {err}") from None


def _pad(scores: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q, have = idx.shape
    if have >= k:
        return scores[:, :k], idx[:, :k]
    return (np.concatenate([scores, np.full((q, k - have), -np.inf, np.float32)], axis=1),
            np.concatenate([idx, np.full((q, k - have), -1, np.int64)], axis=1))


def _exact_topk(emb: np.ndarray, q: np.ndarray, k: int, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    n = emb.shape[0]
    kk = min(k, n)
    # Keep the [Q, block] score matrix around 256 MB whatever the number of queries.
    block = max(1, min(block_rows, max(1024, (1 << 26) // max(1, q.shape[0]))))
    best_s = np.empty((q.shape[0], 0), np.float32)
    best_i = np.empty((q.shape[0], 0), np.int64)
    for start in range(0, n, block):
        s = q @ np.asarray(emb[start:start + block]).T
        if s.shape[1] > kk:
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            s = np.take_along_axis(s, part, axis=1)
            i = part.astype(np.int64) + start
        else:
            i = np.broadcast_to(np.arange(start, start + s.shape[1], dtype=np.int64), s.shape)
        best_s = np.concatenate([best_s, s], axis=1)
        best_i = np.concatenate([best_i, i], axis=1)
        if best_s.shape[1] > kk:
            part = np.argpartition(-best_s, kk - 1, axis=1)[:, :kk]
            best_s = np.take_along_axis(best_s, part, axis=1)
            best_i = np.take_along_axis(best_i, part, axis=1)
    order = np.lexsort((best_i, -best_s), axis=-1)  # score descending, then row ascending
    best_s = np.take_along_axis(best_s, order, axis=1).astype(np.float32)
    best_i = np.take_along_axis(best_i, order, axis=1)
    return _pad(best_s, best_i, k)


class _FaissBuilder:
    """Creates, trains and fills a FAISS index of the given kind with inner-product metric."""

    def __init__(self, kind: str, dim: int, params: dict):
        try:
            import faiss
        except ImportError as err:  # pragma: no cover - optional dependency
            raise RuntimeError(f"index kind {kind!r} needs FAISS: pip install faiss-cpu (or momu[index])") from err
        self.faiss, self.kind, self.params = faiss, kind, params
        if kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = params["ef_construction"]
        else:
            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"],
                                   faiss.METRIC_INNER_PRODUCT)
            ivf.cp.seed = params["seed"]
            ivf.pq.cp.seed = params["seed"]
            self.index = faiss.IndexRefineFlat(ivf) if params["refine_k_factor"] else ivf

    def train(self, sample: np.ndarray) -> None:
        if self.kind != "hnsw":
            self.index.train(sample)

    def add(self, emb: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(emb, dtype=np.float32))


def _training_sample(emb: np.ndarray, params: dict) -> np.ndarray:
    n = emb.shape[0]
    if params["train_rows"] >= n:
        return emb
    rng = np.random.default_rng(params["seed"])
    return emb[np.sort(rng.choice(n, params["train_rows"], replace=False))]


def _sample_from_shards(files: list[Path], counts: list[int], dim: int, params: dict) -> np.ndarray:
    n = sum(counts)
    rng = np.random.default_rng(params["seed"])
    picks = np.sort(rng.choice(n, params["train_rows"], replace=False))
    out, start = [], 0
    for f, count in zip(files, counts):
        local = picks[(picks >= start) & (picks < start + count)] - start
        if len(local):
            column = pq.read_table(f, columns=[EMBEDDING_COLUMN]).column(EMBEDDING_COLUMN)
            out.append(_embedding_matrix(column, dim, f)[local])
        start += count
    return np.concatenate(out)


def _embedding_dim(type_: pa.DataType, path) -> int:
    if pa.types.is_fixed_size_list(type_):
        return int(type_.list_size)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        column = pq.read_table(path, columns=[EMBEDDING_COLUMN]).column(EMBEDDING_COLUMN).combine_chunks()
        return int(len(column[0].values)) if len(column) else 0
    raise ValueError(f"{path}: column {EMBEDDING_COLUMN!r} has type {type_}, expected a list of floats")


def _embedding_matrix(column: pa.ChunkedArray, dim: int, path) -> np.ndarray:
    """An Arrow list/fixed-size-list column of float16/32 -> float32 [N, dim], re-normalised (float16 storage
    rounds the norm slightly off 1)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        raise ValueError(f"{path}: {column.null_count} null embeddings")
    values = column.flatten().to_numpy(zero_copy_only=False)
    if values.size != len(column) * dim:
        raise ValueError(f"{path}: embeddings are not all of dimension {dim}")
    emb = values.reshape(len(column), dim).astype(np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{path}: row {int(np.flatnonzero(norms[:, 0] == 0)[0])} has a zero embedding")
    return emb / norms


def _shard_files(source: PathLike) -> tuple[list[Path], dict]:
    """(sorted shard files, the embedding job's DONE.json content or {})."""
    path = Path(source)
    if path.is_dir():
        done = path / EMBED_DONE_FILE
        if done.is_file():
            info = json.loads(done.read_text())
            files = [path / f for f in info["shards"]]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{done} lists shards that are missing: {missing[:3]}")
            if not files:
                raise ValueError(f"{path}: the embedding run produced no shards (every row was rejected?)")
            return files, info
        if (path / "manifest.json").is_file():
            raise ValueError(f"{path}: this embedding run has not finished (no {EMBED_DONE_FILE}); run the same "
                             "`momu embed` command again to complete it, then build the index")
        files = sorted(f for f in path.iterdir() if f.suffix == ".parquet" and not f.name.startswith("."))
    elif _glob.has_magic(str(source)):
        files = sorted(Path(f) for f in _glob.glob(str(source)) if f.endswith(".parquet"))
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no such shard file, directory or glob: {str(source)!r}")
    if not files:
        raise ValueError(f"{source}: no Parquet shards found")
    return files, {}


def _shard_model_info(files: list[Path]) -> dict:
    """model_name / model_version / run_id from the shards' columns; they must agree across all shards
    (embeddings of two models are not comparable)."""
    seen: dict[str, set] = {}
    for f in files:
        schema = pq.ParquetFile(f).schema_arrow
        columns = [c for c in MODEL_COLUMNS if c in schema.names]
        if not columns:
            continue
        table = pq.read_table(f, columns=columns)
        for c in columns:
            seen.setdefault(c, set()).update(v for v in table.column(c).unique().to_pylist() if v is not None)
    info = {}
    for c, values in seen.items():
        if c != "run_id" and len(values) > 1:
            raise ValueError(f"shards mix embeddings of different models: {c} = {sorted(values)}")
        if values:
            info[c] = sorted(values)[0] if len(values) == 1 else sorted(values)
    return info


def _progress(enabled: bool, total: int, desc: str):
    from momu.job_output import progress_bar

    return progress_bar(total=total, desc=desc, unit="row", disable=not enabled)
