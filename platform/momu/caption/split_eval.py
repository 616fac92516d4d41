"""`momu evaluate caption-retrieval`: caption an evaluated split (ChEBI-20 test) with retrieval captioners and score
them with MolT5's metrics. Writes one MolT5-format predictions file per captioner (so `momu evaluate caption
--predictions` re-scores it) and metrics.json with pool size, removals and captioning time.

Captioners: `random` (a random pool caption, seeded: the floor), `tanimoto`, `momu`, `fusion` (see
momu.caption.retrieval). A split molecule RDKit cannot read gets an empty caption (it scores 0), and is counted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from momu.caption.config import CaptionRetrievalEvalConfig
from momu.caption.metrics import score_captions
from momu.caption.pool import read_caption_source
from momu.caption.predictions import write_predictions
from momu.caption.retrieval import CaptionPool, RetrievalCaptioner, load_captioner


def evaluate_split(config: CaptionRetrievalEvalConfig, log=print) -> dict:
    """Run every captioner of config.kinds on config.split; returns (and writes) the metrics table."""
    split = read_caption_source(config.split)
    smiles, references = split.smiles, split.captions
    if config.limit:
        smiles, references = smiles[:config.limit], references[:config.limit]
    pool = CaptionPool(config.captioner)
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"split": str(Path(config.split).resolve()), "rows": len(smiles), "pool": str(pool.path.resolve()),
               "pool_rows": len(pool), "pool_removed": pool.manifest["removed"],
               "pool_excluded": pool.manifest["excluded"], "captioners": {}}
    overlap = set(split.cids) & set(pool.cids)
    if overlap:  # a pool built without this split's removal would report retrieval of the answer itself
        log(f"warning: {len(overlap)} CIDs of {config.split} are in the pool (e.g. {sorted(overlap)[:3]}); "
            "build the pool with this split in `exclude`")
    results["split_cids_in_pool"] = len(overlap)
    for kind in config.kinds:
        started = time.perf_counter()
        unreadable = 0
        if kind == "random":
            rng = np.random.default_rng(config.seed)
            outputs = [pool.captions[i] for i in rng.integers(0, len(pool), size=len(smiles))]
            extra = {"seed": config.seed}
        else:
            captioner = (RetrievalCaptioner(pool, kind) if kind == "tanimoto" else
                         load_captioner(pool.path, kind, config.model, config.fusion_k, config.fusion_weight))
            load_s = time.perf_counter() - started
            started = time.perf_counter()
            outputs = []
            for result in captioner.caption_smiles(smiles):
                readable = hasattr(result, "caption")
                unreadable += not readable
                outputs.append(result.caption if readable else "")
            extra = {"captioner": captioner.name, "version": captioner.version, "load_s": round(load_s, 2)}
        seconds = time.perf_counter() - started
        path = write_predictions(out_dir / f"predictions_{kind}.tsv", smiles, references, outputs)
        scores = score_captions(references, outputs, with_meteor=config.meteor).as_dict()
        results["captioners"][kind] = {**scores, **extra, "predictions": str(path), "unreadable_smiles": unreadable,
                                       "caption_s": round(seconds, 2),
                                       "molecules_per_s": round(len(smiles) / seconds, 1) if seconds else None}
        log(format_row(kind, results["captioners"][kind]))
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


COLUMNS = (("bleu2", "BLEU-2"), ("bleu4", "BLEU-4"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"),
           ("rougeL", "ROUGE-L"), ("meteor", "METEOR"))


def format_row(kind: str, row: dict) -> str:
    values = " ".join(f"{label} {'-' if row[key] is None else format(row[key], '.2f')}" for key, label in COLUMNS)
    return f"{kind:<9} {values}  ({row['molecules_per_s']} molecules/s)"


def markdown_table(results: dict) -> str:
    """The metrics as a Markdown table (x100, MolT5 recipe)."""
    head = "| captioner | " + " | ".join(label for _, label in COLUMNS) + " | molecules/s |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for kind, row in results["captioners"].items():
        cells = ["-" if row[k] is None else f"{row[k]:.2f}" for k, _ in COLUMNS]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {row['molecules_per_s']} |")
    return "\n".join(lines)


def caption_split_with_decoder(captioner_dir: str, split_path: str, metrics_path: Path, limit=None,
                               shuffle_graphs: bool = False, with_meteor: bool = True, seed: int = 0,
                               rerank_k=None, prior_dir=None) -> dict:
    """Caption a split with a decoder captioner (generating, or reranking the rerank_k nearest pool captions;
    optionally with shuffled graphs), write MolT5-format predictions beside metrics_path and score them."""
    from momu.caption.captioner import DecoderCaptioner

    split = read_caption_source(split_path)
    smiles, references = split.smiles[:limit], split.captions[:limit]
    started = time.perf_counter()
    captioner = DecoderCaptioner(captioner_dir)
    from momu.caption.retrieval import CaptionPool

    overlap = set(split.cids) & set(CaptionPool(captioner.path / "pool").cids)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    shuffle = seed if shuffle_graphs else None
    prior = DecoderCaptioner(prior_dir) if prior_dir else None
    results = (captioner.rerank_smiles(smiles, k=rerank_k, shuffle_graphs_seed=shuffle, prior=prior) if rerank_k else
               captioner.caption_smiles(smiles, shuffle_graphs_seed=shuffle))
    seconds = time.perf_counter() - started
    outputs = [r.caption if hasattr(r, "caption") else "" for r in results]
    metrics_path = Path(metrics_path)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    name = (f"rerank{'-pmi' if prior_dir else ''}{rerank_k}-" if rerank_k else "") + captioner.name + ("-shuffled" if shuffle_graphs else "")
    path = write_predictions(metrics_path.parent / f"predictions_{name}.tsv", smiles, references, outputs)
    scores = score_captions(references, outputs, with_meteor=with_meteor).as_dict()
    metrics = {"predictions": str(path), **scores, "captioner": name, "version": captioner.version,
               "split": str(Path(split_path).resolve()), "split_cids_in_pool": len(overlap),
               "unreadable_smiles": sum(not hasattr(r, "caption") for r in results),
               "shuffle_graphs_seed": seed if shuffle_graphs else None, "load_s": round(load_s, 2),
               "caption_s": round(seconds, 2), "molecules_per_s": round(len(smiles) / seconds, 2) if seconds else None,
               "training": captioner.meta.get("training")}
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
