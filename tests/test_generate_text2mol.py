"""Benchmark B (`momu generate predict`): ChEBI-20 test rows read as MolT5 writes them, MolT5's outputs matched by
description, retrieval never answering with an evaluated molecule, the GA row through the batch job, and the
text-molecule cosine of `momu evaluate generation --model`."""

from __future__ import annotations

import pytest
from rdkit import Chem

from momu.generate.metrics import text_molecule_cosine
from momu.generate.predictions import read_descriptions, read_predictions
from momu.generate.text2mol import (Text2MolConfig, predict_molt5, predict_retrieval, read_test_rows, run_predict,
                                    write_predictions)

from conftest import SAMPLE

TEST_SLICE = SAMPLE / "chebi20" / "test_slice.tsv"
POOL = SAMPLE / "chebi20" / "train_pool_slice.tsv"


def _flat(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=False)


def test_test_rows_are_read_with_single_backslashes():
    rows = read_test_rows(TEST_SLICE, 5)
    assert len(rows) == 5 and rows[0]["cid"] == "5354212"
    assert "\\\\" in TEST_SLICE.read_text() and not any("\\\\" in r["smiles"] for r in read_test_rows(TEST_SLICE, None))
    assert rows[0]["smiles"].endswith("[C@]\\4([C@H]3CC/C4=C/C(=O)OC)C")


def test_molt5_rows_matched_by_description_and_checked(tmp_path):
    rows = read_test_rows(TEST_SLICE, 3)
    released = tmp_path / "molt5.txt"
    write_predictions(released, rows[::-1], ["CCO", "CCN", "CCC"])  # another order, as MolT5's files are
    assert predict_molt5(rows, str(released)) == ["CCC", "CCN", "CCO"]
    rows[1] = {**rows[1], "smiles": "C"}
    with pytest.raises(ValueError, match="another ground truth for test row 2"):
        predict_molt5(rows, str(released))
    with pytest.raises(ValueError, match="no row for the description of test row 4"):
        predict_molt5(read_test_rows(TEST_SLICE, 4), str(released))


def test_retrieval_never_answers_with_an_evaluated_molecule(small_model, tmp_path):
    rows = read_test_rows(TEST_SLICE, None)
    # The pool holds the test molecules themselves (a stereo-free copy) plus the train slice: all must be removed.
    pool = tmp_path / "pool.tsv"
    pool.write_text("CID\tSMILES\n" + "".join(f"{i}\t{_flat(r['smiles'])}\n" for i, r in enumerate(rows))
                    + "".join(f"x{i}\t{line.split(chr(9))[1]}\n"
                              for i, line in enumerate(POOL.read_text().splitlines()[1:])))
    config = Text2MolConfig(pool_path=str(pool), exclude=[str(TEST_SLICE)])
    outputs = predict_retrieval(rows, config, model=small_model)
    assert len(outputs) == len(rows)
    assert not {_flat(o) for o in outputs} & {_flat(r["smiles"]) for r in rows}


def test_predictions_file_round_trips_and_the_cosine_counts_readable_outputs(small_model, tmp_path):
    rows = read_test_rows(TEST_SLICE, 4)
    path = write_predictions(tmp_path / "p.tsv", rows, ["CCO", "", "not a smiles", rows[3]["smiles"]])
    references, predictions = read_predictions(path)
    assert references == [r["smiles"] for r in rows] and predictions[1] == ""
    descriptions = read_descriptions(path)
    assert descriptions == [r["description"] for r in rows]
    scores = text_molecule_cosine(small_model, descriptions, references, predictions)
    assert scores["momu_cosine_n"] == 2 and scores["momu_cosine_ground_truth_n"] == 4
    assert -1 <= scores["momu_cosine"] <= 1 and -1 <= scores["momu_cosine_ground_truth"] <= 1
    with pytest.raises(ValueError, match="descriptions"):
        text_molecule_cosine(small_model, descriptions[:2], references, predictions)


def test_random_row_and_cli_errors(tmp_path, capsys):
    from momu.cli import main

    config = Text2MolConfig(method="random", test_path=str(TEST_SLICE), limit=6,
                            random_path=str(SAMPLE / "zinc250k" / "zinc250k_slice.csv"),
                            output=str(tmp_path / "random.tsv"))
    summary = run_predict(config)
    assert summary["rows"] == 6 and summary["empty_outputs"] == 0
    assert len(read_predictions(tmp_path / "random.tsv")[1]) == 6
    assert main(["generate", "predict", "--method", "random", "--test_path", str(tmp_path / "none.txt"),
                 "--output", str(tmp_path / "x.tsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test_path" in err[0]


@pytest.mark.ray
def test_ga_row_answers_every_description(ray_local, small_model, tmp_path):
    model_dir = small_model.save_pretrained(tmp_path / "model")
    config = Text2MolConfig(method="ga", model=str(model_dir), test_path=str(TEST_SLICE), limit=2,
                            pool_path=str(POOL), exclude=[str(TEST_SLICE)], budget_seconds=4, budget_evaluations=30,
                            workers=2, output=str(tmp_path / "ga.tsv"))
    summary = run_predict(config, progress=False)
    assert summary["rows"] == 2 and summary["ga"]["answered"] + summary["ga"]["failed"] == 2
    references, predictions = read_predictions(tmp_path / "ga.tsv")
    assert summary["empty_outputs"] == summary["ga"]["failed"]
    assert all(Chem.MolFromSmiles(p) is not None for p in predictions if p)


@pytest.mark.ray
def test_moflow_row_answers_every_description(ray_local, small_model, tmp_path):
    import torch

    from momu.generate.moflow.config import MoFlowConfig
    from momu.generate.moflow.data import encode_dense
    from momu.generate.moflow.model import MoFlow, save_moflow

    atoms, bonds, _ = encode_dense(["CCO", "O=C(O)c1ccccc1Br", "CSc1ncc(Cl)s1", "CC(=O)Nc1ccccc1F"])
    torch.manual_seed(0)
    flow = MoFlow(MoFlowConfig(squeeze_fold=2, bond_flows=2, bond_hidden=[8, 8], atom_flows=3, atom_gnn_hidden=[8],
                               atom_linear_hidden=[8, 8]))
    flow.train()
    flow(atoms, bonds)  # ActNorm's data-dependent initialisation
    flow_dir = save_moflow(flow.eval(), tmp_path / "moflow")
    model_dir = small_model.save_pretrained(tmp_path / "model")
    common = dict(method="moflow", model=str(model_dir), test_path=str(TEST_SLICE), limit=2, workers=2,
                  output=str(tmp_path / "moflow.tsv"))
    with pytest.raises(ValueError, match="moflow_model"):
        run_predict(Text2MolConfig(**common), progress=False)
    summary = run_predict(Text2MolConfig(**common, moflow_model=str(flow_dir), moflow_seeds=3, moflow_steps=2),
                          progress=False)
    assert summary["rows"] == 2 and summary["moflow"]["answered"] == 2 and summary["empty_outputs"] == 0
    _, predictions = read_predictions(tmp_path / "moflow.tsv")
    assert len(predictions) == 2 and all(Chem.MolFromSmiles(p) is not None for p in predictions)
