"""Vector index over MoMu embeddings (exact numpy or FAISS IVF-PQ / HNSW); pure numpy/pyarrow, no Ray."""

from momu.index.vector_index import DEFAULT_PARAMS, KINDS, RetrievalIndex, recall_at_k

__all__ = ["RetrievalIndex", "recall_at_k", "DEFAULT_PARAMS", "KINDS"]
