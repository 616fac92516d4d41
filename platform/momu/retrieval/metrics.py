"""Retrieval metrics over normalised graph/text embeddings and score matrices (pure torch, no Ray).

Protocols (see ../shared/docs/MOMU_REFERENCE.md):
- MoMu: 1-of-64 in-batch accuracy over consecutive, unshuffled batches in file order (a shorter last batch counts
  as is) and Recall@20 against the whole set; paragraph level (one text per molecule) or sentence level (a
  molecule's score against a text is the mean of its scores against the text's sentences).
- Full rank: MRR, Recall@1/5/10, mean and median rank of the true partner among all candidates.
- Text2Mol: each text ranks a larger molecule pool (its true molecule is one of the pool's entries).

Scores are `graph x text` matrices: row i = graph i, column j = text j; the true pairs are on the diagonal.
"graph->text" (g2t) ranks a row's texts, "text->graph" (t2g) ranks a column's graphs.

Ties: a rank is 1 + the number of candidates scoring higher + (with `ties`) the candidates scoring exactly the
same as the true one: "pessimistic" (all of them, the default; what `inbatch_accuracy` does), "optimistic"
(none) or "expected" (the expectation under random tie-breaking, so metrics may be fractional per query).
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import torch

TIE_POLICIES = ("pessimistic", "optimistic", "expected")
DEFAULT_KS = (1, 5, 10)


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


# -- ranks ------------------------------------------------------------------------------------------------------

class Ranks:
    """Per query: how many candidates score strictly higher than the true one (`greater`) and how many score
    exactly the same (`equal`, the true one excluded). Metrics follow from these under a tie policy."""

    def __init__(self, greater: torch.Tensor, equal: torch.Tensor, num_candidates: int):
        self.greater = greater.long()
        self.equal = equal.long()
        self.num_candidates = int(num_candidates)

    def __len__(self) -> int:
        return int(self.greater.numel())

    @property
    def tied_queries(self) -> int:
        return int((self.equal > 0).sum())

    def cat(self, other: "Ranks") -> "Ranks":
        return Ranks(torch.cat([self.greater, other.greater]), torch.cat([self.equal, other.equal]),
                     max(self.num_candidates, other.num_candidates))

    def ranks(self, ties: str = "pessimistic") -> torch.Tensor:
        """1-based rank of each query's true candidate (float64; x.5 values possible with "expected")."""
        _check_ties(ties)
        g, e = self.greater.double(), self.equal.double()
        if ties == "pessimistic":
            return g + e + 1
        if ties == "optimistic":
            return g + 1
        return g + 1 + e / 2

    def hit_rate(self, k: int, ties: str = "pessimistic") -> torch.Tensor:
        """Per query, P(rank <= k): 0/1 for pessimistic/optimistic, a fraction under random tie-breaking."""
        _check_ties(ties)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if ties != "expected":
            return (self.ranks(ties) <= k).double()
        g, e = self.greater.double(), self.equal.double()
        # The true rank is uniform on g+1 .. g+e+1: (k - g) of those e+1 positions are <= k.
        return ((k - g) / (e + 1)).clamp(0.0, 1.0)

    def reciprocal_ranks(self, ties: str = "pessimistic") -> torch.Tensor:
        _check_ties(ties)
        if ties != "expected":
            return 1.0 / self.ranks(ties)
        g, e = self.greater.double(), self.equal.double()
        # mean of 1/r over r = g+1 .. g+e+1 = (H(g+e+1) - H(g)) / (e+1), H(n) = digamma(n+1) + gamma.
        return (torch.special.digamma(g + e + 2) - torch.special.digamma(g + 1)) / (e + 1)


def _check_ties(ties: str) -> None:
    if ties not in TIE_POLICIES:
        raise ValueError(f"ties must be one of {TIE_POLICIES}, got {ties!r}")


def _check_scores(scores: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D [queries, candidates] matrix, got shape {tuple(scores.shape)}")
    if scores.numel() and not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")


def rank_true(scores: torch.Tensor, targets: Optional[torch.Tensor] = None, chunk: int = 4096) -> Ranks:
    """Rank each query's true candidate among all candidates.

    scores [Q, C] (row = query); targets [Q] = the true candidate's column (default: the diagonal, Q <= C)."""
    _check_scores(scores)
    q, c = scores.shape
    if targets is None:
        if q > c:
            raise ValueError(f"diagonal targets need queries <= candidates, got {q} x {c}")
        targets = torch.arange(q)
    targets = torch.as_tensor(targets, dtype=torch.long, device=scores.device)
    if targets.shape != (q,):
        raise ValueError(f"targets must have one entry per query ({q}), got shape {tuple(targets.shape)}")
    if q and (targets.min() < 0 or targets.max() >= c):
        raise ValueError(f"targets must index the {c} candidates")
    greater, equal = [], []
    for start in range(0, q, chunk):
        block = scores[start:start + chunk]
        own = block.gather(1, targets[start:start + chunk].unsqueeze(1))
        greater.append((block > own).sum(1))
        equal.append((block == own).sum(1) - 1)
    if not greater:
        return Ranks(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), c)
    return Ranks(torch.cat(greater).cpu(), torch.cat(equal).cpu(), c)


def rank_metrics(ranks: Ranks, ks: Sequence[int] = DEFAULT_KS, ties: str = "pessimistic") -> dict[str, float]:
    """MRR, recall_<k> for each k, mean and median rank (1-based), and how many queries had tied scores."""
    if len(ranks) == 0:
        raise ValueError("no queries to evaluate")
    r = ranks.ranks(ties)
    out = {"mrr": float(ranks.reciprocal_ranks(ties).mean())}
    for k in ks:
        out[f"recall_{k}"] = float(ranks.hit_rate(k, ties).mean())
    out["mean_rank"] = float(r.mean())
    out["median_rank"] = float(r.median()) if len(r) % 2 else float(r.sort().values[len(r) // 2 - 1:len(r) // 2 + 1].mean())
    out["tied_queries"] = float(ranks.tied_queries)
    return out


# -- MoMu's protocol --------------------------------------------------------------------------------------------

def batch_bounds(n: int, batch_size: int = 64) -> list[tuple[int, int]]:
    """Consecutive [start, end) batches over n rows in order; the last one may be shorter."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def inbatch_ranks(scores: torch.Tensor, batch_size: int = 64) -> tuple[Ranks, Ranks]:
    """(g2t, t2g) ranks within consecutive, unshuffled diagonal blocks of a square graph x text matrix."""
    _check_scores(scores)
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"in-batch accuracy needs a square graph x text matrix, got {tuple(scores.shape)}")
    g2t = t2g = None
    for start, end in batch_bounds(scores.shape[0], batch_size):
        block = scores[start:end, start:end]
        a, b = rank_true(block), rank_true(block.t())
        g2t, t2g = (a, b) if g2t is None else (g2t.cat(a), t2g.cat(b))
    if g2t is None:
        raise ValueError("no rows to evaluate")
    return g2t, t2g


def inbatch_accuracy_scores(scores: torch.Tensor, batch_size: int = 64, ties: str = "pessimistic") -> dict[str, float]:
    """MoMu's 1-of-`batch_size` accuracy from a square graph x text score matrix (pairs on the diagonal),
    both directions, plus `chance` (= number of batches / rows). With ties="pessimistic" it equals
    `inbatch_accuracy` on the embeddings."""
    g2t, t2g = inbatch_ranks(scores, batch_size)
    n = scores.shape[0]
    return {"acc_g2t": float(g2t.hit_rate(1, ties).mean()), "acc_t2g": float(t2g.hit_rate(1, ties).mean()),
            "chance": len(batch_bounds(n, batch_size)) / n}


def direction_metrics(scores: torch.Tensor, batch_size: int = 64, recall_k: int = 20,
                      ks: Sequence[int] = DEFAULT_KS, ties: str = "pessimistic") -> dict[str, dict[str, float]]:
    """Every metric of both protocols for a square graph x text matrix, per direction:
    acc_<batch_size> (MoMu in-batch), recall_<recall_k> (MoMu, whole set), mrr, recall_<k>, mean/median rank."""
    inb_g2t, inb_t2g = inbatch_ranks(scores, batch_size)
    out = {}
    for direction, matrix, inbatch in (("g2t", scores, inb_g2t), ("t2g", scores.t(), inb_t2g)):
        full = rank_true(matrix)
        metrics = {f"acc_{batch_size}": float(inbatch.hit_rate(1, ties).mean()),
                   f"recall_{recall_k}": float(full.hit_rate(recall_k, ties).mean())}
        metrics.update(rank_metrics(full, ks, ties))
        out[direction] = metrics
    return out


# -- sentence level ---------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def split_sentences(text: str, min_words: int = 5) -> list[str]:
    """MoMu's sentence split: pieces of `text` between '.' characters with at least `min_words` words
    (whitespace-separated; MoMu counted `piece.split(' ')`, where the space after a '.' adds one empty
    "word"). Pieces are whitespace-normalised. May return [] (the caller decides on a fallback)."""
    pieces = (_WS.sub(" ", p).strip() for p in text.split("."))
    return [p for p in pieces if len(p.split()) >= min_words]


def sentences_with_fallback(texts: Sequence[str], min_words: int = 5) -> tuple[list[str], list[int], int]:
    """Flatten every text's sentences: (sentences, offsets [len(texts)+1], texts that fell back to the whole
    text because no piece had `min_words` words; MoMu's finetuning reader kept one piece in that case too)."""
    sentences, offsets, fallbacks = [], [0], 0
    for text in texts:
        pieces = split_sentences(text, min_words)
        if not pieces:
            pieces = [_WS.sub(" ", text).strip()]
            fallbacks += 1
        sentences.extend(pieces)
        offsets.append(len(sentences))
    return sentences, offsets, fallbacks


def sentence_level_scores(graph_emb: torch.Tensor, sentence_emb: torch.Tensor, offsets: Sequence[int],
                          chunk: int = 2048) -> torch.Tensor:
    """[G, T] scores: graph i vs text j = mean over text j's sentences of cosine(graph i, sentence).
    `offsets` [T+1]: text j owns sentence rows offsets[j]:offsets[j+1] (each text needs >= 1)."""
    offsets_t = torch.as_tensor(list(offsets), dtype=torch.long)
    if offsets_t.dim() != 1 or len(offsets_t) < 2 or offsets_t[0] != 0 or offsets_t[-1] != sentence_emb.shape[0]:
        raise ValueError(f"offsets must run from 0 to the {sentence_emb.shape[0]} sentences")
    counts = offsets_t.diff()
    if (counts < 1).any():
        raise ValueError(f"text {int(torch.nonzero(counts < 1)[0])} has no sentence")
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts).to(graph_emb.device)
    num_texts = len(counts)
    out = []
    for start in range(0, graph_emb.shape[0], chunk):
        per_sentence = graph_emb[start:start + chunk] @ sentence_emb.t()
        sums = per_sentence.new_zeros(per_sentence.shape[0], num_texts).index_add_(1, owner, per_sentence)
        out.append(sums / counts.to(sums.dtype).to(sums.device))
    return torch.cat(out) if out else graph_emb.new_zeros(0, num_texts)


# -- Text2Mol pool ----------------------------------------------------------------------------------------------

def pool_metrics(text_emb: torch.Tensor, pool_graph_emb: torch.Tensor, targets: torch.Tensor,
                 ks: Sequence[int] = DEFAULT_KS, ties: str = "pessimistic") -> dict[str, float]:
    """Text2Mol's protocol: each text ranks every molecule of the pool; targets[j] = pool row of text j's
    molecule. MRR, recall_<k> (Text2Mol's Hits@k), mean and median rank, pool size."""
    ranks = rank_true(text_emb @ pool_graph_emb.t(), targets)
    return {**rank_metrics(ranks, ks, ties), "pool_size": float(pool_graph_emb.shape[0])}


# -- chance -----------------------------------------------------------------------------------------------------

def chance_rank_metrics(num_candidates: int, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Expected full-rank metrics when the true candidate's rank is uniform on 1..num_candidates."""
    n = int(num_candidates)
    if n < 1:
        raise ValueError("need at least one candidate")
    harmonic = float(torch.special.digamma(torch.tensor(n + 1.0, dtype=torch.float64))) + 0.5772156649015329
    return {"mrr": harmonic / n, **{f"recall_{k}": min(k, n) / n for k in ks},
            "mean_rank": (n + 1) / 2, "median_rank": (n + 1) / 2, "tied_queries": 0.0}


def chance_direction_metrics(n: int, batch_size: int = 64, recall_k: int = 20,
                             ks: Sequence[int] = DEFAULT_KS) -> dict[str, dict[str, float]]:
    """What `direction_metrics` gives in expectation for random scores over n pairs (same in both directions).
    The median is that of the uniform distribution, not the expected sample median."""
    per = {f"acc_{batch_size}": len(batch_bounds(n, batch_size)) / n, f"recall_{recall_k}": min(recall_k, n) / n,
           **chance_rank_metrics(n, ks)}
    return {"g2t": dict(per), "t2g": dict(per)}


def flatten_metrics(nested: dict, prefix: str = "", sep: str = "/") -> dict[str, float]:
    """{'paragraph': {'g2t': {'mrr': x}}} -> {'paragraph/g2t/mrr': x} (MLflow-safe names)."""
    out = {}
    for key, value in nested.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten_metrics(value, name, sep))
        elif isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            out[name] = float(value)
    return out
