"""`momu serve`: the Serve application on a local Ray (127.0.0.1) or a given cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from momu.cli import add_config_arguments


def register(sub, groups) -> None:
    from momu.serve.config import ServeConfig

    p = sub.add_parser(
        "serve", help="run the Serve app (search/embed/caption/generate HTTP API + web page) locally on 127.0.0.1",
        description="Start the MoMu Ray Serve application (serving/app.py: FastAPI ingress + encoder, index, "
                    "captioner and generator deployments) on 127.0.0.1 and block until Ctrl-C. POST /v1/generate "
                    "is on when --generate.pool names a molecule file (serving/config.yaml: the bundled ChEBI-20 "
                    "train slice). --config takes a Serve config file "
                    "(default serving/config.yaml: its application's args and deployment options are used) or a "
                    "plain args YAML; the flags below override single args fields.",
        epilog="Example: momu serve --model momu-cpu --molecule_index null --text_index null "
               "--generate.max_seconds 10")
    add_config_arguments(p, ServeConfig)
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's http_options.port, 8000)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster instead of starting a local one (default: local, on 127.0.0.1)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local Ray (default: all, or as many as the deployments reserve if that is more)")
    p.add_argument("--direct-port", type=int, default=None,
                   help="also serve the API straight from the MoMuAPI replica on this port, with no Serve proxy in "
                        "between (Ray Serve's experimental direct ingress; local Ray only): ~8 ms less per request on "
                        "2 cores. A second ingress replica takes the next free port. Default: off")
    p.set_defaults(func=_cmd_serve)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]  # serve/ -> momu/ -> platform/ -> repo


def _cmd_serve(args: argparse.Namespace) -> int:
    import math
    import os
    import time

    import yaml

    root = _repo_root()
    if args.direct_port is not None:  # before anything imports ray.serve (see momu.serve.direct)
        from momu.serve.direct import enable_direct_ingress

        if args.address:
            raise ValueError("--direct-port needs the local Ray `momu serve` starts; on a cluster, start every node "
                             "with the variables of momu.serve.direct.direct_ingress_env instead")
        enable_direct_ingress(args.direct_port)
    if not (root / "serving" / "app.py").is_file():
        raise FileNotFoundError(f"serving/app.py not found under {root}: `momu serve` runs from a source checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from serving.app import compose, load_serve_config, options_for_topology, reserved_cpus, resolve_path

    overrides = {k[4:]: (yaml.safe_load(v) if isinstance(v, str) and v.strip() else v)
                 for k, v in vars(args).items() if k.startswith("cfg:")}
    config_path = args.config or (root / "serving" / "config.yaml")
    config, options, http = load_serve_config(config_path, overrides)
    options, unused = options_for_topology(config, options)  # `--topology colocated` over the split config file
    if unused:
        print(f"topology colocated: the towers and indexes run inside MoMuAPI; the {' and '.join(unused)} "
              f"entries of {config_path} are not used", flush=True)
    paths = {field: getattr(config, field) for field in ("model", "molecule_index", "text_index", "caption_pool")}
    paths["generate.pool"] = config.generate.pool
    for field, value in paths.items():
        local = resolve_path(value)
        # resolve_path keeps URIs and shipped checkpoint names (momu-cpu) as given: only paths are checked here.
        if value and Path(local).is_absolute() and not Path(local).exists():
            raise FileNotFoundError(f"{field}: {local} does not exist (give --{field} <path>"
                                    + (" or null)" if field != "model" else ")"))

    import ray
    from ray import serve

    port = args.port or int(http.get("port", 8000))
    if args.direct_port == port:
        raise ValueError(f"--direct-port {args.direct_port}: the proxy uses that port; give another")
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        # Loopback only; the workers must import `serving` from this checkout whatever the current directory.
        path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        from momu.ray_session import start_local_ray

        num_cpus, cores = args.num_cpus, os.cpu_count() or 1
        need = reserved_cpus(config, options)
        if num_cpus is None and need > cores:
            # Otherwise some replicas never get scheduled and the app waits forever on a small machine.
            num_cpus = math.ceil(need)
            print(f"the deployments reserve {need:g} CPUs and this machine has {cores}: the local Ray advertises "
                  f"{num_cpus} (a scheduling label; they share the {cores} cores). --num-cpus sets it", flush=True)
        start_local_ray(num_cpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port,
                                  "request_timeout_s": http.get("request_timeout_s")},
                    proxy_location="HeadOnly")
        print(f"starting MoMu on http://127.0.0.1:{port} (model {resolve_path(config.model)}) ...", flush=True)
        try:
            serve.run(compose(config, options), name="momu", route_prefix="/")
        except RuntimeError as err:  # a deployment failed to start (bad model/index, ...): Serve says why
            print(f"momu serve: the application failed to start:\n{err}", file=sys.stderr)
            return 1
        print(f"\nMoMu is serving on http://127.0.0.1:{port}/\n"
              f"  web page  http://127.0.0.1:{port}/\n"
              f"  API docs  http://127.0.0.1:{port}/docs\n"
              f"  health    http://127.0.0.1:{port}/healthz", flush=True)
        if args.direct_port is not None:
            from momu.serve.direct import find_direct_ports

            direct = find_direct_ports("127.0.0.1", args.direct_port)
            print("  direct    " + (", ".join(f"http://127.0.0.1:{p}/" for p in direct) + " (no proxy hop)" if direct
                                    else f"none answered from port {args.direct_port} on: Ray Serve did not start "
                                         "direct ingress"), flush=True)
        print("Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
