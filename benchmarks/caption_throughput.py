"""Captioning throughput on the CPU (molecules/s), measured in one run on the same molecules.

Rows:
  retrieval-tanimoto   Morgan fingerprint + BulkTanimotoSimilarity over the pool (the nearest-neighbour copy)
  retrieval-fusion     Tanimoto top-k re-ranked by the MoMu graph<->caption cosine (GIN forward per query)
  retrieval-ranked     the 20 Tanimoto-nearest chosen by the pool's learned caption ranker (GIN forward, 4 more
                       fingerprints and n-gram consensus per query); only when the pool holds a ranker
  decoder (each --captioner)  GIN features + beam search (beam width from the captioner, default 5), batches of
                       --batch molecules; also with --beams 1 (greedy) to show what the beam costs
Ratios: every row / retrieval-tanimoto (the cheapest captioner on this pool), and beam / greedy per decoder.

Usage: python benchmarks/caption_throughput.py --captioner runs/train/<run>/captioner [--captioner ...]
           [--pool runs/caption/chebi20_pool_momu] [--model momu-cpu] [--n 200] [--threads 2]
Molecules: the first --n of ChEBI-20 test (never in any pool or training set), else the bundled test slice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))


def _timed(fn, n: int) -> dict:
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    return {"molecules": n, "seconds": round(seconds, 2), "molecules_per_s": round(n / seconds, 2),
            "captioned": sum(hasattr(r, "caption") for r in out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captioner", action="append", default=[], help="decoder captioner directory (repeat)")
    parser.add_argument("--pool", default=None, help="caption pool for the retrieval rows (default: the first "
                                                     "captioner's pool)")
    parser.add_argument("--model", default="momu-cpu", help="MoMu model of the fusion and ranked rows")
    parser.add_argument("--n", type=int, default=200, help="molecules captioned per row")
    parser.add_argument("--batch", type=int, default=32, help="decoder batch size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from momu.caption.captioner import DecoderCaptioner
    from momu.caption.pool import read_caption_source
    from momu.caption.retrieval import load_captioner

    split = REPO.parent / "shared" / "data" / "chebi20" / "test.txt"
    if not split.is_file():
        split = REPO / "data" / "sample" / "chebi20" / "test_slice.tsv"
    smiles = read_caption_source(split).smiles[:args.n]
    n = len(smiles)
    pool = args.pool or (str(Path(args.captioner[0]) / "pool") if args.captioner else None)
    if pool is None:
        parser.error("give --pool or at least one --captioner")
    rows = {}
    tanimoto = load_captioner(pool, "tanimoto")
    rows["retrieval-tanimoto"] = _timed(lambda: tanimoto.caption_smiles(smiles), n)
    fusion = load_captioner(pool, "fusion", args.model)
    rows["retrieval-fusion"] = _timed(lambda: fusion.caption_smiles(smiles), n)
    from momu.caption.ranker import has_ranker

    if has_ranker(pool):
        ranked = load_captioner(pool, "ranked", args.model)
        rows["retrieval-ranked"] = _timed(lambda: ranked.caption_smiles(smiles), n)
    for path in args.captioner:
        captioner = DecoderCaptioner(path)
        beams = int(captioner.generation.get("beams", 5))
        rows[f"{captioner.name} (beam {beams})"] = _timed(
            lambda: captioner.caption_smiles(smiles, batch_size=args.batch), n)
        rows[f"{captioner.name} (greedy)"] = _timed(
            lambda: captioner.caption_smiles(smiles, batch_size=args.batch, beams=1), n)
    base = rows["retrieval-tanimoto"]["molecules_per_s"]
    print(f"{n} molecules of {split.name}, {args.threads} torch threads, pool {pool}")
    print(f"{'captioner':<34} {'molecules/s':>12} {'vs tanimoto':>12}")
    for name, row in rows.items():
        print(f"{name:<34} {row['molecules_per_s']:>12.2f} {row['molecules_per_s'] / base:>12.4f}")
    decoder_rows = [k for k in rows if "(beam " in k]
    for key in decoder_rows:
        greedy = key.split(" (")[0] + " (greedy)"
        print(f"beam / greedy throughput, {key.split(' (')[0]}: "
              f"{rows[key]['molecules_per_s'] / rows[greedy]['molecules_per_s']:.3f}")
    print(json.dumps({"molecules": n, "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
