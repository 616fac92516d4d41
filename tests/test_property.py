"""Property prediction: scaffold split, masked loss / ROC-AUC, finetuning, prediction CLI, and the Ray Tune sweep."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SAMPLE, shared_path

BBBP_SLICE = SAMPLE / "moleculenet" / "bbbp_slice.csv"
TOX21_SLICE = SAMPLE / "moleculenet" / "tox21_slice.csv"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small GINs run fastest on one thread (on a shared 2-core machine two threads were ~10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _slice_smiles(path=BBBP_SLICE):
    from momu.chem.featurize import featurize_smiles

    rows = list(csv.reader(open(path)))[1:]
    return [r[0] for r in rows if featurize_smiles(r[0])]


def _tiny_graph(**overrides):
    from momu.config import GINConfig

    return GINConfig.pretrain_gnns(**{"num_layers": 2, "emb_dim": 32, "dropout": 0.0, **overrides})


# -- scaffold split ---------------------------------------------------------------------------------------------

def test_scaffold_split_properties_on_real_molecules():
    from momu.chem.scaffold import murcko_scaffold, scaffold_split

    smiles = _slice_smiles(TOX21_SLICE) + _slice_smiles(BBBP_SLICE)
    split = scaffold_split(smiles)
    n = len(smiles)
    sizes = split.sizes()
    assert sum(sizes.values()) == n
    # each part is a whole number of scaffold groups: no scaffold in two parts
    part_of = {}
    for part, idx in split.parts().items():
        for i in idx:
            scaffold = murcko_scaffold(smiles[i])
            assert part_of.setdefault(scaffold, part) == part, f"{scaffold!r} in {part_of[scaffold]} and {part}"
    assert len(set(part_of.values())) == 3
    # sizes: train within 80 %, train + valid within 90 %, and close to it (groups are small here)
    assert sizes["train"] <= 0.8 * n and sizes["train"] + sizes["valid"] <= 0.9 * n
    assert sizes["train"] >= 0.7 * n and sizes["valid"] >= 0.05 * n and sizes["test"] >= 0.1 * n - 1
    # largest group first into train
    counts = {}
    for s in split.scaffolds:
        counts[s] = counts.get(s, 0) + 1
    largest = max(counts, key=counts.get)
    assert all(split.scaffolds[i] != largest for i in np.concatenate([split.valid, split.test]))
    # deterministic
    again = scaffold_split(list(smiles))
    for a, b in zip(split.parts().values(), again.parts().values()):
        assert np.array_equal(a, b)


def test_scaffold_split_exact_assignment_on_a_constructed_set():
    from momu.chem.scaffold import scaffold_split

    benzene = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "c1ccccc1N", "c1ccccc1Cl", "c1ccccc1F"]  # 6 x benzene
    pyridine = ["c1ccncc1C", "c1ccncc1CC"]  # 2
    cyclohexane = ["C1CCCCC1C"]  # 1
    acyclic = ["CCO"]  # 1 (scaffold '')
    smiles = [cyclohexane[0], *pyridine, acyclic[0], *benzene]
    split = scaffold_split(smiles, (0.8, 0.1, 0.1))
    # benzene (6) -> train; pyridine (2) would make train 8 <= 8 -> train; then two singletons: the one whose first
    # index is later goes first (pretrain-gnns tie rule): 'CCO' (index 3) -> valid (9 <= 9), cyclohexane -> test.
    assert sorted(smiles[i] for i in split.train) == sorted(benzene + pyridine)
    assert [smiles[i] for i in split.valid] == ["CCO"]
    assert [smiles[i] for i in split.test] == ["C1CCCCC1C"]


def test_split_save_load_and_random_split(tmp_path):
    from momu.chem.scaffold import Split, random_split, scaffold_split

    smiles = _slice_smiles()
    split = scaffold_split(smiles)
    path = split.save(tmp_path / "split.json", ids=[str(i) for i in range(len(smiles))])
    loaded = Split.load(path, smiles)
    for a, b in zip(split.parts().values(), loaded.parts().values()):
        assert np.array_equal(a, b)
    saved = json.loads(path.read_text())
    assert saved["sizes"] == split.sizes() and len(saved["ids"]["train"]) == len(split.train)
    with pytest.raises(ValueError, match="different molecule list"):
        Split.load(path, smiles[:-1])
    r1, r2, r3 = random_split(smiles, seed=1), random_split(smiles, seed=1), random_split(smiles, seed=2)
    assert np.array_equal(r1.train, r2.train) and not np.array_equal(r1.train, r3.train)
    assert r1.sizes() == {"train": 160, "valid": 20, "test": 20}
    with pytest.raises(ValueError, match="fractions"):
        scaffold_split(smiles, (0.8, 0.3, 0.1))


# -- loss and metrics -------------------------------------------------------------------------------------------

def test_masked_bce_ignores_missing_labels():
    from momu.property.metrics import masked_bce_with_logits

    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.7, 1.5]], requires_grad=True)
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [float("nan"), float("nan")]])
    loss = masked_bce_with_logits(logits, labels)
    present = [(0, 0, 1.0), (1, 0, 0.0), (1, 1, 1.0)]
    expected = np.mean([float(torch.nn.functional.binary_cross_entropy_with_logits(logits[i, j], torch.tensor(y)))
                        for i, j, y in present])
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0 and (logits.grad[2] == 0).all() and logits.grad[0, 0] != 0
    nothing = masked_bce_with_logits(logits, torch.full_like(labels, float("nan")))
    assert float(nothing) == 0.0


def test_roc_auc_matches_sklearn_with_ties():
    from momu.property.metrics import roc_auc

    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    s = np.round(rng.normal(size=300) + y, 1)  # rounded: many ties
    assert roc_auc(y, s) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="one class"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_multitask_roc_auc_masks_missing_and_skips_single_class_tasks():
    from momu.property.metrics import multitask_rmse, multitask_roc_auc, roc_auc

    nan = float("nan")
    labels = np.array([[1, 1, nan, 0], [0, 1, nan, nan], [1, 1, nan, 1], [0, 1, nan, 0], [nan, 0, nan, 1]])
    scores = np.array([[0.9, 0.2, 0.5, 0.1], [0.2, 0.3, 0.5, 0.9], [0.6, 0.4, 0.5, 0.8], [0.7, 0.1, 0.5, 0.2],
                       [0.0, 0.9, 0.5, 0.3]])
    result = multitask_roc_auc(labels, scores, ["a", "b", "c", "d"])
    # task a: rows 0-3 only (row 4 missing); b: both classes; c: no labels -> skipped; d: rows 0, 2, 3, 4
    assert result.per_task[0] == pytest.approx(roc_auc([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.7]))
    assert result.per_task[1] == pytest.approx(0.0)  # the one negative has the highest score
    assert result.per_task[2] is None and result.skipped == ["c"]
    assert result.per_task[3] == pytest.approx(roc_auc([0, 1, 0, 1], [0.1, 0.8, 0.2, 0.3]))
    assert result.mean == pytest.approx(np.mean([result.per_task[i] for i in (0, 1, 3)]))
    single = multitask_roc_auc(np.array([[1.0], [1.0]]), np.array([[0.3], [0.5]]))
    assert single.num_scored == 0 and np.isnan(single.mean)
    rmse = multitask_rmse(np.array([[1.0, nan], [3.0, 2.0]]), np.array([[2.0, 5.0], [3.0, 4.0]]))
    assert rmse.per_task == [pytest.approx(np.sqrt(0.5)), pytest.approx(2.0)]


# -- data -------------------------------------------------------------------------------------------------------

def test_data_reports_and_skips_unparseable_smiles_and_caches(tmp_path):
    from momu.property.config import PropertyDataSection
    from momu.property.train import load_property_data

    rows = BBBP_SLICE.read_text().splitlines()
    bad = rows[:1] + ["C1CC(,1", "not_a_molecule,0"] + rows[1:]
    path = tmp_path / "assay.csv"
    path.write_text("\n".join(bad) + "\n")
    section = PropertyDataSection(path=str(path), cache_dir=str(tmp_path / "cache"))
    data = load_property_data(section, progress=False)
    assert len(data) == 200 and data.report["rejected"] == {"unparseable": 2}
    assert [e["line"] for e in data.report["reject_examples"]] == [2, 3]
    assert "skipped 2 molecule(s)" in data.summary() and "CSV line 2" in data.summary()
    assert data.task_type == "classification" and data.task_names == ["p_np"]
    cached = load_property_data(section, progress=False)  # second read: from the cache
    assert type(cached.graphs).__name__ == "ColumnGraphs"
    assert all(cached.graphs[i] == data.graphs[i] for i in range(0, 200, 17))
    assert np.array_equal(cached.split.train, data.split.train)
    assert np.array_equal(np.isnan(cached.labels), np.isnan(data.labels))


def test_cap_parts_keep_positives():
    from momu.property.config import PropertyDataSection
    from momu.property.train import cap_parts, load_property_data

    data = load_property_data(PropertyDataSection(path=str(TOX21_SLICE), cache_dir=None), progress=False)
    positive = np.nan_to_num(data.labels, nan=0).max(axis=1) == 1
    n_pos_train = int(positive[data.split.train].sum())
    capped = cap_parts(data, max_train=2 * n_pos_train + 10, max_eval=None, strategy="keep_positives")
    assert len(capped.split.train) == 2 * n_pos_train + 10
    assert positive[capped.split.train].sum() == n_pos_train  # every positive kept (they fit in half the cap)
    assert set(capped.split.train) <= set(data.split.train)
    small = cap_parts(data, max_train=10, max_eval=5, strategy="keep_positives")
    assert positive[small.split.train].sum() == 5 and small.split.sizes()["valid"] <= 5
    again = cap_parts(data, max_train=10, max_eval=5, strategy="keep_positives")
    assert np.array_equal(small.split.train, again.split.train)


# -- model ------------------------------------------------------------------------------------------------------

def test_pretrained_init_loads_gin_and_hands_over_self_loops(tmp_path, small_model):
    from momu.chem.featurize import featurize_smiles, graphs_to_pyg_batch
    from momu.property.config import PropertyModelSection
    from momu.property.model import build_property_model

    model_dir = small_model.save_pretrained(tmp_path / "momu")
    section = PropertyModelSection(init=str(model_dir), graph=_tiny_graph(num_layers=5, emb_dim=300))
    model, info = build_property_model(section, num_tasks=3)
    assert info["self_loop_row_copied"] and info["bond_feature_changed"]
    assert model.graph_config.num_layers == 2 and model.graph_config.emb_dim == 32  # sizes from the init
    assert model.graph_config.bond_feature == "direction" and model.graph_config.self_loop_bond_type == 4
    for name, tensor in small_model.graph_encoder.state_dict().items():
        if name.endswith("edge_embedding1.weight"):
            assert torch.equal(model.encoder.state_dict()[name][:4], tensor[:4])
            assert torch.equal(model.encoder.state_dict()[name][4], tensor[0])  # self-loop row handed over
        else:
            assert torch.equal(model.encoder.state_dict()[name], tensor), name
    # On molecules without stereo/direction bond labels, the finetuning featurization computes exactly the
    # pretrained encoder's function before any update.
    graphs = [featurize_smiles(s) for s in ("CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CCO", "c1ccc2ncccc2c1")]
    was_training = small_model.training
    small_model.eval()
    model.eval()
    try:
        with torch.no_grad():
            expected = small_model.graph_features(graphs_to_pyg_batch(graphs, "stereo"))
            got = model.encoder(graphs_to_pyg_batch(graphs, "direction"))
    finally:
        small_model.train(was_training)
    assert torch.allclose(expected, got, atol=1e-5)
    keep = PropertyModelSection(init=str(model_dir), features_from="init")
    model2, info2 = build_property_model(keep, num_tasks=1)
    assert model2.graph_config.bond_feature == "stereo" and not info2["self_loop_row_copied"]
    with pytest.raises(FileNotFoundError):
        build_property_model(PropertyModelSection(init=str(tmp_path / "nope")), 1)


# -- finetuning and prediction ----------------------------------------------------------------------------------

def _finetune_config(tmp_path, **overrides):
    from momu.property.config import PropertyFinetuneConfig

    base = {"data": {"path": str(BBBP_SLICE), "cache_dir": str(tmp_path / "cache")},
            "model": {"graph": _tiny_graph(dropout=0.2).model_dump()},
            "train": {"epochs": 2}, "output_dir": str(tmp_path / "run"), "save_model": True}
    for key, value in overrides.items():
        base.setdefault(key, {}).update(value) if isinstance(value, dict) else base.update({key: value})
    return PropertyFinetuneConfig.model_validate(base)


def test_short_finetune_beats_chance_on_validation(tmp_path):
    from momu.property.train import finetune_property

    path = shared_path("moleculenet", "bbbp.csv")
    cfg = _finetune_config(tmp_path, data={"path": str(path), "max_train_molecules": 600},
                           model={"graph": _tiny_graph(num_layers=3, emb_dim=64, dropout=0.2).model_dump()},
                           train={"epochs": 5}, save_model=False)
    result = finetune_property(cfg, progress=False, log_to_mlflow=False)
    m, history = result.metrics, result.history
    assert m["split_sizes"] == {"train": 600, "valid": 204, "test": 204}
    # not just the best-selected epoch: the last epoch's validation ROC-AUC is well above chance (0.5)
    assert history[-1]["valid_roc_auc"] > 0.7, history
    assert m["valid_roc_auc"] == max(h["valid_roc_auc"] for h in history)
    best = next(h for h in history if h["epoch"] == m["best_epoch"])
    assert m["test_roc_auc"] == best["test_roc_auc"]  # test reported at the best-validation epoch
    assert history[0]["train_loss"] > history[-1]["train_loss"]
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert saved["method"] == "scaffold" and len(saved["train"]) == 600


def test_finetune_and_predict_cli(tmp_path, capsys):
    from momu.cli import main

    out = tmp_path / "run"
    rc = main(["finetune", "property", "--data.path", str(BBBP_SLICE), "--data.cache_dir", str(tmp_path / "c"),
               "--model.graph.num_layers", "2", "--model.graph.emb_dim", "32", "--train.epochs", "2",
               "--output_dir", str(out), "--no-mlflow", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "best epoch" in text and "test roc_auc" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_roc_auc"] == pytest.approx(float(text.split("test roc_auc ")[1].split()[0]), abs=1e-4)
    molecules = tmp_path / "mols.smi"
    molecules.write_text("CC(=O)Oc1ccccc1C(=O)O aspirin\nnot_a_smiles bad\nc1ccccc1 benzene\nC1CC ring_open\n")
    pred = tmp_path / "pred.csv"
    assert main(["predict", "property", str(out / "model"), str(molecules), str(pred), "--quiet"]) == 0
    rows = list(csv.DictReader(open(pred)))
    assert [r["id"] for r in rows] == ["aspirin", "benzene"] and set(rows[0]) == {"id", "smiles", "p_np"}
    assert all(0.0 <= float(r["p_np"]) <= 1.0 for r in rows)
    rejects = list(csv.DictReader(open(tmp_path / "pred.rejects.csv")))
    assert [(r["id"], r["reason"]) for r in rejects] == [("bad", "unparseable"), ("ring_open", "unparseable")]
    # prediction equals the finetuned model's own forward pass
    from momu.chem.featurize import featurize_smiles
    from momu.property.model import load_property_model
    from momu.property.train import predict_graphs

    loaded = load_property_model(out / "model")
    direct = predict_graphs(loaded, [featurize_smiles("c1ccccc1")])
    assert float(rows[1]["p_np"]) == pytest.approx(float(direct[0, 0]), rel=1e-5)
    # bad input fails with the field's name
    assert main(["finetune", "property", "--train.epochs", "0", "--no-mlflow"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["predict", "property", str(tmp_path), str(molecules), str(pred)]) == 2


def test_regression_dataset(tmp_path):
    from momu.property.train import finetune_property

    path = tmp_path / "reg.csv"
    rows = list(csv.reader(open(BBBP_SLICE)))[1:]
    with open(path, "w") as handle:  # a learnable regression target on real molecules: the carbon-atom fraction
        from rdkit import Chem

        handle.write("smiles,carbon_fraction\n")
        for smi, _ in rows:
            mol = Chem.MolFromSmiles(smi)
            if mol is not None:
                atoms = mol.GetAtoms()
                handle.write(f"{smi},{sum(a.GetAtomicNum() == 6 for a in atoms) / len(atoms):.4f}\n")
    cfg = _finetune_config(tmp_path, data={"path": str(path)}, train={"epochs": 8}, save_model=True)
    result = finetune_property(cfg, progress=False, log_to_mlflow=False)
    assert result.metrics["metric"] == "rmse" and result.metrics["task_type"] == "regression"
    labels = np.array([float(r[1]) for r in list(csv.reader(open(path)))[1:]])
    assert result.metrics["test_rmse"] < labels.std()  # better than predicting the mean
    from momu.property.model import load_property_model

    assert load_property_model(result.model_dir).label_std is not None


# -- sweep ------------------------------------------------------------------------------------------------------

def test_summary_table_mean_std_and_average():
    from momu.property.sweep import TrialRow, format_markdown, summarize_trials

    rows = [TrialRow(ds, init, seed, "roc_auc", v, 0.7, 3, 1.0)
            for ds, init, seed, v in [("BBBP", "random", 0, 0.60), ("BBBP", "random", 1, 0.70),
                                      ("BACE", "random", 0, 0.80), ("BACE", "random", 1, 0.90),
                                      ("BBBP", "momu", 0, 0.65), ("BACE", "momu", 0, float("nan"))]]
    rows.append(TrialRow("BACE", "momu", 1, "roc_auc", float("nan"), float("nan"), 0, 0.0, "RuntimeError: boom"))
    summary = summarize_trials(rows, ["random", "momu"], ["BBBP", "BACE"])
    cell = summary.cells[("random", "BBBP")]
    assert cell["mean"] == pytest.approx(0.65) and cell["std"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert summary.averages["random"]["mean"] == pytest.approx(0.75)
    assert summary.averages["random"]["std"] == pytest.approx(np.std([0.70, 0.80], ddof=1))  # per-seed averages
    assert np.isnan(summary.averages["momu"]["mean"])  # BACE missing for momu
    md = format_markdown(summary)
    assert "| random | 65.0 ± 7.1 | 85.0 ± 7.1 | 75.0 ± 7.1 |" in md
    assert "| MoMu-K (published) | 71.3 | 77.1 | - |" in md
    assert "1 trial(s) failed" in md and "boom" in md


def test_sweep_inits_take_shipped_checkpoint_names(tmp_path):
    from momu.config import load_config
    from momu.models.published import PUBLISHED_DIR
    from momu.property.config import PropertySweepConfig
    from momu.property.sweep import resolve_sweep_paths

    overrides = {"output_dir": str(tmp_path / "sweep"), "storage_path": str(tmp_path / "ray"),
                 "inits": {"random": "random", "momu": "momu-cpu", "graphcl": "momu-graphcl-cpu"}}
    cfg = resolve_sweep_paths(load_config(PropertySweepConfig, "configs/property_sweep_tiny.yaml", overrides))
    assert cfg.inits["random"] == "random"
    assert cfg.inits["momu"] == str((PUBLISHED_DIR / "momu-cpu").resolve())
    assert cfg.inits["graphcl"] == str((PUBLISHED_DIR / "momu-graphcl-cpu").resolve())
    overrides["inits"] = {"momu": "momu-nonexistent"}
    with pytest.raises(FileNotFoundError, match="momu-nonexistent.*shipped checkpoint.*momu-cpu"):
        resolve_sweep_paths(load_config(PropertySweepConfig, "configs/property_sweep_tiny.yaml", overrides))


@pytest.mark.slow
def test_sweep_makes_parent_run_child_runs_and_table(tmp_path, ray_local, small_model):
    import mlflow

    from momu.config import load_config
    from momu.property.config import PropertySweepConfig
    from momu.property.sweep import run_property_sweep

    init_dir = small_model.save_pretrained(tmp_path / "pretrained")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(PropertySweepConfig, "configs/property_sweep_tiny.yaml", {
        "datasets": [{"path": str(BBBP_SLICE), "name": "bbbp_slice", "cache_dir": str(tmp_path / "cache")}],
        "inits": {"random": "random", "tiny_momu": str(init_dir)}, "seeds": [0, 1], "train.epochs": 1,
        "output_dir": str(tmp_path / "sweep"), "storage_path": str(tmp_path / "ray"), "mlflow_tracking_uri": uri,
    })
    result = run_property_sweep(cfg, progress=False)
    assert not result.summary.failed
    assert len(result.summary.rows) == 4 and {r.init for r in result.summary.rows} == {"random", "tiny_momu"}
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert table == result.markdown and "| random |" in table and "| tiny_momu |" in table
    assert len(list(csv.DictReader(open(tmp_path / "sweep" / "trials.csv")))) == 4
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[cfg.mlflow_experiment], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    assert len(children) == 4 and all("test_roc_auc" in c.data.metrics for c in children)
    assert {c.data.tags["init_name"] for c in children} == {"random", "tiny_momu"}
    assert "random.bbbp_slice.test_roc_auc_mean" in parents[0].data.metrics
    child = {(c.data.tags["init_name"], c.data.params["seed"]): c.data.metrics["test_roc_auc"] for c in children}
    row = {(r.init, str(r.seed)): r.test for r in result.summary.rows}
    assert child == pytest.approx(row)


def test_sweep_progress_is_one_line_per_interval_not_tune_tables():
    import io

    from momu.property.sweep import trial_progress_callback

    out = io.StringIO()
    callback = trial_progress_callback(3, stream=out)
    callback.on_trial_complete(0, [], "BBBP-a-seed0")
    callback.on_trial_error(1, [], "BBBP-a-seed1")
    assert out.getvalue() == ""  # within the 15-s interval: nothing yet
    callback.on_trial_complete(2, [], "BBBP-a-seed2")
    (line,) = out.getvalue().splitlines()  # the last trial always reports
    assert line.startswith("property-sweep trials: 3/3, failed 1, last BBBP-a-seed2 (")
