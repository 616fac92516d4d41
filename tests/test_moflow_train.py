"""`momu finetune moflow` end to end on the tiny config: 2 Ray Train workers, checkpoints, MLflow + registry,
sample metrics, and a resumed run that ends where an uninterrupted one does."""

import os

import pytest
import torch
from conftest import REPO

from momu.config import load_config
from momu.generate.moflow.config import MoFlowTrainConfig
from momu.generate.moflow.model import load_moflow
from momu.generate.moflow.train import run_moflow_training
from momu.pretrain.ray_train import CHECKPOINT_FILE

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def tiny(tmp_path, **over) -> MoFlowTrainConfig:
    base = {"storage_path": str(tmp_path / "ray_results"), "data.path": str(REPO / "data/sample/zinc250k/"
                                                                            "zinc250k_slice.csv"),
            "eval.samples": 20, "eval.epoch_samples": 10}
    base.update(over)
    return load_config(MoFlowTrainConfig, REPO / "configs" / "moflow_tiny.yaml", base)


def test_tiny_job_trains_checkpoints_logs_registers_and_resumes(ray_local, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # 5 steps: a checkpoint at step 4 (checkpoint_every) and one at the stop; 180 molecules per worker = 5 batches
    first = run_moflow_training(tiny(tmp_path, run_name="first", max_steps=5, mlflow_tracking_uri=uri,
                                     mlflow_experiment="t"), progress=False)
    m = first.metrics
    assert m["step"] == 5 and m["restored_from_step"] == 0 and m["skipped_steps"] == 0
    assert first.data_summary["train_rows"] == 360 and first.data_summary["train_rows_per_worker"] == 180
    assert {"val_nll", "sample_validity"} <= set(m)
    run_dir = tmp_path / "ray_results" / "first"
    assert len(list(run_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))) == 2  # checkpoints_to_keep
    s = first.sample_metrics
    assert s["n"] == 20 and s["validity"] >= s["validity_without_correction"] and 0 <= s["novelty"] <= 1
    assert (first.model_dir / "samples.txt").read_text().count("\n") == 20
    # MLflow: params under the config's names, per-step losses, the registered model loads back
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(first.mlflow_run_id)
    assert run.data.params["model.squeeze_fold"] == "2" and run.data.params["scaling.num_workers"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 5
    assert {"sample_validity", "generated_validity", "generated_novelty"} <= set(run.data.metrics)
    assert first.model_uri == "models:/moflow-tiny/1"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        registered = load_moflow(first.model_uri)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    exported = load_moflow(first.model_dir)
    for key, value in exported.state_dict().items():
        assert torch.equal(registered.state_dict()[key], value), key

    # resumed from the run directory (its newest checkpoint): continues at step 5 into the second epoch
    resumed = run_moflow_training(tiny(tmp_path, run_name="resumed", max_steps=8, resume=str(run_dir),
                                       **{"eval.samples": 0}), log_to_mlflow=False, progress=False)
    assert resumed.metrics["restored_from_step"] == 5 and resumed.metrics["step"] == 8
    assert resumed.metrics["epoch"] == 1
    after = load_moflow(resumed.model_dir).state_dict()
    assert any(not torch.equal(after[k], v) for k, v in exported.state_dict().items())  # it trained on
    assert torch.equal(after["atom_flow.norms.0.initialized"], torch.tensor(1, dtype=torch.uint8))
