"""Load a MoMu model from wherever it lives: a saved directory, or an MLflow `models:/`/`runs:/` URI."""

from __future__ import annotations

import hashlib
from pathlib import Path

from momu.models.momu import CONFIG_FILE, MoMu


def resolve_model_dir(source: str | Path) -> Path:
    """A local directory holding config.json + model.safetensors (downloading MLflow URIs first)."""
    text = str(source)
    if text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        import mlflow

        from momu.tracking import resolve_tracking_uri

        mlflow.set_tracking_uri(resolve_tracking_uri())
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text))
        # A pyfunc model keeps the MoMu directory under artifacts/momu.
        for candidate in (local, local / "artifacts" / "momu", *local.rglob(CONFIG_FILE)):
            candidate = candidate.parent if candidate.name == CONFIG_FILE else candidate
            if (candidate / CONFIG_FILE).is_file() and (candidate / "model.safetensors").is_file():
                return candidate
        raise FileNotFoundError(f"{text} downloaded to {local} but holds no saved MoMu model")
    from momu.models.published import published_names, resolve_published

    path = resolve_published(text)
    if not path.exists():
        shipped = ", ".join(published_names()) or "none"
        raise FileNotFoundError(f"model not found: {path} (not a directory, models:/ URI or shipped checkpoint; "
                                f"shipped: {shipped})")
    return path


def load_momu(source: str | Path, map_location: str = "cpu", graph_only: bool = False) -> MoMu:
    return MoMu.from_pretrained(resolve_model_dir(source), map_location=map_location, graph_only=graph_only)


def weights_sha256(model_dir: str | Path) -> str:
    """SHA-256 of a saved model's weights file: what says two embeddings came from the same model."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
