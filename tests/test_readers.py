"""Readers: exact row / malformed counts on real data slices and on files with injected bad rows."""

from __future__ import annotations

import csv
import gzip
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Data

from momu.chem.columns import GRAPH_COLUMNS, columns_to_pyg_batch
from momu.data.readers import (
    convert_momu_corpus,
    iter_molecule_library,
    iter_momu_corpus,
    read_chebi20,
    read_molecule_library,
    read_moleculenet,
    read_momu_corpus,
    read_pairs,
    read_records_parquet,
)
from momu.data.records import (
    MAX_EXAMPLES,
    RECORD_COLUMNS,
    RECORD_SCHEMA,
    ReadReport,
    record_schema,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SHARED = REPO.parent / "shared" / "data"
CHEBI_SLICE = SAMPLE / "chebi20" / "validation_slice.tsv"
MOMU_SAMPLE = SAMPLE / "momu_corpus"
MOMU_SAMPLE_IDS = ["4", "34", "75", "484", "504", "545"]


def shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data file {path} is not present on this machine")
    return path


def chebi_rows(n: int) -> list[list[str]]:
    """The first n (CID, SMILES, description) rows of the bundled ChEBI-20 slice."""
    lines = CHEBI_SLICE.read_text().splitlines()[1 : n + 1]
    return [line.split("\t") for line in lines]


def assert_consistent(report: ReadReport) -> None:
    assert report.rows_read == report.rows_ok + report.rows_malformed
    assert len(report.examples) == min(report.rows_malformed, MAX_EXAMPLES)


# ------------------------------------------------------------------------------------------------- ChEBI-20


def test_chebi20_slice_reads_all_1200_pairs():
    table, report = read_chebi20(CHEBI_SLICE)
    assert table.schema.equals(RECORD_SCHEMA)
    assert (report.rows_read, report.rows_ok, report.rows_malformed) == (1200, 1200, 0)
    assert table.num_rows == 1200
    first = chebi_rows(1)[0]
    row = table.slice(0, 1).to_pylist()[0]
    assert row == {"id": first[0], "smiles": first[1], "texts": [first[2]], "labels": None,
                   "source": str(CHEBI_SLICE)}
    assert all(len(t) == 1 and t[0] for t in table.column("texts").to_pylist())


def test_chebi20_full_validation_split():
    table, report = read_chebi20(shared_file("chebi20/validation.txt"))
    assert (report.rows_read, report.rows_ok, report.rows_malformed) == (3301, 3301, 0)
    assert table.num_rows == 3301
    assert len(set(table.column("id").to_pylist())) == 3301


def test_chebi20_injected_bad_rows_are_counted_by_reason(tmp_path):
    good = ["\t".join(r) for r in chebi_rows(5)]
    cid, smiles, text = chebi_rows(6)[5]
    lines = [
        "CID\tSMILES\tdescription",
        good[0],
        f"{cid}\t{smiles}",                       # 3: wrong_field_count (2 fields)
        good[1],
        f"{cid}\t{smiles}\t{text}\textra",        # 5: wrong_field_count (4 fields)
        f"{cid}\t \t{text}",                      # 6: empty_smiles
        "",                                       # 7: blank, skipped
        f"{cid}\t{smiles}\t   ",                  # 8: empty_description
        "CID\tSMILES\tdescription",               # 9: duplicate_header
        good[2],
        f"\t{smiles}\t{text}",                    # 11: empty_id
        good[3],
        good[4],
    ]
    path = tmp_path / "bad.tsv"
    data = ("\n".join(lines) + "\n").encode()
    data += f"{cid}\t{smiles}\tbad byte \xff here\n".encode("latin-1")  # 14: bad_encoding
    path.write_bytes(data)

    table, report = read_chebi20(path)
    assert report.rows_ok == 5 and table.num_rows == 5
    assert dict(report.malformed) == {"wrong_field_count": 2, "empty_smiles": 1, "empty_description": 1,
                                      "duplicate_header": 1, "empty_id": 1, "bad_encoding": 1}
    assert report.rows_read == 12
    assert_consistent(report)
    assert [(e.row, e.reason) for e in report.examples] == [
        (3, "wrong_field_count"), (5, "wrong_field_count"), (6, "empty_smiles"), (8, "empty_description"),
        (9, "duplicate_header"), (11, "empty_id"), (14, "bad_encoding")]
    assert table.column("id").to_pylist() == [r[0] for r in chebi_rows(5)]
    assert "wrong_field_count 2" in report.summary()


def test_chebi20_rejects_missing_header_and_missing_file(tmp_path):
    path = tmp_path / "noheader.tsv"
    path.write_text("\t".join(chebi_rows(1)[0]) + "\n")
    with pytest.raises(ValueError, match="header"):
        read_chebi20(path)
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_chebi20(tmp_path / "nope.tsv")


# ------------------------------------------------------------------------------------------------- MoMu corpus


def load_pt(path: Path) -> Data:
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    with torch.serialization.safe_globals([Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]):
        return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def momu_sample():
    return read_momu_corpus(MOMU_SAMPLE)


def test_momu_corpus_graph_columns_match_pt_files(momu_sample):
    table, report = momu_sample
    assert table.schema.equals(record_schema(with_graph=True))
    assert (report.rows_read, report.rows_ok, report.rows_malformed) == (6, 6, 0)
    assert table.column("id").to_pylist() == MOMU_SAMPLE_IDS
    assert table.column("smiles").null_count == 6
    for row in table.to_pylist():
        data = load_pt(MOMU_SAMPLE / "graph" / f"graph_{row['id']}.pt")
        x, edge_index, edge_attr = data.x.numpy(), data.edge_index.numpy(), data.edge_attr.numpy()
        assert row["num_nodes"] == x.shape[0]
        assert row["atom_type"] == x[:, 0].tolist()
        assert row["chirality"] == np.where(x[:, 1] > 2, 0, x[:, 1]).tolist()
        assert row["edge_src"] == edge_index[0].tolist() and row["edge_dst"] == edge_index[1].tolist()
        assert row["bond_type"] == edge_attr[:, 0].tolist()
        assert row["bond_stereo"] == edge_attr[:, 1].tolist()
        assert row["bond_dir"] == [0] * edge_index.shape[1]
        lines = (MOMU_SAMPLE / "text" / f"text_{row['id']}.txt").read_text().split("\n")
        assert row["texts"] == [line.strip() for line in lines if line.strip()]
        assert len(row["texts"]) >= 1


def test_momu_corpus_parquet_round_trip(momu_sample, tmp_path):
    table, _ = momu_sample
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    assert read_records_parquet(path).table.equals(table)

    out = tmp_path / "out" / "momu.parquet"
    report = convert_momu_corpus(MOMU_SAMPLE, out, chunk_rows=4)
    assert (report.rows_read, report.rows_ok) == (6, 6)
    assert sorted(p.name for p in out.parent.iterdir()) == ["momu.parquet"]  # no temp file left behind
    reread = read_records_parquet(out)
    assert reread.table.equals(table)
    assert reread.report.rows_ok == 6
    assert read_pairs(out).table.equals(table)


def test_momu_corpus_streams_in_chunks(momu_sample):
    chunks = list(iter_momu_corpus(MOMU_SAMPLE, chunk_rows=4))
    assert [t.num_rows for t, _ in chunks] == [4, 2]
    assert pa.concat_tables([t for t, _ in chunks]).equals(momu_sample.table)


def test_momu_graphs_collate_to_pyg_batch(momu_sample):
    table, _ = momu_sample
    batch = columns_to_pyg_batch(table)
    num_nodes = table.column("num_nodes").to_pylist()
    assert batch.num_graphs == 6
    assert batch.x.shape == (sum(num_nodes), 2)
    first = load_pt(MOMU_SAMPLE / "graph" / "graph_4.pt")
    assert torch.equal(batch.x[: num_nodes[0], 0], first.x[:, 0])
    assert torch.equal(batch.edge_attr[: first.edge_index.shape[1]], first.edge_attr[:, :2])
    assert int(batch.edge_index.max()) < sum(num_nodes)


class _Marker:
    """Unpickling this would create a directory: proves the .pt loader never runs pickle code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_momu_corpus_reports_bad_molecules(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(MOMU_SAMPLE, corpus)
    text, graph = corpus / "text", corpus / "graph"
    (text / "text_900.txt").write_text("an orphan paragraph\n")              # missing_graph
    shutil.copy(graph / "graph_4.pt", graph / "graph_901.pt")               # missing_text
    (text / "text_902.txt").write_text("\n   \n")                           # empty_text
    shutil.copy(graph / "graph_4.pt", graph / "graph_902.pt")
    for i in (903, 904, 905, 906, 907):
        (text / f"text_{i}.txt").write_text("some text\n")
    (graph / "graph_903.pt").write_bytes(b"not a torch file")               # unreadable_graph
    marker = tmp_path / "pickle_code_ran"
    torch.save({"x": _Marker(str(marker))}, graph / "graph_904.pt")         # unreadable_graph (blocked)
    x = torch.tensor([[5, 0, 0, 0, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0, 0, 0]])
    edge_index = torch.tensor([[0, 1], [1, 0]])
    misc_bond = torch.tensor([[4, 0, 0], [4, 0, 0]])
    torch.save(Data(x=x, edge_index=edge_index, edge_attr=misc_bond), graph / "graph_905.pt")  # unsupported_bond
    torch.save(Data(x=x[:, :2], edge_index=edge_index, edge_attr=misc_bond[:, :2]),
               graph / "graph_906.pt")                                      # graph_shape_mismatch (pretrain-gnns)
    torch.save({"x": x}, graph / "graph_907.pt")                            # not_a_graph
    (text / "notes.md").write_text("not a molecule")

    table, report = read_momu_corpus(corpus)
    assert not marker.exists()
    assert table.column("id").to_pylist() == MOMU_SAMPLE_IDS
    assert dict(report.malformed) == {"missing_graph": 1, "missing_text": 1, "empty_text": 1,
                                      "unreadable_graph": 2, "unsupported_bond": 1, "graph_shape_mismatch": 1,
                                      "not_a_graph": 1}
    assert report.rows_read == 6 + 8
    assert_consistent(report)
    assert report.metadata["ignored_files"] == 1
    assert {e.row: e.reason for e in report.examples}[900] == "missing_graph"
    assert "missing_graph 1" in report.summary()


def test_momu_graph_maps_ogb_chirality_and_keeps_stereo():
    from momu.data.readers import momu_graph_from_pyg

    x = torch.zeros(5, 9, dtype=torch.long)
    x[:, 0] = torch.tensor([5, 6, 7, 118, 16])  # 118 = OGB misc element, kept
    x[:, 1] = torch.tensor([0, 1, 2, 3, 4])     # CHI_OTHER and misc have no MoMu index
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    edge_attr = torch.tensor([[1, 2, 1], [1, 2, 1], [3, 0, 1], [3, 0, 1]])
    graph = momu_graph_from_pyg(Data(x=x, edge_index=edge_index, edge_attr=edge_attr))
    assert graph.atom_type.tolist() == [5, 6, 7, 118, 16]
    assert graph.chirality.tolist() == [0, 1, 2, 0, 0]
    assert graph.bond_type.tolist() == [1, 1, 3, 3] and graph.bond_stereo.tolist() == [2, 2, 0, 0]
    assert graph.bond_dir.tolist() == [0, 0, 0, 0]
    out_of_range = momu_graph_from_pyg(Data(x=x, edge_index=edge_index + 4, edge_attr=edge_attr))
    assert out_of_range.reason == "graph_value_out_of_range"


def test_records_parquet_names_missing_columns(momu_sample, tmp_path):
    path = tmp_path / "no_texts.parquet"
    pq.write_table(momu_sample.table.drop_columns(["texts"]), path)
    with pytest.raises(ValueError, match="'texts'"):
        read_records_parquet(path)
    pq.write_table(momu_sample.table.drop_columns(["bond_dir"]), path)
    with pytest.raises(ValueError, match="bond_dir"):
        read_records_parquet(path)
    # Without graph columns it is a plain record table.
    pq.write_table(momu_sample.table.select(list(RECORD_COLUMNS)), path)
    assert read_records_parquet(path).table.schema.equals(RECORD_SCHEMA)


# ------------------------------------------------------------------------------------------------- MoleculeNet


def test_moleculenet_tox21_slice_labels_and_blanks():
    path = SAMPLE / "moleculenet" / "tox21_slice.csv"
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    blanks = sum(1 for r in body for v in r[1:] if v == "")

    table, report = read_moleculenet(path)
    assert report.task_names == header[1:] and len(report.task_names) == 12
    assert (report.rows_read, report.rows_ok, report.rows_malformed) == (200, 200, 0)
    labels = np.array(table.column("labels").to_pylist(), dtype=np.float32)
    assert labels.shape == (200, 12)
    assert int(np.isnan(labels).sum()) == blanks > 0
    assert table.column("id").to_pylist() == [str(i) for i in range(200)]
    assert table.column("smiles").to_pylist() == [r[0] for r in body]
    assert labels[0].tolist()[:3] == [0.0, 0.0, 1.0]


def test_moleculenet_bbbp_slice():
    table, report = read_moleculenet(SAMPLE / "moleculenet" / "bbbp_slice.csv")
    assert report.task_names == ["p_np"]
    assert report.rows_ok == table.num_rows == 200 and report.rows_malformed == 0


def test_moleculenet_bace_uses_mol_column():
    table, report = read_moleculenet(shared_file("moleculenet/bace.csv"))
    assert report.task_names == ["Class"]
    assert report.rows_ok == 1513 and report.rows_malformed == 0
    assert table.column("smiles")[0].as_py().startswith("O1CC[C@@H](NC(=O)")


def test_moleculenet_malformed_rows_and_column_errors(tmp_path):
    path = tmp_path / "m.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("SMILES,a,b\nCCO,1,0\nCCN,,1\nCCC,yes,0\n,1,1\nCCCl,1\nc1ccccc1,0.5,\n")
    table, report = read_moleculenet(path)
    assert dict(report.malformed) == {"non_numeric_label": 1, "missing_smiles": 1, "wrong_field_count": 1}
    assert table.column("id").to_pylist() == ["0", "1", "5"]
    labels = table.column("labels").to_pylist()
    assert labels[0] == [1.0, 0.0] and math.isnan(labels[1][0]) and math.isnan(labels[2][1])
    assert_consistent(report)

    table, report = read_moleculenet(path, task_columns=["b"])
    assert report.task_names == ["b"] and report.rows_ok == 4  # "yes" is in column a, which is not read
    with pytest.raises(ValueError, match="no task column 'c'"):
        read_moleculenet(path, task_columns=["c"])
    other = tmp_path / "x.csv"
    other.write_text("structure,y\nCCO,1\n")
    with pytest.raises(ValueError, match=r"\['structure', 'y'\]"):
        read_moleculenet(other)
    assert read_moleculenet(other, smiles_column="structure").report.task_names == ["y"]


# ------------------------------------------------------------------------------------------------- libraries


def test_library_smi(tmp_path):
    path = tmp_path / "lib.smi"
    path.write_text("SMILES Name\nCCO ethanol\n\nc1ccccc1\tbenzene ring\nCCN\n   \nCC(=O)O acetic acid\n")
    table, report = read_molecule_library(path)
    assert (report.rows_read, report.rows_ok, report.rows_malformed) == (4, 4, 0)
    assert table.column("smiles").to_pylist() == ["CCO", "c1ccccc1", "CCN", "CC(=O)O"]
    assert table.column("id").to_pylist() == ["ethanol", "benzene ring", "5", "acetic acid"]
    assert table.column("texts").to_pylist() == [[]] * 4
    assert table.column("labels").null_count == 4


def test_library_csv_with_id_column(tmp_path):
    rows = chebi_rows(10)
    path = tmp_path / "lib.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PubChem_CID", "Canonical_SMILES", "note"])
        for cid, smiles, _ in rows:
            writer.writerow([cid, smiles, "a, quoted note"])
        writer.writerow(["123", "", "no smiles"])
        writer.writerow(["", "CCO", "no id"])
    table, report = read_molecule_library(path)
    assert table.column("id").to_pylist() == [r[0] for r in rows]
    assert table.column("smiles").to_pylist() == [r[1] for r in rows]
    assert dict(report.malformed) == {"missing_smiles": 1, "missing_id": 1}
    assert_consistent(report)
    # an explicit column overrides auto-detection
    table, _ = read_molecule_library(path, id_column="note")
    assert set(table.column("id").to_pylist()) == {"a, quoted note", "no id"}
    with pytest.raises(ValueError, match="no SMILES column 'smi'"):
        read_molecule_library(path, smiles_column="smi")


def test_library_tsv_gz_without_id_column(tmp_path):
    rows = chebi_rows(8)
    path = tmp_path / "lib.tsv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("smiles\tdescription\n")
        handle.writelines(f"{smiles}\t{text}\n" for _, smiles, text in rows)
    table, report = read_molecule_library(path)
    assert report.rows_ok == 8 and report.rows_malformed == 0
    assert table.column("id").to_pylist() == [str(i) for i in range(8)]
    assert table.column("smiles").to_pylist() == [r[1] for r in rows]


def test_library_parquet(tmp_path):
    rows = chebi_rows(10)
    path = tmp_path / "lib.parquet"
    smiles = [r[1] for r in rows] + [None, "  "]
    pq.write_table(pa.table({"cid": pa.array([int(r[0]) for r in rows] + [1, 2], pa.int64()),
                             "SMILES": smiles}), path, row_group_size=4)
    table, report = read_molecule_library(path)
    assert table.column("id").to_pylist() == [r[0] for r in rows]
    assert table.column("smiles").to_pylist() == [r[1] for r in rows]
    assert dict(report.malformed) == {"missing_smiles": 2}
    assert [e.row for e in report.examples] == [10, 11]
    assert_consistent(report)


def write_sdf(path: Path, rows: list[list[str]]) -> list[str]:
    """SDF of the ChEBI molecules (title = CID, PUBCHEM_COMPOUND_CID property), then one corrupted record,
    then one more good record. Returns the expected canonical SMILES of the good records."""
    mols = []
    for cid, smiles, _ in rows:
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("_Name", cid)
        mol.SetProp("PUBCHEM_COMPOUND_CID", f"{cid}")
        mols.append(mol)
    corrupted = "broken\n  RDKit          2D\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\n$$$$\n"
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt") as handle:
        writer = Chem.SDWriter(handle)
        for mol in mols[:-1]:
            writer.write(mol)
        writer.flush()
        handle.write(corrupted)
        writer.write(mols[-1])
        writer.close()
    return [Chem.MolToSmiles(m) for m in mols]


@pytest.mark.parametrize("name", ["lib.sdf", "lib.sdf.gz"])
def test_library_sdf_counts_the_corrupted_record(tmp_path, name):
    rows = chebi_rows(12)
    path = tmp_path / name
    expected_smiles = write_sdf(path, rows)
    table, report = read_molecule_library(path)
    assert report.rows_malformed == 1 and dict(report.malformed) == {"bad_sdf_record": 1}
    assert report.examples[0].row == 11  # 0-based record index of the corrupted record
    assert report.rows_ok == 12 and report.rows_read == 13
    assert table.column("id").to_pylist() == [r[0] for r in rows]
    assert table.column("smiles").to_pylist() == expected_smiles
    table, _ = read_molecule_library(path, id_column="PUBCHEM_COMPOUND_CID")
    assert table.column("id").to_pylist() == [r[0] for r in rows]


def make_library_files(folder: Path) -> dict[str, Path]:
    """One file per library format with the same 30 ChEBI molecules (plus a bad row in some)."""
    rows = chebi_rows(30)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"smi": folder / "a.smi", "csv": folder / "b.csv", "parquet": folder / "c.parquet",
             "sdf": folder / "d.sdf"}
    files["smi"].write_text("".join(f"{s} {c}\n" for c, s, _ in rows))
    files["csv"].write_text("cid,smiles\n" + "".join(f"{c},{s}\n" + ("9,\n" if i == 13 else "")
                                                      for i, (c, s, _) in enumerate(rows)))
    pq.write_table(pa.table({"id": [r[0] for r in rows], "smiles": [r[1] for r in rows]}), files["parquet"])
    write_sdf(files["sdf"], rows)
    return files


@pytest.mark.parametrize("fmt", ["smi", "csv", "parquet", "sdf"])
def test_library_streaming_matches_whole_read(tmp_path, fmt):
    path = make_library_files(tmp_path)[fmt]
    whole, whole_report = read_molecule_library(path)
    chunks = list(iter_molecule_library(path, chunk_rows=7))
    assert all(t.num_rows <= 7 for t, _ in chunks) and len(chunks) >= 5
    assert pa.concat_tables([t for t, _ in chunks]).equals(whole)
    merged = chunks[0][1]
    for _, chunk_report in chunks[1:]:
        merged = merged.merge(chunk_report)
    assert (merged.rows_read, merged.rows_ok, dict(merged.malformed)) == (
        whole_report.rows_read, whole_report.rows_ok, dict(whole_report.malformed))
    assert whole.num_rows == 30


def test_library_directory_and_glob(tmp_path):
    files = make_library_files(tmp_path / "lib")
    (tmp_path / "lib" / "README.txt").write_text("not a library")
    table, report = read_molecule_library(tmp_path / "lib")
    assert table.num_rows == 4 * 30
    assert table.column("source").unique().to_pylist() == [str(files[k]) for k in ("smi", "csv", "parquet", "sdf")]
    assert dict(report.malformed) == {"missing_smiles": 1, "bad_sdf_record": 1}
    assert report.path == str(tmp_path / "lib")
    assert_consistent(report)
    assert report.examples[0].raw.startswith(f"[{files['csv']}]")

    table, report = read_molecule_library(str(tmp_path / "lib" / "*.s*"))  # a.smi, d.sdf
    assert table.num_rows == 60 and dict(report.malformed) == {"bad_sdf_record": 1}


def test_library_unknown_suffix_and_missing_file(tmp_path):
    path = tmp_path / "lib.xyz"
    path.write_text("CCO\n")
    with pytest.raises(ValueError, match=r"\.smi.*\.sdf"):
        read_molecule_library(path)
    with pytest.raises(FileNotFoundError, match="missing.smi"):
        read_molecule_library(tmp_path / "missing.smi")
    with pytest.raises(FileNotFoundError):
        read_molecule_library(str(tmp_path / "none*.smi"))


# ------------------------------------------------------------------------------------------------- read_pairs, report


def test_read_pairs_dispatch(tmp_path):
    assert read_pairs(CHEBI_SLICE).report.rows_ok == 1200
    assert read_pairs(MOMU_SAMPLE).table.column("id").to_pylist() == MOMU_SAMPLE_IDS
    with pytest.raises(ValueError, match="unknown pair format"):
        read_pairs(CHEBI_SLICE, format="csv")
    with pytest.raises(ValueError, match="suffix"):
        read_pairs(SAMPLE / "moleculenet" / "bbbp_slice.csv")


def test_read_report_caps_examples_and_merges():
    report = ReadReport("a")
    for i in range(25):
        report.add_malformed(i, "bad", "x" * 500)
    report.add_ok(3)
    assert report.rows_malformed == 25 and report.rows_read == 28
    assert len(report.examples) == MAX_EXAMPLES and all(len(e.raw) == 200 for e in report.examples)
    merged = ReadReport("b", rows_read=2, rows_ok=2, task_names=["t"]).merge(report, path="both")
    assert (merged.path, merged.rows_read, merged.rows_ok, merged.malformed["bad"]) == ("both", 30, 5, 25)
    assert merged.task_names == ["t"]
    assert merged.examples[0].raw.startswith("[a] ")
    assert "25 malformed (bad 25)" in merged.summary()


def test_graph_schema_helper():
    assert record_schema(with_graph=False).names == list(RECORD_COLUMNS)
    assert record_schema(with_graph=True).names == list(RECORD_COLUMNS) + list(GRAPH_COLUMNS)


def test_pair_tables_with_pcdes_and_pubchem324k_headers(tmp_path):
    """PCdes ships `idx cid smiles description`, PubChem324k `cid smiles description`: the same reader takes them,
    by column name, with the CID as id; a table without the three columns is refused with the header shown."""
    from momu.data.readers import read_pairs

    pcdes = tmp_path / "pcdes.tsv"
    pcdes.write_text("idx\tcid\tsmiles\tdescription\n12001\t702\tCCO\tit is an alcohol.\n12002\t887\tCO\t\n")
    result = read_pairs(pcdes)
    assert result.table.column("id").to_pylist() == ["702"]
    assert result.table.column("smiles").to_pylist() == ["CCO"]
    assert result.report.rows_malformed == 1
    reordered = tmp_path / "reordered.tsv"
    reordered.write_text("description\tSMILES\tCID\nan alcohol\tCCO\t702\n")
    assert read_pairs(reordered).table.column("texts").to_pylist() == [["an alcohol"]]
    bad = tmp_path / "bad.tsv"
    bad.write_text("cid\tsmiles\n702\tCCO\n")
    with pytest.raises(ValueError, match="CID, SMILES and description"):
        read_pairs(bad)
