"""Shared fixtures. Data: bundled slices in data/sample, full copies in ../shared/data (skipped if absent)."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def chebi_slice_smiles() -> list[str]:
    lines = (SAMPLE / "chebi20" / "validation_slice.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[1] for line in lines]


def shared_path(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (CI clones the repo with shared/ beside it)")
    return path


@pytest.fixture(scope="session")
def small_model_config():
    """A MoMu config with a small GIN (fast tests) and the bundled MiniLM text tower."""
    from momu.config import GINConfig, MoMuConfig

    return MoMuConfig(graph=GINConfig(num_layers=2, emb_dim=32), proj_dim=16)


@pytest.fixture(scope="session")
def small_model(small_model_config):
    from momu.models.momu import build_model
    import torch

    torch.manual_seed(0)
    return build_model(small_model_config)


@pytest.fixture(scope="module")
def ray_local(request):
    """A local Ray on loopback for one test file, shut down after it, once every CPU has come back.

    Per file, not per session (~8 s a file): one driver process that has run many Ray Train runs and Ray Data
    passes was seen (Ray 2.60, twice) to miss an actor's ALIVE notification, so a later Ray Data stage waited for
    its actor forever; a fresh Ray per file never did. The CPU check catches the other way a file can break the
    next: an actor, task or placement group left holding a CPU, which makes a later Ray Train job wait forever."""
    import ray

    if not ray.is_initialized():
        from momu.ray_session import start_local_ray

        start_local_ray(2, log_to_driver=False, configure_logging=False)
    yield ray
    try:
        _check_cpus_come_back(ray, request.module.__name__)
    finally:
        ray.shutdown()


def _alive_cpu_actors(ray) -> list[tuple[str, str, str, float]]:
    """(class, name, namespace, CPUs) of every alive actor holding CPUs, read from the GCS (the state API needs the
    dashboard, which the tests' local Ray runs without)."""
    from ray.core.generated import gcs_pb2

    accessor = ray._private.state.state._connect_and_get_accessor()
    found = []
    for raw in accessor.get_actor_table(None, "ALIVE"):
        actor = gcs_pb2.ActorTableData.FromString(raw)
        cpus = dict(actor.required_resources).get("CPU", 0)
        if cpus:
            found.append((actor.class_name, actor.name, actor.ray_namespace, cpus))
    return found


def _ray_cpu_holders(ray) -> list[str]:
    """Alive actors holding CPUs and placement groups not removed, one line each."""
    from ray.util import placement_group_table

    lines = [f"actor {cls} ({name or 'unnamed'}) CPU {cpus:g}" for cls, name, _, cpus in _alive_cpu_actors(ray)]
    lines += [f"placement group {pg_id} {pg.get('state')} bundles {pg.get('bundles')}"
              for pg_id, pg in placement_group_table().items() if pg.get("state") != "REMOVED"]
    return lines


def _check_cpus_come_back(ray, module: str, wait_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + wait_s
    while True:
        total = ray.cluster_resources().get("CPU", 0)
        free = ray.available_resources().get("CPU", 0)
        if free >= total or time.monotonic() > deadline:
            break
        time.sleep(1)
    if free < total:
        holders = _ray_cpu_holders(ray)
        pytest.fail(f"{module} left {total - free:g} of {total:g} CPUs held after {wait_s:g} s: "
                    + ("; ".join(holders) or "no actor or placement group holds them (a task still running?)"))
