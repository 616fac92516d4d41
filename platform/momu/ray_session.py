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

    from momu.job_output import QUIET_WORKER_HOOK, install_noise_filter_on_ray_handlers, verbose

    cpus = num_cpus or os.cpu_count() or 1
    if not verbose():
        kwargs.setdefault("logging_level", logging.WARNING)
    # Without the dashboard (faster start) there is no state API; workers silence what only that costs.
    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", QUIET_WORKER_HOOK)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env=runtime_env,
             _system_config={"num_workers_soft_limit": max(8, 2 * cpus)}, **kwargs)
    install_noise_filter_on_ray_handlers()


def init_ray_if_needed() -> bool:
    """Join the cluster a `ray job submit` runs in (RAY_ADDRESS), else start a local one on loopback. Returns
    True when this call started a local Ray (a cluster of known, fixed size), False when Ray was already
    initialised here or a cluster was joined (which may add nodes)."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        from momu.job_output import install_noise_filter_on_ray_handlers

        ray.init()
        install_noise_filter_on_ray_handlers()
        return False
    start_local_ray()
    return True


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


def make_torch_trainer(train_func, loop_config: dict, scaling, run_name: str, storage_path: str, max_failures: int,
                       checkpoints_to_keep: int, datasets: Optional[dict] = None):
    """A TorchTrainer as every training job here builds one: `scaling` (a ScalingSection) -> workers, resources
    and placement; checkpoints under storage_path/run_name; quiet Ray Train logging unless --verbose. Datasets
    are passed whole (each job splits them itself)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker or 1.0
    extra = {}
    if datasets:
        extra = {"datasets": datasets, "dataset_config": ray.train.DataConfig(datasets_to_split=[])}
    return TorchTrainer(
        train_func, train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=scaling.placement_strategy),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=checkpoints_to_keep),
            **train_logging_config()),
        **extra)


def storage_path_for(path: str) -> str:
    """Ray Train wants an absolute local path (or a URI)."""
    if "://" in path:
        return path
    from pathlib import Path

    return str(Path(path).resolve())


def load_train_checkpoint(loop_config: dict, checkpoint_file: str) -> Optional[dict]:
    """Inside a train worker: the state saved in this run's latest checkpoint (a FailureConfig restart), else in
    loop_config["resume_from"] (`--resume`; Ray Train V2 dropped resume_from_checkpoint for this pattern), else
    None."""
    import ray.train
    import torch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and loop_config.get("resume_from"):
        checkpoint = ray.train.Checkpoint.from_directory(loop_config["resume_from"])
    if checkpoint is None:
        return None
    from pathlib import Path

    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / checkpoint_file, map_location="cpu", weights_only=True)
