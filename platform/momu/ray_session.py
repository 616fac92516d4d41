"""Starting or joining Ray: the one place a local Ray is started (jobs, `momu serve`, benchmarks, tests).
Imports only Ray, so callers that need no torch (serving, the CLI) stay light."""

from __future__ import annotations

import logging
import os
from typing import Optional


def start_local_ray(num_cpus: Optional[int] = None, **kwargs) -> None:
    """Start a fresh local Ray on loopback (address "local": never silently joining some `ray start` cluster
    on this machine), without the dashboard.

    Ray keeps at most as many idle worker processes as the node has CPUs and kills the others after about a
    second. On a small machine whose CPUs are all held by model actors or train workers, every short task
    (a file reader, a shard writer) then starts a new Python process and re-imports torch/RDKit: on 2 cores
    this cost `momu embed` a third of its throughput. A local node therefore keeps a few more idle workers."""
    import ray

    from momu.job_output import install_noise_filter_on_ray_handlers, verbose

    cpus = num_cpus or os.cpu_count() or 1
    if not verbose():
        kwargs.setdefault("logging_level", logging.WARNING)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             _system_config={"num_workers_soft_limit": max(8, 2 * cpus)}, **kwargs)
    install_noise_filter_on_ray_handlers()


def init_ray_if_needed() -> None:
    """Join the cluster a `ray job submit` runs in (RAY_ADDRESS), else start a local one on loopback."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        from momu.job_output import install_noise_filter_on_ray_handlers

        ray.init()
        install_noise_filter_on_ray_handlers()
    else:
        start_local_ray()


def train_logging_config() -> dict:
    """RunConfig kwargs: Ray Train's own INFO lines (worker group start, every reported result) only with --verbose."""
    from momu.job_output import verbose

    if verbose():
        return {}
    try:
        from ray.train import LoggingConfig
    except ImportError:  # Ray Train v1 API: nothing to set
        return {}
    return {"logging_config": LoggingConfig(log_level="WARNING")}


def resume_checkpoint_dir(resume: Optional[str], checkpoint_file: str) -> Optional[str]:
    """`--resume`: a checkpoint directory (holding checkpoint_file), or a run directory (its newest checkpoint_*),
    checked before any work starts; URIs pass through."""
    if not resume:
        return None
    if "://" in resume:
        return resume
    from pathlib import Path

    path = Path(resume).resolve()
    if (path / checkpoint_file).is_file():
        return str(path)
    checkpoints = sorted(path.glob(f"checkpoint_*/{checkpoint_file}")) if path.is_dir() else []
    if not checkpoints:
        raise FileNotFoundError(f"resume: no {checkpoint_file} in {path} or its checkpoint_* folders")
    return str(checkpoints[-1].parent)
