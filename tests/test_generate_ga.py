"""momu.generate GA: fitness = cosine + priors, budgets, determinism, editing's lambda sweep, `momu generate`,
and a start pool free of ChEBI-20 test molecules."""

import json
import math

import pytest
from conftest import REPO, SAMPLE, shared_path
from rdkit import Chem
from rdkit.Chem import QED

from momu.generate.config import GenerateConfig
from momu.generate.fitness import Fitness, sa_score, text_embedding
from momu.generate.ga import edit, generate
from momu.generate.pool import canonical, load_pool, read_smiles_column

TEXT = "The molecule is an aromatic carboxylic acid."
POOL = str(SAMPLE / "chebi20" / "train_pool_slice.tsv")
TEST_SLICE = str(SAMPLE / "chebi20" / "test_slice.tsv")


def tiny(**over) -> GenerateConfig:
    base = dict(budget_evaluations=40, budget_seconds=30, population_size=10, offspring_size=10,
                pool={"path": POOL, "exclude": [TEST_SLICE], "sample": 15}, edit_seeds=5)
    base.update(over)
    return GenerateConfig(**base)


@pytest.fixture(scope="module")
def model_dir(small_model, tmp_path_factory):
    return small_model.save_pretrained(tmp_path_factory.mktemp("ga") / "model")


def test_fitness_is_cosine_plus_documented_priors(small_model):
    config = tiny()
    fitness = Fitness(small_model, text_embedding(small_model, TEXT), config)
    smiles = "OC(=O)c1ccccc1O"
    [scored] = fitness.score([smiles])
    mol = Chem.MolFromSmiles(smiles)
    from momu.chem.featurize import featurize_smiles

    cosine = float(small_model.embed_graphs([featurize_smiles(smiles)])[0] @ small_model.embed_texts([TEXT])[0])
    w = config.weights
    expected = w.cosine * cosine + w.qed * QED.qed(mol) - w.sa * (sa_score(mol) - 1) / 9  # 10 heavy atoms: in window
    assert scored.cosine == pytest.approx(cosine, abs=1e-5)
    assert scored.total == pytest.approx(expected, abs=1e-5)
    assert fitness.evaluations == 1
    fitness.score([smiles, smiles])  # cached: no new GIN evaluation
    assert fitness.evaluations == 1


def test_invalid_and_disallowed_score_minus_inf_and_size_is_penalised(small_model):
    emb = text_embedding(small_model, TEXT)
    fitness = Fitness(small_model, emb, tiny())
    bad = fitness.score(["not-a-smiles", "CC[Hg]CC", "*CC(=O)O"])
    assert [s.total for s in bad] == [-math.inf] * 3
    assert "disallowed element Hg" in bad[1].reason and "featurizable" in bad[2].reason
    assert fitness.evaluations == 0  # nothing reached the GIN
    one_atom = fitness.score(["C"])[0]
    unpenalised = Fitness(small_model, emb, tiny(weights={"size": 0.0})).score(["C"])[0]
    assert one_atom.heavy_atoms == 1
    assert unpenalised.total - one_atom.total == pytest.approx(0.1 * (5 - 1))  # 4 atoms short of min_heavy_atoms=5
    with pytest.raises(ValueError, match="text"):
        text_embedding(small_model, "  ")


def test_stops_at_the_evaluation_budget(small_model):
    result = generate(small_model, TEXT, tiny(budget_evaluations=40))
    assert result["stopped_by"] == "evaluations"
    assert result["evaluations"] == 40
    assert result["generations"] >= 1
    assert len(result["results"]) == 10
    totals = [r["total"] for r in result["results"]]
    assert totals == sorted(totals, reverse=True)


def test_stops_at_the_time_budget(small_model):
    result = generate(small_model, TEXT, tiny(budget_evaluations=100_000, budget_seconds=1.0))
    assert result["stopped_by"] == "seconds"
    assert result["evaluations"] < 100_000
    # Ends about at the deadline: before it when the next generation would not fit, after it by a cut generation.
    assert 0.5 <= result["seconds"] < 10.0


def test_the_time_budget_also_cuts_the_start_population(small_model):
    # Scoring 8 pool molecules takes longer than 10 ms: the first chunk is all the search gets.
    result = generate(small_model, TEXT, tiny(budget_evaluations=1000, budget_seconds=0.01,
                                              pool={"path": POOL, "exclude": [TEST_SLICE], "sample": 300}))
    assert result["pool_scored"] == 8 < result["pool_drawn"] and result["evaluations"] <= 8
    assert result["generations"] == 0 and result["stopped_by"] == "seconds" and 1 <= len(result["results"]) <= 8


def test_deterministic_given_a_seed(small_model):
    a = generate(small_model, TEXT, tiny(seed=3))
    b = generate(small_model, TEXT, tiny(seed=3))
    assert [r["smiles"] for r in a["results"]] == [r["smiles"] for r in b["results"]]
    assert [r["total"] for r in a["results"]] == pytest.approx([r["total"] for r in b["results"]])


def test_edit_lambda_sweep(small_model):
    source = "CC(=O)Oc1ccccc1C(=O)O"
    result = edit(small_model, "The molecule is a long-chain fatty acid.", source,
                  tiny(budget_evaluations=60, edit_lambdas=[0.0, 0.25, 0.5, 0.75, 1.0]))
    assert [r["lambda"] for r in result["results"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    sims = [r["tanimoto"] for r in result["results"]]
    assert all(a <= b + 1e-12 for a, b in zip(sims, sims[1:]))
    assert result["evaluations"] <= 60
    assert not any(r["is_input"] for r in result["results"])  # every result is an edit
    canonical = Chem.MolToSmiles(Chem.MolFromSmiles(source))
    huge = edit(small_model, "The molecule is a long-chain fatty acid.", source, tiny(edit_lambdas=[1000.0]))
    (nearest,) = huge["results"]  # the closest changed molecule wins, not the input
    assert nearest["smiles"] != canonical and not nearest["is_input"] and 0 < nearest["tanimoto"] < 1
    kept = edit(small_model, "The molecule is a long-chain fatty acid.", source,
                tiny(edit_lambdas=[1000.0], edit_keep_input=True))
    assert kept["results"][0]["smiles"] == canonical and kept["results"][0]["is_input"]
    with pytest.raises(ValueError, match="invalid SMILES"):
        edit(small_model, TEXT, "C1CC(", tiny())


def _cli(argv):
    from momu.cli import main

    return main(argv)


def test_cli_generate_end_to_end(model_dir, capsys):
    common = ["--model", str(model_dir), "--budget_evaluations", "30", "--population_size", "8",
              "--offspring_size", "8", "--pool.path", POOL, "--pool.exclude", f"[{TEST_SLICE}]", "--pool.sample", "12"]
    assert _cli(["generate", "--text", TEXT, "--n", "3", "--json", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "generate" and len(out["results"]) == 3 and out["evaluations"] <= 30
    assert {"smiles", "cosine", "qed", "sa", "total"} <= set(out["results"][0])
    assert _cli(["generate", "--text", TEXT, "--edit", "c1ccccc1O", *common]) == 0
    table = capsys.readouterr().out
    assert "tanimoto" in table and "evaluations" in table and len(table.splitlines()) == 7  # header, 5 lambdas, budget


@pytest.mark.parametrize("argv, message", [
    (["--text", "  "], "--text is empty"),
    (["--text", TEXT, "--edit", "C1CC("], "not a valid SMILES"),
    (["--text", TEXT, "--model", "/nonexistent/momu"], "--model"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert _cli(["generate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_pool_excludes_test_molecules(tmp_path):
    # The bundled slice and a seeded draw from the default pool hold no ChEBI-20 test molecule (even up to stereo).
    test_file = shared_path("chebi20", "test.txt")
    default = GenerateConfig().pool
    pool_file = shared_path(*default.path.split("/")[3:])  # "../shared/data/<...>"
    assert default.exclude == ["../shared/data/chebi20/test.txt"]
    test = {canonical(s, isomeric=False) for s in read_smiles_column(test_file)}
    drawn = load_pool(pool_file, [str(test_file)], sample=300)
    bundled = load_pool(POOL)
    for smiles in drawn + bundled:
        assert canonical(smiles, isomeric=False) not in test
    # the exclusion does remove molecules: a pool made of test molecules is empty
    with pytest.raises(ValueError, match="no usable molecule"):
        load_pool(TEST_SLICE, [TEST_SLICE])
    (tmp_path / "p.tsv").write_text("CID\tSMILES\n1\tC[C@H](N)C(=O)O\n2\tCCO\n")
    (tmp_path / "x.tsv").write_text("CID\tSMILES\n9\tC[C@@H](N)C(=O)O\n")  # the other enantiomer
    assert load_pool(tmp_path / "p.tsv", [str(tmp_path / "x.tsv")]) == ["CCO"]
