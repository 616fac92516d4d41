"""Start a second (non-head) Ray node on 127.0.0.1 that joins a head on loopback, and block until signalled.

Why not `ray start --address`: a multi-node Ray on one machine stays on loopback only in Ray's single-node mode
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: node IP 127.0.0.1, every port bound to 127.0.0.1). In that mode `ray start`
refuses to start a non-head node, and with the mode off it rewrites 127.0.0.1 to the host's network address
(ray._private.services.resolve_ip_for_localhost), so the node would listen on the network. This launcher does what
`ray start --address ... --block` does after those two steps: the same RayParams and `ray._private.node.Node`
(as `ray.cluster_utils.Cluster.add_node`, Ray's own way of running several nodes on one machine), with every
port explicit. SIGTERM stops the node's processes; SIGKILL to its process group simulates losing the node.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="the head's GCS address, 127.0.0.1:PORT")
    p.add_argument("--temp-dir", required=True)
    p.add_argument("--num-cpus", type=int, default=1)
    p.add_argument("--resources", default="{}", help="custom resources as JSON, e.g. '{\"node_b\": 1}'")
    p.add_argument("--object-store-memory", type=int, default=200 * 1024 * 1024)
    for port in ("node-manager-port", "object-manager-port", "min-worker-port", "max-worker-port",
                 "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                 "runtime-env-agent-port"):
        p.add_argument(f"--{port}", type=int, required=True)
    args = p.parse_args(argv)
    host = args.address.rsplit(":", 1)[0]
    if host != "127.0.0.1":
        raise SystemExit(f"--address: {args.address} is not on 127.0.0.1 (this launcher is for loopback only)")
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        raise SystemExit("set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray's single-node mode keeps every port on "
                         "127.0.0.1)")

    import ray._private.node
    import ray._private.parameter

    params = ray._private.parameter.RayParams(
        gcs_address=args.address, node_ip_address="127.0.0.1", node_name="127.0.0.1",
        num_cpus=args.num_cpus, num_gpus=0, resources=json.loads(args.resources),
        object_store_memory=args.object_store_memory, temp_dir=args.temp_dir,
        node_manager_port=args.node_manager_port, object_manager_port=args.object_manager_port,
        min_worker_port=args.min_worker_port, max_worker_port=args.max_worker_port,
        dashboard_agent_listen_port=args.dashboard_agent_listen_port,
        metrics_agent_port=args.dashboard_agent_grpc_port, metrics_export_port=args.metrics_export_port,
        runtime_env_agent_port=args.runtime_env_agent_port, include_log_monitor=True)
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"node {node.node_id} started on 127.0.0.1, raylet pid "
          f"{node.all_processes['raylet'][0].process.pid}", flush=True)

    def stop(signum, frame):
        node.kill_all_processes(check_alive=False, allow_graceful=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:  # like `ray start --block`: report a raylet that died under us, then exit
        time.sleep(1)
        dead = [name for name, info in node.dead_processes() if name == "raylet"]
        if dead:
            print("raylet exited; stopping this node", flush=True)
            node.kill_all_processes(check_alive=False, allow_graceful=False)
            return 1


if __name__ == "__main__":
    sys.exit(main())
