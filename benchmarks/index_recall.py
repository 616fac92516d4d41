"""ANN recall@10 against exact search on the ~134k MUV + HIV molecule embeddings (FAISS IVF-PQ and HNSW).

Uses the shards of `momu embed --config configs/embed_moleculenet.yaml` (runs them first when missing; the job
resumes if interrupted). Two query sets:
  text  -> molecules   ChEBI-20 test descriptions embedded by the same model's text tower (the search use case)
  mol   -> molecules   indexed molecules themselves (each also finds itself)
For each index: build time, bytes per row, recall@10 vs exact (numpy inner product over all rows) and search
time per query (batched, and one query at a time).

Usage: python benchmarks/index_recall.py [--shards runs/embeddings/moleculenet] [--queries 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def ensure_shards(shards: Path, model: str | None) -> None:
    if (shards / "DONE.json").is_file():
        return
    from momu.config import load_config
    from momu.embed.config import EmbedConfig
    from momu.embed.job import format_summary, run_embedding

    overrides = {"output_dir": str(shards)}
    if model:
        overrides["model"] = model
    config = load_config(EmbedConfig, REPO / "configs" / "embed_moleculenet.yaml", overrides)
    print(f"embedding MUV + HIV into {shards} (resumable) ...", flush=True)
    print(format_summary(run_embedding(config, log_to_mlflow=False).summary), flush=True)


def text_queries(model_source: str, n: int) -> np.ndarray:
    from momu.models.loading import load_momu

    lines = (REPO.parent / "shared/data/chebi20/test.txt").read_text().splitlines()[1:]
    texts = [line.split("\t")[2] for line in lines if line.count("\t") >= 2][:n]
    return load_momu(model_source).eval().embed_texts(texts).numpy()


def timed_search(index, queries: np.ndarray, k: int):
    start = time.perf_counter()
    _, idx = index.search(queries, k)
    batched_ms = 1000 * (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    for q in queries[:100]:
        index.search(q, k)
    single_ms = 1000 * (time.perf_counter() - start) / min(100, len(queries))
    return idx, batched_ms, single_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, default=REPO / "runs/embeddings/moleculenet")
    parser.add_argument("--model", default=None, help="model for embedding (default: configs/embed_moleculenet.yaml)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not (REPO.parent / "shared/data/moleculenet/muv.csv.gz").exists():
        sys.exit("shared data (../shared/data) not found")

    import faiss

    from momu.index import RetrievalIndex, recall_at_k

    ensure_shards(args.shards, args.model)
    start = time.perf_counter()
    exact = RetrievalIndex.from_shards(args.shards, kind="exact")
    print(f"rows {len(exact):,} x {exact.dim} (model {exact.model_info.get('model_name')} "
          f"{exact.model_info.get('model_version')}), loaded in {time.perf_counter() - start:.1f} s; "
          f"{faiss.omp_get_max_threads()} FAISS threads; load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    mol_q = exact._embeddings[rng.choice(len(exact), args.queries, replace=False)]
    txt_q = text_queries(exact.model_info["model_source"], args.queries)
    truth = {}
    for name, q in (("text", txt_q), ("mol", mol_q)):
        truth[name], ms, single = timed_search(exact, q, args.k)
        print(f"exact              {'':24s} {name:4s} queries: {ms:6.2f} ms/query batched, {single:6.2f} ms single")

    configs = [("ivf_pq", {"nlist": 1024, "m": 64, "nbits": 8}, [("nprobe", v) for v in (8, 16, 32, 64)]),
               ("ivf_pq", {"nlist": 1024, "m": 64, "nbits": 8, "refine_k_factor": 4}, [("nprobe", 32)]),
               ("ivf_pq", {"nlist": 1024, "m": 32, "nbits": 8}, [("nprobe", 32)]),
               ("hnsw", {"hnsw_m": 32, "ef_construction": 100}, [("ef_search", v) for v in (32, 64, 128)])]
    results = []
    for kind, params, sweeps in configs:
        start = time.perf_counter()
        index = RetrievalIndex.from_shards(args.shards, kind=kind, params=params)
        build_s = time.perf_counter() - start
        size = _index_bytes(index) / len(index)
        for name, value in sweeps:
            index.set_search_params(**{name: value})
            row = {"kind": kind, **{k: v for k, v in params.items()}, name: value, "build_s": round(build_s, 1),
                   "bytes_per_row": round(size, 1)}
            for qname, q in (("text", txt_q), ("mol", mol_q)):
                idx, ms, single = timed_search(index, q, args.k)
                row[f"recall_{qname}"] = round(recall_at_k(idx, truth[qname], args.k), 4)
                row[f"ms_{qname}"] = round(ms, 3)
                row[f"ms_single_{qname}"] = round(single, 3)
            results.append(row)
            label = f"{kind} " + ",".join(f"{k}={v}" for k, v in params.items() if k not in ("nbits",)) + f" {name}={value}"
            print(f"{label:44s} recall@{args.k} text {row['recall_text']:.3f} mol {row['recall_mol']:.3f} | "
                  f"{row['ms_text']:.3f} ms/query batched, {row['ms_single_text']:.3f} ms single | "
                  f"build {build_s:.1f} s, {size:.0f} B/row", flush=True)
    print(json.dumps(results))


def _index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index._faiss).nbytes) if index._faiss is not None else index._embeddings.nbytes


if __name__ == "__main__":
    main()
