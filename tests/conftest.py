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


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session, on loopback, shut down at the end."""
    import ray

    if not ray.is_initialized():
        from momu.ray_session import start_local_ray

        start_local_ray(2, log_to_driver=False, configure_logging=False)
    yield ray
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


@pytest.fixture(autouse=True, scope="module")
def ray_cpus_come_back(request):
    """After each test file that used the shared Ray, every CPU must come back within a minute: an actor, task or
    placement group left holding one makes a later Ray Train job wait for its workers forever (on 2 CPUs)."""
    yield
    if "ray" not in sys.modules:
        return
    import time

    import ray

    if not ray.is_initialized():
        return
    deadline = time.monotonic() + 60
    while True:
        total = ray.cluster_resources().get("CPU", 0)
        free = ray.available_resources().get("CPU", 0)
        if free >= total or time.monotonic() > deadline:
            break
        time.sleep(1)
    if free < total:
        holders = _ray_cpu_holders(ray)
        for _, name, namespace, _ in _alive_cpu_actors(ray):  # free named ones, so that later files still run
            if name:
                try:
                    ray.kill(ray.get_actor(name, namespace=namespace))
                except Exception:
                    pass
        pytest.fail(f"{request.module.__name__} left {total - free:g} of {total:g} CPUs held after 60 s: "
                    + ("; ".join(holders) or "no actor or placement group holds them (a task still running?)"))
