"""Config of index building (`momu index build`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from momu.config import StrictModel


class IndexParamsSection(StrictModel):
    """FAISS / exact-search parameters (momu.index.DEFAULT_PARAMS; null = derived from the data)."""

    exact_max_rows: int = Field(200_000, ge=0, description="kind auto: exact search up to this many rows, else ivf_pq")
    nlist: Optional[int] = Field(None, ge=1, description="ivf_pq inverted lists (default ~4*sqrt(rows))")
    m: Optional[int] = Field(None, ge=1, description="ivf_pq sub-quantizers = bytes per row (default dim/4)")
    nbits: Optional[int] = Field(None, ge=1, le=16, description="ivf_pq bits per code (default 8)")
    nprobe: int = Field(32, ge=1, description="ivf_pq lists visited per query")
    train_rows: Optional[int] = Field(None, ge=1, description="ivf_pq training sample size")
    refine_k_factor: int = Field(0, ge=0, description="ivf_pq: re-rank k*factor candidates exactly (0 = off)")
    hnsw_m: int = Field(32, ge=2, description="hnsw graph degree")
    ef_construction: int = Field(100, ge=1)
    ef_search: int = Field(64, ge=1, description="hnsw candidates per query")
    seed: int = Field(0, ge=0)


class IndexBuildConfig(StrictModel):
    """Build a vector index over embedding shards (`momu index build`, jobs/build_index.py)."""

    shards: str = Field("runs/embeddings/default", description="embedding job output dir, a dir of Parquet "
                        "shards, or a glob")
    output: str = Field("runs/index/default", description="index directory to write")
    kind: Literal["auto", "exact", "ivf_pq", "hnsw"] = "auto"
    params: IndexParamsSection = Field(default_factory=IndexParamsSection)
    recall_queries: int = Field(1000, ge=0, description="approximate kinds: measure recall@recall_k against exact "
                                "search on this many indexed rows used as queries (0 = skip)")
    recall_k: int = Field(10, ge=1)
    mlflow_tracking_uri: Optional[str] = None
    mlflow_experiment: str = "momu-index"
