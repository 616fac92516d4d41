"""The learned caption ranker (momu.caption.ranker): features, leave-one-out examples that keep held-out captions
out of training, training that lowers its loss, the `ranked` and `auto` captioner kinds, and the version / pool
checks. A 200-molecule ChEBI-20 validation slice and a tiny random MoMu model keep it to seconds."""

import shutil

import numpy as np
import pytest
from rdkit import Chem

from momu.caption.config import CaptionRankerConfig
from momu.caption.pool import build_pool
from momu.caption.ranker import (FEATURES, CandidateFeatures, CaptionRanker, caption_ngrams, has_ranker,
                                 leave_one_out_candidates, ngram_f1, pool_examples, train_ranker)
from momu.caption.retrieval import CaptionPool, RetrievalCaptioner, load_captioner

from conftest import REPO

SLICE = REPO / "data" / "sample" / "chebi20" / "validation_slice.tsv"


@pytest.fixture(scope="module")
def ranked_pool(small_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranker")
    source = tmp / "slice.tsv"
    source.write_text("\n".join(SLICE.read_text().splitlines()[:201]) + "\n")
    model_dir = small_model.save_pretrained(tmp / "model")
    build_pool([("slice", source)], [], tmp / "pool", model=str(model_dir))
    meta = train_ranker(CaptionRankerConfig(pool=str(tmp / "pool"), k=5, val_fraction=0.2, epochs=15,
                                            meteor=False), log=lambda *_: None)
    return tmp, model_dir, meta


def test_ngram_f1():
    a = caption_ngrams("The molecule is a monocarboxylic acid.")
    assert ngram_f1(a, a) == pytest.approx(1.0)
    assert ngram_f1(a, caption_ngrams("Nothing shared here")) == 0.0
    partial = ngram_f1(a, caption_ngrams("The molecule is a dicarboxylic acid."))
    assert 0.3 < partial < 1.0 and partial == pytest.approx(ngram_f1(caption_ngrams(
        "The molecule is a dicarboxylic acid."), a))


def test_training_examples_leave_held_out_captions_out(ranked_pool):
    tmp, _, meta = ranked_pool
    pool = CaptionPool(tmp / "pool")
    from momu.caption.decoder_data import is_validation

    held = np.array([is_validation(i, 0.2) for i in pool.ids])
    assert held.any() and (~held).any()
    rows = np.flatnonzero(~held)[:20]
    examples = pool_examples(pool, rows, 5, ~held, log=lambda *_: None)
    assert examples["features"].shape == (20, 5, len(FEATURES))
    for row, candidates in zip(rows, examples["candidates"]):
        assert row not in candidates and not held[candidates].any()  # never itself, never a held-out caption
    tanimoto, best = leave_one_out_candidates(pool, int(rows[0]), 5, ~held)
    assert tanimoto[rows[0]] == -1.0 and (tanimoto[held] == -1.0).all()
    assert list(best) == list(examples["candidates"][0])
    # The target is each candidate caption's n-gram F1 with the query's own caption.
    assert examples["targets"][0][0] == pytest.approx(ngram_f1(caption_ngrams(pool.captions[best[0]]),
                                                               caption_ngrams(pool.captions[rows[0]])))
    assert meta["training"]["train_molecules"] == int((~held).sum())
    assert meta["training"]["held_out_molecules"] == int(held.sum())


def test_training_lowers_the_loss_and_reports_the_held_out_comparison(ranked_pool):
    tmp, _, meta = ranked_pool
    curve = meta["training"]["loss_curve"]
    assert len(curve) == 15 and curve[-1] < curve[0]
    table = meta["held_out"]
    assert set(table) == {"nearest neighbour (Tanimoto)", "ranker", "oracle of the 5 candidates"}
    assert table["oracle of the 5 candidates"]["mean"] >= max(table["ranker"]["mean"],
                                                              table["nearest neighbour (Tanimoto)"]["mean"])
    assert table["ranker"]["meteor"] is None  # meteor: false
    assert has_ranker(tmp / "pool") and meta["pool_sha256"] == CaptionPool(tmp / "pool").manifest["pool_sha256"]


def test_ranked_captioner_returns_the_rankers_choice(ranked_pool, small_model):
    tmp, model_dir, meta = ranked_pool
    captioner = load_captioner(tmp / "pool", "auto")  # auto: this pool has a ranker -> ranked, with its model
    assert captioner.kind == "ranked" and captioner.name == "retrieval-ranked"
    assert captioner.version.endswith(f";ranker:sha256:{meta['weights_sha256'][:12]}")
    assert "learned caption ranker" in captioner.label
    pool, ranker = captioner.pool, CaptionRanker.load(tmp / "pool")
    smiles = "CC(C)CC(N)C(=O)O"
    (result,) = captioner.caption_smiles([smiles], k=50)
    assert len(result.neighbours) == ranker.k == 5  # at most the ranker's candidates
    # By hand: the 5 Tanimoto-nearest, scored by the ranker; the best one's caption is returned.
    from momu.caption import pool as P
    from momu.chem.featurize import featurize_smiles
    from rdkit import DataStructs

    mol = Chem.MolFromSmiles(smiles)
    tanimoto = np.asarray(DataStructs.BulkTanimotoSimilarity(P.morgan_fingerprint(mol), pool.fingerprints))
    candidates = np.argsort(-tanimoto, kind="stable")[:5]
    query = small_model.embed_graphs([featurize_smiles(smiles)]).numpy()[0]
    scores = ranker.scores(CandidateFeatures(pool)(mol, tanimoto, candidates, query, pool.graph_embeddings,
                                                   pool.text_embeddings))
    best = candidates[int(np.argmax(scores))]
    assert result.caption == pool.captions[best] and result.neighbour.row == best
    assert result.neighbour.similarity == pytest.approx(float(scores.max()), abs=1e-5)
    assert result.neighbour.tanimoto == pytest.approx(float(tanimoto[best]))
    assert [n.similarity for n in result.neighbours] == sorted((n.similarity for n in result.neighbours),
                                                               reverse=True)
    # A server passes the queries' graph embeddings instead of a model: same answer.
    served = RetrievalCaptioner(tmp / "pool", "auto")
    assert served.kind == "ranked"
    (same,) = served.caption_mols([mol], k=3, graph_embeddings=query[None])
    assert [n.id for n in same.neighbours] == [n.id for n in result.neighbours[:3]]


def test_auto_without_ranker_is_tanimoto_and_a_foreign_ranker_is_refused(ranked_pool, tmp_path):
    tmp, _, _ = ranked_pool
    build_pool([("slice", tmp / "slice.tsv")], [], tmp_path / "plain")  # no model, no ranker
    assert RetrievalCaptioner(tmp_path / "plain", "auto").kind == "tanimoto"
    with pytest.raises(ValueError, match="has no MoMu embeddings"):
        train_ranker(CaptionRankerConfig(pool=str(tmp_path / "plain")), log=lambda *_: None)
    other = tmp_path / "other"
    shutil.copytree(tmp / "pool", other)
    (other / "manifest.json").write_text((other / "manifest.json").read_text().replace(
        CaptionPool(tmp / "pool").manifest["pool_sha256"], "0" * 64))
    with pytest.raises(ValueError, match="trained on another pool"):
        RetrievalCaptioner(other, "ranked")
    bare = tmp_path / "bare"  # embeddings, but no ranker
    shutil.copytree(tmp / "pool", bare)
    for name in ("ranker.json", "ranker.safetensors"):
        (bare / name).unlink()
    assert RetrievalCaptioner(bare, "auto").kind == "tanimoto"
    with pytest.raises(FileNotFoundError, match="momu caption train-ranker"):
        RetrievalCaptioner(bare, "ranked")


def test_train_ranker_cli(ranked_pool, tmp_path, capsys):
    from momu.cli import main

    tmp, _, _ = ranked_pool
    pool = tmp_path / "pool"
    shutil.copytree(tmp / "pool", pool)
    assert main(["caption", "train-ranker", "--pool", str(pool), "--k", "3", "--epochs", "2", "--val_fraction", "0.2",
                 "--meteor", "false"]) == 0
    out = capsys.readouterr().out
    assert f"ranker: {pool.resolve() / 'ranker.json'}" in out and "vs" in out and "nearest-neighbour copying" in out
    assert CaptionRanker.load(pool).k == 3
    assert main(["caption", "train-ranker", "--pool", str(tmp_path / "missing")]) == 2
    assert "holds no manifest.json" in capsys.readouterr().err
