"""The MoMu Serve application: a FastAPI ingress (`MoMuAPI`) composing an `Encoder` and an `Index` deployment.

    serve run serving/config.yaml            # from the repository root
    momu serve --config serving/config.yaml  # the same, on 127.0.0.1, Ctrl-C to stop

`app` is the application builder Serve imports (`import_path: serving.app:app`); it takes the `args:` of the
config file as a `momu.config.ServeConfig`. The `Captioner` deployment (retrieval captioner over `caption_pool`,
POST /v1/caption) and the `Generator` deployment (MoMu-guided GA over `generate.pool`, POST /v1/generate) are bound
here too and handed to the ingress like the encoder and index.

Errors are JSON: {"error": <class>, "detail": [{"field": ..., "reason": ...}]}. Bad input is a 4xx naming the field
(400 malformed JSON, 401 API key, 413 body too large, 422 invalid value); it never reaches the model.
"""

# No `from __future__ import annotations`: Serve reads the builder's parameter annotation as a class.
import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from momu.chem.draw import DrawingCache
from momu.serve.config import ServeConfig
from serving import errors
from serving.deployments import Captioner, Encoder, Generator, Index, InProcess
from serving.schemas import (
    CaptionRequest,
    CaptionResponse,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    MoleculeHit,
    ModelsResponse,
    SearchMoleculesRequest,
    SearchMoleculesResponse,
    SearchTextsRequest,
    SearchTextsResponse,
    SimilarityRequest,
    SimilarityResponse,
    TextHit,
)
from serving.validation import InputError, check_items, check_k, check_smiles, check_text

log = logging.getLogger("ray.serve")

REPO_ROOT = Path(__file__).resolve().parents[1]
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Time a generation may take beyond its budget before the ingress gives up (504): queueing, drawing, transfer.
GENERATE_GRACE_S = 10.0
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

ERROR_RESPONSES = {code: {"model": ErrorResponse, "description": text} for code, text in [
    (400, "malformed JSON"), (401, "missing or wrong API key"), (413, "request body too large"),
    (422, "invalid value (the field and reason are named)"), (503, "index not configured or backend unavailable"),
    (504, "a generation did not answer within its budget")]}

api = FastAPI(
    title="MoMu",
    version="1",
    description="Search molecules by text and texts by molecule with MoMu (a molecule-graph <-> text contrastive "
                "model); embed SMILES or texts; score (SMILES, text) pairs. The web page is at `/`.",
)

errors.install_error_handlers(api)
api.add_middleware(errors.GuardMiddleware)
api.add_middleware(errors.ServerTimingMiddleware)  # added last = outermost: it times the guard too


def _text_of(hit: dict) -> str:
    for column in ("text", "description", "texts"):
        value = hit.get(column)
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            return str(value)
    return ""


def _same_model(built_by: dict, served: dict) -> Optional[bool]:
    """Whether an index's embeddings come from the served model: by weights hash, else by version (None: the
    index does not say)."""
    if built_by.get("weights_sha256"):
        return built_by["weights_sha256"] == served["weights_sha256"]
    if built_by.get("model_version"):
        return built_by["model_version"] == served["version"]
    return None


# Above the ingress on purpose: `@serve.deployment` pickles the class when this module is imported, and a global
# the class uses must exist by then (one defined further down is missing in the replica).
SPLIT_ONLY = ("Encoder", "Index")  # deployments of topology split; colocated builds them inside MoMuAPI


def tower_args(config: ServeConfig) -> tuple[tuple, tuple]:
    """Constructor arguments of Encoder and Index, the same whether bound as deployments (split) or built inside
    the MoMuAPI replica (colocated)."""
    return ((config.model, config.device, config.torch_threads, config.batching.model_dump(), config.precision),
            (config.molecule_index, config.text_index, config.batching.model_dump()))


# -- the ingress ------------------------------------------------------------------------------------------------

@serve.deployment(name="MoMuAPI", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
@serve.ingress(api)
class MoMuAPI:
    def __init__(self, encoder: Optional[DeploymentHandle], index: Optional[DeploymentHandle], config: dict,
                 captioner: Optional[DeploymentHandle] = None, generator: Optional[DeploymentHandle] = None):
        self.config = ServeConfig.model_validate(config)
        self.limits = self.config.limits
        if self.config.topology == "colocated":  # the towers and indexes in this replica: no hop on search / embed
            encoder_args, index_args = tower_args(self.config)
            encoder, index = InProcess(Encoder, *encoder_args), InProcess(Index, *index_args)
        self.encoder = encoder
        self.index = index
        self.captioner = captioner
        self._captioner_info: Optional[dict] = None
        self.generator = generator
        self._generator_info: Optional[dict] = None
        key = self.config.api_key
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env) or None
            if key is None:
                raise RuntimeError(f"api_key_env: environment variable {self.config.api_key_env} is not set")
        errors.configure(self.limits.max_body_bytes, key)
        self.drawings = DrawingCache()
        self._page = (STATIC_DIR / "index.html").read_text()
        self._model: Optional[dict] = None
        self._indexes: Optional[dict] = None
        self._warned: set = set()

    # -- helpers ------------------------------------------------------------------------------------------------
    async def _model_info(self) -> dict:
        if self._model is None:
            self._model = await self.encoder.info.remote()
        return self._model

    async def _index_info(self) -> dict:
        if self._indexes is None:
            self._indexes = await self.index.info.remote()
        return self._indexes

    async def _captioner(self) -> Optional[dict]:
        if self._captioner_info is None and self.captioner is not None:
            self._captioner_info = await self.captioner.info.remote() or {}
        return self._captioner_info or None

    async def _generator(self) -> Optional[dict]:
        if self._generator_info is None and self.generator is not None:
            self._generator_info = await self.generator.info.remote() or {}
        return self._generator_info or None

    async def _require_captioner(self) -> dict:
        info = await self._captioner()
        if info is None:
            raise errors.NotConfigured("no caption pool is configured on this server (caption_pool is null)")
        if info["kind"] != "tanimoto":
            model = await self._model_info()
            if info.get("embeddings_model_sha256") != model["weights_sha256"]:
                raise errors.NotConfigured(
                    f"the caption pool's embeddings were made by another model (weights sha256 "
                    f"{str(info.get('embeddings_model_sha256'))[:12]}) than the served one ({model['version']}): "
                    "rebuild it with `momu caption pool --model <served model>` or use caption_kind tanimoto")
        return info

    async def _require_index(self, name: str) -> int:
        info = await self._index_info()
        if name not in info:
            raise errors.NotConfigured(f"no {name} index is configured on this server "
                                       f"({'molecule_index' if name == 'molecules' else 'text_index'} is null)")
        model = await self._model_info()
        if int(info[name]["dim"]) != int(model["embedding_dim"]):
            raise errors.NotConfigured(f"the {name} index holds {info[name]['dim']}-d embeddings but the served model "
                                       f"makes {model['embedding_dim']}-d ones: rebuild the index with this model")
        if _same_model(info[name].get("model_info") or {}, model) is False and name not in self._warned:
            self._warned.add(name)
            log.warning("the %s index was built by another model (%s) than the served one (%s %s)", name,
                        info[name].get("model_info"), model["name"], model["version"])
        return int(info[name]["size"])

    async def _draw(self, smiles: list[Optional[str]]) -> list[Optional[str]]:
        """SVG drawings (cached), made in a worker thread so a page of drawings does not stall other requests."""
        def draw_all():
            return [self.drawings.get(s, self.config.draw_width, self.config.draw_height) if s else None
                    for s in smiles]

        return await asyncio.to_thread(draw_all)

    async def component_stats(self) -> dict:
        """Totals of the encoder and the index since start (calls, items, busy seconds), whichever the topology;
        benchmarks read them through a handle to this deployment."""
        encoder, index = await asyncio.gather(self.encoder.stats.remote(), self.index.stats.remote())
        return {"encoder": encoder, "index": index, "topology": self.config.topology}

    # -- pages ------------------------------------------------------------------------------------------------
    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self._page)

    @api.get("/static/{name}", include_in_schema=False)
    async def static(self, name: str) -> Response:
        if name not in STATIC_FILES:
            raise StarletteHTTPException(404, f"no static file {name!r}")
        return Response((STATIC_DIR / name).read_bytes(), media_type=STATIC_FILES[name])

    @api.get("/healthz", response_model=HealthResponse, responses=ERROR_RESPONSES)
    async def healthz(self) -> dict:
        """Ready when the encoder and the index deployments answer."""
        await asyncio.wait_for(asyncio.gather(self._model_info(), self._index_info()), timeout=10)
        return {"status": "ok"}

    @api.get("/v1/models", response_model=ModelsResponse, responses=ERROR_RESPONSES)
    async def models(self) -> dict:
        """The served model (name, version, towers) and the indexes (size, kind, the model that built them)."""
        model, indexes, captioner, generator = await asyncio.gather(
            self._model_info(), self._index_info(), self._captioner(), self._generator())
        out = {name: {**info, "model_matches": _same_model(info.get("model_info") or {}, model)}
               for name, info in indexes.items()}
        return {"model": model, "indexes": out, "captioner": captioner, "generator": generator,
                "batching": self.config.batching.model_dump(), "limits": self.limits.model_dump()}

    # -- search -----------------------------------------------------------------------------------------------
    @api.post("/v1/search/molecules", response_model=SearchMoleculesResponse, responses=ERROR_RESPONSES)
    async def search_molecules(self, request: SearchMoleculesRequest) -> dict:
        """Text query -> the k molecules whose MoMu graph embeddings are closest to the text's embedding."""
        query = check_text(request.query, "query", self.limits)
        k = check_k(request.k, self.limits)
        size = await self._require_index("molecules")
        embedding = await self.encoder.embed_texts.remote([query])
        hits = (await self.index.search.remote("molecules", embedding, k))[0]
        model = await self._model_info()
        svgs = await self._draw([h.get("smiles") for h in hits]) if request.draw else [None] * len(hits)
        results = [MoleculeHit(rank=h["rank"], id=h["id"], smiles=h.get("smiles") or "", score=h["score"], svg=svg)
                   for h, svg in zip(hits, svgs)]
        return {"query": query, "k": k, "results": results, "index_size": size, "model_version": model["version"]}

    @api.post("/v1/search/texts", response_model=SearchTextsResponse, responses=ERROR_RESPONSES)
    async def search_texts(self, request: SearchTextsRequest) -> dict:
        """SMILES -> the k descriptions whose MoMu text embeddings are closest to the molecule's embedding."""
        molecule = check_smiles(request.smiles, "smiles", self.limits)
        k = check_k(request.k, self.limits)
        size = await self._require_index("texts")
        embedding = await self.encoder.embed_graphs.remote([molecule.graph])
        hits = (await self.index.search.remote("texts", embedding, k))[0]
        model = await self._model_info()
        results = [TextHit(rank=h["rank"], id=h["id"], text=_text_of(h), score=h["score"], smiles=h.get("smiles"))
                   for h in hits]
        return {"smiles": molecule.canonical_smiles, "k": k, "results": results, "index_size": size,
                "svg": (await self._draw([molecule.canonical_smiles]))[0] if request.draw else None,
                "model_version": model["version"]}

    # -- embeddings -----------------------------------------------------------------------------------------------
    @api.post("/v1/embed", response_model=EmbedResponse, responses=ERROR_RESPONSES)
    async def embed(self, request: EmbedRequest) -> dict:
        """SMILES list (graph tower) or text list (text tower) -> L2-normalised embeddings, input order."""
        if request.smiles is not None:
            check_items(request.smiles, "smiles", self.limits)
            graphs = [check_smiles(s, f"smiles[{i}]", self.limits).graph for i, s in enumerate(request.smiles)]
            vectors, kind = await self.encoder.embed_graphs.remote(graphs), "molecule"
        else:
            check_items(request.texts, "texts", self.limits)
            texts = [check_text(t, f"texts[{i}]", self.limits) for i, t in enumerate(request.texts)]
            vectors, kind = await self.encoder.embed_texts.remote(texts), "text"
        model = await self._model_info()
        return {"kind": kind, "dim": int(vectors.shape[1]), "embeddings": vectors.tolist(),
                "model_version": model["version"]}

    @api.post("/v1/similarity", response_model=SimilarityResponse, responses=ERROR_RESPONSES)
    async def similarity(self, request: SimilarityRequest) -> dict:
        """(SMILES, text) pairs -> cosine similarity of MoMu's graph and text embeddings for each pair."""
        check_items(request.pairs, "pairs", self.limits)
        graphs = [check_smiles(p.smiles, f"pairs[{i}].smiles", self.limits).graph for i, p in enumerate(request.pairs)]
        texts = [check_text(p.text, f"pairs[{i}].text", self.limits) for i, p in enumerate(request.pairs)]
        g, t = await asyncio.gather(self.encoder.embed_graphs.remote(graphs), self.encoder.embed_texts.remote(texts))
        model = await self._model_info()
        return {"scores": np.einsum("ij,ij->i", g, t).astype(float).tolist(), "model_version": model["version"]}


    # -- captioning -------------------------------------------------------------------------------------------------
    @api.post("/v1/caption", response_model=CaptionResponse, responses=ERROR_RESPONSES)
    async def caption(self, request: CaptionRequest) -> dict:
        """SMILES list -> per molecule, the description of its nearest known molecule in the caption pool (the
        retrieval captioner), with that neighbour's id, SMILES and similarity. A molecule that cannot be read gets
        a per-item `error` (the others are still captioned); a request beyond the limits is a 422."""
        check_items(request.smiles, "smiles", self.limits)
        k = check_k(request.k, self.limits)
        info = await self._require_captioner()
        items: list[dict] = []
        good, graphs = [], []
        for i, smiles in enumerate(request.smiles):
            field = f"smiles[{i}]"
            if len(smiles) > self.limits.max_smiles_chars:  # a limit of the request, not of the molecule
                raise InputError(field, f"is {len(smiles)} characters long; the limit is "
                                        f"{self.limits.max_smiles_chars} (limits.max_smiles_chars)")
            try:
                molecule = check_smiles(smiles, field, self.limits)
            except InputError as err:
                items.append({"input": smiles, "error": {"field": err.field, "reason": err.reason}})
                continue
            items.append({"input": smiles, "smiles": molecule.canonical_smiles})
            good.append(i)
            graphs.append(molecule.graph)
        if good:
            embeddings = await self.encoder.embed_graphs.remote(graphs) if info["kind"] != "tanimoto" else None
            results = await self.captioner.caption.remote([items[i]["smiles"] for i in good], embeddings, k)
            for i, result in zip(good, results):
                items[i].update({key: result[key] for key in ("caption", "label", "captioner", "similarity_kind")})
                items[i]["neighbours"] = [{key: n[key] for key in ("rank", "id", "cid", "smiles", "similarity",
                                                                   "tanimoto", "caption", "source")}
                                          for n in result["neighbours"]]
            if request.draw:
                for i in good:
                    shown = [items[i]["smiles"]] + [n["smiles"] for n in items[i]["neighbours"]]
                    svgs = await self._draw(shown)
                    items[i]["svg"] = svgs[0]
                    for n, svg in zip(items[i]["neighbours"], svgs[1:]):
                        n["svg"] = svg
        return {"results": items, "captioner": info["captioner"], "captioner_version": info["version"],
                "pool_size": info["pool_size"]}


    # -- generation -------------------------------------------------------------------------------------------------
    @api.post("/v1/generate", response_model=GenerateResponse, responses=ERROR_RESPONSES)
    async def generate(self, request: GenerateRequest) -> dict:
        """Text -> the n best molecules the MoMu-guided genetic algorithm finds within the time budget (graph
        embedding near the text's, under QED / SA / size / element priors), or with `edit` that molecule edited
        towards the text: one molecule per lambda of total + lambda * Tanimoto(candidate, input). The budget is
        hard: the search stops at it (cut to what the remaining time can score), and an answer that does not come
        within the budget plus a grace period is a 504."""
        text = check_text(request.text, "text", self.limits)
        settings = self.config.generate
        seconds = settings.default_seconds if request.budget is None else float(request.budget)
        if seconds > settings.max_seconds:
            raise InputError("budget", f"must be at most {settings.max_seconds:g} seconds (generate.max_seconds), "
                                       f"got {seconds:g}")
        edit = None
        if request.edit is not None:
            edit = check_smiles(request.edit, "edit", self.limits).canonical_smiles
        info = await self._generator()
        if info is None:
            raise errors.NotConfigured("no generation pool is configured on this server (generate.pool is null)")
        if edit is not None:
            from momu.generate.fitness import edit_input_problem

            problem = edit_input_problem(edit, info["allowed_elements"])
            if problem:
                raise InputError("edit", problem)
        deadline = time.time() + seconds
        try:
            result = await asyncio.wait_for(self.generator.generate.remote(text, request.n, edit, seconds, deadline),
                                            timeout=seconds + GENERATE_GRACE_S)
        except asyncio.TimeoutError:
            raise errors.Timeout(f"no answer within the {seconds:g} s budget + {GENERATE_GRACE_S:g} s grace: the "
                                 "generators are busy; retry") from None
        if "input_error" in result:
            raise InputError(result["input_error"]["field"], result["input_error"]["reason"])
        if "unavailable" in result:
            raise errors.Unavailable(result["unavailable"])
        edit_mode = result["mode"] == "edit"
        molecules = []
        for i, r in enumerate(result["results"], start=1):
            molecules.append({"rank": r.get("rank", i), "smiles": r["smiles"], "score": r["total"],
                              "cosine": r["cosine"], "qed": r["qed"], "sa": r["sa"], "lambda": r.get("lambda"),
                              "tanimoto": r.get("tanimoto"), "from_pool": None if edit_mode else r.get("from_pool"),
                              "is_input": r.get("is_input") if edit_mode else None})
        if request.draw:
            for molecule, svg in zip(molecules, await self._draw([m["smiles"] for m in molecules])):
                molecule["svg"] = svg
        return {"text": text, "mode": result["mode"], "edit": result.get("input"), "method": info["method"],
                "molecules": molecules, "evaluations": result["evaluations"], "generations": result["generations"],
                "seconds": result["seconds"], "budget_seconds": seconds, "stopped_by": result["stopped_by"],
                "pool_size": info["pool_size"], "model_version": info["model_version"]}


# -- the builder --------------------------------------------------------------------------------------------------

def _shipped_checkpoint(name: str) -> bool:
    """A checkpoint shipped with the package (momu/checkpoints/<name>, e.g. momu-cpu), named without a path."""
    import momu

    return "/" not in name and (Path(momu.__file__).resolve().parent / "checkpoints" / name / "config.json").is_file()


def resolve_path(path: Optional[str]) -> Optional[str]:
    """Relative paths are relative to the repository root; URIs (models:/, s3://, ...) and the name of a shipped
    checkpoint (momu-cpu, unless the repository holds a directory of that name) are kept as given."""
    if path is None or "://" in path or path.startswith("models:/"):
        return path
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    local = (REPO_ROOT / p).resolve()
    return path if not local.exists() and _shipped_checkpoint(path) else str(local)


DEPLOYMENTS = ("MoMuAPI", "Encoder", "Index", "Captioner", "Generator")


def compose(config: ServeConfig, deployment_options: Optional[dict] = None) -> serve.Application:
    """Bind the deployments. deployment_options: {deployment name: Deployment.options(...) kwargs}, i.e. the
    `deployments:` entries of a Serve config file (autoscaling_config, ray_actor_options, ...)."""
    options = dict(deployment_options or {})
    unknown = sorted(set(options) - set(DEPLOYMENTS))
    if unknown:
        raise ValueError(f"deployments: unknown deployment(s) {unknown}; this application has {list(DEPLOYMENTS)}")
    config = config.model_copy(update={"model": resolve_path(config.model),
                                       "molecule_index": resolve_path(config.molecule_index),
                                       "text_index": resolve_path(config.text_index),
                                       "caption_pool": resolve_path(config.caption_pool),
                                       "generate": config.generate.model_copy(update={
                                           "pool": resolve_path(config.generate.pool),
                                           "exclude": [resolve_path(p) for p in config.generate.exclude]})})
    batching = config.batching.model_dump()
    encoder = index = None  # colocated: MoMuAPI builds both in its replica
    bound = bound_options(config, options)
    if config.topology == "split":
        encoder_args, index_args = tower_args(config)
        encoder = Encoder.options(**bound["Encoder"]).bind(*encoder_args)
        index = Index.options(**bound["Index"]).bind(*index_args)
    # Always bound (idle without a pool): the deployment set stays the one serving/config.yaml configures.
    captioner = Captioner.options(**bound["Captioner"]).bind(
        config.caption_pool, config.caption_kind, config.caption_fusion_k, config.caption_fusion_weight, batching)
    generator = Generator.options(**bound["Generator"]).bind(
        config.model, config.generate.model_dump(), config.device, config.torch_threads)
    return MoMuAPI.options(**bound["MoMuAPI"]).bind(encoder, index, config.model_dump(), captioner, generator)


def bound_options(config: ServeConfig, options: dict) -> dict[str, dict]:
    """{name: Deployment.options(...) kwargs} of every deployment `compose` binds for this config (Encoder and
    Index only with topology split), from the config file's `deployments:` entries."""
    if config.topology != "split" and set(options) & set(SPLIT_ONLY):
        raise ValueError(f"deployments: {sorted(set(options) & set(SPLIT_ONLY))} are not deployments of "
                         "topology colocated (the towers and indexes run inside MoMuAPI): remove those entries and "
                         "size MoMuAPI instead, or use topology split")
    names = [n for n in DEPLOYMENTS if config.topology == "split" or n not in SPLIT_ONLY]
    bound = {name: dict(options.get(name) or {}) for name in names}
    # Idle without a pool and without options of its own (benchmarks, tests that size only the other four): it holds
    # no model, so it reserves no CPU and the app fits where it fitted before generation existed.
    if options.get("Generator") is None and not config.generate.pool:
        bound["Generator"] = {"ray_actor_options": {"num_cpus": 0}}
    return bound


def reserved_cpus(config: ServeConfig, options: dict) -> float:
    """CPUs the deployments `compose` binds reserve at their starting replica counts (num_replicas, else
    autoscaling initial_replicas / min_replicas, else 1), their options merged over each class's defaults."""
    classes = {"MoMuAPI": MoMuAPI, "Encoder": Encoder, "Index": Index, "Captioner": Captioner,
               "Generator": Generator}
    total = 0.0
    for name, opts in bound_options(config, options).items():
        scaling = opts.get("autoscaling_config") or {}
        replicas = opts.get("num_replicas")
        if not isinstance(replicas, int):
            replicas = scaling.get("initial_replicas") or scaling.get("min_replicas") or 1
        actor = classes[name].options(**opts).ray_actor_options or {}
        total += float(actor.get("num_cpus", 1)) * max(1, int(replicas))
    return total


def options_for_topology(config: ServeConfig, options: dict) -> tuple[dict, list[str]]:
    """A config file's deployment options fitted to the config's topology: with colocated, the Encoder and Index
    entries (written for split, as in serving/config.yaml) are left out. Returns (options, the names left out)."""
    if config.topology != "colocated":
        return options, []
    unused = [name for name in SPLIT_ONLY if name in options]
    return {k: v for k, v in options.items() if k not in unused}, unused


def build_app(args: ServeConfig) -> serve.Application:
    """Application builder (`import_path: serving.app:app`): the config file's `args:`, validated as ServeConfig,
    -> the bound application. Serve applies the file's `deployments:` options itself."""
    if not isinstance(args, ServeConfig):
        args = ServeConfig.model_validate(args)
    return compose(args)


app = build_app


def load_serve_config(path, overrides: Optional[dict] = None) -> tuple[ServeConfig, dict, dict]:
    """A Serve config file (serving/config.yaml) -> (its application's args as ServeConfig with `overrides`
    applied, {deployment name: options}, http_options). A plain ServeConfig YAML (just the args) works too."""
    import yaml
    from pydantic import ValidationError

    from momu.config import ConfigError, format_validation_error, load_config, set_nested

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if "applications" not in data:
        return load_config(ServeConfig, path, overrides), {}, {}
    apps = [a for a in data.get("applications") or [] if str(a.get("import_path", "")).startswith("serving.app")]
    if len(apps) != 1:
        raise ConfigError(f"{path}: expected one application with import_path serving.app:app, found {len(apps)}")
    application = apps[0]
    args = dict(application.get("args") or {})
    for dotted, value in (overrides or {}).items():
        set_nested(args, dotted.split("."), value)
    try:
        config = ServeConfig.model_validate(args)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"{path} (applications[].args)")) from None
    options = {}
    for entry in application.get("deployments") or []:
        entry = dict(entry)
        name = entry.pop("name", None)
        if name not in DEPLOYMENTS:
            raise ConfigError(f"{path}: deployments: unknown deployment {name!r}; this application has "
                              f"{list(DEPLOYMENTS)}")
        options[name] = entry
    return config, options, dict(data.get("http_options") or {})
