"""The embedding job: every row accounted for on a library with deliberately broken rows, resume after an
interruption reproduces the uninterrupted output, pipeline embeddings equal direct model calls (graph and text
towers), and the CLI (embed -> index build -> index search) end to end.

Duplicate ids: both rows are embedded (an input row, not an id, is the unit of accounting) and the job reports
them as a warning count (`duplicate_ids`); the index keeps both rows too."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rdkit import Chem

from momu.embed.config import EmbedConfig
from momu.embed.output import EmbedOutput
from momu.embed.sources import iter_parts

GOOD = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "O=C=O", "CC(C)O", "c1ccncc1", "CCCl", "C=CC=C", "OCC(O)CO",
        "CC(=O)Oc1ccccc1C(=O)O", "N[C@@H](C)C(=O)O"]
MAX_ATOMS = 30


def write_library(root: Path) -> dict:
    """A library in three formats with broken rows; returns the expected accounting."""
    root.mkdir(parents=True, exist_ok=True)
    csv_rows = [f"{s},c{i}" for i, s in enumerate(GOOD)]
    csv_rows += ["CCCC,c3",  # duplicate id: embedded, counted as a duplicate
                 "C1CC,bad1",  # unclosed ring: unparseable
                 "*CC,bad2",  # dummy atom: unsupported_element
                 ",bad3",  # empty SMILES: missing_smiles (reader)
                 "",  # empty line: not a row
                 "CCO,extra,field",  # wrong_field_count (reader)
                 "C" * 40 + ",big"]  # 40 atoms > max_atoms: too_many_atoms
    (root / "lib.csv").write_text("smiles,cid\n" + "\n".join(csv_rows) + "\n")
    (root / "lib.smi").write_text("CCO m1\n\n   \nc1ccncc1 m2\nC(C)(C)(C)(C)C m3\n")  # m3: pentavalent carbon
    mol1, mol2 = Chem.MolFromSmiles("CCOC"), Chem.MolFromSmiles("c1ccccc1O")
    mol1.SetProp("_Name", "s1")
    mol2.SetProp("_Name", "s3")
    empty = "s2\n  empty\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n"
    broken = "broken\n  x\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\nM  END\n$$$$\n"
    (root / "lib.sdf").write_text(Chem.MolToMolBlock(mol1) + "$$$$\n" + empty + broken
                                  + Chem.MolToMolBlock(mol2) + "$$$$\n")
    good_smiles = GOOD + ["CCCC", "CCO", "c1ccncc1", "CCOC", "c1ccccc1O"]
    return {"rows_read": 18 + 3 + 4, "embedded": len(good_smiles),
            "rejected_by_reason": {"unparseable": 2, "unsupported_element": 1, "missing_smiles": 2,
                                   "wrong_field_count": 1, "too_many_atoms": 1, "bad_sdf_record": 1},
            "good_smiles": good_smiles}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, small_model):
    path = tmp_path_factory.mktemp("model") / "tiny"
    small_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    return root, write_library(root)


def embed_config(inputs, model_dir, out, **overrides) -> EmbedConfig:
    fields = dict(inputs=[str(i) for i in inputs], model=str(model_dir), output_dir=str(out), max_atoms=MAX_ATOMS,
                  part_rows=4, batch_size=8, shard_rows=8, featurize_batch_rows=4, progress=False,
                  cpus_per_actor=0.5, featurize_cpus=0.5, read_cpus=0.25)
    return EmbedConfig(**{**fields, **overrides})


def read_shards(out: Path) -> pa.Table:
    done = json.loads((out / "DONE.json").read_text())
    table = pa.concat_tables([pq.read_table(out / s) for s in done["shards"]])
    return table.sort_by([("id", "ascending"), ("smiles", "ascending")])


# -- fast, no Ray ---------------------------------------------------------------------------------------------

def test_parts_cover_every_row_once(tmp_path):
    _, expected = tmp_path, write_library(tmp_path)
    total = 0
    for name in ("lib.csv", "lib.smi", "lib.sdf"):
        parts = list(iter_parts(tmp_path / name, "molecules", part_rows=4))
        assert [p.index for p in parts] == list(range(len(parts)))
        assert all(p.rows == p.table.num_rows and p.rows <= 4 for p in parts)
        assert all(p.table.column("_seq").to_pylist() == list(range(p.rows)) for p in parts)
        total += sum(p.rows for p in parts)
    assert total == expected["rows_read"]
    # Same cut every time: part k is always the same rows.
    again = list(iter_parts(tmp_path / "lib.csv", "molecules", part_rows=4))
    assert [p.table for p in again] == [p.table for p in iter_parts(tmp_path / "lib.csv", "molecules", 4)]


def test_text_parts_and_missing_text(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text('CID\tSMILES\tdescription\n1\tCCO\tThe molecule is "ethanol".\n2\tCC\t\n3\tC\tMethane.\n')
    (part,) = iter_parts(path, "texts", 10, id_column="CID", text_column="description")
    rows = part.table.select(["id", "input", "reject_reason"]).to_pylist()
    assert rows == [{"id": "1", "input": 'The molecule is "ethanol".', "reject_reason": ""},
                    {"id": "2", "input": "2\tCC\t", "reject_reason": "missing_text"},
                    {"id": "3", "input": "Methane.", "reject_reason": ""}]


def test_output_refuses_other_settings_and_foreign_dirs(tmp_path):
    out = EmbedOutput(tmp_path / "out")
    out.open({"mode": "molecules", "part_rows": 4}, {"k": {"path": "a", "size": 1, "mtime_ns": 1}})
    with pytest.raises(ValueError, match="part_rows: 4 -> 8"):
        out.open({"mode": "molecules", "part_rows": 8}, {"k": {"path": "a", "size": 1, "mtime_ns": 1}})
    with pytest.raises(ValueError, match="input files changed"):
        out.open({"mode": "molecules", "part_rows": 4}, {"k": {"path": "a", "size": 2, "mtime_ns": 1}})
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not an embedding output"):
        EmbedOutput(tmp_path / "foreign").open({}, {})


def test_stop_after_parts_records_exactly_that_many_when_one_batch_finishes_more(tmp_path):
    """On a small input one writer batch can finish every part; a staged run must still stop at N."""
    from momu.embed.job import _consume
    from momu.embed.stages import SUMMARY_SCHEMA

    units = [f"lib.csv-x/p{i:06d}" for i in range(5)]
    batch = pa.table({"unit": units, "part_rows": [4] * 5, "rows": [4] * 5, "embedded": [4] * 5,
                      "rejected": [0] * 5, "reasons": ["{}"] * 5, "shard": [u.replace("/", "-") for u in units],
                      "rejects": [""] * 5}, schema=SUMMARY_SCHEMA)
    out = EmbedOutput(tmp_path)
    counters = {"parts_done": 0, "rows": 0, "stopped": False, "first_at": None, "first_rows": 0, "last_at": None}
    _consume(iter([batch]), {}, out, 2, counters)
    assert counters["stopped"] and counters["parts_done"] == 2
    assert sorted(out.completed_parts()) == units[:2]


# -- Ray Data pipeline --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_run(ray_local, library, model_dir, tmp_path_factory):
    from momu.embed.job import run_embedding

    root, expected = library
    out = tmp_path_factory.mktemp("embed") / "full"
    result = run_embedding(embed_config([root], model_dir, out), log_to_mlflow=False)
    return result, expected


@pytest.mark.slow
def test_broken_rows_are_all_accounted_for(full_run):
    result, expected = full_run
    s = result.summary
    assert result.complete and s["accounting_ok"]
    assert (s["rows_read"], s["embedded"], s["rejected"]) == (expected["rows_read"], expected["embedded"],
                                                              sum(expected["rejected_by_reason"].values()))
    assert s["rejected_by_reason"] == expected["rejected_by_reason"]
    assert s["duplicate_ids"] == {"rows": 1, "ids": 1, "examples": ["c3"]}
    shards = read_shards(result.output_dir)
    assert shards.num_rows == expected["embedded"]
    assert sorted(shards.column("smiles").to_pylist()) == sorted(Chem.MolToSmiles(Chem.MolFromSmiles(s))
                                                                 for s in expected["good_smiles"])
    assert set(shards.column("run_id").to_pylist()) == {s["run_id"]}
    assert shards.schema.field("embedding").type == pa.list_(pa.float32(), 16)
    rejects = pq.read_table(result.output_dir / "rejects.parquet").to_pylist()
    assert len(rejects) == s["rejected"]
    by_id = {r["id"]: r for r in rejects if r["id"]}
    assert by_id["bad1"]["input"] == "C1CC" and by_id["bad1"]["reason"] == "unparseable"
    assert by_id["big"]["reason"] == "too_many_atoms" and by_id["m3"]["stage"] == "featurize"
    assert {r["reason"] for r in rejects if r["stage"] == "read"} == {"missing_smiles", "wrong_field_count",
                                                                     "bad_sdf_record"}
    assert all(r["source"].endswith(("lib.csv", "lib.smi", "lib.sdf")) for r in rejects)
    assert not list(result.output_dir.rglob(".*.tmp-*"))


@pytest.mark.slow
def test_pipeline_embeddings_equal_direct_model_calls(full_run, small_model):
    from momu.chem.featurize import featurize_smiles

    result, expected = full_run
    shards = read_shards(result.output_dir)
    smiles = shards.column("smiles").to_pylist()
    # The model embeds each molecule as written in the input (chirality tags follow the input's atom order, as
    # in MoMu's featurization); the shard stores the canonical SMILES next to it.
    as_written = {Chem.MolToSmiles(Chem.MolFromSmiles(s)): s for s in expected["good_smiles"]}
    got = np.asarray(shards.column("embedding").combine_chunks().flatten()).reshape(len(smiles), -1)
    want = small_model.eval().embed_graphs([featurize_smiles(as_written[s]) for s in smiles]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_resume_after_interruption_gives_the_uninterrupted_output(ray_local, library, model_dir, full_run, tmp_path):
    from momu.embed.job import run_embedding

    root, expected = library
    reference, _ = full_run
    out = tmp_path / "resumed"
    first = run_embedding(embed_config([root], model_dir, out, stop_after_parts=2), log_to_mlflow=False)
    assert not first.complete and not (out / "DONE.json").exists()
    done_before = len(EmbedOutput(out).completed_parts())
    assert done_before == 2  # exactly the parts asked for, however the stream batched them
    # What a killed run leaves behind: a torn last manifest line, a temporary file, a shard of an unfinished part.
    with open(out / "parts.jsonl", "a") as handle:
        handle.write('{"unit": "lib.csv-x/p000009", "rows": 4, "emb')
    (out / "shards" / ".lib.csv-x-p000009-s0000000.parquet.tmp-1234").write_bytes(b"PAR1 half")
    pq.write_table(pq.read_table(reference.output_dir / reference.summary["shards"][0]),
                   out / "shards" / "lib.csv-x-p000009-s0000000.parquet")
    second = run_embedding(embed_config([root], model_dir, out), log_to_mlflow=False)
    assert second.complete
    assert second.summary["this_run"]["parts_skipped"] == done_before
    assert second.summary["this_run"]["rows"] < expected["rows_read"]  # did not start over
    assert not (out / "shards" / "lib.csv-x-p000009-s0000000.parquet").exists()
    for key in ("rows_read", "embedded", "rejected", "rejected_by_reason", "duplicate_ids"):
        assert second.summary[key] == reference.summary[key], key
    a, b = read_shards(reference.output_dir), read_shards(out)
    assert a.drop_columns(["run_id"]).equals(b.drop_columns(["run_id"]))
    assert set(b.column("run_id").to_pylist()) == {first.summary["run_id"]}  # one run id across attempts
    rej = [pq.read_table(o / "rejects.parquet").sort_by([("reason", "ascending"), ("input", "ascending")])
           for o in (reference.output_dir, out)]
    assert rej[0].equals(rej[1])
    # Running a finished output again does nothing and reports the same totals.
    third = run_embedding(embed_config([root], model_dir, out), log_to_mlflow=False)
    assert third.summary["this_run"]["rows"] == 0 and third.summary["embedded"] == expected["embedded"]


@pytest.mark.slow
def test_texts_mode_matches_the_text_tower(ray_local, model_dir, small_model, tmp_path):
    from momu.embed.job import run_embedding

    lines = (Path(__file__).parents[1] / "data/sample/chebi20/validation_slice.tsv").read_text().splitlines()
    path = tmp_path / "descriptions.tsv"
    path.write_text("\n".join(lines[:21] + ["999\tCCO\t   "]) + "\n")  # 20 pairs + one without text
    result = run_embedding(embed_config([path], model_dir, tmp_path / "out", mode="texts", text_column="description",
                                        id_column="CID", part_rows=8), log_to_mlflow=False)
    s = result.summary
    assert (s["rows_read"], s["embedded"], s["rejected_by_reason"]) == (21, 20, {"missing_text": 1})
    shards = pa.concat_tables([pq.read_table(result.output_dir / f) for f in s["shards"]])
    texts = shards.column("text").to_pylist()
    assert sorted(shards.column("id").to_pylist()) == sorted(line.split("\t")[0] for line in lines[1:21])
    got = np.asarray(shards.column("embedding").combine_chunks().flatten()).reshape(len(texts), -1)
    want = small_model.eval().embed_texts(texts).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cli_embed_index_search(ray_local, library, model_dir, tmp_path, capsys, monkeypatch):
    from momu.cli import main
    from momu.index import RetrievalIndex

    root, expected = library
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out, ix = tmp_path / "emb", tmp_path / "ix"
    code = main(["embed", "--inputs", str(root / "lib.csv"), "--model", str(model_dir), "--output_dir", str(out),
                 "--max_atoms", str(MAX_ATOMS), "--progress", "false", "--cpus_per_actor", "0.5"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "read = embedded + rejected: 18 = 13 + 5 (ok)" in printed
    assert "warning: 1 ids occur more than once" in printed and "MLflow run:" in printed
    import mlflow

    run_id = printed.split("MLflow run: ")[1].split()[0]
    metrics = mlflow.get_run(run_id).data.metrics
    assert (metrics["rows_read"], metrics["rows_embedded"], metrics["rows_rejected"]) == (18, 13, 5)
    assert metrics["rejected.unparseable"] == 1

    assert main(["index", "build", "--shards", str(out), "--output", str(ix), "--kind", "exact", "--no-mlflow",
                 "--quiet"]) == 0
    assert "index: exact over 13 rows" in capsys.readouterr().out
    index = RetrievalIndex.load(ix)
    assert index.model_info["model_source"] == str(model_dir.resolve())
    assert main(["index", "search", "an aromatic carboxylic acid", "--index", str(ix), "--k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    # The CLI's answer is the exact nearest neighbours of the query's text embedding among the shard rows.
    from momu.models.loading import load_momu

    query = load_momu(model_dir).eval().embed_texts(["an aromatic carboxylic acid"]).numpy()[0]
    shards = pa.concat_tables([pq.read_table(out / f) for f in json.loads((out / "DONE.json").read_text())["shards"]])
    emb = np.array(shards.column("embedding").combine_chunks().flatten(), np.float32).reshape(shards.num_rows, -1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    best = np.argsort(-(emb @ query))[:3]
    assert [r["smiles"] for r in results] == [shards.column("smiles")[int(i)].as_py() for i in best]
    assert main(["index", "search", "acid", "--index", str(ix), "--k", "2"]) == 0
    assert "rank" in capsys.readouterr().out
    assert main(["index", "search", "CCO", "--smiles", "--index", str(ix), "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["smiles"] == "CCO"  # a molecule finds itself
    # Clear errors, exit 2: a bad config field, a missing input, a k out of range.
    assert main(["embed", "--inputs", str(tmp_path / "nope.smi"), "--model", str(model_dir), "--output_dir",
                 str(tmp_path / "o2"), "--no-mlflow"]) == 2
    assert "nope.smi" in capsys.readouterr().err
    assert main(["embed", "--batch_size", "0", "--no-mlflow"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["index", "search", "x", "--index", str(ix), "--k", "0"]) == 2


def test_too_few_cpus_for_the_stream_is_one_clear_error_not_a_hang():
    """2 model actors x 1 CPU on a 2-CPU local Ray leave no CPU for the readers: Ray Data would wait forever."""
    from momu.embed.config import EmbedConfig
    from momu.embed.job import check_cpus_suffice

    config = EmbedConfig(inputs=["x.smi"], model_actors=2, cpus_per_actor=1.0)
    with pytest.raises(ValueError, match=r"= 2.25 CPUs, but the Ray cluster has 2.*--cpus_per_actor 0.875 --featurize_cpus 0.875"):
        check_cpus_suffice(config, {"CPU": 2.0}, joined=False)
    check_cpus_suffice(config.model_copy(update={"cpus_per_actor": 0.875, "featurize_cpus": 0.875}), {"CPU": 2.0},
                       joined=False)  # the suggested fix fits
    unfused = config.model_copy(update={"model_actors": 1, "featurize_cpus": 0.5})  # featurize tasks need CPUs too
    with pytest.raises(ValueError, match=r"featurize_cpus 0.5 = 1.75"):
        check_cpus_suffice(unfused, {"CPU": 1.5}, joined=False)
    check_cpus_suffice(config, {"CPU": 2.0}, joined=True)  # a joined cluster may autoscale: a warning only
