"""Direct ingress: the MoMuAPI replica answers HTTP on its own port, with no Serve proxy in between.

Through the proxy, a request makes an extra process hop, and a POST's body is fetched back from the proxy by one
more actor call: on 2 cores a trivial POST costs ~10 ms through the proxy and ~1 ms on the replica's own port
(benchmarks/serve_load.py --direct-port measures the real app). Ray Serve's direct ingress
(RAY_SERVE_ENABLE_DIRECT_INGRESS, an experimental flag in Ray 2.60) starts an HTTP server in each ingress replica
on a port the controller hands out from a range; the proxy keeps serving the configured port too.

The flag is read when `ray.serve` is imported and by the Serve controller and replicas, so it must be set before
this process imports `ray.serve` and before the local Ray starts (its workers inherit the environment): hence
`enable_direct_ingress` here, called first. On a `ray start` cluster every node must be started with the same
variables instead.
"""

from __future__ import annotations

import http.client
import os
import sys

PORT_RANGE = 64  # replica ports tried from the first one (a redeployed replica's old port is held out a while)
# A stopping ingress replica keeps answering this long so that an external load balancer can deregister it (Ray's
# default is 30 s, which made every Ctrl-C of `momu serve` wait 30 s). Clients here call the port directly.
DRAINING_PERIOD_S = 2


def direct_ingress_env(first_port: int) -> dict[str, str]:
    """The environment variables that make each ingress replica listen on a port in [first_port, +PORT_RANGE)."""
    if not 1024 <= first_port <= 65535 - PORT_RANGE:
        raise ValueError(f"direct port {first_port}: give a port between 1024 and {65535 - PORT_RANGE}")
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(first_port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(first_port + PORT_RANGE),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAINING_PERIOD_S)}


def enable_direct_ingress(first_port: int) -> dict[str, str]:
    """Set the direct-ingress variables in this process's environment. Raises RuntimeError if `ray.serve` was
    already imported here (it would keep the proxy-only setting it read then)."""
    env = direct_ingress_env(first_port)
    if "ray.serve" in sys.modules and os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") != "1":
        raise RuntimeError("direct ingress must be enabled before ray.serve is imported in this process")
    os.environ.update(env)
    return env


def find_direct_ports(host: str, first_port: int, path: str = "/healthz", timeout: float = 2.0) -> list[int]:
    """Ports in [first_port, +PORT_RANGE) where a replica of the local Ray this process started listens and
    answers `path` with 200. Only this process's descendants count (a local Ray's raylet and workers are its
    children), so a replica of an older Ray that still holds a port while it shuts down is never reported."""
    import psutil

    ports = set()
    for child in psutil.Process().children(recursive=True):
        try:
            listening = child.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            continue
        ports.update(c.laddr.port for c in listening if c.status == psutil.CONN_LISTEN
                     and first_port <= c.laddr.port < first_port + PORT_RANGE)
    found = []
    for port in sorted(ports):
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                found.append(port)
        except OSError:
            continue
        finally:
            connection.close()
    return found
