"""Load test of the MoMu Serve application over HTTP on 127.0.0.1, with and without dynamic batching.

Serves a MoMu model and a molecule index of the real MUV + HIV molecules (../shared/data/moleculenet, ~134k
distinct molecules after canonical-SMILES de-duplication), then runs N concurrent clients against
  search   POST /v1/search/molecules  a short text query (first clause of a ChEBI-20 description) -> top-10
  embed    POST /v1/embed             one SMILES -> its graph embedding
for a bounded time and request count each, and prints p50/p95/p99 latency, requests/s, error counts and the
encoder's mean batch size and busy fraction. Goal here (2 cores): search p50 < 20 ms and p99 < 100 ms at 32 clients,
0 errors. The index is built like configs/index_moleculenet.yaml builds it (IVF-PQ, re-ranked) unless --index-kind
says otherwise.

The molecule embeddings are computed once in-process (batched, progress bar, resumable chunks, bounded by
--max-embed-minutes) and cached under runs/serve_load/<model version>/ with the index, so re-runs start quickly.
Model: --model, else the shipped checkpoint momu-cpu (what `momu serve` serves by default), else a random-init
MoMu (GIN 5x300 + bundled MiniLM; same latency profile) saved once under runs/serve_load/random_model.

The same run first measures the in-process ceiling: the Encoder deployment's own class and the same index, called
directly in this process (batched, no HTTP, no Ray), and prints served/ceiling throughput (goal >= 0.6 at 32
clients) and the 1-client p50 over the in-process latency of one item (goal <= +10 ms). With batching on and
1 in --clients, it then also measures the 1-client overhead in pairs: each served request and the same item
in-process back to back, so this machine's drift (up to ~20 % within minutes) hits both halves of a pair alike.

--topology compares the app's two shapes in one run: split (Encoder and Index deployments: a search makes two
handle calls) and colocated (both inside the ingress replica: none).

Usage: python benchmarks/serve_load.py [--clients 1,32] [--duration 15] [--max-requests 4000]
                                       [--batching on,off] [--topology split,colocated]
                                       [--index-kind ivf_pq|exact|hnsw] [--precision fp32|bf16]
                                       [--direct-port 8790]  (to the replica's own port, no proxy)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "runs" / "serve_load"
LIBRARIES = [("muv", SHARED / "moleculenet" / "muv.csv.gz"), ("hiv", SHARED / "moleculenet" / "hiv.csv.gz")]
CHUNK = 8192
SCENARIOS = ("search", "embed")  # also "healthz": GET /healthz, the proxy + ingress floor (no model, no index)


# -- model, embeddings, index (cached) ------------------------------------------------------------------------------

def pick_model(given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    from momu.models.published import resolve_published

    shipped = resolve_published("momu-cpu")  # what `momu serve` serves by default
    if (shipped / "model.safetensors").is_file():
        return shipped
    random_dir = OUT / "random_model"
    if not (random_dir / "model.safetensors").is_file():
        import torch

        from momu.config import MoMuConfig
        from momu.models.momu import build_model

        torch.manual_seed(0)
        build_model(MoMuConfig()).save_pretrained(random_dir)
        print(f"saved a random-init MoMu (GIN 5x300 + MiniLM) to {random_dir}")
    return random_dir


def model_version(model_dir: Path) -> str:
    digest = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def read_library(limit: int | None) -> tuple[list[str], list[str]]:
    """(ids, canonical SMILES) of the distinct MUV + HIV molecules that featurize."""
    from rdkit import Chem

    from momu.data.readers import read_molecule_library

    ids, smiles, seen, dropped = [], [], set(), 0
    for name, path in LIBRARIES:
        if not path.is_file():
            sys.exit(f"{path} not found: the load test needs ../shared/data/moleculenet (MUV + HIV)")
        table = read_molecule_library(path).table
        for row, smi in enumerate(table.column("smiles").to_pylist()):
            mol = Chem.MolFromSmiles(smi)
            canonical = Chem.MolToSmiles(mol) if mol is not None else None
            if canonical is None or canonical in seen:
                dropped += 1
                continue
            seen.add(canonical)
            ids.append(f"{name}-{row}")
            smiles.append(canonical)
    print(f"library: {len(smiles):,} distinct molecules from MUV + HIV ({dropped:,} duplicates/unparseable)")
    if limit:
        ids, smiles = ids[:limit], smiles[:limit]
    return ids, smiles


def embed_library(model_dir: Path, cache: Path, ids, smiles, max_minutes: float,
                  threads: int) -> tuple[list, list, np.ndarray]:
    """Graph embeddings of the library, computed in chunks saved as they finish (a re-run continues)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from tqdm import tqdm

    from momu.chem.featurize import featurize_many
    from momu.models.loading import load_momu

    torch.set_num_threads(threads)
    chunks_dir = cache / "chunks"
    chunks_dir.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(smiles) + CHUNK - 1) // CHUNK
    todo = [c for c in range(n_chunks) if not (chunks_dir / f"{c:05d}.parquet").is_file()]
    if todo:
        model = load_momu(model_dir).eval()
        deadline = time.time() + 60 * max_minutes
        bar = tqdm(total=len(smiles), initial=(n_chunks - len(todo)) * CHUNK, unit="mol", desc="embed molecules")
        for c in todo:
            if time.time() > deadline:
                bar.close()
                sys.exit(f"embedding stopped after --max-embed-minutes {max_minutes}; {c}/{n_chunks} chunks are cached "
                         f"in {chunks_dir}: run again to continue")
            part_ids, part_smiles = ids[c * CHUNK:(c + 1) * CHUNK], smiles[c * CHUNK:(c + 1) * CHUNK]
            batch = featurize_many(part_smiles)
            emb = model.embed_graphs(batch.graphs, batch_size=512).numpy().astype(np.float32)
            keep_ids = [part_ids[i] for i in batch.indices]
            keep_smiles = [part_smiles[i] for i in batch.indices]
            table = pa.table({"id": keep_ids, "smiles": keep_smiles,
                              "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1])})
            tmp = chunks_dir / f".{c:05d}.parquet.tmp"
            pq.write_table(table, tmp)
            tmp.rename(chunks_dir / f"{c:05d}.parquet")
            bar.update(len(part_smiles))
        bar.close()
    tables = [pq.read_table(chunks_dir / f"{c:05d}.parquet") for c in range(n_chunks)]
    table = pa.concat_tables(tables)
    dim = table.schema.field("embedding").type.list_size
    emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim).astype(np.float32)
    return table.column("id").to_pylist(), table.column("smiles").to_pylist(), emb


def build_index(model_dir: Path, args) -> tuple[Path, list[str]]:
    version = model_version(model_dir)
    cache = OUT / f"{model_dir.name}-{version}" / (f"limit{args.limit}" if args.limit else "all")
    index_dir = cache / f"index_{args.index_kind}"
    if not (index_dir / "index.json").is_file():
        from momu.index import RetrievalIndex

        ids, smiles = read_library(args.limit)
        ids, smiles, emb = embed_library(model_dir, cache, ids, smiles, args.max_embed_minutes, os.cpu_count() or 2)
        import pyarrow as pa

        started = time.perf_counter()
        params = index_params(args.index_kind)
        index = RetrievalIndex.build(emb, ids, pa.table({"smiles": smiles}), kind=args.index_kind, params=params,
                                     model_info={"model_name": model_dir.name, "model_version": f"sha256:{version}"})
        index.save(index_dir)
        print(f"index: {index!r} built in {time.perf_counter() - started:.1f}s -> {index_dir}")
        sample = smiles
    else:
        import pyarrow.parquet as pq

        sample = pq.read_table(index_dir / "rows.parquet", columns=["smiles"]).column("smiles").to_pylist()
    rng = np.random.default_rng(0)
    picks = rng.choice(len(sample), size=min(5000, len(sample)), replace=False)
    return index_dir, [sample[i] for i in picks]


def index_params(kind: str) -> dict | None:
    """The params of configs/index_moleculenet.yaml (what `momu index build` uses for this library) when it
    builds the same kind of index; else the index's defaults."""
    import yaml

    path = REPO / "configs" / "index_moleculenet.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return config.get("params") if config.get("kind") == kind else None


def text_queries() -> list[str]:
    """Short search-box queries: the first clause of each ChEBI-20 description (distinct strings)."""
    files = [SHARED / "chebi20" / "test.txt", SHARED / "chebi20" / "validation.txt"]
    files = [f for f in files if f.is_file()] or [REPO / "data" / "sample" / "chebi20" / "validation_slice.tsv"]
    out, seen = [], set()
    for f in files:
        for line in f.read_text().splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            clause = parts[2].split(".")[0].split(";")[0]
            words = clause.split()[:14]
            query = " ".join(words)
            if len(words) >= 4 and query not in seen:
                seen.add(query)
                out.append(query)
    rng = np.random.default_rng(0)
    rng.shuffle(out)
    return out


# -- in-process ceiling ----------------------------------------------------------------------------------------------

def in_process_ceiling(model_dir: Path, index_dir: Path, queries: list[str], smiles_pool: list[str], args,
                       scenarios: list[str]) -> tuple[dict, dict]:
    """What the same encoder and index do with no HTTP, no proxy, no ingress and no Ray: the Encoder deployment's
    own class (its `_encode_texts` / `_encode_graphs`, same torch threads and precision) and the same index with
    one FAISS thread, called directly in this process. Per scenario: items/s in batches of --max-batch-size
    (the throughput ceiling for the served rate at many clients) and the median latency of one item alone
    (the floor for the served p50 at one client). Runs before Ray starts, on an otherwise idle process. Also
    returns the per-scenario calls, kept loaded for the paired 1-client measurement."""
    import faiss
    import torch

    from momu.index import RetrievalIndex
    from momu.serve.config import ServeLimits
    from serving.deployments import Encoder
    from serving.validation import check_smiles, check_text

    faiss.omp_set_num_threads(1)
    encoder = Encoder.func_or_class(model=str(model_dir), torch_threads=args.torch_threads,
                                    batching={"enabled": False}, precision=args.precision)
    index = RetrievalIndex.load(index_dir)
    limits = ServeLimits()

    def search(batch):  # what POST /v1/search/molecules computes: validate, embed the text, top-10 with rows
        texts = [check_text(q, "query", limits) for q in batch]
        return index.search_rows(encoder._encode_texts(texts), 10)

    def embed(batch):  # what POST /v1/embed computes: validate + featurize, embed the graphs
        return encoder._encode_graphs([check_smiles(s, "smiles", limits).graph for s in batch])

    work = {"search": (search, queries), "embed": (embed, smiles_pool)}
    out = {}
    for scenario in scenarios:
        if scenario not in work:
            continue
        call, items = work[scenario]
        size = args.max_batch_size
        for i in range(3):  # warm-up (first calls allocate)
            call(items[i * size:(i + 1) * size])
        done, started, offset = 0, time.perf_counter(), 1000
        while time.perf_counter() - started < min(args.duration, 10) and done < args.max_requests:
            call(items[(offset + done) % len(items):][:size] or items[:size])
            done += size
        rate = done / (time.perf_counter() - started)
        single = []
        for i in range(min(200, len(items))):
            t = time.perf_counter()
            call([items[(offset + i) % len(items)]])
            single.append(time.perf_counter() - t)
            if sum(single) > 5:
                break
        out[scenario] = {"items_per_s": rate, "batch": size, "single_p50_ms": 1000 * float(np.median(single)),
                         "torch_threads": torch.get_num_threads()}
        print(f"in-process ceiling {scenario:6s}: {rate:7.1f} items/s in batches of {size}, one item alone "
              f"p50 {out[scenario]['single_p50_ms']:.1f} ms ({torch.get_num_threads()} torch thread(s), no HTTP, "
              "no Ray)", flush=True)
    return out, work


# -- load generation ----------------------------------------------------------------------------------------------

def require_loopback(url: str) -> None:
    if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load-test {url}: loopback only")


def app_ms(response) -> float | None:
    """The replica's own time for a request, from the app's `Server-Timing: app;dur=<ms>` header."""
    for part in response.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "app" and dur:
            return float(dur)
    return None


async def run_load(url: str, make_body, clients: int, duration: float, max_requests: int) -> dict:
    import aiohttp

    require_loopback(url)
    latencies: list[float] = []
    app_times: list[float] = []
    errors: dict[str, int] = {}
    counter = {"sent": 0}
    stop_at = time.perf_counter() + duration

    async def client(session):
        while time.perf_counter() < stop_at and counter["sent"] < max_requests:
            i = counter["sent"]
            counter["sent"] += 1
            body = make_body(i)
            start = time.perf_counter()
            try:
                call = session.get(url) if body is None else session.post(url, json=body)
                async with call as response:
                    await response.read()
                    if response.status != 200:
                        errors[str(response.status)] = errors.get(str(response.status), 0) + 1
                        continue
                    in_app = app_ms(response)
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - start)
            if in_app is not None:
                app_times.append(in_app)

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    pct = (lambda q: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    return {"clients": clients, "requests": counter["sent"], "ok": len(latencies), "errors": errors,
            "seconds": round(elapsed, 2), "rps": len(latencies) / elapsed if elapsed else 0.0,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "mean_ms": float(lat.mean()) if len(lat) else 0.0,
            "app_p50_ms": float(np.median(app_times)) if app_times else None}


async def paired_single(url: str, make_body, call, item_of, duration: float, max_pairs: int) -> dict:
    """The 1-client overhead measured in pairs: one request served over HTTP and the same item computed in-process
    (`call`, the ceiling's function) back to back, alternating which goes first, for `duration` seconds. Both
    halves of a pair see the same machine state, so this machine's drift (up to ~20 % within minutes) cancels
    out of the median of the per-pair differences, unlike a ceiling measured once before Ray starts."""
    import aiohttp

    require_loopback(url)
    served, local, in_app, errors = [], [], [], 0
    stop_at = time.perf_counter() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        i = 0
        while time.perf_counter() < stop_at and i < max_pairs:
            body = make_body(i)
            pair = {}
            for side in (("served", "local") if i % 2 == 0 else ("local", "served")):
                start = time.perf_counter()
                if side == "local":
                    call([item_of(body)])
                else:
                    async with session.post(url, json=body) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                            break
                        pair["app"] = app_ms(response)
                pair[side] = time.perf_counter() - start
            if "served" in pair and "local" in pair:
                served.append(pair["served"])
                local.append(pair["local"])
                in_app.append(pair["app"] if pair["app"] is not None else float("nan"))
            i += 1
    served_ms, local_ms = 1000 * np.array(served), 1000 * np.array(local)
    if not len(served_ms):
        return {"pairs": 0, "errors": errors}
    return {"pairs": len(served_ms), "errors": errors, "served_p50_ms": float(np.median(served_ms)),
            "in_process_p50_ms": float(np.median(local_ms)),
            "overhead_p50_ms": float(np.median(served_ms - local_ms)),
            # inside the replica's app (validation, model, index, serialisation) vs outside it (client, HTTP, proxy,
            # Serve's routing to the replica and back)
            "app_p50_ms": float(np.nanmedian(in_app)), "outside_app_p50_ms": float(np.nanmedian(served_ms - in_app)),
            "app_over_in_process_p50_ms": float(np.nanmedian(np.array(in_app) - local_ms))}


def ceiling_ratios(results: list[dict], ceiling: dict) -> dict:
    """Served vs in-process, per scenario (batching on when measured, else off): throughput at the most clients
    over the ceiling's items/s (goal >= 0.6), and p50 at one client minus the in-process latency of one item
    (goal <= 10 ms: what HTTP, the proxy, the ingress and the handles add)."""
    lines, values = [], {}
    topologies = list(dict.fromkeys(r["topology"] for r in results))
    for (scenario, c), topology in [(item, t) for item in ceiling.items() for t in topologies]:
        rows = [r for r in results if r["scenario"] == scenario and r["ok"] and r["topology"] == topology]
        rows = [r for r in rows if r["batching"] == "on"] or rows
        if not rows:
            continue
        many = max(rows, key=lambda r: r["clients"])
        one = [r for r in rows if r["clients"] == 1]
        v = {"served_rps": many["rps"], "clients": many["clients"], "ceiling_items_per_s": c["items_per_s"],
             "throughput_fraction": many["rps"] / c["items_per_s"]}
        text = (f"{scenario} ({topology}): {many['clients']} clients {many['rps']:.1f} req/s = {v['throughput_fraction']:.2f} of "
                f"the in-process ceiling {c['items_per_s']:.1f}/s (goal >= 0.6)")
        if one:
            v.update(p50_1_client_ms=one[0]["p50_ms"], in_process_single_ms=c["single_p50_ms"],
                     p50_overhead_ms=one[0]["p50_ms"] - c["single_p50_ms"])
            text += (f"; 1 client p50 {one[0]['p50_ms']:.1f} ms = in-process {c['single_p50_ms']:.1f} ms "
                     f"+ {v['p50_overhead_ms']:.1f} ms (goal <= +10 ms)")
        values[scenario if topology == "split" else f"{scenario}_{topology}"] = v
        lines.append(text)
    return {"lines": lines, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="saved MoMu directory (default: see above)")
    parser.add_argument("--clients", default="1,32", help="comma-separated concurrent client counts (default 1,32)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement (default 15)")
    parser.add_argument("--max-requests", type=int, default=4000,
                        help="requests per measurement at most (default 4000)")
    parser.add_argument("--warmup", type=int, default=64, help="unmeasured requests before each run (default 64)")
    parser.add_argument("--batching", default="on,off", help="'on', 'off' or 'on,off' (default)")
    parser.add_argument("--topology", default="split",
                        help="'split' (default: Encoder and Index deployments), 'colocated' (both in the ingress "
                             "replica) or 'split,colocated'")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated: search, embed (default both), healthz (the framework's floor)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=0.0,
                        help="batching.batch_wait_timeout_s in ms (default 0, as serving/config.yaml)")
    parser.add_argument("--idle-direct-ms", type=float, default=5.0,
                        help="batching.idle_direct_ms (default 5, as serving/config.yaml; 0: every request through "
                             "the batch queue)")
    parser.add_argument("--index-kind", default="ivf_pq", choices=["exact", "hnsw", "ivf_pq"],
                        help="ivf_pq (default: what configs/index_moleculenet.yaml builds for this library, with its "
                             "params), exact or hnsw")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="encoder math (default fp32)")
    parser.add_argument("--limit", type=int, default=None, help="index only the first N molecules (default: all)")
    parser.add_argument("--max-embed-minutes", type=float, default=20.0,
                        help="bound on the one-off embedding step (a re-run continues it)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--direct-port", type=int, default=None,
                        help="send the load to the MoMuAPI replica's own port (Ray Serve direct ingress, from this "
                             "port up; `momu serve --direct-port`) instead of through the proxy (default)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads of the encoder replica")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="niceness of the Ray worker processes (replicas, proxy). Ray's default is 15, below "
                             "any normal process; 0 (default here) measures the app at normal priority")
    parser.add_argument("--no-ceiling", action="store_true",
                        help="skip the in-process ceiling (same encoder and index, batched, no HTTP, no Ray)")
    parser.add_argument("--out", default=str(OUT / "results.json"))
    args = parser.parse_args()
    if args.direct_port is not None:  # before anything imports ray.serve
        from momu.serve.direct import enable_direct_ingress

        enable_direct_ingress(args.direct_port)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    os.chdir(REPO)  # Ray workers import `serving` from the driver's working directory

    load_before = os.getloadavg()[0]
    model_dir = pick_model(args.model)
    index_dir, smiles_pool = build_index(model_dir, args)
    queries = text_queries()
    print(f"model {model_dir} | index {index_dir} | {len(queries):,} distinct text queries")
    scenarios = [s for s in args.scenarios.split(",") if s]
    ceiling, local_calls = ({}, {}) if args.no_ceiling else in_process_ceiling(
        model_dir, index_dir, queries, smiles_pool, args, scenarios)

    import ray
    from ray import serve

    from momu.serve.config import ServeConfig
    from momu.ray_session import start_local_ray
    from serving.app import compose

    start_local_ray(os.cpu_count(), log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, proxy_location="HeadOnly",
                logging_config={"enable_access_log": False, "log_level": "WARNING"})
    cpus = os.cpu_count() or 2
    # no caption pool and no generation pool here: both stay idle and must not hold CPUs
    idle = {"Captioner": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
            "Generator": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}}
    topology_options = {
        "split": {"MoMuAPI": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25 * cpus}},
                  "Encoder": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5 * cpus}},
                  "Index": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25 * cpus}}, **idle},
        "colocated": {"MoMuAPI": {"num_replicas": 1, "ray_actor_options": {"num_cpus": cpus}}, **idle}}
    base = f"http://127.0.0.1:{args.port}"
    ingress = "direct" if args.direct_port is not None else "proxy"
    results, paired = [], []
    client_counts = [int(c) for c in args.clients.split(",")]
    q_offset = {"i": 0}

    def search_body(i):
        q_offset["i"] += 1
        return {"query": queries[q_offset["i"] % len(queries)], "k": 10}

    def embed_body(i):
        return {"smiles": [smiles_pool[i % len(smiles_pool)]]}

    try:
        for topology, batching in [(t, b) for t in args.topology.split(",") if t
                                   for b in args.batching.split(",") if b]:
            config = ServeConfig(model=str(model_dir), molecule_index=str(index_dir), text_index=None,
                                 torch_threads=args.torch_threads, precision=args.precision, topology=topology,
                                 batching={"enabled": batching == "on", "max_batch_size": args.max_batch_size,
                                           "batch_wait_timeout_s": args.batch_wait_ms / 1000,
                                           "idle_direct_ms": args.idle_direct_ms})
            started = time.perf_counter()
            serve.run(compose(config, topology_options[topology]), name="momu_load", route_prefix="/")
            print(f"\napp up ({topology}) with batching {batching} in {time.perf_counter() - started:.1f}s")
            if args.direct_port is not None:
                from momu.serve.direct import find_direct_ports

                ports = find_direct_ports("127.0.0.1", args.direct_port)
                if not ports:
                    raise SystemExit(f"no direct-ingress replica answered from port {args.direct_port} on")
                base = f"http://127.0.0.1:{ports[0]}"
                print(f"load goes to the replica's own port {ports[0]} (direct ingress, no proxy)")
            api = serve.get_deployment_handle("MoMuAPI", app_name="momu_load")
            for scenario in scenarios:
                path, make = {"search": ("/v1/search/molecules", search_body),
                              "embed": ("/v1/embed", embed_body),
                              "healthz": ("/healthz", lambda i: None)}[scenario]
                for clients in client_counts:
                    asyncio.run(run_load(base + path, make, min(clients, 8), 30, args.warmup))  # warm-up
                    stats = api.component_stats.remote().result()
                    before, index_before = stats["encoder"], stats["index"]
                    r = asyncio.run(run_load(base + path, make, clients, args.duration, args.max_requests))
                    stats = api.component_stats.remote().result()
                    after, index_after = stats["encoder"], stats["index"]
                    calls, items = after["calls"] - before["calls"], after["items"] - before["items"]
                    r.update(scenario=scenario, batching=batching, topology=topology, ingress=ingress, mean_batch=items / calls if calls else 0.0,
                             encoder_busy=(after["busy_s"] - before["busy_s"]) / r["seconds"],
                             index_busy=(index_after["busy_s"] - index_before["busy_s"]) / r["seconds"],
                             load_average=os.getloadavg()[0])
                    results.append(r)
                    print(f"{scenario:6s} {topology:9s} batching {batching:3s} {clients:3d} clients: {r['ok']:5d} ok "
                          f"{sum(r['errors'].values()):3d} errors  {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                          f"p95 {r['p95_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                          + (f"in the app p50 {r['app_p50_ms']:.1f} ms  " if r.get("app_p50_ms") is not None else "")
                          + f"mean batch {r['mean_batch']:.1f}  "
                          f"encoder busy {100 * r['encoder_busy']:.0f}%  index busy {100 * r['index_busy']:.0f}%  "
                          f"load {os.getloadavg()[0]:.1f}",
                          flush=True)
                if scenario in local_calls and 1 in client_counts and batching == "on":
                    item_of = {"search": lambda body: body["query"], "embed": lambda body: body["smiles"][0]}[scenario]
                    p = asyncio.run(paired_single(base + path, make, local_calls[scenario][0], item_of,
                                                  args.duration, args.max_requests))
                    p.update(scenario=scenario, topology=topology, ingress=ingress)
                    paired.append(p)
                    if p["pairs"]:
                        print(f"{scenario:6s} {topology:9s} paired 1 client: {p['pairs']} pairs, served p50 "
                              f"{p['served_p50_ms']:.1f} ms, in-process p50 {p['in_process_p50_ms']:.1f} ms, "
                              f"overhead (median per pair) {p['overhead_p50_ms']:+.1f} ms = in the app "
                              f"{p['app_over_in_process_p50_ms']:+.1f} ms + outside it (HTTP, proxy, routing) "
                              f"{p['outside_app_p50_ms']:.1f} ms", flush=True)
            serve.delete("momu_load")
    finally:
        serve.shutdown()
        ray.shutdown()

    import pyarrow.parquet as pq

    n_index = pq.ParquetFile(index_dir / "rows.parquet").metadata.num_rows
    print(f"\nMoMu Serve load test: {n_index:,} molecules ({args.index_kind} index), model {model_dir.name} "
          f"({args.precision}), {os.cpu_count()} CPUs (load average before: {load_before:.1f}), loopback HTTP "
          f"{'to the replica (direct ingress)' if ingress == 'direct' else 'through the Serve proxy'}, "
          "clients in this process")
    print(f"{'scenario':8s} {'topology':9s} {'batching':8s} {'clients':>7s} {'ok':>6s} {'errors':>6s} {'req/s':>8s} {'p50 ms':>8s} "
          f"{'p95 ms':>8s} {'p99 ms':>8s} {'batch':>6s} {'enc.busy':>8s} {'idx.busy':>8s} {'load':>5s}")
    for r in results:
        print(f"{r['scenario']:8s} {r['topology']:9s} {r['batching']:8s} {r['clients']:7d} {r['ok']:6d} {sum(r['errors'].values()):6d} "
              f"{r['rps']:8.1f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['mean_batch']:6.1f} "
              f"{100 * r['encoder_busy']:7.0f}% {100 * r['index_busy']:7.0f}% {r['load_average']:5.1f}")
    ratios = ceiling_ratios(results, ceiling)
    for line in ratios["lines"]:
        print(line)
    for p in paired:
        if p["pairs"]:
            print(f"{p['scenario']} ({p['topology']}), measured in pairs at 1 client (served and in-process back to "
                  f"back, {p['pairs']} pairs): overhead {p['overhead_p50_ms']:+.1f} ms (goal <= +10 ms); served p50 "
                  f"{p['served_p50_ms']:.1f} ms, in-process p50 {p['in_process_p50_ms']:.1f} ms; the app's own time "
                  f"{p['app_p50_ms']:.1f} ms ({p['app_over_in_process_p50_ms']:+.1f} over in-process), outside the app "
                  f"{p['outside_app_p50_ms']:.1f} ms")
    goal = [r for r in results if r["scenario"] == "search" and r["clients"] == 32 and r["batching"] == "on"]
    for g in goal:
        met = g["p50_ms"] < 20 and g["p99_ms"] < 100 and not g["errors"]
        print(f"goal (search, {g['topology']}, 32 clients, batching on): p50 {g['p50_ms']:.1f} ms (< 20), p99 {g['p99_ms']:.1f} ms "
              f"(< 100), errors {sum(g['errors'].values())} (0): {'met' if met else 'NOT met'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    summary = {"index": str(index_dir), "index_rows": n_index, "model": str(model_dir), "cpus": os.cpu_count(),
               "load_average_before": load_before, "args": vars(args), "results": results,
               "in_process_ceiling": ceiling, "ratios": ratios["values"], "paired_1_client": paired}
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
