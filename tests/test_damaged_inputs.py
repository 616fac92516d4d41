"""Damaged input files never kill a batch job, and PubChem's own files read as downloaded.

The damaged directory holds one file per kind of damage, made here: a truncated .sdf.gz, a gzip with a bad CRC,
a Parquet file without its footer, a TSV with an undecodable row, a UTF-16 CSV (undecodable header), an empty
file, and unreadable entries. Tests run as root, where chmod 000 does not stop reading, so "unreadable" is a
dangling symlink (an annexed / DVC file never fetched) and a FIFO named like a library (opening it would block
the job forever); a chmod-000 file is added too when the tests run as another user. README.txt, .DS_Store and a
subdirectory are not libraries: skipped and listed. Every batch job (`momu featurize`, `momu predict property`,
`momu embed`) gets the same rule from the reader layer: good rows before the damage are used, the damage is one
rejected row naming the file, the last good record and the reason, and files = ok + failed.
"""

import csv
import gzip
import io
import os
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rdkit import Chem

from momu.data.readers import iter_molecule_library, library_layout, read_molecule_library

# Real PubChem compounds (CID, SMILES as PubChem writes them).
PUBCHEM = [("1", "CC(=O)OC(CC(=O)[O-])C[N+](C)(C)C"), ("176", "CC(=O)O"), ("241", "C1=CC=CC=C1"),
           ("702", "CCO"), ("2244", "CC(=O)OC1=CC=CC=C1C(=O)O"), ("2519", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"),
           ("3672", "CC(C)CC1=CC=C(C=C1)C(C)C(=O)O")]
SDF_SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "OCC(O)CO", "CC(C)O", "c1ccncc1", "CCCl"] * 6  # 48 records
MAX_ATOMS = 30


def canonical(smiles: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def sdf_text(entries, title=lambda i: f"mol{i}") -> str:
    """An SDF of (cid, smiles) with the CID in PUBCHEM_COMPOUND_CID and another title line (ids must come from
    the property)."""
    out = io.StringIO()
    writer = Chem.SDWriter(out)
    for i, (cid, smiles) in enumerate(entries):
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("_Name", title(i))
        mol.SetProp("PUBCHEM_COMPOUND_CID", cid)
        writer.write(mol)
    writer.close()
    return out.getvalue()


def records_before_cut(data: bytes) -> int:
    """Complete SDF records a truncated gzip holds, decompressed independently of the readers (zlib)."""
    text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    return sum(1 for line in text.split(b"\n") if line.startswith(b"$$$$"))


def write_damaged_dir(root: Path) -> dict:
    """The damaged directory; returns what a reader must find in it."""
    root.mkdir(parents=True, exist_ok=True)
    healthy = [f"{s},h{i}" for i, s in enumerate(["CCO", "c1ccccc1O", "CC(=O)N", "C1CCCCC1", "CCOC(=O)C", "CCS"])]
    (root / "healthy.csv").write_text("smiles,cid\n" + "\n".join(healthy) + "\n")

    full = gzip.compress(sdf_text([(str(1000 + i), s) for i, s in enumerate(SDF_SMILES)]).encode(), mtime=0)
    cut = full[: len(full) * 6 // 10]  # an interrupted download
    (root / "truncated.sdf.gz").write_bytes(cut)
    sdf_good = records_before_cut(cut)
    assert 0 < sdf_good < len(SDF_SMILES)

    smi = "".join(f"{s} c{i}\n" for i, s in enumerate(["CCO", "CCN", "CCC", "CC=O"]))
    crc = bytearray(gzip.compress(smi.encode(), mtime=0))
    crc[-8] ^= 0xFF  # the CRC32 of the gzip trailer
    (root / "bad_crc.smi.gz").write_bytes(bytes(crc))

    buffer = io.BytesIO()
    pq.write_table(pa.table({"smiles": ["CCO", "CCN"], "id": ["p0", "p1"]}), buffer)
    (root / "no_footer.parquet").write_bytes(buffer.getvalue()[:-12])  # footer length + magic gone

    (root / "latin1.tsv").write_bytes(b"smiles\tname\nCCO\tethanol\nCCN\tm\xe9thylamine\nCCC\tpropane\n")
    (root / "excel_utf16.csv").write_bytes("smiles,id\nCCO,a\nCCN,b\n".encode("utf-16"))
    (root / "empty.smi").write_bytes(b"")
    (root / "annexed.sdf.gz").symlink_to(root / ".git" / "annex" / "objects" / "never-fetched")
    os.mkfifo(root / "pipe.smi")
    failed = {"truncated.sdf.gz": "truncated_file", "bad_crc.smi.gz": "corrupt_file",
              "no_footer.parquet": "corrupt_file", "excel_utf16.csv": "bad_header", "empty.smi": "empty_file",
              "annexed.sdf.gz": "unreadable_file", "pipe.smi": "unreadable_file"}
    if os.geteuid() != 0:  # chmod 000 stops only non-root readers
        (root / "locked.smi").write_text("CCO x\n")
        (root / "locked.smi").chmod(0)
        failed["locked.smi"] = "unreadable_file"

    (root / "README.txt").write_text("Molecules downloaded from PubChem on 2024-05-01.\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "notes").mkdir()
    good_smiles = (["CCO", "c1ccccc1O", "CC(=O)N", "C1CCCCC1", "CCOC(=O)C", "CCS"] + SDF_SMILES[:sdf_good]
                   + ["CCO", "CCN", "CCC", "CC=O"] + ["CCO", "CCC"])
    return {"failed": failed, "ok": ["healthy.csv", "latin1.tsv"], "sdf_good": sdf_good,
            "good_smiles": good_smiles, "ignored": [".DS_Store", "README.txt", "notes"],
            "rows_read": len(good_smiles) + 1 + len(failed),  # + the undecodable TSV row + one row per damage
            "rejected_by_reason": {"bad_encoding": 1, **_count(failed.values())}}


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    return root, write_damaged_dir(root)


# -- reader layer (no Ray) ------------------------------------------------------------------------------------

def test_reader_keeps_rows_before_the_damage_and_reports_it(damaged):
    root, expected = damaged
    table, report = read_molecule_library(root)
    meta = report.metadata
    failed = {Path(f["file"]).name: f for f in meta["files_failed"]}
    assert {name: f["reason"] for name, f in failed.items()} == expected["failed"]
    assert meta["files"] == len(expected["failed"]) + len(expected["ok"])  # files = ok + failed
    assert sorted(Path(f).name for f in meta["ignored_files"]) == expected["ignored"]
    assert sorted(table.column("smiles").to_pylist()) == sorted(expected["good_smiles"])
    assert report.rows_read == report.rows_ok + report.rows_malformed == expected["rows_read"]
    assert dict(report.malformed) == expected["rejected_by_reason"]
    # Where each damage was found: the last good line / record, with its id.
    n = expected["sdf_good"]
    assert (failed["truncated.sdf.gz"]["last_good"], failed["truncated.sdf.gz"]["last_good_id"]) == \
        (f"record {n}", str(1000 + n - 1))  # ids from PUBCHEM_COMPOUND_CID, not the title line
    assert "EOFError" in failed["truncated.sdf.gz"]["error"]
    assert (failed["bad_crc.smi.gz"]["last_good"], failed["bad_crc.smi.gz"]["last_good_id"]) == ("line 4", "c3")
    assert "CRC" in failed["bad_crc.smi.gz"]["error"]
    assert failed["no_footer.parquet"]["last_good"] is None and "Parquet" in failed["no_footer.parquet"]["error"]
    assert "not a regular file (a FIFO)" in failed["pipe.smi"]["error"]


def test_featurize_library_finishes_with_files_ok_and_failed(damaged, tmp_path):
    from momu.chem.library import featurize_library

    root, expected = damaged
    summary = featurize_library(str(root), str(tmp_path / "out.parquet"), max_atoms=MAX_ATOMS, progress=False)
    assert summary["rows_read"] == summary["featurized"] + summary["rejected"] == expected["rows_read"]
    assert summary["featurized"] == len(expected["good_smiles"])
    assert summary["files"] == summary["files_ok"] + len(summary["files_failed"])
    assert summary["files_ok"] == len(expected["ok"])
    rejects = pq.read_table(summary["rejects"]).to_pylist()
    damage = {r["detail"].split(":")[0]: r for r in rejects if r["reason"] in expected["failed"].values()}
    truncated = f"truncated_file after record {expected['sdf_good']} (id {1000 + expected['sdf_good'] - 1})"
    assert damage.keys() >= {truncated, "corrupt_file after line 4 (id c3)", "empty_file", "unreadable_file",
                             "bad_header"}
    assert all(r["stage"] == "read" for r in damage.values())
    got = pq.read_table(summary["output"]).column("smiles").to_pylist()
    assert sorted(got) == sorted(canonical(s) for s in expected["good_smiles"])


def test_predict_property_finishes_with_files_ok_and_failed(damaged, tmp_path):
    from momu.chem.featurize import featurize_smiles
    from momu.config import GINConfig
    from momu.property.config import PropertyModelSection
    from momu.property.model import build_property_model, load_property_model, save_property_model
    from momu.property.train import predict_file, predict_graphs

    root, expected = damaged
    model, _ = build_property_model(PropertyModelSection(graph=GINConfig(num_layers=2, emb_dim=16)), 1)
    model_dir = save_property_model(model, tmp_path / "model", ["p_np"], "classification")
    summary = predict_file(str(model_dir), str(root), str(tmp_path / "pred.csv"), max_atoms=MAX_ATOMS,
                           progress=False)
    assert summary["rows_read"] == summary["predicted"] + summary["rejected"] == expected["rows_read"]
    assert (summary["files_ok"], len(summary["files_failed"])) == (len(expected["ok"]), len(expected["failed"]))
    rows = read_csv(summary["output"])
    assert sorted(r["smiles"] for r in rows) == sorted(expected["good_smiles"])
    rejects = read_csv(summary["rejects"])
    assert len(rejects) == summary["rejected"]  # every refused row, not a sample
    assert sum(r["reason"] == "truncated_file" for r in rejects) == 1
    truncated_ids = [r["id"] for r in rows if r["id"].startswith("10")]
    direct = predict_graphs(load_property_model(model_dir), [featurize_smiles(SDF_SMILES[0])])
    first = next(r for r in rows if r["id"] == "1000")
    assert len(truncated_ids) == expected["sdf_good"] and float(first["p_np"]) == pytest.approx(float(direct[0, 0]),
                                                                                                   rel=1e-5)


# -- PubChem formats and header-less tables --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["CID-SMILES", "CID-SMILES.gz", "CID-SMILES-2024-05.gz", "pubchem.tsv.gz"])
def test_pubchem_cid_smiles_as_downloaded(tmp_path, name):
    path = tmp_path / name
    text = "".join(f"{cid}\t{smiles}\n" for cid, smiles in PUBCHEM) + "9999\n"  # last: no SMILES field
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    chunks = list(iter_molecule_library(path, chunk_rows=3))
    assert len(chunks) >= 3 and all(t.num_rows <= 3 for t, _ in chunks)  # streamed, never loaded whole
    table = pa.concat_tables([t for t, _ in chunks])
    assert table.column("id").to_pylist() == [cid for cid, _ in PUBCHEM]  # the first line is data, not a header
    assert table.column("smiles").to_pylist() == [s for _, s in PUBCHEM]
    malformed = sum((r.malformed for _, r in chunks), start=type(chunks[0][1].malformed)())
    assert dict(malformed) == {"wrong_field_count": 1}
    assert library_layout(path) == {"header": False, "smiles": 1, "id": 0}


def test_pubchem_compound_sdf_ids_from_the_cid_property(tmp_path):
    path = tmp_path / "Compound_000000001_000500000.sdf.gz"
    path.write_bytes(gzip.compress(sdf_text(PUBCHEM, title=lambda i: "").encode()))
    table, report = read_molecule_library(path)
    assert report.rows_ok == len(PUBCHEM) and not report.metadata["files_failed"]
    assert table.column("id").to_pylist() == [cid for cid, _ in PUBCHEM]
    assert table.column("smiles").to_pylist() == [canonical(s) for _, s in PUBCHEM]


def test_headerless_tables_are_sniffed_and_header_can_be_forced(tmp_path):
    smiles_first = tmp_path / "library.csv"
    smiles_first.write_text("".join(f"{s},{cid},0.5\n" for cid, s in PUBCHEM[:4]))
    table, _ = read_molecule_library(smiles_first)
    assert table.column("smiles").to_pylist() == [s for _, s in PUBCHEM[:4]]
    assert table.column("id").to_pylist() == [cid for cid, _ in PUBCHEM[:4]]  # the first other column
    # 0-based column numbers choose the columns of a header-less file
    table, _ = read_molecule_library(smiles_first, smiles_column="0", id_column="2", header="no")
    assert table.column("id").to_pylist() == ["0.5"] * 4
    # a header row of known names is still a header; a header with unknown names needs header="yes"
    with_header = tmp_path / "with_header.tsv"
    with_header.write_text("cid\tsmiles\n" + "".join(f"{cid}\t{s}\n" for cid, s in PUBCHEM[:3]))
    assert read_molecule_library(with_header).table.column("id").to_pylist() == ["1", "176", "241"]
    odd = tmp_path / "odd.tsv"
    odd.write_text("CN\tkey\n" + "".join(f"{s}\t{cid}\n" for cid, s in PUBCHEM[:3]))  # "CN" parses as SMILES
    assert read_molecule_library(odd).table.num_rows == 4
    table, _ = read_molecule_library(odd, smiles_column="CN", id_column="key", header="yes")
    assert table.column("id").to_pylist() == ["1", "176", "241"]
    with pytest.raises(ValueError, match="must be a 0-based column number"):
        read_molecule_library(smiles_first, smiles_column="smiles", header="no")
    with pytest.raises(ValueError, match="out of range"):
        read_molecule_library(smiles_first, smiles_column="5", header="no")


# -- user errors: one line, exit code 2, before Ray ----------------------------------------------------------

def test_embed_user_errors_fail_fast_before_ray(tmp_path, capsys, monkeypatch):
    import momu.ray_session
    from momu.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a user error")

    monkeypatch.setattr(momu.ray_session, "init_ray_if_needed", no_ray)
    no_smiles = tmp_path / "lib.csv"
    no_smiles.write_text("name,weight\nethanol,46.07\n")
    cases = [([str(tmp_path / "missing.smi")], "missing.smi"), ([str(no_smiles)], "no SMILES column found")]
    for inputs, expected in cases:
        code = main(["embed", "--inputs", *inputs, "--model", str(tmp_path / "no-model"), "--output_dir",
                     str(tmp_path / "out"), "--no-mlflow", "--progress", "false"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


# -- the embedding job over the damaged directory (one Ray run) ------------------------------------------------

@pytest.mark.slow
def test_embed_processes_every_healthy_file_and_records_the_damage(ray_local, damaged, small_model, tmp_path):
    from momu.embed.config import EmbedConfig
    from momu.embed.job import format_summary, run_embedding

    root, expected = damaged
    model_dir = tmp_path / "model"
    small_model.save_pretrained(model_dir)
    config = EmbedConfig(inputs=[str(root)], model=str(model_dir), output_dir=str(tmp_path / "out"),
                         max_atoms=MAX_ATOMS, part_rows=8, batch_size=8, shard_rows=8, featurize_batch_rows=8,
                         progress=False, cpus_per_actor=0.5, featurize_cpus=0.5, read_cpus=0.25)
    result = run_embedding(config, log_to_mlflow=False)
    s = result.summary
    assert result.complete and s["accounting_ok"]
    assert (s["rows_read"], s["embedded"], s["rejected"]) == (
        expected["rows_read"], len(expected["good_smiles"]), expected["rows_read"] - len(expected["good_smiles"]))
    assert s["rejected_by_reason"] == expected["rejected_by_reason"]
    assert s["files"] == s["files_ok"] + len(s["files_failed"]) == len(expected["ok"]) + len(expected["failed"])
    assert {Path(f["file"]).name: f["reason"] for f in s["files_failed"]} == expected["failed"]
    assert sorted(Path(f).name for f in s["ignored_files"]) == expected["ignored"]
    shards = pa.concat_tables([pq.read_table(result.output_dir / f) for f in s["shards"]])
    assert sorted(shards.column("smiles").to_pylist()) == sorted(canonical(x) for x in expected["good_smiles"])
    rejects = pq.read_table(result.output_dir / "rejects.parquet").to_pylist()
    truncated = [r for r in rejects if r["reason"] == "truncated_file"]
    assert len(truncated) == 1 and truncated[0]["source"].endswith("truncated.sdf.gz")
    assert truncated[0]["detail"].startswith(f"truncated_file after record {expected['sdf_good']} (id ")
    line = next(x for x in format_summary(s).splitlines() if x.startswith("files:"))
    assert line.startswith(f"files: {s['files']} = {len(expected['ok'])} ok + {len(expected['failed'])} failed (")
    assert "truncated.sdf.gz: truncated_file after record" in line and "3 ignored" in line
