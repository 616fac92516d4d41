import json

import numpy as np
import pytest
import torch

from momu.config import GINConfig, MoMuConfig
from momu.pretrain.config import TrainConfig
from momu.data.pairs import PairDataset, heldout_mask, load_pair_dataset
from momu.retrieval.metrics import inbatch_accuracy
from momu.models.momu import MoMu
from momu.pretrain.local import ContrastiveTrainer, TextFeatureCache, sample_text_views, train_local

from conftest import SAMPLE

CHEBI_SLICE = str(SAMPLE / "chebi20" / "validation_slice.tsv")


def small_train_config(tmp_path, **overrides) -> TrainConfig:
    base = dict(model=MoMuConfig(graph=GINConfig(num_layers=2, emb_dim=64), proj_dim=32), data_path=CHEBI_SLICE,
                batch_size=16, steps=40, eval_every=20, lr=1e-3, output_dir=str(tmp_path / "run"), seed=7)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def chebi_pairs():
    dataset, report = load_pair_dataset(CHEBI_SLICE)
    return dataset, report


def test_pair_dataset_from_chebi_slice(chebi_pairs):
    dataset, report = chebi_pairs
    assert report.rows_read == 1200 and len(dataset) == 1200 and not dataset.rejected
    assert all(len(t) == 1 and t[0].startswith("The molecule") for t in dataset.texts[:20])


def test_pair_dataset_from_momu_corpus_uses_its_graphs():
    dataset, report = load_pair_dataset(str(SAMPLE / "momu_corpus"))
    assert len(dataset) == 6 and report.rows_malformed == 0
    assert all(len(t) >= 2 for t in dataset.texts)  # several paragraphs per molecule
    assert all(g.num_nodes > 0 for g in dataset.graphs)


def test_heldout_split_is_fixed_and_order_independent():
    ids = [str(i) for i in range(5000)]
    mask = heldout_mask(ids, 0.1)
    assert 400 < mask.sum() < 600
    reversed_mask = heldout_mask(ids[::-1], 0.1)[::-1]
    assert np.array_equal(mask, reversed_mask)
    with pytest.raises(ValueError):
        heldout_mask(ids, 1.0)


def test_sample_text_views():
    rng = np.random.default_rng(0)
    a, b = sample_text_views([["only"], ["p1", "p2", "p3"]] * 20, rng)
    assert a[0] == b[0] == "only"
    assert all(x != y for x, y in zip(a[1::2], b[1::2]))  # two different paragraphs when there are several


def test_inbatch_accuracy_by_hand():
    eye = torch.eye(5)
    assert inbatch_accuracy(eye, eye, batch_size=64) == {"acc_g2t": 1.0, "acc_t2g": 1.0, "chance": 0.2}
    shifted = eye.roll(1, dims=0)
    assert inbatch_accuracy(eye, shifted, batch_size=64)["acc_g2t"] == 0.0
    # batches of 2 over 5 rows: [0,1], [2,3], [4] -> 3 batches, chance 3/5; the last batch of 1 is always a hit
    acc = inbatch_accuracy(eye, shifted, batch_size=2)
    assert acc["chance"] == pytest.approx(0.6) and acc["acc_g2t"] == pytest.approx(0.2)
    ties = torch.ones(3, 2)
    assert inbatch_accuracy(ties, ties)["acc_g2t"] == 0.0  # ties never count as hits
    with pytest.raises(ValueError):
        inbatch_accuracy(torch.zeros(2, 3), torch.zeros(3, 3))


def test_locked_text_cache_matches_live_text_features(small_model):
    texts = ["The molecule is an alcohol.", "It is a conjugate acid.", "The molecule is an alcohol."]
    cache = TextFeatureCache(small_model, texts, progress=False)
    assert cache.features.shape[0] == 2  # duplicates cached once
    small_model.eval()
    with torch.no_grad():
        live = small_model.text_features(**small_model.text_encoder.tokenize(texts))
    torch.testing.assert_close(cache.lookup(texts), live, rtol=1e-4, atol=1e-5)


def test_training_lowers_loss_on_real_pairs(tmp_path, chebi_pairs):
    dataset, _ = chebi_pairs
    train, heldout = dataset.subset(range(0, 256)), dataset.subset(range(256, 320))
    cfg = small_train_config(tmp_path, steps=40)
    trainer = ContrastiveTrainer(cfg, train, heldout, progress=False)
    text_params_before = [p.clone() for p in trainer.model.text_encoder.parameters()]
    before = trainer.evaluate(train)
    for _ in range(cfg.steps):
        trainer.train_step()
    after = trainer.evaluate(train)
    assert after["loss"] < before["loss"] - 0.3, (before, after)
    assert after["acc_g2t"] > before["acc_g2t"] and after["acc_t2g"] > before["acc_t2g"]
    # locked text tower really stayed frozen
    for p, q in zip(text_params_before, trainer.model.text_encoder.parameters()):
        assert torch.equal(p, q)


def test_two_tower_mode_updates_the_text_tower(tmp_path, chebi_pairs):
    dataset, _ = chebi_pairs
    cfg = small_train_config(tmp_path, text_mode="finetune", steps=1, batch_size=4)
    trainer = ContrastiveTrainer(cfg, dataset.subset(range(8)), dataset.subset(range(8, 12)), progress=False)
    before = trainer.model.text_encoder.model.embeddings.word_embeddings.weight.clone()
    trainer.train_step()
    assert not torch.equal(before, trainer.model.text_encoder.model.embeddings.word_embeddings.weight)


def test_partial_mode_trains_only_the_top_text_layer(tmp_path, chebi_pairs):
    """The local loop's partial mode: the cached hidden states feed the top layer, which trains; lower layers
    and embeddings stay the pretrained ones; held-out evaluation reads the same cache."""
    dataset, _ = chebi_pairs
    cfg = small_train_config(tmp_path, text_mode="partial", text_train_layers=1, steps=1, batch_size=4)
    trainer = ContrastiveTrainer(cfg, dataset.subset(range(8)), dataset.subset(range(8, 12)), progress=False)
    layers = trainer.model.text_encoder.model.encoder.layer
    top, lower = layers[5].output.dense.weight.clone(), layers[4].output.dense.weight.clone()
    words = trainer.model.text_encoder.model.embeddings.word_embeddings.weight.clone()
    trainer.train_step()
    assert not torch.equal(top, layers[5].output.dense.weight)
    assert torch.equal(lower, layers[4].output.dense.weight)
    assert torch.equal(words, trainer.model.text_encoder.model.embeddings.word_embeddings.weight)
    cached = trainer.evaluate(dataset.subset(range(8, 12)))
    texts = [t[0] for t in dataset.subset(range(8, 12)).texts]
    live = trainer.model.embed_texts(texts)  # the whole tower, as an exported model runs it
    trainer.model.eval()
    torch.testing.assert_close(trainer.module.embed_text(trainer.text_input(texts)), live, rtol=1e-5, atol=1e-5)
    assert 0.0 <= cached["acc_g2t"] <= 1.0


def test_same_seed_same_run(tmp_path, chebi_pairs):
    dataset, _ = chebi_pairs
    losses = []
    for _ in range(2):
        cfg = small_train_config(tmp_path, steps=3)
        trainer = ContrastiveTrainer(cfg, dataset.subset(range(64)), dataset.subset(range(64, 80)), progress=False)
        losses.append([trainer.train_step() for _ in range(3)])
    assert losses[0] == losses[1]


@pytest.mark.slow
def test_train_local_end_to_end_with_mlflow(tmp_path):
    cfg = small_train_config(tmp_path, steps=30, eval_every=15,
                             mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", mlflow_experiment="test")
    result = train_local(cfg, progress=False)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["data"]["train_pairs"] + metrics["data"]["heldout_pairs"] == 1200
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert metrics["heldout_after"]["acc_g2t"] > metrics["heldout_after"]["chance"]
    assert len(result.history) == 30 and "heldout_acc_g2t" in result.history[14]
    reloaded = MoMu.from_pretrained(result.model_dir)
    assert reloaded.config == cfg.model

    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.params["batch_size"] == "16" and run.data.params["model.graph.num_layers"] == "2"
    assert "heldout_acc_g2t" in run.data.metrics and "train_loss" in run.data.metrics
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == 30
