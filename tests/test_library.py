import gzip

import pyarrow.parquet as pq
import pytest
from rdkit import Chem

from momu.chem.columns import columns_to_graphs
from momu.chem.featurize import featurize_smiles
from momu.chem.library import featurize_library, rejects_path_for
from momu.cli import main

from conftest import chebi_slice_smiles


def write_library(path, rows):
    path.write_text("smiles,cid\n" + "".join(f"{s},{i}\n" for s, i in rows))
    return path


def test_every_row_is_accounted_for(tmp_path):
    good = chebi_slice_smiles()[:30]
    rows = [(s, f"c{i}") for i, s in enumerate(good)] + [("C1CC", "bad1"), ("*CC", "bad2"), ("", "bad3")]
    summary = featurize_library(str(write_library(tmp_path / "lib.csv", rows)), str(tmp_path / "out.parquet"),
                                progress=False, chunk_rows=7)
    assert summary["rows_read"] == 33 and summary["featurized"] == 30 and summary["rejected"] == 3
    assert summary["rejected_by_reason"] == {"unparseable": 1, "unsupported_element": 1, "missing_smiles": 1}
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("id").to_pylist() == [f"c{i}" for i in range(30)]
    assert columns_to_graphs(out) == [featurize_smiles(s) for s in good]
    assert out.column("smiles")[0].as_py() == Chem.MolToSmiles(Chem.MolFromSmiles(good[0]))  # canonical
    rejects = pq.read_table(rejects_path_for(tmp_path / "out.parquet")).to_pylist()
    assert sorted(r["reason"] for r in rejects) == ["missing_smiles", "unparseable", "unsupported_element"]
    by_reason = {r["reason"]: r for r in rejects}
    assert by_reason["unparseable"]["id"] == "bad1" and by_reason["unparseable"]["input"] == "C1CC"
    assert by_reason["missing_smiles"]["stage"] == "read"
    assert not list(tmp_path.glob(".*.tmp"))  # temporary files renamed away


def test_many_malformed_rows_all_reach_the_rejects_file(tmp_path):
    rows = [("CCO", str(i)) for i in range(5)] + [("", str(100 + i)) for i in range(50)]
    summary = featurize_library(str(write_library(tmp_path / "lib.csv", rows)), str(tmp_path / "o.parquet"),
                                progress=False)
    assert summary["rejected"] == 50
    assert pq.read_table(rejects_path_for(tmp_path / "o.parquet")).num_rows == 50


def test_sdf_gz_and_cli(tmp_path, capsys):
    sdf = tmp_path / "lib.sdf.gz"
    with gzip.open(sdf, "wt") as handle:
        writer = Chem.SDWriter(handle)
        for i, s in enumerate(chebi_slice_smiles()[:5]):
            mol = Chem.MolFromSmiles(s)
            mol.SetProp("_Name", f"CHEBI{i}")
            writer.write(mol)
        writer.close()
    assert main(["featurize", str(sdf), str(tmp_path / "sdf.parquet"), "--quiet"]) == 0
    assert '"featurized": 5' in capsys.readouterr().out
    assert pq.read_table(tmp_path / "sdf.parquet").column("id").to_pylist() == [f"CHEBI{i}" for i in range(5)]


def test_missing_input_is_a_clear_cli_error(tmp_path, capsys):
    assert main(["featurize", str(tmp_path / "nope.smi"), str(tmp_path / "o.parquet"), "--quiet"]) == 2
    assert "nope.smi" in capsys.readouterr().err
