"""`momu generate batch` (momu.generate.batch): prompt files in every format, failures with reasons, and the
accounting answered + failed = total, on the session's local Ray with tiny budgets."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE

from momu.generate.batch import (
    OUTPUT_SCHEMA,
    REASONS,
    Prompt,
    check_prompt,
    read_prompts,
    read_summary,
    run_batch,
    run_prompt,
)
from momu.generate.config import GenerateConfig

POOL = str(SAMPLE / "chebi20" / "train_pool_slice.tsv")
TEST_SLICE = str(SAMPLE / "chebi20" / "test_slice.tsv")
ACID = "The molecule is an aromatic carboxylic acid."
TINY = ["--budget_evaluations", "30", "--budget_seconds", "5", "--population_size", "8", "--offspring_size", "8",
        "--pool.path", POOL, "--pool.exclude", f"[{TEST_SLICE}]", "--pool.sample", "12", "--n", "3",
        "--edit_seeds", "4", "--edit_lambdas", "[0.0, 1.0]"]


def tiny(model: str, **over) -> GenerateConfig:
    base = dict(model=model, n=3, budget_evaluations=30, budget_seconds=5, population_size=8, offspring_size=8,
                pool={"path": POOL, "exclude": [TEST_SLICE], "sample": 12}, edit_seeds=4, edit_lambdas=[0.0, 1.0])
    base.update(over)
    return GenerateConfig(**base)


@pytest.fixture(scope="module")
def model_dir(small_model, tmp_path_factory):
    return str(small_model.save_pretrained(tmp_path_factory.mktemp("batch") / "model"))


# -- fast: reading and checking prompts -----------------------------------------------------------------------------

def test_reads_every_prompt_format(tmp_path):
    (tmp_path / "p.txt").write_text(f"{ACID}\n\n  a steroid  \n")
    assert read_prompts(tmp_path / "p.txt") == [Prompt("1", ACID, None, 1), Prompt("2", "", None, 2),
                                                Prompt("3", "  a steroid  ", None, 3)]
    (tmp_path / "p.csv").write_text('id,text,edit\na,"an acid, aromatic",\n,a ketone,CCO\n')
    expected = [Prompt("a", "an acid, aromatic", None, 1), Prompt("2", "a ketone", "CCO", 2)]
    assert read_prompts(tmp_path / "p.csv") == expected
    (tmp_path / "p.tsv").write_text('ID\tText\tEdit\na\tan acid, aromatic\t\n\ta ketone\tCCO\n')
    assert read_prompts(tmp_path / "p.tsv") == expected
    pq.write_table(pa.table({"id": ["a", None], "text": ["an acid, aromatic", "a ketone"], "edit": [None, "CCO"]}),
                   tmp_path / "p.parquet")
    assert read_prompts(tmp_path / "p.parquet") == expected
    (tmp_path / "p.jsonl").write_text('{"id": "a", "text": "an acid, aromatic"}\n\n{"text": "a ketone", "edit": "CCO"}\n')
    assert read_prompts(tmp_path / "p.jsonl") == expected
    (tmp_path / "n.jsonl").write_text('{"id": 7, "text": null}\n')
    assert read_prompts(tmp_path / "n.jsonl") == [Prompt("7", "", None, 1)]


@pytest.mark.parametrize("name, content, message", [
    ("x.csv", "smiles,description\nCCO,an alcohol\n", "no 'text' column"),
    ("x.csv", "id,text\na,one\na,two\n", "id 'a' appears twice (rows 1 and 2)"),
    ("x.csv", "id,text\n", "no prompts"),
    ("x.jsonl", '{"text": "ok"}\n[1, 2]\n', "line 2: expected a JSON object"),
    ("x.jsonl", '{"text": "ok"\n', "line 1: not valid JSON"),
    ("x.smi", "CCO\n", "unsupported prompts format '.smi'"),
    ("x.parquet", "not parquet", "not a readable Parquet file"),
])
def test_bad_prompt_files_raise_one_clear_error(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_prompts(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        read_prompts(tmp_path / "missing.txt")


def test_check_prompt_names_the_reason():
    config = GenerateConfig()
    assert check_prompt(Prompt("1", ACID, None, 1), config) is None
    assert check_prompt(Prompt("1", ACID, "c1ccccc1O", 1), config) is None
    assert check_prompt(Prompt("1", "", None, 1), config) == ("empty_prompt", "the text is empty")
    assert check_prompt(Prompt("1", " \t", None, 1), config)[0] == "empty_prompt"
    reason, detail = check_prompt(Prompt("1", ACID, "C1CC(", 1), config)
    assert reason == "invalid_edit_smiles" and "not a valid SMILES" in detail
    reason, detail = check_prompt(Prompt("1", ACID, "CC[Hg]CC", 1), config)
    assert reason == "invalid_edit_smiles" and "Hg" in detail and "allowed elements" in detail
    assert set(REASONS) == {"empty_prompt", "invalid_edit_smiles", "timeout", "exception"}


def test_a_generator_error_is_a_failed_prompt_not_a_crash(model_dir):
    # No pool molecule passes the priors (only Si allowed): generate raises; the task answers `exception`.
    answer = run_prompt(ACID, None, tiny(model_dir, allowed_elements=["Si"]).model_dump(mode="json"))
    assert answer["status"] == "failed" and answer["reason"] == "exception"
    assert answer["detail"].startswith("ValueError: pool.path: none of the")


# -- Ray: the job end to end -----------------------------------------------------------------------------------------

def test_batch_accounts_for_every_prompt(ray_local, model_dir, small_model, tmp_path, capsys):
    from momu.cli import main
    from momu.generate.ga import edit, generate

    prompts = tmp_path / "prompts.csv"
    prompts.write_text("id,text,edit\n"
                       f"acid,{ACID},\n"
                       "ester,The molecule is a carboxylic ester.,\n"
                       "edited,The molecule is a long-chain fatty acid.,c1ccccc1O\n"
                       "blank,   ,\n"
                       "badedit,The molecule is an alcohol.,C1CC(\n")
    out = tmp_path / "out" / "generated.parquet"
    argv = ["generate", "batch", "--prompts", str(prompts), "--output", str(out), "--model", model_dir, *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "prompts = answered + failed: 5 = 3 + 2 (ok)" in printed
    assert "failed by reason: empty_prompt 1, invalid_edit_smiles 1" in printed

    table = pq.read_table(out)
    assert table.schema.equals(OUTPUT_SCHEMA)
    rows = table.to_pylist()
    by_id = {}
    for row in rows:
        by_id.setdefault(row["id"], []).append(row)
    assert list(by_id) == ["acid", "ester", "edited", "blank", "badedit"]  # input order
    for pid in ("acid", "ester"):
        answered = by_id[pid]
        assert [r["rank"] for r in answered] == [1, 2, 3] and {r["status"] for r in answered} == {"ok"}
        scores = [r["score"] for r in answered]
        assert scores == sorted(scores, reverse=True) and all(r["evaluations"] <= 30 for r in answered)
        assert all(r["smiles"] and r["cosine"] is not None and r["reason"] is None for r in answered)
    assert [r["lambda"] for r in by_id["edited"]] == [0.0, 1.0] and by_id["edited"][0]["edit"] == "c1ccccc1O"
    assert all(r["tanimoto"] is not None for r in by_id["edited"])
    (blank,), (badedit,) = by_id["blank"], by_id["badedit"]
    assert (blank["status"], blank["reason"], blank["smiles"]) == ("failed", "empty_prompt", None)
    assert badedit["reason"] == "invalid_edit_smiles" and "C1CC(" in badedit["detail"]

    # A prompt's molecules are the ones `momu generate --text` finds with the same config (evaluation-bound run).
    config = tiny(model_dir)
    direct = generate(small_model, ACID, config)
    assert [r["smiles"] for r in by_id["acid"]] == [r["smiles"] for r in direct["results"]]
    assert [r["score"] for r in by_id["acid"]] == pytest.approx([r["total"] for r in direct["results"]], abs=1e-5)
    edited = edit(small_model, "The molecule is a long-chain fatty acid.", "c1ccccc1O", config)
    assert [r["smiles"] for r in by_id["edited"]] == [r["smiles"] for r in edited["results"]]

    summary = read_summary(out)
    assert (summary["total"], summary["answered"], summary["failed"]) == (5, 3, 2) and summary["accounting_ok"]
    assert summary["failed_by_reason"] == {"empty_prompt": 1, "invalid_edit_smiles": 1}
    assert summary["molecules"] == 3 + 3 + 2 and summary["rows"] == 8 + 2

    # A user error is one line and exit 2, before any work: the output exists, a missing file, no text column.
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "exists; choose a new file or pass --overwrite" in err and len(err.splitlines()) == 1
    (tmp_path / "bad.csv").write_text("smiles\nCCO\n")
    for prompts_file, message in [(tmp_path / "nothing.txt", "prompts file not found"),
                                  (tmp_path / "bad.csv", "no 'text' column")]:
        assert main(["generate", "batch", "--prompts", str(prompts_file), "--output", str(tmp_path / "x.parquet"),
                     "--model", model_dir, *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and err.startswith("momu generate: error:")
    assert main(["generate", "batch", "--prompts", str(prompts), "--output", str(tmp_path / "y.parquet"),
                 "--model", str(tmp_path / "no-model")]) == 2
    assert "--model" in capsys.readouterr().err


def test_a_prompt_past_its_timeout_fails_with_reason_timeout(ray_local, model_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text(ACID + "\n")
    # A 30 s search (time-bound) with a 0.5 s timeout: the task is cancelled (its worker killed).
    config = tiny(model_dir, budget_seconds=30, budget_evaluations=100_000)
    summary = run_batch(prompts, tmp_path / "t.parquet", config, timeout=0.5, workers=1, progress=False)
    assert (summary["total"], summary["answered"], summary["failed"]) == (1, 0, 1)
    (row,) = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert row["status"] == "failed" and row["reason"] == "timeout" and "0.5 s" in row["detail"]
    assert json.loads(json.dumps(summary))["failed_by_reason"] == {"timeout": 1}
