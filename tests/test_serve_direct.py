"""`momu serve --direct-port`: the MoMuAPI replica answers on its own port (Ray Serve direct ingress) with the same
API as through the proxy. It needs its own Ray (the flag is read when Ray and ray.serve start), so `momu serve`
runs as a subprocess here."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from serving_helpers import free_port


def test_direct_ingress_env_and_its_checks(monkeypatch):
    from momu.serve.direct import DRAINING_PERIOD_S, PORT_RANGE, direct_ingress_env, enable_direct_ingress

    env = direct_ingress_env(30000)
    assert env == {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "30000",
                   "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(30000 + PORT_RANGE),
                   "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAINING_PERIOD_S)}
    with pytest.raises(ValueError, match="between 1024"):
        direct_ingress_env(80)
    import ray.serve  # noqa: F401  (this process has read the proxy-only setting)

    monkeypatch.delenv("RAY_SERVE_ENABLE_DIRECT_INGRESS", raising=False)
    with pytest.raises(RuntimeError, match="before ray.serve is imported"):
        enable_direct_ingress(30000)


def test_serve_direct_port_refuses_a_cluster_address(capsys):
    from momu.cli import main

    assert main(["serve", "--direct-port", "30000", "--address", "127.0.0.1:6379"]) == 2
    assert "--direct-port needs the local Ray" in capsys.readouterr().err


def _call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


@pytest.mark.slow
def test_serve_answers_on_the_replicas_own_port(small_model, tmp_path):
    model_dir = small_model.save_pretrained(tmp_path / "model")
    port, direct = free_port(), free_port()
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "momu.cli", "serve", "--model", str(model_dir), "--molecule_index", "null",
         "--text_index", "null", "--caption_pool", "null", "--generate.pool", "null", "--num-cpus", "4",
         "--port", str(port), "--direct-port", str(direct)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 150
        while "Ctrl-C to stop" not in (tmp_path / "serve.log").read_text():
            assert process.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(1)
        text = (tmp_path / "serve.log").read_text()
        assert f"direct    http://127.0.0.1:{direct}/ (no proxy hop)" in text, text[-2000:]
        base, proxied = f"http://127.0.0.1:{direct}", f"http://127.0.0.1:{port}"
        status, body, headers = _call(base + "/healthz")
        assert status == 200 and body == {"status": "ok"}
        assert headers.get("server-timing", "").startswith("app;dur=")  # the app's own time, for load tests
        status, body, _ = _call(base + "/v1/embed", {"smiles": ["CCO", "xx"]})  # 4xx naming the field, as ever
        assert status == 422 and body["detail"][0]["field"] == "smiles[1]"
        status, here, _ = _call(base + "/v1/embed", {"smiles": ["CCO", "c1ccccc1O"]})
        _, there, _ = _call(proxied + "/v1/embed", {"smiles": ["CCO", "c1ccccc1O"]})
        assert status == 200
        np.testing.assert_allclose(here["embeddings"], there["embeddings"], atol=1e-6)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: stops within seconds (a 2 s drain, not Ray's 30 s)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
