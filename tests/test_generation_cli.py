"""`momu evaluate generation` (momu.generate.cli) and its predictions reader (momu.generate.predictions)."""

import argparse
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import shared_path
from momu.generate.cli import cmd_evaluate_generation, register
from momu.generate.predictions import read_predictions

REFS = ["CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "OCC(O)CO"]
OUTS = ["CC(=O)Oc1ccccc1C(=O)O", "C1CC(", "OCC(O)C"]


def _parser():
    parser = argparse.ArgumentParser(prog="momu")
    sub = parser.add_subparsers(dest="command", required=True)
    groups = {name: sub.add_parser(name).add_subparsers(dest="target", required=True)
              for name in ("evaluate", "finetune", "predict", "index")}
    register(sub, groups)
    return parser


def test_reads_molt5_format_as_molt5_does(tmp_path):
    # MolT5 reads with QUOTE_NONE: a literal '"' in a description must not swallow the next fields
    path = tmp_path / "preds.txt"
    path.write_text("description\tground truth\toutput\n"
                    + "".join(f'a "quoted {i} description\t{r}\t{o}\n' for i, (r, o) in enumerate(zip(REFS, OUTS))))
    assert read_predictions(path) == (REFS, OUTS)


def test_reads_real_molt5_file():
    refs, outs = read_predictions(shared_path("molt5_predictions", "molt5-small-caption2smiles.txt"))
    assert len(refs) == len(outs) == 3300 and refs[0].startswith("C1=CC2=C(C(=C1)[O-])NC")


def test_reads_csv_and_parquet_with_alternative_column_names(tmp_path):
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("id,reference,smiles\n" + "".join(f'{i},"{r}",{o}\n' for i, (r, o) in enumerate(zip(REFS, OUTS))))
    assert read_predictions(csv_path) == (REFS, OUTS)

    pq_path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"ground_truth": REFS, "output": [OUTS[0], None, OUTS[2]]}), pq_path)
    assert read_predictions(pq_path) == (REFS, [OUTS[0], "", OUTS[2]])  # a null output is an invalid one


def test_bad_files_raise_one_clear_error(tmp_path):
    missing = tmp_path / "p.tsv"
    missing.write_text("description\tground truth\tprediction\nx\tCCO\tCCO\n")
    with pytest.raises(ValueError, match=r"p\.tsv: no prediction column \(expected one of 'output', 'smiles'"):
        read_predictions(missing)
    no_ref = tmp_path / "p.parquet"
    pq.write_table(pa.table({"smiles": ["CCO"]}), no_ref)
    with pytest.raises(ValueError, match=r"p\.parquet: no reference column"):
        read_predictions(no_ref)
    with pytest.raises(ValueError, match="unsupported predictions format '.json'"):
        (tmp_path / "p.json").write_text("{}")
        read_predictions(tmp_path / "p.json")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_predictions(tmp_path / "nope.txt")
    empty_ref = tmp_path / "e.tsv"
    empty_ref.write_text("ground truth\toutput\nCCO\tCCO\n\tCC\n")
    with pytest.raises(ValueError, match="row 2: empty reference in column 'ground truth'"):
        read_predictions(empty_ref)
    not_parquet = tmp_path / "bad.parquet"
    not_parquet.write_text("not parquet")
    with pytest.raises(ValueError, match="bad.parquet: not a readable Parquet file"):
        read_predictions(not_parquet)


def test_command_prints_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "preds.tsv"
    path.write_text("ground_truth\toutput\n" + "".join(f"{r}\t{o}\n" for r, o in zip(REFS, OUTS)))
    out = tmp_path / "out" / "metrics.json"
    args = _parser().parse_args(["evaluate", "generation", "--predictions", str(path), "--no-fcd",
                                 "--output", str(out)])
    assert args.func is cmd_evaluate_generation
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "exact match (InChI)" in printed and "FCD" not in printed and f"metrics: {out}" in printed
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 3 and metrics["validity"] == pytest.approx(2 / 3)
    assert metrics["exact_match"] == pytest.approx(1 / 3) and "fcd" not in metrics

    args = _parser().parse_args(["evaluate", "generation", "--predictions", str(path), "--no-fcd", "--json"])
    args.func(args)
    assert json.loads(capsys.readouterr().out)["levenshtein"] == metrics["levenshtein"]


def test_command_reports_fcd_with_its_policy(tmp_path, capsys):
    mols = REFS + ["c1ccccc1O", "CCN(CC)CC", "NCCc1ccc(O)c(O)c1", "CC(=O)Nc1ccc(O)cc1"]
    path = tmp_path / "preds.csv"
    path.write_text("reference,output\n" + "".join(f"{m},{m}\n" for m in mols))
    args = _parser().parse_args(["evaluate", "generation", "--predictions", str(path), "--json", "--device", "cpu"])
    args.func(args)
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["fcd_policy"] == "common-pad" and metrics["fcd_pad_len"] == 350
    assert abs(metrics["fcd"]) < 1e-2


def test_command_error_is_a_value_error_naming_the_column(tmp_path):
    path = tmp_path / "preds.csv"
    path.write_text("reference,prediction\nCCO,CCO\n")
    args = _parser().parse_args(["evaluate", "generation", "--predictions", str(path), "--no-fcd"])
    with pytest.raises(ValueError, match="preds.csv: no prediction column"):
        args.func(args)
