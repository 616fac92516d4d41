"""Ray Train pretraining on a small real slice: 2 CPU workers, checkpoints, resume, worker failure, MLflow."""

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from momu.config import GINConfig, MoMuConfig, ScalingSection
from momu.pretrain.config import PretrainConfig
from momu.pretrain.ray_train import run_pretrain

from conftest import SAMPLE

pytestmark = [pytest.mark.slow, pytest.mark.ray]
CHEBI_SLICE = str(SAMPLE / "chebi20" / "validation_slice.tsv")


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("text_cache"))


def config(tmp_path, text_cache, **overrides) -> PretrainConfig:
    base = dict(
        data_paths=[CHEBI_SLICE], text_mode="locked", text_cache_dir=text_cache, batch_size=16, epochs=1,
        lr=1e-3, checkpoint_every=4, seed=5, scaling=ScalingSection(num_workers=2, cpus_per_worker=1),
        model=MoMuConfig(graph=GINConfig(num_layers=2, emb_dim=64), proj_dim=32),
        storage_path=str(tmp_path / "ray_results"), embedding_plot=False, max_failures=0,
    )
    base.update(overrides)
    return PretrainConfig(**base)


def gin_weights(model_dir: Path) -> dict:
    return {k: v for k, v in load_file(str(model_dir / "model.safetensors")).items() if k.startswith("graph")}


def test_two_workers_train_log_and_register(ray_local, tmp_path, text_cache):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = config(tmp_path, text_cache, max_steps=24, mlflow_tracking_uri=uri, mlflow_experiment="t",
                 register_model_name="momu-test", embedding_plot=True, run_name="two-workers")
    result = run_pretrain(cfg, progress=False)
    assert result.metrics["step"] == 24
    assert result.data_summary["train_rows"] + result.data_summary["val_rows"] == 1200
    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["scaling.num_workers"] == "2" and run.data.params["text_mode"] == "locked"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(losses) == 24
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6 - 0.2, losses  # the loss decreases
    assert "val_acc_g2t" in run.data.metrics and "samples_per_s" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "data_summary.json", "plots"} <= artifacts
    assert result.model_uri == "models:/momu-test/1"
    from momu.models.loading import load_momu

    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        loaded = load_momu(result.model_uri)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    for key, value in gin_weights(result.model_dir).items():
        assert torch.equal(loaded.state_dict()[key], value), key


def _checkpoint_at_step(run_dir: Path, step: int) -> tuple[Path, dict]:
    """(directory, saved train state) of the run's checkpoint taken at `step`."""
    from momu.pretrain.ray_train import CHECKPOINT_FILE

    for directory in sorted(run_dir.glob("checkpoint_*")):
        saved = torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        if saved["state"]["step"] == step:
            return directory, saved
    raise AssertionError(f"no checkpoint at step {step} under {run_dir}")


def test_resume_reproduces_uninterrupted_run(ray_local, tmp_path, text_cache):
    cfg = config(tmp_path, text_cache, max_steps=8, run_name="full", checkpoints_to_keep=3)  # keeps step 4
    full = run_pretrain(cfg, log_to_mlflow=False, progress=False)
    # What a run stopped after step 4 leaves behind: its step-4 checkpoint (same config, so the same schedule).
    at_4, saved_at_4 = _checkpoint_at_step(Path(cfg.storage_path) / "full", 4)
    resumed = run_pretrain(config(tmp_path, text_cache, max_steps=8, run_name="resumed", resume=str(at_4)),
                           log_to_mlflow=False, progress=False)
    assert resumed.metrics["restored_from_step"] == 4 and resumed.metrics["step"] == 8
    a, b = gin_weights(full.model_dir), gin_weights(resumed.model_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert resumed.metrics["train_loss"] == pytest.approx(full.metrics["train_loss"], rel=1e-5)
    # and the step-4 weights really are different, so the comparison above can fail
    key = "graph_encoder.gin.x_embedding1.weight"
    assert not torch.allclose(saved_at_4["model"][key], a[key])


def _train_worker_pids() -> list[int]:
    """Ray Train worker processes on this machine (Ray titles them `ray::RayTrainWorker...`)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::RayTrainWorker"):
            pids.append(proc.info["pid"])
    return sorted(pids)


def _kill_one_worker_after_first_checkpoint(run_dir: Path, killed: list, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not killed:
        # A checkpoint on disk is registered by the controller when it next polls the workers; kill only once a
        # second one exists and the controller has had time to see the first.
        if len(list(run_dir.glob("checkpoint_*"))) >= 2:
            time.sleep(2.0)
            pids = _train_worker_pids()
            if pids:
                os.kill(pids[-1], signal.SIGKILL)
                killed.append(pids[-1])
                return
        time.sleep(0.1)


def test_killed_worker_is_survived(ray_local, tmp_path, text_cache):
    cfg = config(tmp_path, text_cache, max_steps=60, epochs=2, checkpoint_every=3, max_failures=2, run_name="kill",
                 model=MoMuConfig(graph=GINConfig(num_layers=5, emb_dim=300), proj_dim=64))
    killed: list = []
    watcher = threading.Thread(target=_kill_one_worker_after_first_checkpoint,
                               args=(Path(cfg.storage_path) / "kill", killed), daemon=True)
    watcher.start()
    result = run_pretrain(cfg, log_to_mlflow=False, progress=False)
    watcher.join(timeout=5)
    assert killed, "the test never found a worker to kill"
    assert result.metrics["step"] == 60
    assert result.metrics["restored_from_step"] >= 3  # the new worker group started from a checkpoint


def test_bad_config_fails_before_work(ray_local, tmp_path, text_cache):
    with pytest.raises(ValueError, match="data_paths"):
        run_pretrain(config(tmp_path, text_cache, data_paths=[str(SAMPLE / "moleculenet" / "bbbp_slice.csv")],
                            data_format="library"), log_to_mlflow=False, progress=False)


def test_graphcl_stage_then_graph_init(ray_local, tmp_path, text_cache):
    """Graph-only pretraining on a real MoleculeNet slice, then its GIN initialises a MoMu run."""
    library = str(SAMPLE / "moleculenet" / "bbbp_slice.csv")
    graphcl = run_pretrain(config(tmp_path, text_cache, objective="graphcl", data_paths=[library], max_steps=6, epochs=3,
                                  checkpoint_every=3, heldout_fraction=0.2, run_name="graphcl"),
                           log_to_mlflow=False, progress=False)
    assert graphcl.metrics["step"] == 6
    assert graphcl.metrics["val_acc_g2t"] > graphcl.metrics["val_chance"]  # views of one molecule find each other
    from momu.models.momu import build_model
    from momu.pretrain.ray_train import load_graph_init

    cfg = config(tmp_path, text_cache)
    model = build_model(cfg.model)
    load_graph_init(model, str(graphcl.model_dir))
    for key, value in gin_weights(graphcl.model_dir).items():
        if key.startswith("graph_encoder."):
            assert torch.equal(model.state_dict()[key], value), key
    wrong = build_model(cfg.model.model_copy(update={"graph": GINConfig(num_layers=3, emb_dim=64)}))
    with pytest.raises(ValueError, match="graph_init"):
        load_graph_init(wrong, str(graphcl.model_dir))


def test_missing_graph_init_fails_before_training(ray_local, tmp_path):
    """A bad graph_init is reported by the driver at once, not retried max_failures times inside workers."""
    from momu.config import load_config
    from momu.pretrain.config import PretrainConfig
    from momu.pretrain.ray_train import run_pretrain

    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml",
                      {"graph_init": str(tmp_path / "no-such-model"), "storage_path": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        run_pretrain(cfg, log_to_mlflow=False, progress=False)


def test_graphcl_libraries_with_row_number_ids_are_all_read(tmp_path):
    """Two libraries whose ids are row numbers must not drop each other's molecules as duplicates;
    the same SMILES in both files is kept once."""
    from momu.pretrain.config import PretrainConfig
    from momu.pretrain.data import read_inputs

    (tmp_path / "a.csv").write_text("smiles,label\nCCO,1\nc1ccccc1,0\nCCN,1\n")
    (tmp_path / "b.csv").write_text("smiles,label\nCCCl,0\nCCO,1\n")
    cfg = PretrainConfig(objective="graphcl", data_paths=[str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])
    table, report = read_inputs(cfg)
    assert sorted(table.column("smiles").to_pylist()) == sorted(["CCO", "c1ccccc1", "CCN", "CCCl"])
    assert len(set(table.column("id").to_pylist())) == 4
    assert report.metadata["duplicate_smiles_dropped"] == 1


def test_partial_text_mode_trains_checkpoints_and_exports(ray_local, tmp_path, text_cache):
    """text_mode partial on 1 worker: the top text layer trains, its weights are checkpointed, and the exported
    model reloads and embeds texts exactly as the training-time module does from the cached hidden states."""
    from momu.data.pipeline import EncodeTextHidden
    from momu.models.momu import MoMu, build_model
    from momu.pretrain.contrastive import ContrastiveModule, pad_hidden_states
    from momu.pretrain.ray_train import CHECKPOINT_FILE

    # 120 real pairs: caching hidden states costs most of the lower tower's forward pass, per paragraph.
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(Path(CHEBI_SLICE).read_text().splitlines()[:121]) + "\n")
    cfg = config(tmp_path, text_cache, data_paths=[str(pairs)], text_mode="partial", text_train_layers=1,
                 max_steps=3, checkpoint_every=3, scaling=ScalingSection(num_workers=1, cpus_per_worker=1),
                 run_name="partial")
    result = run_pretrain(cfg, log_to_mlflow=False, progress=False)
    assert result.metrics["step"] == 3 and result.data_summary["train_rows"] + result.data_summary["val_rows"] == 120
    assert len(result.data_summary["text_cache"]) == 2  # train and validation hidden states, cached
    saved = torch.load(Path(result.checkpoint_path) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    text_keys = {k for k in saved["model"] if k.startswith("text_encoder.")}
    assert text_keys and all(k.startswith("text_encoder.model.encoder.layer.5.") for k in text_keys)
    stock = build_model(cfg.model)
    key = "text_encoder.model.encoder.layer.5.output.dense.weight"
    assert not torch.equal(saved["model"][key], stock.state_dict()[key])  # the top layer trained

    exported = MoMu.from_pretrained(result.model_dir)
    lower = "text_encoder.model.encoder.layer.4.output.dense.weight"
    assert torch.equal(exported.state_dict()[lower], stock.state_dict()[lower])
    # The training-time module: stock weights + checkpoint, text from cached (float32 here) hidden states.
    stock.load_state_dict(saved["model"], strict=False)
    module = ContrastiveModule(stock, "momu", "partial", 1).eval()
    texts = [line.split("\t")[2] for line in Path(CHEBI_SLICE).read_text().splitlines()[1:7]]
    records = pa.table({"texts": [[t] for t in texts]})
    hidden = EncodeTextHidden(cfg.model.text.model_dump(mode="json"), 1, "float32")(records)
    with torch.no_grad():
        live = module.embed_text(pad_hidden_states(hidden.column("text_hidden").combine_chunks().flatten()))
    torch.testing.assert_close(exported.embed_texts(texts), live, rtol=1e-5, atol=1e-5)


def test_local_ray_workers_silence_the_placement_group_cleaner(ray_local):
    """Without the dashboard there is no state API: Ray Train's cleaner would warn every second of every run."""
    import logging

    from momu.job_output import _CLEANER_LOGGER

    @ray_local.remote(num_cpus=0)
    def cleaner_level() -> int:
        return logging.getLogger(_CLEANER_LOGGER).getEffectiveLevel()

    assert ray_local.get(cleaner_level.remote()) == logging.ERROR


@pytest.mark.timeout(300)
def test_text_cache_of_a_job_asking_every_cpu_still_finishes(ray_local, tmp_path):
    """A 1-worker x 2-CPU job on a 2-CPU Ray: the encoding actor used to take both CPUs and the cache's Parquet
    writer waited for one forever."""
    from momu.config import TextEncoderConfig
    from momu.data.pipeline import cached_text_features, encoder_cpus

    assert encoder_cpus(2.0) == 1.0 and encoder_cpus(0.5) == 0.5 and encoder_cpus(2.0, concurrency=2) == 0.5
    table = pa.table({"id": ["a", "b", "c"], "texts": [["The molecule is an acid."], ["An alcohol."], ["A ketone."]]})
    ds, path = cached_text_features(table, TextEncoderConfig(), str(tmp_path / "cache"), num_cpus=2.0)
    assert ds.count() == 3 and (tmp_path / "cache").exists()
