"""The Serve application end to end over HTTP on 127.0.0.1, against a small real index (ChEBI-20 molecules and
descriptions embedded by the tests' small MoMu). One application for the whole module (slow tests), plus fast
tests of the pure pieces (input checks, drawings, the body-size / API-key middleware) that need no Ray.
"""

import asyncio
import http.client
import json
from types import MethodType, SimpleNamespace
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np
import pytest

from serving_helpers import TINY_GENERATE, build_assets, free_port, get, post, start_app, stop_app

APP = "momu_test"
API_KEY = "test-key-0123456789"
KEY = {"x-api-key": API_KEY}
LIMITS = {"max_k": 20, "max_items": 8, "max_text_chars": 300, "max_smiles_chars": 200, "max_atoms": 60,
          "max_body_bytes": 4096}


# -- fast: pure pieces ---------------------------------------------------------------------------------------------

def test_field_names_and_checks():
    from momu.serve.config import ServeLimits
    from serving.validation import InputError, check_items, check_k, check_smiles, check_text, field_name

    assert field_name(("body", "pairs", 2, "text")) == "pairs[2].text"
    assert field_name(("body", "k")) == "k"
    assert field_name(("body",)) == ""
    limits = ServeLimits(**LIMITS)
    assert check_text("  benzene ring  ", "query", limits) == "benzene ring"
    cases = [
        (lambda: check_text("   ", "query", limits), "query", "must not be empty"),
        (lambda: check_text("x" * 301, "texts[1]", limits), "texts[1]", "limits.max_text_chars"),
        (lambda: check_k(21, limits), "k", "limits.max_k"),
        (lambda: check_items([], "smiles", limits), "smiles", "must not be empty"),
        (lambda: check_items(["C"] * 9, "smiles", limits), "smiles", "limits.max_items"),
        (lambda: check_smiles("C1CC", "smiles", limits), "smiles", "unparseable"),
        (lambda: check_smiles("C" * 201, "smiles", limits), "smiles", "limits.max_smiles_chars"),
        (lambda: check_smiles("C" * 61, "smiles", limits), "smiles", "too_many_atoms"),
        (lambda: check_smiles("*CC", "smiles", limits), "smiles", "unsupported_element"),
    ]
    for fn, field, reason in cases:
        with pytest.raises(InputError) as err:
            fn()
        assert err.value.field == field and reason in err.value.reason, (field, err.value.reason)
    checked = check_smiles("OCC", "smiles", limits)
    assert checked.canonical_smiles == "CCO" and checked.graph.num_nodes == 3


def test_mol_to_svg_and_cache():
    from momu.chem.draw import DrawingCache, mol_to_svg

    svg = mol_to_svg("CC(=O)Oc1ccccc1C(=O)O", 200, 150)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and "width='200px'" in svg
    assert "<script" not in svg and "CC(=O)" not in svg
    assert mol_to_svg("C1CC") is None and mol_to_svg("") is None
    cache = DrawingCache(max_entries=2)
    assert cache.get("CCO") == cache.get("CCO") and (cache.hits, cache.misses) == (1, 1)
    cache.get("CCN"), cache.get("CCC")
    assert len(cache) == 2


def test_encoder_precision_and_batches(small_model, tmp_path):
    """The encoder's model calls, outside Serve: bf16 autocast stays within ~1e-3 of fp32 in cosine."""
    from momu.chem.featurize import featurize_smiles
    from serving.deployments import Encoder

    model_dir = small_model.save_pretrained(tmp_path / "model")
    cls = Encoder.func_or_class
    fp32, bf16 = cls(str(model_dir), "cpu", 1, {}), cls(str(model_dir), "cpu", 1, {}, "bf16")
    texts = ["The molecule is a monocarboxylic acid anion.", "a steroid"]
    graphs = [featurize_smiles(s) for s in ("CCO", "CC(=O)Oc1ccccc1C(=O)O")]
    a, b = fp32._encode_texts(texts), bf16._encode_texts(texts)
    np.testing.assert_allclose(a, small_model.embed_texts(texts).numpy(), atol=1e-5)
    assert a.dtype == b.dtype == np.float32 and ((a * b).sum(1) > 0.999).all()
    g, h = fp32._encode_graphs(graphs), bf16._encode_graphs(graphs)
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, atol=1e-5)
    assert ((g * h).sum(1) > 0.999).all()
    assert fp32.recent_batch_sizes() == [2, 2] and fp32.info()["precision"] == "fp32"


def test_idle_bypass_rules(small_model, tmp_path, monkeypatch):
    """A call skips the batch queue only on an idle replica (nothing queued, no model call for the gap) and when
    its items fit one batch; a configured batch wait turns the bypass off. Outside Serve, @serve.batch cannot run
    (it needs a replica context), so the Encoder answering a lone request there shows it took the direct path."""
    from serving import deployments
    from serving.deployments import Encoder, IdleBypass

    clock = {"t": 100.0}
    monkeypatch.setattr(deployments.time, "perf_counter", lambda: clock["t"])
    bypass = IdleBypass.from_batching({"idle_direct_ms": 5, "max_batch_size": 4})
    assert bypass.direct(1) and bypass.direct(4) and not bypass.direct(5)
    bypass.ended()
    assert not bypass.direct(1)  # a model call just ended: under load, join the queue
    clock["t"] += 0.006
    assert bypass.direct(1)
    bypass.pending = 2
    assert not bypass.direct(1)  # items are queued or in a batch
    assert not IdleBypass.from_batching({"idle_direct_ms": 0}).direct(1)
    assert not IdleBypass.from_batching({"idle_direct_ms": 5, "batch_wait_timeout_s": 0.01}).direct(1)
    monkeypatch.undo()

    model_dir = small_model.save_pretrained(tmp_path / "model")
    encoder = Encoder.func_or_class(str(model_dir), "cpu", 1, {"idle_direct_ms": 5})
    out = asyncio.run(encoder.embed_texts(["a steroid"]))
    np.testing.assert_allclose(out, small_model.embed_texts(["a steroid"]).numpy(), atol=1e-5)
    assert encoder.recent_batch_sizes() == [1]


def test_index_deployment_batches_mixed_requests(tmp_path):
    """The index deployment's batch function, outside Serve: one batch mixing both indexes and different k gives
    each item exactly its own search; an embedding job's shard directory serves like a saved index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from momu.index import RetrievalIndex
    from serving.deployments import Index

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"m{i}" for i in range(50)]
    RetrievalIndex.build(emb, ids, pa.table({"smiles": ["C" * (i + 1) for i in range(50)]})).save(tmp_path / "mol")
    shards = tmp_path / "shards"
    shards.mkdir()
    texts = [f"text {i}" for i in range(50)]
    for part in range(2):  # the embedding job's output: Parquet shards with id, text, embedding
        rows = slice(25 * part, 25 * (part + 1))
        pq.write_table(pa.table({"id": ids[rows], "text": texts[rows], "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(emb[rows].ravel()), 8)}), shards / f"part-{part}.parquet")
    index = Index.func_or_class(str(tmp_path / "mol"), str(shards), {})
    assert index.info()["molecules"]["size"] == index.info()["texts"]["size"] == 50
    queries = emb[[3, 7, 11]]
    items = [("molecules", queries[0], 1), ("texts", queries[1], 5), ("molecules", queries[2], 3)]
    hits = index._search_many(items)
    assert [len(h) for h in hits] == [1, 5, 3]
    assert hits[0][0]["id"] == "m3" and hits[0][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits[1][0] == {"rank": 1, "score": pytest.approx(1.0, abs=1e-5), "row": 7, "id": "m7", "text": "text 7"}
    assert [h["id"] for h in hits[2]] == [r["id"] for r in RetrievalIndex.load(tmp_path / "mol").rows(
        RetrievalIndex.load(tmp_path / "mol").search(queries[2], 3)[1][0])]


def _asgi_call(app, method, path, body=b"", headers=(), chunks=None):
    """Drive an ASGI app directly: (status, JSON body)."""
    sent = []
    pieces = list(chunks) if chunks is not None else [body]

    async def receive():
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    hdrs = [(b"content-type", b"application/json")] + [(k.lower().encode(), v.encode()) for k, v in headers]
    if chunks is None:
        hdrs.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": hdrs, "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload)


def test_guard_middleware_api_key_and_body_size():
    from fastapi import FastAPI

    from serving import errors
    from serving.schemas import SearchMoleculesRequest

    app = FastAPI()
    errors.install_error_handlers(app)
    app.add_middleware(errors.GuardMiddleware)

    @app.post("/v1/echo")
    async def echo(request: SearchMoleculesRequest):
        return {"query": request.query}

    @app.get("/healthz")
    async def health():
        return {"status": "ok"}

    body = json.dumps({"query": "benzene"}).encode()
    try:
        errors.configure(max_body_bytes=1024, api_key="secret")
        assert _asgi_call(app, "POST", "/v1/echo", body) == (401, {"error": "unauthorized", "detail": [
            {"field": "x-api-key", "reason": "missing API key (send it in the x-api-key header)"}]})
        status, payload = _asgi_call(app, "POST", "/v1/echo", body, headers=[("x-api-key", "wrong")])
        assert status == 401 and payload["detail"][0]["reason"].startswith("wrong API key")
        ok = _asgi_call(app, "POST", "/v1/echo", body, headers=[("x-api-key", "secret")])
        assert ok == (200, {"query": "benzene"})
        assert _asgi_call(app, "GET", "/healthz")[0] == 200  # outside /v1: open
        big = json.dumps({"query": "x" * 2000}).encode()
        status, payload = _asgi_call(app, "POST", "/v1/echo", big, headers=[("x-api-key", "secret")])
        assert status == 413 and payload["error"] == "payload_too_large"
        assert "limit is 1024" in payload["detail"][0]["reason"]
        # Without Content-Length the body is counted while it is read ...
        status, payload = _asgi_call(app, "POST", "/v1/echo", headers=[("x-api-key", "secret")],
                                     chunks=[big[:800], big[800:1600], big[1600:]])
        assert status == 413 and "more than 1024" in payload["detail"][0]["reason"]
        # ... and a small chunked body reaches the route intact.
        status, payload = _asgi_call(app, "POST", "/v1/echo", headers=[("x-api-key", "secret")],
                                     chunks=[body[:5], body[5:]])
        assert (status, payload) == (200, {"query": "benzene"})
        errors.configure(max_body_bytes=1024, api_key=None)
        assert _asgi_call(app, "POST", "/v1/echo", body)[0] == 200
    finally:
        errors.configure(max_body_bytes=262_144, api_key=None)


def test_serve_config_file_and_builder_contract():
    """serving/config.yaml is a valid Serve config whose args validate as ServeConfig; the import path is the
    builder Serve calls with those args."""
    import inspect

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from momu.serve.config import ServeConfig
    from serving import app as app_module
    from serving.app import REPO_ROOT, load_serve_config

    path = REPO_ROOT / "serving" / "config.yaml"
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (application,) = schema.applications
    assert application.import_path == "serving.app:app" and application.route_prefix == "/"
    config = ServeConfig.model_validate(application.args)
    assert config.api_key is None and config.batching.enabled
    assert (REPO_ROOT / config.generate.pool).is_file() and config.generate.max_seconds < 30  # < request_timeout_s
    assert {d.name for d in application.deployments} == set(app_module.DEPLOYMENTS)
    for d in application.deployments:
        assert d.autoscaling_config["min_replicas"] >= 1 and d.ray_actor_options.num_cpus > 0
    (param,) = inspect.signature(app_module.app).parameters.values()
    assert param.annotation is ServeConfig  # Serve validates `args` with it
    loaded, options, http = load_serve_config(path, {"batching.max_batch_size": 8, "limits.max_k": 5})
    assert loaded.batching.max_batch_size == 8 and loaded.limits.max_k == 5 and http["host"] == "127.0.0.1"
    assert options["Encoder"]["ray_actor_options"]["num_cpus"] == 1
    from momu.config import ConfigError

    with pytest.raises(ConfigError, match="limits.max_k"):
        load_serve_config(path, {"limits.max_k": 0})


def test_colocated_topology_binds_no_encoder_or_index_deployment():
    """topology colocated: compose binds MoMuAPI (which builds the towers and indexes itself), Captioner and
    Generator only; Encoder / Index options are refused by compose and left out (with their names) for the CLI."""
    from momu.serve.config import ServeConfig
    from serving.app import REPO_ROOT, compose, load_serve_config, options_for_topology

    config, options, _ = load_serve_config(REPO_ROOT / "serving" / "config.yaml", {"topology": "colocated"})
    assert config.topology == "colocated" and {"Encoder", "Index"} <= set(options)
    with pytest.raises(ValueError, match=r"\['Encoder', 'Index'\] are not deployments of topology colocated"):
        compose(config, options)
    fitted, unused = options_for_topology(config, options)
    assert unused == ["Encoder", "Index"] and set(fitted) == {"MoMuAPI", "Captioner", "Generator"}
    app = compose(config, fitted)
    assert app._bound_deployment.name == "MoMuAPI"
    assert [a for a in app._bound_deployment.init_args[:2]] == [None, None]
    split = ServeConfig.model_validate({**config.model_dump(), "topology": "split"})
    assert options_for_topology(split, options) == (options, [])


def test_reserved_cpus_of_the_shipped_config():
    """What `momu serve` sizes a local Ray to when the deployments reserve more CPUs than the machine has: the
    deployments compose() binds, their file options over each class's defaults."""
    from pathlib import Path

    from momu.serve.config import ServeConfig
    from serving.app import load_serve_config, reserved_cpus

    config, options, _ = load_serve_config(Path(__file__).resolve().parents[1] / "serving" / "config.yaml", {})
    assert reserved_cpus(config, options) == 3.25  # 0.5 + 1 + 0.5 + 0.25 + 1 at min_replicas 1
    colocated = ServeConfig(topology="colocated", generate={"pool": None})  # no Encoder / Index; idle Generator: 0
    assert reserved_cpus(colocated, {"MoMuAPI": {"num_replicas": 3, "ray_actor_options": {"num_cpus": 0.5}},
                                     "Captioner": {"autoscaling_config": {"min_replicas": 0, "max_replicas": 4,
                                                                          "initial_replicas": 2}}}) == 1.5 + 2 * 0.25
    # A plain args file (no deployments:) reserves the classes' own defaults: 0.5 + 1 + 0.5 + 0.25 + 0.5.
    assert reserved_cpus(ServeConfig(generate={"pool": "pool.tsv"}), {}) == 2.75


def test_momu_serve_cli_refuses_bad_config_before_starting(capsys, tmp_path):
    from momu.cli import main

    assert main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    assert f"model: {tmp_path / 'nothing'} does not exist" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--limits.max_k", "0"]) == 2
    err = capsys.readouterr().err
    assert "limits.max_k" in err and "greater than or equal to 1" in err
    plain = tmp_path / "args.yaml"  # a plain args file works as --config too
    plain.write_text("model: %s\nmolecule_index: %s\ntext_index: null\n" % (tmp_path, tmp_path / "no_index"))
    assert main(["serve", "--config", str(plain)]) == 2
    assert "molecule_index:" in capsys.readouterr().err


# -- slow: the application over HTTP ---------------------------------------------------------------------------------

class Served:
    def __init__(self, url, assets, config, model, actors):
        from momu.index import RetrievalIndex

        self.url, self.assets, self.config, self.model, self.actors = url, assets, config, model, actors
        self.molecules = RetrievalIndex.load(assets.molecule_index_dir)
        self.texts = RetrievalIndex.load(assets.text_index_dir)


def _serve_actor_names():
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith("SERVE_REPLICA") and APP in a["name"])


@pytest.fixture(scope="module")
def served(ray_local, small_model, tmp_path_factory):
    from momu.serve.config import ServeConfig

    assets = build_assets(small_model, tmp_path_factory.mktemp("serving"))
    config = ServeConfig(model=str(assets.model_dir), molecule_index=str(assets.molecule_index_dir),
                         text_index=str(assets.text_index_dir), caption_pool=str(assets.caption_pool_dir),
                         generate=TINY_GENERATE, limits=LIMITS, api_key=API_KEY,
                         batching={"enabled": True, "max_batch_size": 16, "batch_wait_timeout_s": 0.02})
    url = start_app(config, APP, free_port())
    try:
        yield Served(url, assets, config, small_model, _serve_actor_names())
    finally:
        stop_app(APP)


def _post(served, path, body=None, **kw):
    return post(served.url + path, body, headers={**KEY, **kw.pop("headers", {})}, **kw)


def _assert_same_hits(hits, expected_scores, expected_rows, index, tol=1e-4):
    """HTTP hits equal the index searched directly: same scores rank by rank, same rows except inside exact or
    near ties (identical graphs, e.g. isotopologues, embed identically)."""
    assert len(hits) == len(expected_rows)
    expected = index.rows(expected_rows)
    for hit, score, row, rec in zip(hits, expected_scores, expected_rows, expected):
        assert hit["score"] == pytest.approx(float(score), abs=tol)
        if hit["id"] != rec["id"]:
            tied = [r["id"] for r, s in zip(expected, expected_scores) if abs(float(s) - hit["score"]) <= tol]
            assert hit["id"] in tied, (hit, rec)


@pytest.mark.slow
def test_healthz_and_models(served):
    import hashlib

    assert get(served.url + "/healthz") == (200, {"status": "ok"})
    status, info = get(served.url + "/v1/models", headers=KEY)
    assert status == 200
    digest = hashlib.sha256((served.assets.model_dir / "model.safetensors").read_bytes()).hexdigest()[:12]
    assert info["model"]["version"] == f"sha256:{digest}"
    assert info["model"]["embedding_dim"] == served.model.config.proj_dim == 16
    assert info["model"]["graph_encoder"] == "gin 2x32" and info["model"]["device"] == "cpu"
    assert info["indexes"]["molecules"]["size"] == len(served.assets.ids) == len(served.molecules)
    assert info["indexes"]["texts"]["size"] == len(served.assets.texts) == 120
    assert info["indexes"]["molecules"]["kind"] == "exact"
    assert info["indexes"]["molecules"]["model_info"] == {"model_name": "test-model",
                                                          "model_version": f"sha256:{digest}"}
    assert info["indexes"]["molecules"]["model_matches"] is True  # built by the served model
    assert info["indexes"]["texts"]["model_matches"] is None  # its model_info names no version
    assert info["model"]["name"].endswith("/model") and info["model"]["weights_sha256"].startswith(digest)
    assert info["limits"]["max_k"] == 20 and info["batching"]["max_batch_size"] == 16
    from momu.caption.retrieval import CaptionPool

    pool = CaptionPool(served.assets.caption_pool_dir)
    assert info["captioner"] == {"captioner": "retrieval-tanimoto", "version": f"pool:{pool.version}",
                                 "kind": "tanimoto", "pool_size": len(pool),
                                 "pool": str(served.assets.caption_pool_dir), "embeddings_model_sha256": None}
    assert 100 < len(pool) <= 120
    from momu.generate.pool import load_pool

    generator = info["generator"]
    assert generator["method"] == "momu-graph-ga" and generator["model_version"] == f"sha256:{digest}"
    assert generator["pool_size"] == len(load_pool(TINY_GENERATE["pool"], TINY_GENERATE["exclude"]))
    assert (generator["default_seconds"], generator["max_seconds"], generator["max_n"]) == (10, 20, 50)
    assert generator["edit_lambdas"] == [0.0, 1.0] and "C" in generator["allowed_elements"]


@pytest.mark.slow
def test_search_molecules_exact_neighbours(served):
    queries = ["The molecule is a monocarboxylic acid anion.", "a steroid hormone", served.assets.texts[7][:200]]
    for query in queries:
        status, body = _post(served, "/v1/search/molecules", {"query": query, "k": 10})
        assert status == 200, body
        expected_scores, expected_rows = served.molecules.search(served.model.embed_texts([query]).numpy(), 10)
        _assert_same_hits(body["results"], expected_scores[0], expected_rows[0], served.molecules)
        assert [h["rank"] for h in body["results"]] == list(range(1, 11))
        assert body["index_size"] == len(served.molecules) and body["query"] == query
        assert all(h["svg"] is None for h in body["results"])
        for hit in body["results"]:  # id and SMILES come from the same index row
            assert served.assets.smiles[served.assets.ids.index(hit["id"])] == hit["smiles"]
    status, body = _post(served, "/v1/search/molecules", {"query": "an aromatic amino acid", "k": 3, "draw": True})
    assert status == 200 and len(body["results"]) == 3
    for hit in body["results"]:
        assert hit["svg"].startswith("<svg") and hit["svg"].rstrip().endswith("</svg>")


@pytest.mark.slow
def test_search_texts_exact_neighbours(served):
    from momu.chem.featurize import featurize_smiles

    text_ids = served.texts.ids.to_pylist()
    for smiles in ["CC(=O)Oc1ccccc1C(=O)O", served.assets.smiles[3], "OCC"]:
        status, body = _post(served, "/v1/search/texts", {"smiles": smiles, "k": 5, "draw": True})
        assert status == 200, body
        query = served.model.embed_graphs([featurize_smiles(smiles)]).numpy()
        expected_scores, expected_rows = served.texts.search(query, 5)
        _assert_same_hits(body["results"], expected_scores[0], expected_rows[0], served.texts)
        for hit in body["results"]:
            assert hit["text"] == served.assets.texts[text_ids.index(hit["id"])]
        assert body["svg"].startswith("<svg")
    status, body = _post(served, "/v1/search/texts", {"smiles": "OCC"})
    assert status == 200 and body["smiles"] == "CCO" and body["svg"] is None and len(body["results"]) == 10


@pytest.mark.slow
def test_embed_and_similarity_equal_the_model(served):
    from momu.chem.featurize import featurize_smiles

    within_limits = [s for s in served.assets.smiles if len(s) <= 200 and featurize_smiles(s, max_atoms=60)]
    smiles = ["CCO", "c1ccccc1O", within_limits[0]]
    texts = ["The molecule is an alcohol.", "The molecule is a phenol.", served.assets.texts[0]]
    status, body = _post(served, "/v1/embed", {"smiles": smiles})
    assert status == 200 and body["kind"] == "molecule" and body["dim"] == 16
    g = served.model.embed_graphs([featurize_smiles(s) for s in smiles]).numpy()
    np.testing.assert_allclose(np.array(body["embeddings"]), g, atol=1e-5)
    status, body = _post(served, "/v1/embed", {"texts": texts})
    assert status == 200 and body["kind"] == "text"
    t = served.model.embed_texts(texts).numpy()
    np.testing.assert_allclose(np.array(body["embeddings"]), t, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(body["embeddings"], axis=1), 1.0, atol=1e-5)
    status, body = _post(served, "/v1/similarity", {"pairs": [{"smiles": s, "text": x} for s, x in zip(smiles, texts)]})
    assert status == 200
    np.testing.assert_allclose(body["scores"], (g * t).sum(1), atol=1e-5)


@pytest.mark.slow
def test_batching_matches_single_requests(served):
    from ray import serve

    encoder = serve.get_deployment_handle("Encoder", app_name=APP)
    queries = [t.split(".")[0][:200] + f" ({i})" for i, t in enumerate(served.assets.texts[:24])]
    singles = [_post(served, "/v1/search/molecules", {"query": q, "k": 5}) for q in queries]
    before = len(encoder.recent_batch_sizes.remote().result())
    with ThreadPoolExecutor(len(queries)) as pool:
        together = list(pool.map(lambda q: _post(served, "/v1/search/molecules", {"query": q, "k": 5}), queries))
    sizes = encoder.recent_batch_sizes.remote().result()[before:]
    assert sum(sizes) == len(queries) and max(sizes) > 1, sizes  # the concurrent requests were batched
    for (s1, b1), (s2, b2) in zip(singles, together):
        assert s1 == s2 == 200
        assert [h["id"] for h in b1["results"]] == [h["id"] for h in b2["results"]]
        np.testing.assert_allclose([h["score"] for h in b1["results"]], [h["score"] for h in b2["results"]], atol=1e-5)
    # Graphs too: one request of 8 molecules (one batch) == 8 single-molecule requests.
    from momu.chem.featurize import featurize_smiles

    smiles = [s for s in served.assets.smiles if len(s) <= 200 and featurize_smiles(s, max_atoms=60)][:8]
    status, batch = _post(served, "/v1/embed", {"smiles": smiles})
    assert status == 200
    one_by_one = [_post(served, "/v1/embed", {"smiles": [s]})[1]["embeddings"][0] for s in smiles]
    np.testing.assert_allclose(np.array(batch["embeddings"]), np.array(one_by_one), atol=1e-5)


BAD_INPUTS = [
    # (name, path, JSON body or raw bytes, status, field, words in the reason)
    ("invalid SMILES", "/v1/search/texts", {"smiles": "C1CC"}, 422, "smiles", "unparseable"),
    ("invalid SMILES in a list", "/v1/embed", {"smiles": ["CCO", "not a smiles"]}, 422, "smiles[1]", "invalid SMILES"),
    ("invalid SMILES in a pair", "/v1/similarity", {"pairs": [{"smiles": "C(", "text": "x"}]}, 422,
     "pairs[0].smiles", "unparseable"),
    ("dummy atom", "/v1/search/texts", {"smiles": "*CC"}, 422, "smiles", "unsupported_element"),
    ("too many atoms", "/v1/search/texts", {"smiles": "C" * 61}, 422, "smiles", "limits.max_atoms"),
    ("over-long SMILES", "/v1/embed", {"smiles": ["C" * 201]}, 422, "smiles[0]", "limits.max_smiles_chars"),
    ("empty query", "/v1/search/molecules", {"query": ""}, 422, "query", "must not be empty"),
    ("blank query", "/v1/search/molecules", {"query": "   \n "}, 422, "query", "must not be empty"),
    ("over-long query", "/v1/search/molecules", {"query": "acid " * 61}, 422, "query", "limits.max_text_chars"),
    ("empty text in a list", "/v1/embed", {"texts": ["an acid", ""]}, 422, "texts[1]", "must not be empty"),
    ("over-long text in a pair", "/v1/similarity", {"pairs": [{"smiles": "C", "text": "y" * 301}]}, 422,
     "pairs[0].text", "limits.max_text_chars"),
    ("k zero", "/v1/search/molecules", {"query": "acid", "k": 0}, 422, "k", "greater than or equal to 1"),
    ("k over max_k", "/v1/search/texts", {"smiles": "CCO", "k": 21}, 422, "k", "limits.max_k"),
    ("k not a number", "/v1/search/molecules", {"query": "acid", "k": "ten"}, 422, "k", "valid integer"),
    ("k as a string", "/v1/search/molecules", {"query": "acid", "k": "10"}, 422, "k", "valid integer"),
    ("draw not a boolean", "/v1/search/molecules", {"query": "acid", "draw": "yes"}, 422, "draw", "valid boolean"),
    ("too many SMILES", "/v1/embed", {"smiles": ["C"] * 9}, 422, "smiles", "limits.max_items"),
    ("too many pairs", "/v1/similarity", {"pairs": [{"smiles": "C", "text": "x"}] * 9}, 422, "pairs",
     "limits.max_items"),
    ("empty list", "/v1/embed", {"texts": []}, 422, "texts", "must not be empty"),
    ("both smiles and texts", "/v1/embed", {"smiles": ["C"], "texts": ["x"]}, 422, "", "exactly one"),
    ("neither smiles nor texts", "/v1/embed", {}, 422, "", "exactly one"),
    ("missing field", "/v1/search/molecules", {"k": 3}, 422, "query", "Field required"),
    ("unknown field", "/v1/search/molecules", {"query": "acid", "top_k": 3}, 422, "top_k", "Extra inputs"),
    ("wrong type", "/v1/search/texts", {"smiles": 42}, 422, "smiles", "valid string"),
    ("body not an object", "/v1/embed", b"[1, 2]", 422, "", "valid dictionary"),
    ("malformed JSON", "/v1/search/molecules", b'{"query": "acid", "k": }', 400, "", "not valid JSON"),
    ("truncated JSON", "/v1/embed", b'{"smiles": ["CCO"', 400, "", "not valid JSON"),
    ("no body", "/v1/similarity", b"", 422, "", "body is required"),
    ("caption: empty list", "/v1/caption", {"smiles": []}, 422, "smiles", "must not be empty"),
    ("caption: too many SMILES", "/v1/caption", {"smiles": ["C"] * 9}, 422, "smiles", "limits.max_items"),
    ("caption: k over max_k", "/v1/caption", {"smiles": ["CCO"], "k": 21}, 422, "k", "limits.max_k"),
    ("caption: k zero", "/v1/caption", {"smiles": ["CCO"], "k": 0}, 422, "k", "greater than or equal to 1"),
    ("caption: over-long SMILES", "/v1/caption", {"smiles": ["CCO", "C" * 201]}, 422, "smiles[1]",
     "limits.max_smiles_chars"),
    ("caption: smiles not a list", "/v1/caption", {"smiles": "CCO"}, 422, "smiles", "valid list"),
    ("caption: SMILES not a string", "/v1/caption", {"smiles": ["CCO", 5]}, 422, "smiles[1]", "valid string"),
    ("caption: unknown field", "/v1/caption", {"smiles": ["CCO"], "top_k": 2}, 422, "top_k", "Extra inputs"),
    ("caption: missing smiles", "/v1/caption", {"k": 2}, 422, "smiles", "Field required"),
    ("generate: empty text", "/v1/generate", {"text": " \n "}, 422, "text", "must not be empty"),
    ("generate: over-long text", "/v1/generate", {"text": "acid " * 61}, 422, "text", "limits.max_text_chars"),
    ("generate: missing text", "/v1/generate", {"n": 3}, 422, "text", "Field required"),
    ("generate: text not a string", "/v1/generate", {"text": 5}, 422, "text", "valid string"),
    ("generate: n zero", "/v1/generate", {"text": "an acid", "n": 0}, 422, "n", "greater than or equal to 1"),
    ("generate: n over 50", "/v1/generate", {"text": "an acid", "n": 51}, 422, "n", "less than or equal to 50"),
    ("generate: n as a string", "/v1/generate", {"text": "an acid", "n": "5"}, 422, "n", "valid integer"),
    ("generate: n fractional", "/v1/generate", {"text": "an acid", "n": 2.5}, 422, "n", "valid integer"),
    ("generate: invalid edit SMILES", "/v1/generate", {"text": "an acid", "edit": "C1CC("}, 422, "edit",
     "invalid SMILES"),
    ("generate: edit with a disallowed element", "/v1/generate", {"text": "an acid", "edit": "CC[Hg]CC"}, 422,
     "edit", "not among the allowed elements"),
    ("generate: edit over-long", "/v1/generate", {"text": "an acid", "edit": "C" * 201}, 422, "edit",
     "limits.max_smiles_chars"),
    ("generate: edit not a string", "/v1/generate", {"text": "an acid", "edit": ["CCO"]}, 422, "edit",
     "valid string"),
    ("generate: budget zero", "/v1/generate", {"text": "an acid", "budget": 0}, 422, "budget", "greater than 0"),
    ("generate: budget negative", "/v1/generate", {"text": "an acid", "budget": -3}, 422, "budget", "greater than 0"),
    ("generate: budget over the max", "/v1/generate", {"text": "an acid", "budget": 21}, 422, "budget",
     "generate.max_seconds"),
    ("generate: budget as a string", "/v1/generate", {"text": "an acid", "budget": "5"}, 422, "budget",
     "valid number"),
    ("generate: unknown field", "/v1/generate", {"text": "an acid", "k": 5}, 422, "k", "Extra inputs"),
    ("oversized body", "/v1/search/molecules", json.dumps({"query": "a" * 5000}).encode(), 413, "",
     "limits.max_body_bytes"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,path,body,status,field,reason", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_4xx_naming_the_field(served, name, path, body, status, field, reason):
    raw = body if isinstance(body, bytes) else None
    got, payload = _post(served, path, None if raw is not None else body, raw=raw)
    assert got == status, payload
    assert isinstance(payload, dict) and payload["error"] in ("invalid_request", "malformed_json", "payload_too_large")
    fields = [d["field"] for d in payload["detail"]]
    assert field in fields, payload
    assert any(reason in d["reason"] for d in payload["detail"] if d["field"] == field), payload


@pytest.mark.slow
def test_oversized_chunked_body_and_api_key(served):
    # A body sent without Content-Length is counted as it arrives.
    parsed = urlparse(served.url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.putrequest("POST", "/v1/embed")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("x-api-key", API_KEY)
    conn.endheaders()
    payload = json.dumps({"texts": ["a" * 1000] * 6}).encode()
    for i in range(0, len(payload), 1000):
        piece = payload[i:i + 1000]
        conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 413 and "limits.max_body_bytes" in body["detail"][0]["reason"]
    # The API key guards /v1 only; the page and the health check stay open.
    status, body = post(served.url + "/v1/search/molecules", {"query": "acid"})
    assert status == 401 and body["detail"][0]["field"] == "x-api-key"
    status, body = post(served.url + "/v1/search/molecules", {"query": "acid"}, headers={"x-api-key": "nope"})
    assert status == 401 and "wrong API key" in body["detail"][0]["reason"]
    assert get(served.url + "/healthz")[0] == 200
    status, page = get(served.url + "/")
    assert status == 200 and "<form id=\"text-form\"" in page
    status, body = get(served.url + "/v1/nothing-here", headers=KEY)
    assert status == 404 and body["error"] == "not_found"
    status, body = get(served.url + "/openapi.json")
    assert status == 200 and {"/v1/search/molecules", "/v1/search/texts", "/v1/embed", "/v1/similarity",
                              "/v1/caption", "/v1/generate", "/healthz", "/v1/models"} <= set(body["paths"])
    assert get(served.url + "/docs")[0] == 200


@pytest.mark.slow
def test_caption_endpoint_retrieves_the_nearest_known_molecule(served):
    """POST /v1/caption equals the retrieval captioner run directly; a molecule of the pool gets its own caption
    with similarity 1.0; an unreadable one gets a per-item error while the others are captioned."""
    from momu.caption.retrieval import RetrievalCaptioner

    direct = RetrievalCaptioner(served.assets.caption_pool_dir)
    from momu.chem.featurize import featurize_smiles

    pool_smiles = next(s for s in served.assets.smiles[5:] if len(s) <= 200 and featurize_smiles(s, max_atoms=60))
    queries = [pool_smiles, "CC(=O)Oc1ccccc1C(=O)O", "C1CC", "*CC"]
    status, body = _post(served, "/v1/caption", {"smiles": queries, "k": 3, "draw": True})
    assert status == 200, body
    assert body["captioner"] == "retrieval-tanimoto" and body["pool_size"] == len(direct.pool)
    own, other, unparseable, dummy = body["results"]
    assert own["neighbours"][0]["similarity"] == 1.0 and "nearest known molecule" in own["label"]
    best = direct.caption_smiles([pool_smiles])[0].neighbour  # the molecule itself, or a stereo-free twin before it
    assert own["caption"] == best.caption and own["neighbours"][0]["id"] == best.id and best.row <= \
        direct.pool.smiles.index(pool_smiles)
    expected = direct.caption_smiles(["CC(=O)Oc1ccccc1C(=O)O"], k=3)[0]
    assert [n["id"] for n in other["neighbours"]] == [n.id for n in expected.neighbours]
    assert [n["similarity"] for n in other["neighbours"]] == pytest.approx([n.similarity for n in expected.neighbours])
    assert other["caption"] == expected.caption and other["smiles"] == "CC(=O)Oc1ccccc1C(=O)O"
    assert other["svg"].startswith("<svg") and all(n["svg"].startswith("<svg") for n in other["neighbours"])
    assert unparseable["caption"] is None and unparseable["error"]["field"] == "smiles[2]"
    assert "unparseable" in unparseable["error"]["reason"]
    assert dummy["error"]["field"] == "smiles[3]" and "unsupported_element" in dummy["error"]["reason"]
    status, body = _post(served, "/v1/caption", {"smiles": ["OCC"]})  # defaults: k 1, no drawings
    assert status == 200 and len(body["results"][0]["neighbours"]) == 1 and body["results"][0]["svg"] is None
    within_limits = [s for s in served.assets.smiles if len(s) <= 200 and featurize_smiles(s, max_atoms=60)][:6]
    with ThreadPoolExecutor(6) as pool:  # concurrent requests through the batching captioner, each its own answer
        answers = list(pool.map(lambda s: _post(served, "/v1/caption", {"smiles": [s]}), within_limits))
    assert len(answers) == 6
    assert all(a[0] == 200 and a[1]["results"][0]["neighbours"][0]["similarity"] == 1.0 for a in answers)


def test_captioner_deployment_fusion_and_ranked_outside_serve(small_model, tmp_path):
    """The Captioner deployment's batch function with a fusion pool: queries' graph embeddings come from outside
    (the encoder), each item keeps its own k, and the result equals the library's captioner."""
    from momu.caption.pool import build_pool
    from momu.caption.retrieval import load_captioner
    from momu.chem.featurize import featurize_smiles
    from serving.deployments import Captioner
    from serving_helpers import SLICE

    source = tmp_path / "src.tsv"
    source.write_text("\n".join(SLICE.read_text().splitlines()[:41]) + "\n")
    model_dir = small_model.save_pretrained(tmp_path / "model")
    build_pool([("s", source)], [], tmp_path / "pool", model=str(model_dir))
    deployment = Captioner.func_or_class(str(tmp_path / "pool"), "fusion", 5, 0.5, {})
    queries = ["CCO", "CC(=O)Oc1ccccc1C(=O)O"]
    emb = small_model.embed_graphs([featurize_smiles(s) for s in queries]).numpy()
    out = deployment._caption_many([(queries[0], emb[0], 1), (queries[1], emb[1], 4)])
    assert [len(o["neighbours"]) for o in out] == [1, 4] and deployment.recent_batch_sizes() == [2]
    expected = load_captioner(tmp_path / "pool", "fusion", str(model_dir), 5, 0.5).caption_smiles(queries, k=4)
    for got, want in zip(out, expected):
        assert got["caption"] == want.caption
        assert [n["id"] for n in got["neighbours"]] == [n.id for n in want.neighbours][: len(got["neighbours"])]
    from momu.models.loading import weights_sha256

    info = deployment.info()
    assert info["kind"] == "fusion" and info["embeddings_model_sha256"] == weights_sha256(model_dir)
    # With a ranker in the pool, the default kind (auto) serves the ranked captioner, as the library does.
    from momu.caption.config import CaptionRankerConfig
    from momu.caption.ranker import train_ranker

    train_ranker(CaptionRankerConfig(pool=str(tmp_path / "pool"), k=4, val_fraction=0.25, epochs=5, meteor=False),
                 log=lambda *_: None)
    ranked = Captioner.func_or_class(str(tmp_path / "pool"), "auto", 5, 0.5, {})
    out = ranked._caption_many([(queries[0], emb[0], 2), (queries[1], emb[1], 10)])
    assert [len(o["neighbours"]) for o in out] == [2, 4] and ranked.info()["kind"] == "ranked"
    expected = load_captioner(tmp_path / "pool", "auto").caption_smiles(queries, k=4)
    for got, want in zip(out, expected):
        assert got["caption"] == want.caption and got["captioner"] == "retrieval-ranked"
        assert got["neighbours"][0]["similarity"] == pytest.approx(want.neighbour.similarity, abs=1e-5)
        assert "learned caption ranker" in got["label"]


def _tiny_generate_config(model_dir, n, seconds=10.0):
    from momu.serve.config import ServeGenerate
    from serving.deployments import generate_config

    return generate_config(ServeGenerate(**TINY_GENERATE), str(model_dir), n, seconds)


@pytest.mark.slow
def test_generate_endpoint_answers_as_the_library(served):
    """POST /v1/generate: the n best molecules of the MoMu-guided GA, drawn, equal to momu.generate run directly
    with the same settings (an evaluation-bound search is deterministic); editing gives one molecule per lambda."""
    from rdkit import Chem

    from momu.generate.ga import edit, generate
    from momu.generate.pool import load_pool

    text = "The molecule is an aromatic carboxylic acid."
    status, body = _post(served, "/v1/generate", {"text": f"  {text} ", "n": 4})
    assert status == 200, body
    assert body["mode"] == "generate" and body["text"] == text and body["edit"] is None
    assert body["method"] == "momu-graph-ga" and body["budget_seconds"] == 10  # generate.default_seconds
    assert body["evaluations"] == 40 and body["stopped_by"] == "evaluations" and body["seconds"] < 10
    molecules = body["molecules"]
    assert [m["rank"] for m in molecules] == [1, 2, 3, 4]
    assert [m["score"] for m in molecules] == sorted((m["score"] for m in molecules), reverse=True)
    assert all(Chem.MolFromSmiles(m["smiles"]) is not None and m["svg"].startswith("<svg") for m in molecules)
    assert all(m["lambda"] is None and m["tanimoto"] is None and isinstance(m["from_pool"], bool) for m in molecules)
    config = _tiny_generate_config(served.assets.model_dir, 4)
    direct = generate(served.model, text, config, pool=load_pool(TINY_GENERATE["pool"], TINY_GENERATE["exclude"]))
    assert [m["smiles"] for m in molecules] == [r["smiles"] for r in direct["results"]]
    assert [m["score"] for m in molecules] == pytest.approx([r["total"] for r in direct["results"]], abs=1e-4)
    assert [m["cosine"] for m in molecules] == pytest.approx([r["cosine"] for r in direct["results"]], abs=1e-4)

    status, body = _post(served, "/v1/generate", {"text": "The molecule is a phenol.", "edit": "Oc1ccccc1",
                                                  "budget": 5, "draw": False})
    assert status == 200, body
    assert body["mode"] == "edit" and body["edit"] == "Oc1ccccc1" and body["budget_seconds"] == 5
    assert [m["lambda"] for m in body["molecules"]] == [0.0, 1.0]  # one per lambda of generate.edit_lambdas
    assert all(m["svg"] is None and m["tanimoto"] is not None and m["from_pool"] is None for m in body["molecules"])
    direct = edit(served.model, "The molecule is a phenol.", "Oc1ccccc1", _tiny_generate_config(
        served.assets.model_dir, 10, 5.0))
    assert [m["smiles"] for m in body["molecules"]] == [r["smiles"] for r in direct["results"]]
    # Concurrent requests each get their own answer (the same, for the same prompt).
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _post(served, "/v1/generate", {"text": text, "n": 2, "draw": False}),
                                range(3)))
    assert all(a[0] == 200 for a in answers)
    assert [[m["smiles"] for m in a[1]["molecules"]] for a in answers] == [[m["smiles"] for m in molecules[:2]]] * 3


def test_generator_deployment_keeps_the_time_budget_outside_serve(small_model, tmp_path):
    """The Generator's search, outside Serve: a time-bound search ends at its budget; a request whose deadline
    passed while it queued is answered `unavailable` at once; a library input error comes back named."""
    import time

    from serving.deployments import Generator

    model_dir = small_model.save_pretrained(tmp_path / "model")
    settings = {**TINY_GENERATE, "max_evaluations": 1_000_000}
    generator = Generator.func_or_class(str(model_dir), settings, "cpu", 1)
    started = time.perf_counter()
    result = generator.generate("The molecule is a steroid.", 3, None, 1.5, time.time() + 1.5)
    elapsed = time.perf_counter() - started
    assert result["stopped_by"] == "seconds" and len(result["results"]) == 3
    assert 1.0 < elapsed < 2.5 and result["seconds"] <= 2.0, (elapsed, result["seconds"])
    late = generator.generate("The molecule is a steroid.", 3, None, 5.0, time.time() - 1)
    assert "waited past its 5 s budget" in late["unavailable"]
    bad = generator.generate("The molecule is a steroid.", 3, "CC[Hg]CC", 5.0, time.time() + 5)
    assert bad["input_error"]["field"] == "edit" and "cannot be scored" in bad["input_error"]["reason"]
    assert Generator.func_or_class(str(model_dir), {"pool": None}).info() is None  # idle without a pool


def test_generate_without_a_pool_is_503_not_configured():
    """The ingress route itself (no Serve): with generate.pool null a valid request is refused as not configured,
    after the input checks (bad input is still a 422 naming the field)."""
    from momu.serve.config import ServeConfig
    from serving import errors
    from serving.app import MoMuAPI
    from serving.schemas import GenerateRequest
    from serving.validation import InputError

    cls = MoMuAPI.func_or_class
    config = ServeConfig(molecule_index=None, text_index=None)  # generate.pool: null by default
    # The route's own code on a stand-in replica (a real one would need Serve).
    ingress = SimpleNamespace(config=config, limits=config.limits, generator=None, _generator_info=None)
    ingress._generator = MethodType(cls._generator, ingress)
    ingress.generate = MethodType(cls.generate, ingress)
    with pytest.raises(errors.NotConfigured, match=r"generate.pool is null"):
        asyncio.run(ingress.generate(GenerateRequest(text="an acid")))
    with pytest.raises(InputError) as err:
        asyncio.run(ingress.generate(GenerateRequest(text="an acid", budget=60.0)))
    assert err.value.field == "budget" and "generate.max_seconds" in err.value.reason
    response = asyncio.run(errors._not_configured(None, errors.NotConfigured("no generation pool")))
    assert response.status_code == 503 and b"not_configured" in response.body


@pytest.mark.slow
def test_colocated_topology_answers_like_split(served):
    """The same config with topology colocated (towers and indexes inside MoMuAPI, no Encoder / Index replicas),
    as a second application next to the split one: the same search hits, embeddings and 4xx answers."""
    import ray
    from ray import serve

    from momu.serve.config import ServeConfig
    from serving.app import compose
    from serving_helpers import TEST_DEPLOYMENT_OPTIONS

    config = ServeConfig.model_validate({**served.config.model_dump(), "topology": "colocated"})
    # No CPU reservations: the split app already holds most of the session's 2-CPU Ray (a replica that cannot be
    # placed would leave serve.run waiting forever).
    options = {k: {**v, "ray_actor_options": {**v["ray_actor_options"], "num_cpus": 0}}
               for k, v in TEST_DEPLOYMENT_OPTIONS.items() if k not in ("Encoder", "Index")}
    serve.run(compose(config, options), name="colo", route_prefix="/colo")
    try:
        replicas = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["name"].startswith("SERVE_REPLICA") and "colo" in a["name"]]
        assert sorted(r.split("#")[1] for r in replicas) == ["Captioner", "Generator", "MoMuAPI"], replicas
        base = served.url + "/colo"
        assert get(base + "/healthz") == (200, {"status": "ok"})
        query = "The molecule is a monocarboxylic acid anion."
        split_hits = _post(served, "/v1/search/molecules", {"query": query, "k": 5})[1]["results"]
        status, body = post(base + "/v1/search/molecules", {"query": query, "k": 5}, headers=KEY)
        assert status == 200
        assert [(h["id"], h["smiles"]) for h in body["results"]] == [(h["id"], h["smiles"]) for h in split_hits]
        assert [h["score"] for h in body["results"]] == pytest.approx([h["score"] for h in split_hits], abs=1e-5)
        smiles = ["CCO", served.assets.smiles[2]]
        split_emb = _post(served, "/v1/embed", {"smiles": smiles})[1]["embeddings"]
        status, body = post(base + "/v1/embed", {"smiles": smiles}, headers=KEY)
        assert status == 200 and np.allclose(body["embeddings"], split_emb, atol=1e-5)
        status, body = post(base + "/v1/search/texts", {"smiles": "not a molecule"}, headers=KEY)
        assert status == 422 and body["detail"][0]["field"] == "smiles"
        stats = serve.get_deployment_handle("MoMuAPI", app_name="colo").component_stats.remote().result()
        assert stats["topology"] == "colocated" and stats["encoder"]["items"] >= 3 and stats["index"]["items"] >= 1
    finally:
        serve.delete("colo")


@pytest.mark.slow
def test_no_replica_crashed_after_bad_input(served):
    """After every bad-input class the same replicas still serve (none died and was replaced)."""
    assert _serve_actor_names() == served.actors and len(served.actors) == 5
    status, body = _post(served, "/v1/search/molecules", {"query": "an acid", "k": 2})
    assert status == 200 and len(body["results"]) == 2
