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
