"""Retrieval evaluation job, retrieval finetuning and the fingerprint baseline on small real slices."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from momu.config import ConfigError, FingerprintConfig, GINConfig, MoMuConfig, ScalingSection, load_config
from momu.retrieval.config import RetrievalEvalConfig, RetrievalFinetuneConfig
from momu.retrieval.job import load_eval_pairs, run_retrieval_eval

from conftest import SAMPLE

TEST_SLICE = SAMPLE / "chebi20" / "test_slice.tsv"
VAL_SLICE = SAMPLE / "chebi20" / "validation_slice.tsv"


def chebi_rows(path: Path, n: int) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()[1:n + 1]]


@pytest.fixture(scope="module")
def train_slice(tmp_path_factory):
    """The first 480 pairs of the bundled validation slice (~50 held out) and a text-feature cache shared by
    the Ray tests (same texts, same text tower: computed once)."""
    root = tmp_path_factory.mktemp("train_slice")
    lines = VAL_SLICE.read_text().splitlines()
    (root / "pairs.tsv").write_text("\n".join(lines[:481]) + "\n")
    return {"path": root / "pairs.tsv", "cache": str(root / "text_cache")}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A small random GIN model and a fingerprint-baseline model, saved like any trained one."""
    from momu.models.momu import build_model

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    gin = build_model(MoMuConfig(graph=GINConfig(num_layers=2, emb_dim=32), proj_dim=16)).save_pretrained(root / "gin")
    fp = build_model(MoMuConfig(graph_encoder="fingerprint", fingerprint=FingerprintConfig(n_bits=256, hidden_dim=64,
                                                                                          out_dim=32),
                                proj_dim=16)).save_pretrained(root / "fp")
    return {"gin": str(gin), "fp": str(fp)}


# -- pure pieces -------------------------------------------------------------------------------------------------

def test_warmup_linear_schedule_by_hand():
    from momu.pretrain.ray_train import lr_factor, planned_steps

    cfg = RetrievalFinetuneConfig(init_from="x", epochs=2, batch_size=10, warmup_fraction=0.2)
    assert planned_steps(cfg, rows_per_worker=55) == 10  # 5 full batches per epoch, 2 epochs
    # x = (step + 1) / 10: 0.1 -> 0.1 / 0.2; from 0.2 on, (1 - x) / 0.8 down to 0 at the last step.
    assert [round(lr_factor(cfg, s, 10), 6) for s in range(10)] == [0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25,
                                                                    0.125, 0.0]
    assert lr_factor(cfg.model_copy(update={"lr_schedule": "constant"}), 3, 10) == 1.0
    assert planned_steps(cfg.model_copy(update={"max_steps": 4}), 55) == 4


def test_configs_validate_with_named_fields(tmp_path):
    with pytest.raises(ConfigError, match="models"):
        load_config(RetrievalEvalConfig, None, {})
    with pytest.raises(ConfigError, match="text_path"):
        load_config(RetrievalEvalConfig, None, {"models": {"a": "x"}, "data_format": "pcdes"})
    with pytest.raises(ConfigError, match="chance"):
        load_config(RetrievalEvalConfig, None, {"models": {"chance": "x"}})
    with pytest.raises(ConfigError, match="init_from"):
        load_config(RetrievalFinetuneConfig, None, {})
    for name in ("evaluate_retrieval_chebi20", "finetune_retrieval_chebi20"):
        load_config(RetrievalEvalConfig if name.startswith("evaluate") else RetrievalFinetuneConfig,
                    Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    from momu.pretrain.config import PretrainConfig

    baseline = load_config(PretrainConfig, Path(__file__).parents[1] / "configs" / "baseline_fingerprint_chebi20.yaml")
    assert baseline.model.graph_encoder == "fingerprint" and baseline.select_best == "acc_mean"


def test_fingerprint_column_collation_and_vse_objective(saved_models):
    from momu.chem.columns import GRAPH_COLUMNS
    from momu.data.pipeline import REJECT, featurize_records
    from momu.losses import vse_max_violation_loss
    from momu.models.fingerprint import FINGERPRINT_COLUMN, dense_fingerprints, fingerprints_for
    from momu.models.momu import MoMu
    from momu.pretrain.contrastive import ContrastiveCollator, ContrastiveModule, contrastive_objective

    rows = chebi_rows(TEST_SLICE, 6)
    smiles = [r[1] for r in rows] + ["C1CC("]
    fp_cfg = {"radius": 2, "n_bits": 256, "chirality": True, "hidden_dim": 64, "out_dim": 32, "dropout": 0.2}
    batch = pa.table({"id": [str(i) for i in range(7)], "smiles": smiles})
    out = featurize_records(batch, fingerprint=fp_cfg)
    assert out.column(REJECT).to_pylist() == [""] * 6 + ["unparseable"]
    good = out.filter(pa.array([r == "" for r in out.column(REJECT).to_pylist()]))
    model = MoMu.from_pretrained(saved_models["fp"])
    features = pa.array([[list(np.random.default_rng(i).random(model.text_encoder.out_dim, dtype=np.float32))]
                         for i in range(6)], pa.list_(pa.list_(pa.float32())))
    good = good.select([*GRAPH_COLUMNS, FINGERPRINT_COLUMN]).append_column("text_features", features)
    collator = ContrastiveCollator(seed=0, rank=0, objective="vse", text_mode="locked", bond_feature="stereo",
                                   augment1="none", augment2="none", drop_ratio=0.1, subgraph_ratio=0.8,
                                   fingerprint_bits=256)
    inputs = collator(good, epoch=0, batch_index=0)
    expected = dense_fingerprints(fingerprints_for(smiles[:6], FingerprintConfig(**fp_cfg)), 256)
    assert torch.equal(inputs.view1.fingerprint, expected) and inputs.text2 is None
    module = ContrastiveModule(model, "vse", "locked")
    graph, text = module(inputs)
    assert graph.shape == text.shape == (6, 16)
    assert torch.equal(contrastive_objective((graph, text), "vse", 0.1, margin=0.3),
                       vse_max_violation_loss(graph, text, 0.3))


def test_init_from_resolves_config_and_guards_locked_text(tmp_path, saved_models, monkeypatch):
    import shutil

    from momu.models.momu import MoMu
    from momu.pretrain.ray_train import resolve_init_from

    shutil.copytree(saved_models["gin"], tmp_path / "start")
    monkeypatch.chdir(tmp_path)
    cfg, init_dir = resolve_init_from(RetrievalFinetuneConfig(init_from="start"), "locked", progress=False)
    assert init_dir.is_absolute()  # Ray Train workers run in another directory
    assert cfg.model.graph.emb_dim == 32 and cfg.model.proj_dim == 16  # the saved model's config, not the default
    tuned = MoMu.from_pretrained(tmp_path / "start")
    with torch.no_grad():
        next(tuned.text_encoder.parameters()).add_(0.01)
    tuned.save_pretrained(tmp_path / "tuned_text")
    with pytest.raises(ValueError, match="finetuned text tower"):
        resolve_init_from(RetrievalFinetuneConfig(init_from="tuned_text"), "locked", progress=False)
    resolve_init_from(RetrievalFinetuneConfig(init_from="tuned_text"), "frozen", progress=False)  # frozen: fine


# -- the evaluation job -----------------------------------------------------------------------------------------

def eval_config(tmp_path, models, **overrides) -> RetrievalEvalConfig:
    base = dict(models=models, data_path=str(TEST_SLICE), batch_size=8, embed_batch_size=16,
                output_dir=str(tmp_path / "out"), mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                mlflow_experiment="retrieval-test")
    base.update(overrides)
    return RetrievalEvalConfig(**base)


@pytest.mark.slow  # > 10 s: embeds with the MiniLM text tower twice
def test_eval_job_table_json_mlflow_and_determinism(tmp_path, saved_models):
    import mlflow

    pool = tmp_path / "pool.tsv"
    lines = VAL_SLICE.read_text().splitlines()
    pool.write_text("\n".join(lines[:81]) + "\n" + lines[1] + "\n")  # 80 molecules + one duplicate
    cfg = eval_config(tmp_path, {"gin": saved_models["gin"], "fp": saved_models["fp"]}, limit=20,
                      pool_paths=[str(pool)])
    first = run_retrieval_eval(cfg, progress=False)
    for text in ("| gin ", "| fp ", "| chance ", "Full rank over all 20", "pool of 100 molecules", "T→G"):
        assert text in first.table, text
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["data"]["pairs"] == 20 and saved["data"]["pool"]["pool_size"] == 100
    assert saved["data"]["pool"]["duplicates_merged"] == 1
    assert set(saved["results"]) == {"gin", "fp", "chance"}
    chance = saved["results"]["chance"]
    assert chance["paragraph"]["g2t"]["acc_8"] == pytest.approx(3 / 20)  # 3 batches of at most 8 over 20 pairs
    assert chance["pool"]["recall_1"] == pytest.approx(1 / 100)
    # MLflow: metrics under <model>/<level>/<direction>/<metric>, the table and JSON as artifacts.
    client = mlflow.tracking.MlflowClient(cfg.mlflow_tracking_uri)
    run = client.get_run(first.mlflow_run_id)
    assert run.data.metrics["gin/paragraph/g2t/acc_8"] == first.results["gin"]["paragraph"]["g2t"]["acc_8"]
    assert "fp/sentence/t2g/mrr" in run.data.metrics and "fp/pool/recall_10" in run.data.metrics
    assert run.data.metrics["data/pairs"] == 20
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"results.json", "retrieval_table.md",
                                                                          "config.json"}
    # Identical inputs, identical numbers.
    second = run_retrieval_eval(cfg.model_copy(update={"output_dir": str(tmp_path / "again")}), progress=False,
                                log_to_mlflow=False)
    assert second.results == first.results


def write_pcdes(tmp_path, rows, bad: bool):
    """PCdes-style files from ChEBI-20 rows; with `bad`, an invalid SMILES (line 3), an empty description (line 6)
    and two SMILES lines past the end of the description file."""
    smiles = [r[1] for r in rows]
    texts = [r[2] for r in rows]
    if bad:
        smiles[2] = "C1CC(N"
        texts[5] = "   "
        smiles += [rows[0][1], rows[1][1]]
    (tmp_path / "smiles.txt").write_text("\n".join(smiles) + "\n")
    (tmp_path / "text.txt").write_text("\n".join(texts) + "\n")
    return str(tmp_path / "smiles.txt"), str(tmp_path / "text.txt")


@pytest.mark.slow  # > 10 s: embeds with the MiniLM text tower twice
def test_bad_pcdes_inputs_are_counted_and_excluded_from_both_sides(tmp_path, saved_models):
    rows = chebi_rows(TEST_SLICE, 24)
    (tmp_path / "dirty").mkdir()
    smiles_file, text_file = write_pcdes(tmp_path / "dirty", rows, bad=True)
    cfg = eval_config(tmp_path, saved_models, data_format="pcdes", data_path=smiles_file, text_path=text_file,
                      sentence_level=True)
    pairs = load_eval_pairs(cfg)
    assert dict(pairs.excluded) == {"unparseable": 1, "empty_description": 1, "unpaired_line": 2}
    assert pairs.rows_read == 26 and len(pairs) == 22
    kept = [i for i in range(24) if i not in (2, 5)]
    assert pairs.ids == [str(i + 1) for i in kept]  # ids are line numbers: nothing shifted
    assert pairs.texts == [rows[i][2] for i in kept] and pairs.smiles == [rows[i][1] for i in kept]
    # The dirty files evaluate exactly like a clean file holding only the usable pairs.
    clean = tmp_path / "clean.tsv"
    clean.write_text("CID\tSMILES\tdescription\n" + "".join(f"{i + 1}\t{rows[i][1]}\t{rows[i][2]}\n" for i in kept))
    dirty = run_retrieval_eval(cfg, progress=False, log_to_mlflow=False)
    assert dirty.data["excluded"] == {"empty_description": 1, "unpaired_line": 2, "unparseable": 1}
    assert "excluded" in json.loads((tmp_path / "out" / "results.json").read_text())["data"]
    cleaned = run_retrieval_eval(cfg.model_copy(update={"data_format": "chebi20", "data_path": str(clean),
                                                        "text_path": None}), progress=False, log_to_mlflow=False)
    assert cleaned.results == dirty.results and cleaned.data["pairs"] == 22


def test_cli_evaluate_retrieval(tmp_path, saved_models, capsys):
    from momu.cli import main

    code = main(["evaluate", "retrieval", "--model", f"tiny={saved_models['gin']}", "--data_path", str(TEST_SLICE),
                 "--limit", "10", "--sentence_level", "false", "--output_dir", str(tmp_path / "cli"), "--no-mlflow",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "| tiny " in out and "| chance " in out and "sent." not in out
    assert (tmp_path / "cli" / "retrieval_table.md").is_file()
    assert main(["evaluate", "retrieval", "--model", "no-equals-sign", "--no-mlflow"]) == 2


# -- Ray: finetuning and the baseline through the same jobs -------------------------------------------------------

def heldout_accuracy(model_dir: str, data: Path, fraction: float = 0.1) -> dict:
    """1-of-64 accuracy of a saved model on the fixed held-out rows of `data`, in file order (as validation)."""
    from momu.data.pairs import heldout_mask, load_pair_dataset
    from momu.retrieval.metrics import inbatch_accuracy
    from momu.retrieval.job import graph_embeddings, pooled_text_features
    from momu.models.momu import MoMu

    model = MoMu.from_pretrained(model_dir).eval()
    dataset, _ = load_pair_dataset(str(data))
    held = dataset.subset(np.flatnonzero(heldout_mask(dataset.ids, fraction)))
    smiles = {r[0]: r[1] for r in chebi_rows(data, 10 ** 6)}
    graphs = graph_embeddings(model, held.graphs, [smiles[i] for i in held.ids], 64, progress=False)
    with torch.no_grad():
        texts = model.project_text(pooled_text_features(model.text_encoder, [t[0] for t in held.texts], 64,
                                                        progress=False))
    return inbatch_accuracy(graphs, texts, 64)


@pytest.mark.slow
def test_finetuning_improves_heldout_accuracy_and_exports_the_best(ray_local, tmp_path, saved_models, train_slice):
    import mlflow

    from momu.pretrain.ray_train import run_pretrain

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = RetrievalFinetuneConfig(
        init_from=saved_models["gin"], data_paths=[str(train_slice["path"])], text_mode="locked", epochs=5, lr=2e-3,
        batch_size=32, text_cache_dir=train_slice["cache"], storage_path=str(tmp_path / "ray"),
        scaling=ScalingSection(num_workers=1, cpus_per_worker=1), mlflow_tracking_uri=uri,
        mlflow_experiment="ft", register_model_name="momu-ft-test", max_failures=0)
    result = run_pretrain(cfg, output_dir=str(tmp_path / "model"), progress=False)
    client = mlflow.tracking.MlflowClient(uri)
    history = {k: {m.step: m.value for m in client.get_metric_history(result.mlflow_run_id, k)}
               for k in ("val_acc_g2t", "val_acc_t2g", "best_val_acc_mean", "lr")}
    start = (history["val_acc_g2t"][0] + history["val_acc_t2g"][0]) / 2
    best = result.metrics["best_val_acc_mean"]
    assert best > start + 0.05, (start, history)
    assert max(history["lr"].values()) == pytest.approx(2e-3, rel=0.2)  # warm-up reached the peak, then decayed
    assert result.model_uri == "models:/momu-ft-test/1"
    # The exported model is the selected one: its held-out accuracy is the best validation's.
    acc = heldout_accuracy(str(result.model_dir), train_slice["path"])
    held = result.data_summary["val_rows"]
    assert (acc["acc_g2t"] + acc["acc_t2g"]) / 2 == pytest.approx(best, abs=1.01 / held)
    assert result.model_dir.joinpath("config.json").is_file()


@pytest.mark.slow
def test_fingerprint_baseline_trains_and_evaluates_with_the_same_jobs(ray_local, tmp_path, train_slice):
    from momu.pretrain.config import PretrainConfig
    from momu.models.momu import MoMu
    from momu.pretrain.ray_train import run_pretrain

    cfg = PretrainConfig(
        data_paths=[str(train_slice["path"])], text_mode="locked", augment1="none", augment2="none", epochs=3,
        lr=1e-3, batch_size=32, select_best="acc_mean", text_cache_dir=train_slice["cache"],
        storage_path=str(tmp_path / "ray"), scaling=ScalingSection(num_workers=2, cpus_per_worker=1),
        model=MoMuConfig(graph_encoder="fingerprint", proj_dim=32), embedding_plot=False, max_failures=0)
    result = run_pretrain(cfg, output_dir=str(tmp_path / "fp_model"), log_to_mlflow=False, progress=False)
    assert result.metrics["best_val_acc_mean"] > 3 * result.metrics["val_chance"]
    model = MoMu.from_pretrained(result.model_dir)
    assert model.uses_fingerprints and model.config.fingerprint.n_bits == 2048
    # Evaluation through Ray Data model actors gives the in-process numbers.
    ecfg = eval_config(tmp_path, {"fp": str(result.model_dir)}, limit=24, mlflow_tracking_uri=None)
    local = run_retrieval_eval(ecfg, progress=False, log_to_mlflow=False)
    on_ray = run_retrieval_eval(ecfg.model_copy(update={"ray_threshold": 0, "output_dir": str(tmp_path / "ray_out")}),
                                progress=False, log_to_mlflow=False)
    assert _close(on_ray.results, local.results), (on_ray.results, local.results)
    assert local.results["fp"]["paragraph"]["g2t"]["mrr"] > local.results["chance"]["paragraph"]["g2t"]["mrr"]


def _close(a, b, tol=1e-9) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    return abs(a - b) <= tol
