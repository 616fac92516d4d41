"""Retrieval metrics over normalised graph/text embeddings (pure torch)."""

from __future__ import annotations

import torch


def _strict_top1_hits(scores: torch.Tensor) -> int:
    """Rows whose diagonal entry is strictly greater than every other entry (ties count as misses)."""
    own = scores.diag().unsqueeze(1)
    return int(((scores >= own).sum(1) == 1).sum())


def inbatch_accuracy(graph_emb: torch.Tensor, text_emb: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """MoMu's 1-of-`batch_size` accuracy: cut the (unshuffled) rows into consecutive batches; each graph must
    rank its own text first within its batch (g2t) and vice versa (t2g). A last, smaller batch counts as is.
    `chance` is the expected accuracy of random scores under the same batching."""
    if graph_emb.shape != text_emb.shape:
        raise ValueError(f"graph and text embeddings differ in shape: {tuple(graph_emb.shape)} vs {tuple(text_emb.shape)}")
    n = graph_emb.shape[0]
    if n == 0:
        raise ValueError("no rows to evaluate")
    hits_g2t = hits_t2g = batches = 0
    for start in range(0, n, batch_size):
        scores = graph_emb[start:start + batch_size] @ text_emb[start:start + batch_size].t()
        hits_g2t += _strict_top1_hits(scores)
        hits_t2g += _strict_top1_hits(scores.t())
        batches += 1  # each batch contributes exactly one expected hit by chance (size * 1/size)
    return {"acc_g2t": hits_g2t / n, "acc_t2g": hits_t2g / n, "chance": batches / n}
