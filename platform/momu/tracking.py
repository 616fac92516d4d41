"""MLflow helpers: one run per job, a local SQLite store by default, the same field names as the config."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterator, Optional

from pydantic import BaseModel

from momu.config import flatten_config

DEFAULT_STORE_DIR = Path("runs")


def resolve_tracking_uri(explicit: Optional[str] = None, store_dir: Path = DEFAULT_STORE_DIR) -> str:
    """Explicit config value, else $MLFLOW_TRACKING_URI, else a SQLite file in `store_dir` (embedded default)."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store_dir / 'mlflow.db').resolve()}"


def _jsonable(value):
    """Nested config models (e.g. a list of sources) as plain JSON in MLflow params."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)


@contextlib.contextmanager
def mlflow_run(config: BaseModel, experiment: str, tracking_uri: Optional[str] = None,
               run_name: Optional[str] = None, store_dir: Path = DEFAULT_STORE_DIR) -> Iterator[object]:
    """Start an MLflow run, log the flattened config as params and the resolved config as an artifact."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri, store_dir)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:") and mlflow.get_experiment_by_name(experiment) is None:
        # Keep local artifacts next to the database instead of in the current directory's ./mlruns.
        mlflow.create_experiment(experiment, artifact_location=(store_dir / "mlartifacts" / experiment).resolve().as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        params = {k: json.dumps(v, default=_jsonable) if isinstance(v, (list, dict)) else v
                  for k, v in flatten_config(config).items()}
        mlflow.log_params(params)
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        yield run


@contextlib.contextmanager
def optional_mlflow_run(config: BaseModel, enabled: bool, experiment: str, tracking_uri: Optional[str],
                        run_name: str, data_summary: Optional[dict] = None) -> Iterator[tuple[Optional[str], Optional[str]]]:
    """A training driver's MLflow run: (run_id, tracking_uri) inside an open run with the config as params and
    data_summary.json logged, or (None, None) when MLflow is off."""
    if not enabled:
        yield None, None
        return
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    with mlflow_run(config, experiment, uri, run_name=run_name) as run:
        if data_summary is not None:
            mlflow.log_dict(data_summary, "data_summary.json")
        yield run.info.run_id, uri


def log_momu_model(model_dir: str | Path, register_name: Optional[str] = None) -> str:
    """Log a saved MoMu directory to the active run as an MLflow pyfunc model (the directory travels as an
    artifact; weights stay safetensors) and register it. Returns a URI `load_momu` accepts:
    `models:/<name>/<version>` when registered, else the logged model's URI."""
    import mlflow

    import importlib.util

    # Models-from-code: MLflow stores the flavour's source file, not a pickled object.
    flavour_file = importlib.util.find_spec("momu.mlflow_model").origin
    info = mlflow.pyfunc.log_model(
        name="model", python_model=flavour_file, artifacts={"momu": str(model_dir)},
        pip_requirements=["momu", "torch", "torch-geometric", "transformers", "safetensors", "rdkit"],
    )
    if not register_name:
        return info.model_uri
    version = mlflow.register_model(info.model_uri, register_name)
    return f"models:/{register_name}/{version.version}"


class MetricsLogger:
    """Rank 0's MLflow writer: buffers per-step metrics and flushes them in batches."""

    def __init__(self, run_id: Optional[str], tracking_uri: Optional[str]):
        self.run_id, self.buffer = run_id, []
        self.client = None
        if run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri)

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        if self.client and self.buffer:
            for start in range(0, len(self.buffer), 1000):  # MLflow's per-call limit
                self.client.log_batch(self.run_id, metrics=self.buffer[start:start + 1000])
        self.buffer = []

    def text(self, content: str, artifact_file: str) -> None:
        if self.client:
            self.client.log_text(self.run_id, content, artifact_file)

    def artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        if self.client:
            self.client.log_artifact(self.run_id, path, artifact_path)
