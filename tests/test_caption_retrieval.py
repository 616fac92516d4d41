"""The retrieval captioner: removal of evaluated molecules (synthetic and on the real pool), captioner correctness
on a tiny pool (Tanimoto, MoMu cosine, fusion with a tiny random model), split evaluation, the CLI, and the batch
captioning job's accounting on Ray Data."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from momu.caption.pool import MoleculeKeys, build_pool, molecule_keys, remove_evaluated_molecules
from momu.caption.retrieval import CaptionPool, RetrievalCaptioner, load_captioner
from momu.chem.featurize import Rejection

HEADER = "CID\tSMILES\tdescription"
SOURCE_A = [("1", "CCO", "The molecule is ethanol."), ("2", "CC(=O)O", "The molecule is acetic acid."),
            ("3", "C[C@H](N)C(=O)O", "The molecule is L-alanine."), ("4", "c1ccccc1", "The molecule is benzene."),
            ("5", "CCN", "The molecule is ethylamine."), ("6", "OC1CCCCC1", "The molecule is cyclohexanol.")]
SOURCE_B = [("7", "OCC", "The molecule is ethanol, written another way."), ("1", "CCO", "Ethanol again."),
            ("8", "C1CC", "Not a molecule."), ("9", "Cc1ccccc1", "The molecule is toluene."),
            ("10", "C[C@@H](N)C(=O)O", "The molecule is D-alanine.")]
# The evaluated split: CID 4 (benzene's CID), ethylamine written as NCC, and D-alanine.
EVALUATED = [("100", "c1ccccc1O", "phenol"), ("4", "CCCC", "butane"), ("101", "NCC", "ethylamine"),
             ("102", "C[C@@H](N)C(=O)O", "D-alanine")]


def _table(path, rows):
    path.write_text("\n".join([HEADER] + ["\t".join(r) for r in rows]) + "\n")
    return path


@pytest.fixture
def tiny(tmp_path):
    a, b = _table(tmp_path / "a.txt", SOURCE_A), _table(tmp_path / "b.tsv", SOURCE_B)
    test = _table(tmp_path / "test.txt", EVALUATED)
    return tmp_path, [("a", a), ("b", b)], test


def test_removal_by_cid_smiles_and_connectivity_synthetic():
    keys = [molecule_keys(c, s) for c, s, _ in SOURCE_A + SOURCE_B]
    evaluated = [molecule_keys(c, s) for c, s, _ in EVALUATED]
    report = remove_evaluated_molecules(keys, evaluated)
    assert [SOURCE_A[i][0] if i < 6 else SOURCE_B[i - 6][0] for i in report.keep] == ["1", "2", "6", "9"]
    assert report.removed == {3: "evaluated_cid", 4: "evaluated_smiles", 2: "evaluated_connectivity",
                              10: "evaluated_smiles", 6: "duplicate_smiles", 7: "duplicate_cid", 8: "unparseable"}
    # L- and D-alanine differ in canonical SMILES but share the InChIKey's connectivity block.
    l_ala, d_ala = molecule_keys("3", "C[C@H](N)C(=O)O"), molecule_keys("x", "C[C@@H](N)C(=O)O")
    assert l_ala.canonical_smiles != d_ala.canonical_smiles and l_ala.connectivity == d_ala.connectivity
    assert remove_evaluated_molecules([MoleculeKeys("9", "CC", "X")], []).keep == [0]


def test_pool_build_and_tanimoto_captioner(tiny):
    tmp, sources, test = tiny
    manifest = build_pool(sources, [test], tmp / "pool")
    assert manifest["pool_rows"] == 4 and manifest["embeddings"] is None
    assert manifest["removed"] == {"evaluated_total": 4, "evaluated_cid": 1, "evaluated_smiles": 2,
                                   "evaluated_connectivity": 1, "duplicate_cid": 1, "duplicate_smiles": 1,
                                   "unparseable": 1}
    removed = pq.read_table(tmp / "pool" / "removed.parquet").to_pylist()
    assert {(r["cid"], r["reason"]) for r in removed} >= {("3", "evaluated_connectivity"), ("4", "evaluated_cid")}
    with pytest.raises(ValueError, match="already holds a caption pool"):
        build_pool(sources, [test], tmp / "pool")

    captioner = RetrievalCaptioner(tmp / "pool")
    ethanol, alanine, bad = captioner.caption_smiles(["OCC", "C[C@H](N)C(=O)O", "C1CC"], k=3)
    assert ethanol.caption == "The molecule is ethanol." and ethanol.neighbour.id == "a:1"
    assert ethanol.neighbour.similarity == 1.0 and ethanol.query_smiles == "CCO"
    assert ethanol.captioner == "retrieval-tanimoto" and "nearest known molecule" in ethanol.label
    scores = [n.similarity for n in ethanol.neighbours]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and scores[1] < 1.0
    # Both alanines were removed: the caption comes from another molecule, with similarity < 1.
    assert "alanine" not in alanine.caption and alanine.neighbour.similarity < 1.0
    assert isinstance(bad, Rejection) and bad.reason == "unparseable"

    build_pool(sources, [], tmp / "pool_all")  # nothing removed: the exact molecule is found
    found = RetrievalCaptioner(tmp / "pool_all").caption_smiles(["N[C@@H](C)C(O)=O"])[0]
    assert found.neighbour.id == "a:3" and found.neighbour.similarity == 1.0  # L before D on a stereo-free tie
    assert found.caption == "The molecule is L-alanine."


def test_momu_and_fusion_captioners_with_a_tiny_model(tiny, small_model):
    from momu.chem.featurize import featurize_smiles
    from momu.models.loading import weights_sha256

    tmp, sources, _ = tiny
    model_dir = small_model.save_pretrained(tmp / "model")
    manifest = build_pool(sources, [], tmp / "pool", model=str(model_dir))
    assert manifest["embeddings"]["weights_sha256"] == weights_sha256(model_dir) and manifest["embeddings"]["dim"] == 16
    pool = CaptionPool(tmp / "pool")
    np.testing.assert_allclose(pool.text_embeddings, small_model.embed_texts(pool.captions).numpy(), atol=1e-5)

    momu = load_captioner(tmp / "pool", "momu", str(model_dir))
    assert momu.embeddings_from == "pool"  # stored embeddings reused: same weights hash
    np.testing.assert_array_equal(momu.graph_embeddings, pool.graph_embeddings)
    assert momu.version.startswith(f"pool:{pool.version};model:sha256:{weights_sha256(model_dir)[:12]}")
    (toluene,) = momu.caption_smiles(["Cc1ccccc1"])
    assert toluene.neighbour.smiles == "Cc1ccccc1" and toluene.neighbour.similarity == pytest.approx(1.0, abs=1e-5)
    assert toluene.similarity_kind == "momu_graph_cosine"

    fusion = load_captioner(tmp / "pool", "fusion", str(model_dir), fusion_k=3, fusion_weight=0.3)
    (result,) = fusion.caption_smiles(["CC(=O)O"], k=3)
    query = small_model.embed_graphs([featurize_smiles("CC(=O)O")]).numpy()[0]
    for n in result.neighbours:  # the fused score, by hand
        assert n.similarity == pytest.approx(0.3 * float(pool.text_embeddings[n.row] @ query) + 0.7 * n.tanimoto,
                                             abs=1e-5)
    assert [n.similarity for n in result.neighbours] == sorted((n.similarity for n in result.neighbours), reverse=True)
    # Given query embeddings (a server's encoder) give the same answer without the model.
    served = RetrievalCaptioner(pool, "fusion", None, fusion_k=3, fusion_weight=0.3)
    from rdkit import Chem

    (same,) = served.caption_mols([Chem.MolFromSmiles("CC(=O)O")], k=3, graph_embeddings=query[None])
    assert [n.id for n in same.neighbours] == [n.id for n in result.neighbours]
    # Weight 0 is Tanimoto order within the candidates.
    plain = RetrievalCaptioner(pool, "fusion", None, fusion_k=4, fusion_weight=0.0)
    tanimoto = RetrievalCaptioner(pool, "tanimoto")
    got = plain.caption_mols([Chem.MolFromSmiles("OC1CCCCC1")], k=4, graph_embeddings=query[None])[0]
    want = tanimoto.caption_smiles(["OC1CCCCC1"], k=4)[0]
    assert [n.id for n in got.neighbours] == [n.id for n in want.neighbours]
    with pytest.raises(ValueError, match="needs a MoMu model"):
        load_captioner(tmp / "pool", "momu")
    other = small_model.save_pretrained(tmp / "other")  # same weights, but say it is another model: recomputed
    small_model.weights_sha256 = "0" * 64
    try:
        again = RetrievalCaptioner(pool, "momu", small_model)
    finally:
        del small_model.weights_sha256
    assert again.embeddings_from == "model" and other.exists()
    np.testing.assert_allclose(again.graph_embeddings, pool.graph_embeddings, atol=1e-5)


@pytest.fixture(scope="module")
def real_pool(tmp_path_factory):
    from conftest import shared_path

    sources = [("chebi20-validation", shared_path("chebi20", "validation.txt")),
               ("pubchem324k-valid", shared_path("pubchem324k", "valid.tsv")),
               ("pubchem324k-test", shared_path("pubchem324k", "test.tsv"))]
    out = tmp_path_factory.mktemp("caption") / "pool"
    build_pool(sources, [shared_path("chebi20", "test.txt")], out)
    return out


def test_real_pool_holds_no_chebi20_test_molecule(real_pool):
    from conftest import shared_path
    from momu.caption.pool import read_caption_source

    test = read_caption_source(shared_path("chebi20", "test.txt"))
    test_keys = [molecule_keys(c, s) for c, s in zip(test.cids, test.smiles)]
    pool = CaptionPool(real_pool)
    pool_keys = [molecule_keys(c, s) for c, s in zip(pool.cids, pool.smiles)]
    for attr in ("cid", "canonical_smiles", "connectivity"):
        assert not {getattr(k, attr) for k in pool_keys} & {getattr(k, attr) for k in test_keys}, attr
    manifest = pool.manifest
    # PROVENANCE.md: ChEBI-20 test shares 118 CIDs with PubChem324k test and 44 with its valid (none with validation).
    assert manifest["removed"]["evaluated_cid"] == 118 + 44
    assert manifest["removed"]["evaluated_total"] > 162 and len(pool) == manifest["pool_rows"] > 5000
    assert set(pool.sources) == {"chebi20-validation", "pubchem324k-valid", "pubchem324k-test"}


def test_split_evaluation_writes_scorable_predictions(real_pool, tmp_path, capsys):
    from conftest import shared_path
    from momu.caption.config import CaptionRetrievalEvalConfig
    from momu.caption.split_eval import evaluate_split
    from momu.cli import main

    config = CaptionRetrievalEvalConfig(captioner=str(real_pool), split=str(shared_path("chebi20", "test.txt")),
                                        kinds=["random", "tanimoto"], output_dir=str(tmp_path), limit=60,
                                        meteor=False)
    results = evaluate_split(config, log=lambda *_: None)
    assert results["rows"] == 60 and results["split_cids_in_pool"] == 0
    tanimoto, random = results["captioners"]["tanimoto"], results["captioners"]["random"]
    assert tanimoto["bleu4"] > random["bleu4"] and tanimoto["rougeL"] > random["rougeL"]
    assert main(["evaluate", "caption", "--predictions", tanimoto["predictions"], "--meteor", "false",
                 "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["rows"] == 60 and rescored["bleu4"] == pytest.approx(tanimoto["bleu4"], abs=1e-9)
    lines = (tmp_path / "predictions_tanimoto.tsv").read_text().splitlines()
    assert lines[0] == "SMILES\tground truth\toutput" and len(lines) == 61


def test_cli_pool_and_clear_errors(tiny, capsys):
    from momu.cli import main

    tmp, sources, test = tiny
    config = tmp / "pool.yaml"
    config.write_text(f"sources:\n  - {{name: a, path: {sources[0][1]}}}\n  - {{name: b, path: {sources[1][1]}}}\n"
                      f"exclude: [{test}]\n")
    assert main(["caption", "pool", "--config", str(config), "--output_dir", str(tmp / "p")]) == 0
    out = capsys.readouterr().out
    assert "pool: 4 molecules" in out and "by CID 1, canonical SMILES 2, connectivity 1" in out
    assert main(["caption", "--inputs", str(test), "--captioner", str(tmp / "nothing")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert main(["caption", "--inputs", str(test), "--kind", "momu"]) == 2
    assert "model: kind 'momu' needs a MoMu model" in capsys.readouterr().err
    assert main(["caption", "--inputs", str(tmp / "missing.smi"), "--captioner", str(tmp / "p")]) == 2
    assert "inputs: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_batch_caption_job_accounts_for_every_row(ray_local, tiny):
    from momu.caption.config import CaptionJobConfig
    from momu.caption.job import run_caption_job

    tmp, sources, _ = tiny
    build_pool(sources, [], tmp / "pool")
    lib = tmp / "lib.csv"  # 4 good rows, one unparseable, one without SMILES, one with a wrong field count
    lib.write_text("id,smiles\nm1,OCC\nm2,c1ccccc1C\nm3,C1CC\nm4,\nm5,CCN,extra\nm6,CC(=O)O\nm7,C[C@H](N)C(=O)O\n")
    smi = tmp / "more.smi"
    smi.write_text("OC1CCCCC1 s1\nnot_a_smiles s2\n")
    config = CaptionJobConfig(inputs=[str(lib), str(smi)], captioner=str(tmp / "pool"), output_dir=str(tmp / "out"),
                              part_rows=3, batch_size=2)
    summary = run_caption_job(config)
    assert summary["rows_read"] == 9 and summary["captioned"] == 5 and summary["rejected"] == 4
    assert summary["accounting_ok"]
    assert summary["rejected_by_reason"] == {"unparseable": 2, "missing_smiles": 1, "wrong_field_count": 1}
    rows = {r["id"]: r for f in summary["captions"] for r in pq.read_table(tmp / "out" / f).to_pylist()}
    assert set(rows) == {"m1", "m2", "m6", "m7", "s1"}
    assert rows["m1"]["caption"] == "The molecule is ethanol." and rows["m1"]["similarity"] == 1.0
    assert rows["m1"]["neighbour_id"] == "a:1" and rows["m1"]["neighbour_smiles"] == "CCO"
    assert rows["s1"]["caption"] == "The molecule is cyclohexanol." and rows["m2"]["neighbour_id"] == "b:9"
    assert {r["captioner"] for r in rows.values()} == {"retrieval-tanimoto"}
    assert {r["captioner_version"] for r in rows.values()} == {summary["version"]}
    rejects = pq.read_table(tmp / "out" / "rejects.parquet").to_pylist()
    assert sorted((r["id"], r["reason"]) for r in rejects if r["id"]) == [("m3", "unparseable"),
                                                                        ("s2", "unparseable")]
    manifest = json.loads((tmp / "out" / "manifest.json").read_text())
    assert manifest["rows_read"] == manifest["captioned"] + manifest["rejected"] == 9
    with pytest.raises(ValueError, match="output_dir: .* is not empty"):
        run_caption_job(config)
