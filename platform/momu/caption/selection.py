"""Choose the captioner (and its settings) on held-out pool molecules, never on the test split.

`momu evaluate caption-selection --captioner <decoder export> --model momu-cpu` captions the decoder's held-out
molecules (the `val_fraction` of the pool its training never saw, by the same id hash) with

    tanimoto            the nearest other pool molecule's caption (nearest-neighbour copying: the floor to beat)
    fusion k / w        Tanimoto top-k re-ranked by w * MoMu cos(graph, candidate caption) + (1 - w) * Tanimoto
    rerank k            the decoder's likelihood over the k Tanimoto-nearest captions
    rerank-pmi k        the same with the no-graph decoder's likelihood subtracted (--prior): what the graph adds
    decoder             the decoder's own beam-search caption

each query leaving itself out of the pool (leave-one-out), scores them with MolT5's metrics and names the best
by the mean of the six. Pure torch / RDKit / numpy: no Ray.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from rdkit import DataStructs

from momu.caption.metrics import score_captions

METRICS = ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor")


def held_out_rows(meta: dict, pool) -> list[int]:
    """Rows of the captioner's pool that its decoder held out from training (same hash, same fraction)."""
    from momu.caption.decoder_data import is_validation

    fraction = meta["training"]["data"]["val_fraction"]
    return [i for i, identifier in enumerate(pool.ids) if is_validation(identifier, fraction)]


def _leave_one_out_tanimoto(pool, row: int) -> np.ndarray:
    sims = np.asarray(DataStructs.BulkTanimotoSimilarity(pool.fingerprints[row], pool.fingerprints), np.float64)
    sims[row] = -1.0  # the query itself is not in its own pool
    return sims


def select_captioner(captioner_dir: str, model: str, output: Path, limit: Optional[int] = None,
                     fusion_ks: Sequence[int] = (5, 10, 20), fusion_weights: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                     rerank_ks: Sequence[int] = (3, 5, 10, 20), generate: bool = True, with_meteor: bool = True,
                     prior_dir: Optional[str] = None, log=print) -> dict:
    """Score every candidate captioner on the held-out rows (leave-one-out); writes and returns the table."""
    from momu.caption.captioner import DecoderCaptioner
    from momu.caption.retrieval import load_captioner

    captioner = DecoderCaptioner(captioner_dir)
    fusion = load_captioner(captioner.path / "pool", "fusion", model)
    pool = fusion.pool
    rows = held_out_rows(captioner.meta, pool)[:limit]
    if not rows:
        raise ValueError("the captioner's pool has no held-out rows")
    references = [pool.captions[r] for r in rows]
    tanimoto = {r: _leave_one_out_tanimoto(pool, r) for r in rows}
    candidates: dict[str, list[str]] = {}
    timing: dict[str, float] = {}

    started = time.perf_counter()
    candidates["tanimoto"] = [pool.captions[int(np.argmax(tanimoto[r]))] for r in rows]
    timing["tanimoto"] = time.perf_counter() - started
    for k in fusion_ks:
        for w in fusion_weights:
            started = time.perf_counter()
            fusion.fusion_k, fusion.fusion_weight = k, w
            chosen = [int(fusion._rank(tanimoto[r], fusion.graph_embeddings[r], 1)[0][0]) for r in rows]
            candidates[f"fusion k={k} w={w:g}"] = [pool.captions[c] for c in chosen]
            timing[f"fusion k={k} w={w:g}"] = time.perf_counter() - started
    smiles = [pool.smiles[r] for r in rows]
    own_ids = [pool.ids[r] for r in rows]
    prior = DecoderCaptioner(prior_dir) if prior_dir else None
    if not captioner.config.neighbour_memory:
        for k in rerank_ks:
            for name, with_prior in (("rerank", None), ("rerank-pmi", prior)):
                if name == "rerank-pmi" and prior is None:
                    continue
                started = time.perf_counter()
                results = captioner.rerank_smiles(smiles, k=k, exclude_ids=own_ids, prior=with_prior)
                candidates[f"{name} k={k}"] = [getattr(r, "caption", "") for r in results]
                timing[f"{name} k={k}"] = time.perf_counter() - started
    if generate:
        started = time.perf_counter()
        results = captioner.caption_smiles(smiles, exclude_ids=own_ids)
        candidates[captioner.name] = [getattr(r, "caption", "") for r in results]
        timing[captioner.name] = time.perf_counter() - started
    table = {}
    for name, outputs in candidates.items():
        scores = score_captions(references, outputs, with_meteor=with_meteor).as_dict()
        values = [scores[m] for m in METRICS if scores.get(m) is not None]
        table[name] = {**{m: scores.get(m) for m in METRICS}, "mean": float(np.mean(values)),
                       "seconds": round(timing[name], 2)}
        log(f"{name:<22} " + " ".join(f"{m} {table[name][m]:.2f}" for m in METRICS if table[name][m] is not None)
            + f"  mean {table[name]['mean']:.2f}")
    best = max(table, key=lambda n: table[n]["mean"])
    result = {"captioner": str(Path(captioner_dir).resolve()), "model": model, "held_out_rows": len(rows),
              "rule": "each held-out pool molecule is captioned from the pool without itself (leave-one-out); "
                      "selection by the mean of BLEU-2/4, ROUGE-1/2/L and METEOR",
              "table": table, "best": best}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    return result
