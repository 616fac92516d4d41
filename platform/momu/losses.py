"""Contrastive losses: MoMu's symmetric InfoNCE family (with optional cross-worker negatives) and VSE++."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn import functional as F

# (graph view, text view) pairs of MoMu's four losses.
LOSS_PAIRS = {"g1t1": (0, 0), "g1t2": (0, 1), "g2t1": (1, 0), "g2t2": (1, 1)}


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 across the default process group, keeping gradients for every shard."""
    import torch.distributed.nn.functional as dist_nn

    return torch.cat(dist_nn.all_gather(x), dim=0)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info_nce(graph_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.1,
             gather_negatives: bool = False) -> torch.Tensor:
    """(CE(graph->text) + CE(text->graph)) / 2 over normalised embeddings, positives on the diagonal.

    With `gather_negatives` in a multi-worker run, each worker scores its local rows against every worker's
    batch (all-gather with gradient), so negatives come from the global batch; MoMu itself used only the
    per-GPU batch. The loss is each worker's local mean; DDP's gradient averaging makes it the global mean.
    """
    if gather_negatives and _distributed():
        all_graph, all_text = gather_with_grad(graph_emb), gather_with_grad(text_emb)
        offset = dist.get_rank() * graph_emb.shape[0]
    else:
        all_graph, all_text, offset = graph_emb, text_emb, 0
    labels = torch.arange(graph_emb.shape[0], device=graph_emb.device) + offset
    logits_g2t = graph_emb @ all_text.t() / temperature
    logits_t2g = text_emb @ all_graph.t() / temperature
    return (F.cross_entropy(logits_g2t, labels) + F.cross_entropy(logits_t2g, labels)) / 2


def momu_contrastive_loss(graph_views: tuple[torch.Tensor, torch.Tensor], text_views: tuple[torch.Tensor, torch.Tensor],
                          temperature: float = 0.1, pairs=tuple(LOSS_PAIRS), gather_negatives: bool = False) -> torch.Tensor:
    """MoMu's objective: the mean of the symmetric InfoNCE losses over the chosen (graph view, text view) pairs."""
    if not pairs:
        raise ValueError("at least one loss pair is needed")
    terms = [info_nce(graph_views[LOSS_PAIRS[p][0]], text_views[LOSS_PAIRS[p][1]], temperature, gather_negatives)
             for p in pairs]
    return torch.stack(terms).mean()


def vse_max_violation_loss(graph_emb: torch.Tensor, text_emb: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """VSE++ hinge with the hardest in-batch negative in each direction (cosine similarities; summed)."""
    scores = graph_emb @ text_emb.t()
    positives = scores.diag()
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    cost_text = (margin + scores - positives.unsqueeze(1)).clamp_min(0).masked_fill(eye, 0)  # graph -> wrong text
    cost_graph = (margin + scores - positives.unsqueeze(0)).clamp_min(0).masked_fill(eye, 0)  # text -> wrong graph
    return cost_text.max(1).values.sum() + cost_graph.max(0).values.sum()
