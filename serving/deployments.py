"""The model-side deployments of the MoMu Serve application: `Encoder` (graph and text towers) and `Index`
(the vector indexes with their id/SMILES/description rows).

Both batch dynamically with `@serve.batch`: every item of every concurrent request (one text, one molecule, one
query vector) joins one queue, and the queue is cut into batches of at most `max_batch_size` items or whatever
arrived within `batch_wait_timeout_s`. With batching disabled each request is computed on its own, in arrival order.

The model / FAISS call runs on the replica's event loop and blocks it. That is deliberate: requests arriving during
a batch wait in Ray's queue and all join the next batch. Running the call in a worker thread instead lets the event
loop compete with it for the GIL (small-batch PyTorch is dispatch-bound and holds it most of the time): requests
then trickle into the queue one by one, batches stay at ~1-2 items, and throughput fell 2.8x in a measurement here
(32 concurrent text queries: 67 vs 184 queries/s, mean batch 1.7 vs 15.7).

A request that finds the replica idle (nothing queued or being batched, no model call for `idle_direct_ms`) skips
the batch queue and is computed at once: the batch would hold only its items anyway, and the queue's machinery costs
~0.3 ms per call on 2 cores (a search makes two: paired 1-client overhead +2.6 ms with the bypass, +3.3 without;
benchmarks/serve_load.py, direct ingress). Under load a request arrives right after the previous model call (which
blocked the event loop), so it takes the batched path.
"""

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from ray import serve

log = logging.getLogger("ray.serve")


def model_identity(source: str, model_dir: Path) -> dict:
    """name / version / weights hash of a served model, named as the embedding job names it (momu embed), so an
    index's model_info can be compared with the served model: `models:/name/version` URIs keep their name and
    version; a local directory is "<parent>/<dir>" and versioned by the SHA-256 of its weights."""
    from momu.models.loading import weights_sha256

    sha = weights_sha256(model_dir)
    if source.startswith("models:/"):
        name, _, version = source[len("models:/"):].strip("/").rpartition("/")
        return {"name": name or version, "version": version if name else "latest", "source": source,
                "weights_sha256": sha}
    resolved = model_dir.resolve()
    name = f"{resolved.parent.name}/{resolved.name}" if resolved.parent.name else resolved.name
    return {"name": name, "version": f"sha256:{sha[:12]}", "source": str(resolved), "weights_sha256": sha}


class IdleBypass:
    """Whether a call of `n` items may skip `@serve.batch`'s queue: no item is queued or in a batch, the last model
    call ended at least `gap_s` ago (see the module docstring) and the items fit one batch. gap_s 0: never."""

    def __init__(self, gap_s: float, max_items: int = 32):
        self.gap_s = float(gap_s)
        self.max_items = int(max_items)
        self.pending = 0  # items awaiting the batched path
        self.last_end = float("-inf")

    @classmethod
    def from_batching(cls, batching: dict) -> "IdleBypass":
        """From the `batching` settings. Off when a batch wait is configured: that asks every request, even a
        lone one, to wait for companions."""
        size = int(batching.get("max_batch_size", 32))
        if float(batching.get("batch_wait_timeout_s", 0.0)) > 0:
            return cls(0.0, size)
        return cls(float(batching.get("idle_direct_ms", 5.0)) / 1000, size)

    def direct(self, n: int) -> bool:
        return (self.gap_s > 0 and self.pending == 0 and n <= self.max_items
                and time.perf_counter() - self.last_end >= self.gap_s)

    def ended(self) -> None:
        self.last_end = time.perf_counter()

    async def batched(self, handler, items: Sequence) -> list:
        self.pending += len(items)
        try:
            return list(await asyncio.gather(*(handler(item) for item in items)))
        finally:
            self.pending -= len(items)


@serve.deployment(name="Encoder", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class Encoder:
    """MoMu's two towers. `embed_texts` / `embed_graphs` return L2-normalised float32 [n, D] arrays."""

    def __init__(self, model: str, device: str = "auto", torch_threads: Optional[int] = 1,
                 batching: Optional[dict] = None, precision: str = "fp32"):
        import torch

        from momu.models.loading import load_momu, resolve_model_dir

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and torch_threads:
            torch.set_num_threads(int(torch_threads))
        started = time.perf_counter()
        model_dir = resolve_model_dir(model)
        self.model = load_momu(model_dir, map_location=device).eval()
        self.device = device
        self.precision = precision
        self.identity = model_identity(model, Path(model_dir))
        self.dim = int(self.model.config.proj_dim)
        self._torch = torch
        self._batching = dict(batching or {})
        self._enabled = bool(self._batching.get("enabled", True))
        size = int(self._batching.get("max_batch_size", 32))
        wait = float(self._batching.get("batch_wait_timeout_s", 0.0))
        for handler in (self._text_item, self._graph_item):
            handler.set_max_batch_size(size)
            handler.set_batch_wait_timeout_s(wait)
        self._bypass = IdleBypass.from_batching(self._batching)
        self.batch_sizes: list[int] = []  # sizes of the last 1000 model calls
        self._stats = {"calls": 0, "items": 0, "busy_s": 0.0}
        log.info("Encoder: %s %s on %s loaded in %.1fs", self.identity["name"], self.identity["version"], device,
                 time.perf_counter() - started)

    # -- blocking model calls (on the event loop, see the module docstring) ---------------------------------------
    def _autocast(self):
        # bf16: AMX / tensor-core matmuls; the embeddings are re-normalised in float32 afterwards.
        return self._torch.autocast(self.device, dtype=self._torch.bfloat16, enabled=self.precision == "bf16")

    def _finish(self, z) -> np.ndarray:
        z = z.float()
        return self._torch.nn.functional.normalize(z, dim=-1).cpu().numpy()

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        with self._torch.inference_mode(), self._autocast():
            tokens = self.model.text_encoder.tokenize(list(texts), self.model.device)
            out = self._finish(self.model.encode_text(**tokens))
        self._note(len(texts), started)
        return out

    def _encode_graphs(self, graphs: Sequence) -> np.ndarray:
        started = time.perf_counter()
        with self._torch.inference_mode(), self._autocast():
            out = self._finish(self.model.embed_graphs(list(graphs), batch_size=max(1, len(graphs))))
        self._note(len(graphs), started)
        return out

    def _note(self, n: int, started: float) -> None:
        self._bypass.ended()
        self.batch_sizes.append(n)
        del self.batch_sizes[:-1000]
        self._stats["calls"] += 1
        self._stats["items"] += n
        self._stats["busy_s"] += time.perf_counter() - started

    # -- batched entry points -----------------------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _text_item(self, texts: list[str]) -> list[np.ndarray]:
        return list(self._encode_texts(texts))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _graph_item(self, graphs: list) -> list[np.ndarray]:
        return list(self._encode_graphs(graphs))

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._enabled and not self._bypass.direct(len(texts)):
            return np.stack(await self._bypass.batched(self._text_item, texts))
        return self._encode_texts(texts)

    async def embed_graphs(self, graphs: list) -> np.ndarray:
        """MolGraphs (momu.chem.featurize) -> embeddings. The ingress featurizes and validates the SMILES."""
        if not graphs:
            return np.zeros((0, self.dim), np.float32)
        if self._enabled and not self._bypass.direct(len(graphs)):
            return np.stack(await self._bypass.batched(self._graph_item, graphs))
        return self._encode_graphs(graphs)

    def info(self) -> dict:
        config = self.model.config
        graph = getattr(config, "graph_encoder", "gin")
        if graph == "gin":
            graph = f"gin {config.graph.num_layers}x{config.graph.emb_dim}"
        return {**self.identity, "embedding_dim": self.dim, "graph_encoder": graph,
                "text_encoder": config.text.name_or_path, "device": self.device, "precision": self.precision}

    def recent_batch_sizes(self) -> list[int]:
        """Sizes of the last (up to 1000) model calls."""
        return list(self.batch_sizes)

    def stats(self) -> dict:
        """Totals since start: model calls, items encoded, seconds spent in model calls."""
        return dict(self._stats)


@serve.deployment(name="Index", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
class Index:
    """The vector indexes: "molecules" (molecule embeddings + id/SMILES) and "texts" (description embeddings +
    id/text). `search(name, queries [Q, D], k)` returns, per query, up to k dicts {rank, score, id, ...}."""

    def __init__(self, molecule_index: Optional[str] = None, text_index: Optional[str] = None,
                 batching: Optional[dict] = None):
        from momu.index import RetrievalIndex

        try:  # one FAISS/BLAS thread per replica; scale with replicas instead
            import faiss

            faiss.omp_set_num_threads(1)
        except ImportError:  # exact indexes need no FAISS
            pass
        self.indexes: dict[str, Any] = {}
        for name, path in (("molecules", molecule_index), ("texts", text_index)):
            if path:
                started = time.perf_counter()
                if (Path(path) / "index.json").is_file():
                    self.indexes[name] = RetrievalIndex.load(path)
                else:  # the embedding job's output (Parquet shards): build an index in memory
                    self.indexes[name] = RetrievalIndex.from_shards(path)
                log.info("Index %s: %r from %s in %.1fs", name, self.indexes[name], path,
                         time.perf_counter() - started)
        batching = dict(batching or {})
        self._enabled = bool(batching.get("enabled", True))
        self._search_item.set_max_batch_size(int(batching.get("max_batch_size", 32)))
        self._search_item.set_batch_wait_timeout_s(float(batching.get("batch_wait_timeout_s", 0.0)))
        self._bypass = IdleBypass.from_batching(batching)
        self._stats = {"calls": 0, "items": 0, "busy_s": 0.0}

    def _search_many(self, items: list[tuple[str, np.ndarray, int]]) -> list[list[dict]]:
        """items of (index name, query vector, k) -> hits, grouped into one search per index."""
        started = time.perf_counter()
        out: list[Optional[list[dict]]] = [None] * len(items)
        for name in {it[0] for it in items}:
            positions = [i for i, it in enumerate(items) if it[0] == name]
            queries = np.stack([items[i][1] for i in positions])
            kmax = max(items[i][2] for i in positions)
            hits = self.indexes[name].search_rows(queries, kmax)
            for i, h in zip(positions, hits):
                out[i] = h[: items[i][2]]
        self._stats["calls"] += 1
        self._stats["items"] += len(items)
        self._stats["busy_s"] += time.perf_counter() - started
        self._bypass.ended()
        return out  # type: ignore[return-value]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _search_item(self, items: list[tuple[str, np.ndarray, int]]) -> list[list[dict]]:
        return self._search_many(items)

    async def search(self, name: str, queries: np.ndarray, k: int) -> list[list[dict]]:
        if name not in self.indexes:
            raise KeyError(f"no {name!r} index is configured")
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.indexes[name].dim)
        items = [(name, q, int(k)) for q in queries]
        if self._enabled and not self._bypass.direct(len(items)):
            return await self._bypass.batched(self._search_item, items)
        return self._search_many(items)

    def info(self) -> dict:
        return {name: {"size": len(ix), "dim": ix.dim, "kind": ix.kind, "model_info": ix.model_info}
                for name, ix in self.indexes.items()}

    def stats(self) -> dict:
        """Totals since start: batched searches, queries, seconds spent searching."""
        return dict(self._stats)


@serve.deployment(name="Captioner", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128)
class Captioner:
    """The retrieval captioner (momu.caption.retrieval) over a caption pool; `caption(smiles, embeddings, k)`
    returns, per canonical SMILES, a CaptionResult dict. For the MoMu kinds the queries' graph embeddings come
    from the Encoder (the ingress checks that it is the model the pool's embeddings were made with). Without a
    configured pool the deployment stays idle and `info()` is None."""

    def __init__(self, pool: Optional[str] = None, kind: str = "tanimoto", fusion_k: int = 10,
                 fusion_weight: float = 0.5, batching: Optional[dict] = None):
        self.captioner = None
        if pool:
            from momu.caption.retrieval import RetrievalCaptioner

            started = time.perf_counter()
            self.captioner = RetrievalCaptioner(pool, kind, None, fusion_k, fusion_weight)
            log.info("Captioner: %s %s, %d pool molecules, loaded in %.1fs", self.captioner.name,
                     self.captioner.version, len(self.captioner.pool), time.perf_counter() - started)
        batching = dict(batching or {})
        self._enabled = bool(batching.get("enabled", True))
        self._caption_item.set_max_batch_size(int(batching.get("max_batch_size", 32)))
        self._caption_item.set_batch_wait_timeout_s(float(batching.get("batch_wait_timeout_s", 0.0)))
        self.batch_sizes: list[int] = []

    def _caption_many(self, items: list[tuple[str, Optional[np.ndarray], int]]) -> list[dict]:
        from rdkit import Chem

        self.batch_sizes = (self.batch_sizes + [len(items)])[-1000:]
        mols = [Chem.MolFromSmiles(smiles) for smiles, _, _ in items]
        embeddings = None
        if self.captioner.kind != "tanimoto":
            embeddings = np.stack([np.asarray(e, np.float32) for _, e, _ in items])
        kmax = max(k for _, _, k in items)
        results = self.captioner.caption_mols(mols, k=kmax, graph_embeddings=embeddings)
        out = []
        for (_, _, k), result in zip(items, results):
            record = result.as_dict()
            record["neighbours"] = record["neighbours"][:k]
            out.append(record)
        return out

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _caption_item(self, items: list[tuple[str, Optional[np.ndarray], int]]) -> list[dict]:
        return self._caption_many(items)

    async def caption(self, smiles: list[str], embeddings: Optional[np.ndarray], k: int) -> list[dict]:
        """Canonical SMILES (already validated) [+ their graph embeddings] -> caption dicts, input order."""
        if self.captioner is None:
            raise RuntimeError("no caption pool is configured")
        items = [(s, None if embeddings is None else embeddings[i], int(k)) for i, s in enumerate(smiles)]
        if self._enabled:
            return list(await asyncio.gather(*(self._caption_item(it) for it in items)))
        return self._caption_many(items)

    def info(self) -> Optional[dict]:
        if self.captioner is None:
            return None
        pool = self.captioner.pool
        return {"captioner": self.captioner.name, "version": self.captioner.version, "kind": self.captioner.kind,
                "pool_size": len(pool), "pool": str(pool.path), "embeddings_model_sha256": pool.embeddings_sha256}

    def recent_batch_sizes(self) -> list[int]:
        return list(self.batch_sizes)


GENERATE_METHOD = "momu-graph-ga"


def generate_config(settings, model: str, n: int, seconds: float):
    """The momu.generate GenerateConfig of one request: the server's `generate` settings (ServeGenerate), the
    request's n and time budget; priors and allowed elements as `momu generate`'s defaults."""
    from momu.generate.config import GenerateConfig

    s = settings
    return GenerateConfig(model=model, n=n, seed=s.seed, budget_seconds=seconds, budget_evaluations=s.max_evaluations,
                          population_size=s.population_size, offspring_size=s.offspring_size,
                          edit_lambdas=s.edit_lambdas, edit_seeds=s.edit_seeds,
                          pool={"path": s.pool, "exclude": s.exclude, "sample": s.pool_sample})


@serve.deployment(name="Generator", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=2)
class Generator:
    """The MoMu-guided genetic algorithm of `momu generate` (momu.generate.ga) for POST /v1/generate: its own copy
    of the served model and the start-molecule pool (read once here). `generate(...)` runs one search under the
    request's time budget, cut short by the request's absolute deadline when it waited in the queue. A sync
    method: Serve runs it in a worker thread, so `info()` answers while searches run. Without a configured pool
    the deployment stays idle and `info()` is None."""

    def __init__(self, model: str, settings: Optional[dict] = None, device: str = "auto",
                 torch_threads: Optional[int] = 1):
        from momu.serve.config import ServeGenerate

        self.settings = ServeGenerate.model_validate(settings or {})
        self.model = None
        self.pool: list[str] = []
        if not self.settings.pool:
            return
        import torch

        from momu.generate.pool import load_pool
        from momu.models.loading import load_momu, resolve_model_dir

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and torch_threads:
            torch.set_num_threads(int(torch_threads))
        started = time.perf_counter()
        model_dir = resolve_model_dir(model)
        self.model = load_momu(model_dir, map_location=device).eval()
        self.identity = model_identity(model, Path(model_dir))
        self.pool = load_pool(self.settings.pool, self.settings.exclude)
        # Warm up (first calls of the text tower and the GIN are several times slower): the first request's
        # budget then goes to the search.
        from momu.generate.fitness import Fitness, text_embedding

        Fitness(self.model, text_embedding(self.model, "warm-up"), generate_config(
            self.settings, model, 1, 1.0)).score(self.pool[:8])
        log.info("Generator: %s %s on %s, %d pool molecules from %s, loaded in %.1fs", self.identity["name"],
                 self.identity["version"], device, len(self.pool), self.settings.pool, time.perf_counter() - started)

    def generate(self, text: str, n: int, edit: Optional[str], seconds: float, deadline: float) -> dict:
        """One search (text and edit already validated by the ingress). `deadline` is the ingress's wall-clock
        time.time() when the request's budget ends. Returns the momu.generate.ga result, or {"input_error":
        {field, reason}} / {"unavailable": reason} for the ingress to turn into a 422 / 503."""
        from momu.generate.ga import edit as edit_molecule
        from momu.generate.ga import generate

        if self.model is None:
            raise RuntimeError("no generation pool is configured")
        budget = min(float(seconds), deadline - time.time())
        if budget < 0.1:
            return {"unavailable": f"every generator was busy: the request waited past its {seconds:g} s budget "
                                   "before a search could start; retry, or scale the Generator deployment"}
        config = generate_config(self.settings, self.identity["source"], n, budget)
        try:
            if edit is not None:
                return edit_molecule(self.model, text, edit, config)
            return generate(self.model, text, config, pool=self.pool)
        except ValueError as err:  # the library names the field: "text: ..." / "edit: ..."
            field, _, reason = str(err).partition(": ")
            if field in ("text", "edit"):
                return {"input_error": {"field": field, "reason": reason}}
            raise

    def info(self) -> Optional[dict]:
        if self.model is None:
            return None
        from momu.generate.config import GenerateConfig

        from serving.schemas import MAX_GENERATE_N

        s = self.settings
        return {"method": GENERATE_METHOD, "pool": str(s.pool), "pool_size": len(self.pool),
                "default_seconds": s.default_seconds, "max_seconds": s.max_seconds,
                "max_evaluations": s.max_evaluations, "max_n": MAX_GENERATE_N, "edit_lambdas": list(s.edit_lambdas),
                "allowed_elements": GenerateConfig().allowed_elements, "model_version": self.identity["version"]}


class InProcess:
    """A deployment's class instantiated inside the calling replica, called like a DeploymentHandle
    (`await obj.method.remote(...)`): the colocated topology's Encoder and Index, with no hop between replicas.
    `@serve.batch` works the same in any replica's event loop, so batching is unchanged."""

    def __init__(self, deployment, *args, **kwargs):
        self.instance = deployment.func_or_class(*args, **kwargs)

    def __getattr__(self, name: str) -> "_InProcessMethod":
        return _InProcessMethod(getattr(self.instance, name))


class _InProcessMethod:
    def __init__(self, method):
        self._method = method

    async def remote(self, *args, **kwargs):
        result = self._method(*args, **kwargs)
        return await result if asyncio.iscoroutine(result) else result
