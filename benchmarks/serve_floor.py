"""Ray Serve's own latency floor on this machine, with no model: where a served request's time goes before any
MoMu code runs.

Starts a FastAPI ingress (like MoMuAPI) in front of two trivial deployments (like Encoder and Index, each with a
`@serve.batch` method) on a local Ray, and measures p50 and req/s over loopback HTTP at 1 client for
  0 hops   GET /h0   the proxy and the ingress only (like GET /healthz)
  1 hop    GET /h1   plus one handle call (like POST /v1/embed: ingress -> Encoder)
  2 hops   GET /h2   plus two sequential handle calls (like POST /v1/search/molecules: ingress -> Encoder -> Index)
  2 batched          the same through `@serve.batch` methods passing a 256-d float32 vector
Compare with benchmarks/serve_load.py's "1 client p50 = in-process + overhead" lines: the overhead of a path
cannot fall below its hop count's floor here.

Usage: python benchmarks/serve_floor.py [--seconds 8] [--port 8766]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_app():
    import numpy as np
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    class Echo:
        async def __call__(self, x):
            return x

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
        async def _items(self, xs):
            return xs

        async def batched(self, x):
            return await self._items(x)

    @serve.deployment(ray_actor_options={"num_cpus": 0.5})
    @serve.ingress(api)
    class Ingress:
        def __init__(self, a, b):
            self.a, self.b = a, b

        @api.get("/h0")
        async def h0(self):
            return {"ok": 1}

        @api.get("/h1")
        async def h1(self):
            return {"ok": await self.a.remote(1)}

        @api.get("/h2")
        async def h2(self):
            return {"ok": await self.b.remote(await self.a.remote(1))}

        @api.get("/h2b")
        async def h2b(self):
            x = await self.a.batched.remote(np.zeros(256, np.float32))
            return {"ok": float((await self.b.batched.remote(x)).sum())}

    return Ingress.bind(Echo.options(name="A").bind(), Echo.options(name="B").bind())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per path (default 8)")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    os.environ["RAY_worker_niceness"] = "0"  # the replicas at normal priority, as serve_load.py measures them
    for path in (REPO, REPO / "platform"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from ray import serve

    from benchmarks.serve_load import run_load
    from momu.ray_session import start_local_ray

    start_local_ray(os.cpu_count(), log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port},
                logging_config={"enable_access_log": False, "log_level": "WARNING"})
    serve.run(build_app(), name="serve_floor", route_prefix="/")
    rows = []
    try:
        for path, label in (("/h0", "0 hops (proxy + ingress)"), ("/h1", "1 hop"), ("/h2", "2 hops"),
                            ("/h2b", "2 hops, @serve.batch, 256-d vector")):
            url = f"http://127.0.0.1:{args.port}{path}"
            asyncio.run(run_load(url, lambda i: None, 1, 3, 50))  # warm-up
            r = asyncio.run(run_load(url, lambda i: None, 1, args.seconds, 100_000))
            rows.append((label, r))
            print(f"{label:36s} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  {r['rps']:6.0f} req/s  "
                  f"errors {sum(r['errors'].values())}", flush=True)
    finally:
        serve.shutdown()
    hop = (rows[2][1]["p50_ms"] - rows[0][1]["p50_ms"]) / 2
    print(f"Ray Serve floor at 1 client on {os.cpu_count()} CPUs: proxy + ingress {rows[0][1]['p50_ms']:.1f} ms, "
          f"each handle hop ~{hop:.1f} ms")


if __name__ == "__main__":
    main()
