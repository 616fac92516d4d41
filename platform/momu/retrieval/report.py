"""Markdown tables for retrieval results (what `momu evaluate retrieval` prints, saves and logs)."""

from __future__ import annotations

from typing import Optional, Sequence

DIRECTIONS = (("g2t", "G→T"), ("t2g", "T→G"))


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value: Optional[float]) -> str:
    return "–" if value is None else (f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]

    def line(cells) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _get(result: dict, *keys) -> Optional[float]:
    for key in keys:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def retrieval_tables(results: dict[str, dict], *, n: int, batch_size: int = 64, recall_k: int = 20,
                     ks: Sequence[int] = (1, 5, 10), pool_size: Optional[int] = None,
                     levels: Sequence[str] = ("paragraph", "sentence")) -> str:
    """results: {row name: {level: {direction: metrics}, "pool": metrics}} -> markdown (three tables)."""
    acc, rec = f"acc_{batch_size}", f"recall_{recall_k}"
    header = ["model"]
    for level in levels:
        header += [f"{level[:4]}. Acc {d}" for _, d in DIRECTIONS] + [f"{level[:4]}. R@{recall_k} {d}" for _, d in DIRECTIONS]
    rows = []
    for name, result in results.items():
        row = [name]
        for level in levels:
            row += [_pct(_get(result, level, key, acc)) for key, _ in DIRECTIONS]
            row += [_pct(_get(result, level, key, rec)) for key, _ in DIRECTIONS]
        rows.append(row)
    parts = [f"MoMu protocol, {n} pairs: 1-of-{batch_size} in-batch accuracy (consecutive batches in file order) "
             f"and Recall@{recall_k} against all {n} (%)", "", _table(header, rows), ""]

    header = ["model", "level", "direction", "MRR"] + [f"R@{k}" for k in ks] + ["mean rank", "median rank"]
    rows = []
    for name, result in results.items():
        for level in levels:
            for key, label in DIRECTIONS:
                m = _get(result, level, key)
                if m is None:
                    continue
                rows.append([name, level, label, _pct(m.get("mrr"))] + [_pct(m.get(f"recall_{k}")) for k in ks]
                            + [_num(m.get("mean_rank")), _num(m.get("median_rank"))])
    parts += [f"Full rank over all {n} candidates (MRR and R@k in %)", "", _table(header, rows), ""]

    if pool_size:
        header = ["model", "MRR"] + [f"Hits@{k}" for k in ks] + ["mean rank", "median rank"]
        rows = []
        for name, result in results.items():
            m = _get(result, "pool")
            if m is None:
                continue
            rows.append([name, _pct(m.get("mrr"))] + [_pct(m.get(f"recall_{k}")) for k in ks]
                        + [_num(m.get("mean_rank")), _num(m.get("median_rank"))])
        parts += [f"Text2Mol-style: each of the {n} texts ranks a pool of {pool_size} molecules (text → molecule; "
                  "MRR and Hits in %)", "", _table(header, rows), ""]
    return "\n".join(parts)
