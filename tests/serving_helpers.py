"""Shared by tests/test_serving.py and tests/test_web_page.py: a small real index and a running Serve app.

The assets are real: ChEBI-20 molecules (bundled slice) embedded by the tests' small MoMu (tiny GIN + MiniLM)
into a molecule index, and their descriptions embedded by the text tower into a text index. Each test module
starts one application on a free loopback port and deletes it (and Serve) at the end.
"""

import hashlib
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `serving` is a top-level package of the checkout
    sys.path.insert(0, str(REPO))

SLICE = REPO / "data" / "sample" / "chebi20" / "validation_slice.tsv"
# POST /v1/generate on a tiny budget: 40 evaluations end every search long before its time budget, so an answer is
# the library's generate/edit result for the same settings (deterministic), in well under a second.
TINY_GENERATE = {"pool": str(REPO / "data" / "sample" / "chebi20" / "train_pool_slice.tsv"),
                 "exclude": [str(REPO / "data" / "sample" / "chebi20" / "test_slice.tsv")], "default_seconds": 10,
                 "max_seconds": 20, "max_evaluations": 40, "pool_sample": 15, "population_size": 10,
                 "offspring_size": 10, "edit_lambdas": [0.0, 1.0], "edit_seeds": 4}


@dataclass
class Assets:
    model_dir: Path
    molecule_index_dir: Path
    text_index_dir: Path
    ids: list  # molecule index rows, in order
    smiles: list
    texts: list  # text index rows (descriptions), in order
    caption_pool_dir: Path  # retrieval caption pool of the same molecules (Tanimoto; no embeddings)


def build_assets(model, out_dir: Path, n: int = 120) -> Assets:
    """Save `model` and index the first `n` molecules of the ChEBI-20 slice and their descriptions; a caption pool
    of the same rows."""
    import pyarrow as pa

    from momu.caption.pool import build_pool

    from momu.chem.featurize import canonical_smiles, featurize_smiles
    from momu.data.readers import read_chebi20
    from momu.index import RetrievalIndex

    model_dir = model.save_pretrained(out_dir / "model")
    table = read_chebi20(SLICE).table.slice(0, n)
    ids = table.column("id").to_pylist()
    raw_smiles = table.column("smiles").to_pylist()
    texts = [t[0] for t in table.column("texts").to_pylist()]
    graphs = [featurize_smiles(s) for s in raw_smiles]
    keep = [i for i, g in enumerate(graphs) if g]
    mol_ids = [ids[i] for i in keep]
    mol_smiles = [canonical_smiles(raw_smiles[i]) for i in keep]
    graph_emb = model.embed_graphs([graphs[i] for i in keep]).numpy()
    sha = hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()
    RetrievalIndex.build(graph_emb, mol_ids, pa.table({"smiles": mol_smiles}), kind="exact",
                         model_info={"model_name": "test-model", "model_version": f"sha256:{sha[:12]}"}
                         ).save(out_dir / "molecule_index")
    text_emb = model.embed_texts(texts).numpy()
    RetrievalIndex.build(text_emb, ids, pa.table({"text": texts, "smiles": raw_smiles}), kind="exact",
                         model_info={"model_name": "test-model"}).save(out_dir / "text_index")
    lines = SLICE.read_text().splitlines()
    (out_dir / "caption_source.tsv").write_text("\n".join(lines[: n + 1]) + "\n")
    build_pool([("chebi20-slice", out_dir / "caption_source.tsv")], [], out_dir / "caption_pool")
    return Assets(Path(model_dir), out_dir / "molecule_index", out_dir / "text_index", mol_ids, mol_smiles, texts,
                  out_dir / "caption_pool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Small reservations so the deployments fit the session's 2-CPU local Ray next to anything else.
TEST_DEPLOYMENT_OPTIONS = {
    "MoMuAPI": {"ray_actor_options": {"num_cpus": 0.25}},
    "Encoder": {"ray_actor_options": {"num_cpus": 0.5}},
    "Index": {"ray_actor_options": {"num_cpus": 0.25}},
    "Captioner": {"ray_actor_options": {"num_cpus": 0.25}},
    "Generator": {"ray_actor_options": {"num_cpus": 0.25}},
}


def start_app(config, name: str, port: int) -> str:
    """Start Serve on 127.0.0.1:`port` and run the app; returns its base URL."""
    from ray import serve

    from serving.app import compose

    options = {k: {kk: dict(vv) for kk, vv in v.items()} for k, v in TEST_DEPLOYMENT_OPTIONS.items()}
    if Path.cwd().resolve() != REPO:  # Ray puts the driver's cwd on the workers' path; elsewhere, say where we are
        for opts in options.values():
            opts["ray_actor_options"]["runtime_env"] = {"env_vars": {"PYTHONPATH": str(REPO)}}
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    serve.run(compose(config, options), name=name, route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:  # the proxy may need a moment after the app is ready
        try:
            status, _ = get(url + "/healthz")
            if status == 200:
                return url
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"{url}/healthz did not answer 200 within 60 s")
        time.sleep(0.5)


def stop_app(name: str) -> None:
    from ray import serve

    serve.delete(name)
    serve.shutdown()


def request(method: str, url: str, body=None, raw: bytes = None, headers=None, timeout: float = 60):
    """(status, parsed JSON or text) for one HTTP request; 4xx/5xx are returned, not raised."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, payload, ctype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as err:
        status, payload, ctype = err.code, err.read(), err.headers.get("content-type", "")
    return status, (json.loads(payload) if "json" in ctype else payload.decode())


def get(url: str, **kw):
    return request("GET", url, **kw)


def post(url: str, body=None, **kw):
    return request("POST", url, body, **kw)

