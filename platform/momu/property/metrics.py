"""Property-prediction losses and metrics with missing labels (NaN = missing), as in MoleculeNet benchmarks.

- `masked_bce_with_logits`: multi-task binary cross-entropy averaged over the present labels only.
- `roc_auc`: tie-aware ROC-AUC of one task (Mann-Whitney U with average ranks; equals sklearn's roc_auc_score).
- `multitask_roc_auc`: per-task ROC-AUC over the molecules that have that label; tasks whose present labels are all
  one class are skipped (ROC-AUC is undefined there), as pretrain-gnns does; the score is the mean over the rest.
- `masked_mse` / `multitask_rmse` for regression (ESOL, FreeSolv, Lipophilicity).

Pure torch / numpy: no Ray.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch


def _present(labels: torch.Tensor) -> torch.Tensor:
    return ~torch.isnan(labels)


def masked_bce_with_logits(logits: torch.Tensor, labels: torch.Tensor,
                           pos_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean BCE over present labels ([B, T] logits, [B, T] labels in {0, 1} or NaN). 0 (with a gradient path)
    when nothing in the batch is labelled."""
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    mask = _present(labels)
    target = torch.where(mask, labels, torch.zeros_like(labels))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none",
                                                                pos_weight=pos_weight)
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    return loss.sum() / mask.sum().clamp_min(1)


def masked_mse(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error over present labels."""
    if pred.shape != labels.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(labels.shape)} differ in shape")
    mask = _present(labels)
    diff = torch.where(mask, pred - torch.where(mask, labels, torch.zeros_like(labels)), torch.zeros_like(pred))
    return diff.pow(2).sum() / mask.sum().clamp_min(1)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(labels: Sequence[float], scores: Sequence[float]) -> float:
    """ROC-AUC of one task (labels 0/1, no NaN). Raises ValueError when only one class is present."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels and {len(s)} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("ROC-AUC labels must be 0 or 1")
    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC is undefined when only one class is present")
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclasses.dataclass
class TaskScores:
    """Per-task metric values (None where a task was skipped) and their mean over the scored tasks."""

    per_task: list[Optional[float]]
    task_names: list[str]
    metric: str

    @property
    def scored(self) -> list[float]:
        return [v for v in self.per_task if v is not None]

    @property
    def num_scored(self) -> int:
        return len(self.scored)

    @property
    def skipped(self) -> list[str]:
        return [name for name, v in zip(self.task_names, self.per_task) if v is None]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scored)) if self.scored else float("nan")


def multitask_roc_auc(labels: np.ndarray, scores: np.ndarray, task_names: Optional[Sequence[str]] = None,
                      min_per_class: int = 1) -> TaskScores:
    """Per-task ROC-AUC over present labels ([N, T] arrays, NaN = missing). A task is skipped (None) unless it
    has at least `min_per_class` positives and negatives among its present labels."""
    labels, scores = _as_2d(labels), _as_2d(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    names = list(task_names) if task_names is not None else [f"task_{t}" for t in range(labels.shape[1])]
    per_task: list[Optional[float]] = []
    for t in range(labels.shape[1]):
        present = ~np.isnan(labels[:, t])
        y = labels[present, t]
        n_pos = int((y == 1).sum())
        if n_pos < min_per_class or len(y) - n_pos < min_per_class:
            per_task.append(None)
            continue
        per_task.append(roc_auc(y, scores[present, t]))
    return TaskScores(per_task, names, "roc_auc")


def multitask_rmse(labels: np.ndarray, preds: np.ndarray, task_names: Optional[Sequence[str]] = None) -> TaskScores:
    """Per-task RMSE over present labels; tasks without any label are skipped."""
    labels, preds = _as_2d(labels), _as_2d(preds)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and predictions {preds.shape} differ in shape")
    names = list(task_names) if task_names is not None else [f"task_{t}" for t in range(labels.shape[1])]
    per_task: list[Optional[float]] = []
    for t in range(labels.shape[1]):
        present = ~np.isnan(labels[:, t])
        per_task.append(float(np.sqrt(np.mean((preds[present, t] - labels[present, t]) ** 2)))
                        if present.any() else None)
    return TaskScores(per_task, names, "rmse")


def _as_2d(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr[:, None] if arr.ndim == 1 else arr
