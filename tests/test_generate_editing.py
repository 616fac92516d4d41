"""Benchmark A (MoleculeSTM's editing tasks 101-108): task reading, the hit rule, the Spearman check and the
benchmark end to end on the bundled slice with a small model."""

from __future__ import annotations

import json

import pytest

from momu.generate.editing import (EditingBenchmarkConfig, EditTask, property_value, read_tasks,
                                   run_editing_benchmark)

from conftest import SAMPLE

EDITING = SAMPLE / "moleculestm_editing"


def test_tasks_101_to_108_read_with_direction_and_strict_delta():
    tasks = read_tasks(EDITING / "tasks.tsv", list(range(101, 109)))
    assert [t.prop for t in tasks] == ["MolLogP", "MolLogP", "qed", "qed", "TPSA", "TPSA", "NumHAcceptors",
                                       "NumHDonors"]
    assert [t.increase for t in tasks] == [False, True, True, False, False, True, True, True]
    assert [t.strict_delta for t in tasks] == [0.5, 0.5, 0.1, 0.1, 10, 10, 1, 1]
    assert tasks[0].prompt == "This molecule is soluble in water."
    with pytest.raises(ValueError, match="101-108"):  # two properties: not one descriptor's judgement
        read_tasks(EDITING / "tasks.tsv", [201])
    with pytest.raises(ValueError, match="999"):
        read_tasks(EDITING / "tasks.tsv", [999])


def test_hit_rule_is_strict_inequality_past_delta():
    soluble = EditTask(101, "soluble", "MolLogP", increase=False, strict_delta=0.5)
    assert soluble.hit(2.0, 1.9, 0.0) and not soluble.hit(2.0, 1.9, 0.5) and soluble.hit(2.0, 1.4, 0.5)
    assert not soluble.hit(2.0, 2.0, 0.0)  # no change is no hit
    assert not soluble.hit(2.0, None, 0.0)  # an unparseable candidate is no hit
    donors = EditTask(108, "donors", "NumHDonors", increase=True, strict_delta=1)
    assert donors.hit(1, 2, 0.0) and not donors.hit(1, 2, 1) and donors.hit(1, 3, 1)
    assert property_value("MolLogP", "CCCCCCO") > property_value("MolLogP", "CCO")
    assert property_value("NumHDonors", "OCCO") == 2
    assert property_value("MolLogP", "not a smiles") is None


def test_config_rejects_unknown_methods():
    with pytest.raises(ValueError, match="unknown method"):
        EditingBenchmarkConfig(methods=["momu-ga", "magic"])


def test_benchmark_end_to_end_on_the_slice(small_model, tmp_path):
    data = tmp_path / "editing"
    data.mkdir()
    (data / "tasks.tsv").write_text((EDITING / "tasks.tsv").read_text())
    inputs = (EDITING / "input_smiles.txt").read_text().split()[:2]
    (data / "input_smiles.txt").write_text("\n".join(inputs + ["C1CC"]) + "\n")  # + one unparseable input
    config = EditingBenchmarkConfig(data_dir=str(data), tasks=[101, 107], budget_evaluations=45, budget_seconds=20,
                                    correlation_sample=30, zinc_path=str(SAMPLE / "zinc250k" / "zinc250k_slice.csv"))
    rows = []
    result = run_editing_benchmark(config, model=small_model, progress=False, on_row=rows.append)
    assert result["inputs"] == 3 and result["accounting_ok"]
    assert len(rows) == 2 * 3 * 3  # tasks x inputs x methods: every one answered or failed with a reason
    failed = [r for r in rows if "failed" in r]
    assert len(failed) == 6 and all(r["input"] == "C1CC" and "not a valid SMILES" in r["failed"] for r in failed)
    tasks = {t.task_id: t for t in read_tasks(data / "tasks.tsv", [101, 107])}
    for row in rows:
        if "failed" in row:
            continue
        assert len(row["candidates"]) == 5, row  # 5 lambdas / 5 mutations
        task = tasks[row["task"]]
        assert row["hit_loose"] == any(task.hit(row["input_value"], v, 0.0) for v in row["values"])
        assert row["hit_strict"] <= row["hit_loose"]
    for entry in result["tasks"]:
        for method in config.methods:
            cell = entry[method]
            assert cell["inputs"] == 3 and cell["failed"] == 1
            hits = sum(r["hit_loose"] for r in rows if r["task"] == entry["task"] and r["method"] == method)
            assert cell["hits_loose"] == hits and cell["loose"] == pytest.approx(100 * hits / 3, abs=0.01)
    assert [c["task"] for c in result["correlations"]] == [101, 107]
    assert all(c["molecules"] == 30 and -1 <= c["spearman"] <= 1 for c in result["correlations"])
    json.dumps(result)  # results.json is plain JSON


def test_cli_names_a_missing_data_dir(tmp_path, capsys):
    from momu.cli import main

    assert main(["evaluate", "editing", "--data_dir", str(tmp_path / "nowhere"), "--output_dir",
                 str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_dir" in err[0] and "tasks.tsv" in err[0]
