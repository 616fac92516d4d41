"""The graph-conditioned caption decoder: shapes, the KV-cached beam search against the full forward pass, the
memory variants (graph / pooled / none / retrieve-and-edit), learning (it can memorise captions), the training
data's removal of evaluated molecules, and `momu finetune caption` end to end on the tiny config (export, resume,
MLflow, `momu evaluate caption --model`)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from momu.caption.config import CaptionTrainConfig, DecoderConfig
from momu.caption.decoder import (BOS, EOS, PAD, CaptionDecoder, CaptionVocab, GraphMemoryInputs, _block_repeats,
                                  pad_ids)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "chebi20"


def _inputs(batch=3, dim=12, seed=0, neighbour_len=None):
    g = torch.Generator().manual_seed(seed)
    nodes = [torch.randn(int(n), dim, generator=g) for n in torch.randint(2, 7, (batch,), generator=g)]
    pooled = [x.mean(0) for x in nodes]
    neighbours = None
    if neighbour_len:
        neighbours = [[BOS, *torch.randint(4, 20, (neighbour_len,), generator=g).tolist(), EOS] for _ in range(batch)]
    return GraphMemoryInputs.collate(nodes, pooled, neighbours)


def _decoder(**kw):
    torch.manual_seed(0)
    config = DecoderConfig(d_model=32, layers=2, heads=4, ff_dim=64, dropout=0.0, max_length=16, graph_dim=12,
                           vocab_size=24, **kw)
    return CaptionDecoder(config).eval()


@pytest.mark.parametrize("memory,neighbour", [("nodes", False), ("pooled", False), ("none", False),
                                              ("nodes", True)])
def test_forward_shapes_and_loss(memory, neighbour):
    model = _decoder(graph_memory=memory, neighbour_memory=neighbour)
    inputs = _inputs(neighbour_len=5 if neighbour else None)
    ids = pad_ids([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS], [BOS, 9, 9, EOS]])
    logits = model(inputs, ids)
    assert logits.shape == (3, ids.shape[1] - 1, 24)
    memory_tokens, mask = model.memory(inputs)
    expected = {"nodes": 1 + inputs.nodes.shape[1], "pooled": 1, "none": 0}[memory] + 1
    expected += inputs.neighbour_ids.shape[1] if neighbour else 0
    assert memory_tokens.shape == (3, expected, 32) and mask.shape == (3, expected)
    assert torch.isfinite(model.loss(inputs, ids, label_smoothing=0.1))


def test_cached_greedy_decoding_equals_the_full_forward_pass():
    """beams=1 with the KV cache picks, step by step, the argmax of the uncached teacher-forced forward."""
    model = _decoder()
    inputs = _inputs()
    generated = model.generate(inputs, beams=1, max_length=10, length_penalty=0.0, min_length=0)
    for row, tokens in enumerate(generated):
        single = inputs.index(torch.tensor([row]))

        def next_token(prefix):
            logits = model(single, torch.tensor([prefix + [PAD]]))[0, -1]
            logits[PAD] = logits[BOS] = float("-inf")
            return int(logits.argmax())

        prefix = [BOS]
        for token in tokens:
            assert next_token(prefix) == token
            prefix.append(token)
        if len(tokens) < 9:  # stopped before the length limit: the full pass ends there too
            assert next_token(prefix) == EOS


def test_graph_memory_changes_the_output_only_when_present():
    ids = pad_ids([[BOS, 5, 6, 7, EOS]] * 3)
    a, b = _inputs(seed=1), _inputs(seed=2)
    b = GraphMemoryInputs(b.nodes[:, :a.nodes.shape[1]] if b.nodes.shape[1] >= a.nodes.shape[1] else a.nodes * 2,
                          a.node_mask, b.pooled)
    with_graph, without = _decoder(graph_memory="nodes"), _decoder(graph_memory="none")
    assert not torch.allclose(with_graph(a, ids), with_graph(b, ids))
    assert torch.allclose(without(a, ids), without(b, ids))


def test_beam_search_respects_length_and_no_repeat_ngrams():
    model = _decoder()
    out = model.generate(_inputs(), beams=4, max_length=8, no_repeat_ngram=2)
    for tokens in out:
        assert len(tokens) <= 7 and all(t not in (PAD, BOS, EOS) for t in tokens)
        bigrams = list(zip(tokens, tokens[1:]))
        assert len(bigrams) == len(set(bigrams))
    logp = torch.zeros(1, 10)
    _block_repeats(logp, torch.tensor([[BOS, 5, 6, 5]]), 2)  # "5 6" seen: after a 5, 6 is banned
    assert logp[0, 6] == float("-inf") and torch.isfinite(logp[0, [5, 7]]).all()


def test_the_decoder_learns_to_write_a_caption_for_each_graph():
    """Two graphs, two captions: after training, beam search writes each graph's own caption."""
    torch.manual_seed(0)
    model = _decoder(graph_memory="pooled")
    model.train()
    inputs = _inputs(batch=2, seed=3)
    captions = [[BOS, 5, 6, 7, 8, EOS], [BOS, 9, 10, 11, EOS]]
    ids = pad_ids(captions)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(inputs, ids).backward()
        optimizer.step()
    assert model.generate(inputs, beams=3) == [c[1:-1] for c in captions]


def test_vocab_round_trip_and_unknown_tokens():
    from momu.caption.metrics import load_tokenizer

    vocab = CaptionVocab.from_captions(load_tokenizer(), ["The molecule is an acid.", "The molecule is a base."],
                                       min_count=1)
    ids = vocab.encode(["The molecule is an acid."], 16)[0]
    assert ids[0] == BOS and ids[-1] == EOS and vocab.decode(ids) == "the molecule is an acid."
    assert 1 in vocab.encode(["The molecule is a zwitterion."], 16)[0]  # [UNK]: not in the training captions
    assert len(vocab.encode(["word " * 50], 10)[0]) == 10


def test_training_data_holds_no_evaluated_molecule(tmp_path):
    from momu.caption import pool as P
    from momu.caption.decoder_data import GraphFeatureEncoder, build_caption_data, check_no_evaluated_molecules
    from momu.caption.retrieval import CaptionPool
    from momu.config import GINConfig, MoMuConfig
    from momu.models.momu import build_model

    source, test = SAMPLE / "validation_slice.tsv", SAMPLE / "test_slice.tsv"
    # Plant test molecules in the source: one by CID, one by its SMILES under another CID.
    lines = source.read_text().splitlines()
    test_rows = [line.split("\t") for line in test.read_text().splitlines()[1:3]]
    planted = tmp_path / "source.tsv"
    planted.write_text("\n".join(lines[:60] + ["\t".join(test_rows[0]), "\t".join(["999999999", *test_rows[1][1:]])])
                       + "\n")
    P.build_pool([("src", str(planted))], [str(test)], tmp_path / "pool")
    encoder = GraphFeatureEncoder(build_model(MoMuConfig(graph=GINConfig(num_layers=2, emb_dim=12), proj_dim=8)))
    data = build_caption_data(CaptionPool(tmp_path / "pool"), encoder, 0.1, log=lambda *_: None)
    check_no_evaluated_molecules(data, [str(test)])
    test_cids = {r[0] for r in (line.split("\t") for line in test.read_text().splitlines()[1:])}
    assert not test_cids & {i.split(":", 1)[1] for i in data.ids}
    assert "999999999" not in {i.split(":", 1)[1] for i in data.ids}
    assert data.summary["removed_from_pool"]["evaluated_total"] >= 2
    assert data.is_val.any() and (~data.is_val).any()
    assert (data.neighbour != np.arange(len(data))).all() and not data.is_val[data.neighbour].any()
    assert data.nodes.shape == (data.node_offsets[-1], 12)
    with pytest.raises(AssertionError, match="evaluated molecules"):
        check_no_evaluated_molecules(data, [str(planted)])  # the guard sees a leak


@pytest.mark.slow
def test_finetune_caption_end_to_end_resume_and_evaluate(ray_local, tmp_path, capsys):
    import mlflow

    from momu.caption.captioner import DecoderCaptioner
    from momu.caption.train import run_caption_training
    from momu.cli import main
    from momu.config import load_config

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(CaptionTrainConfig, REPO / "configs" / "caption_tiny.yaml").model_copy(update={
        "storage_path": str(tmp_path / "train"), "mlflow_tracking_uri": uri, "run_name": "tiny", "max_steps": 6,
        "register_model_name": "captioner-tiny"})
    cfg = cfg.model_copy(update={"decoder": cfg.decoder.model_copy(update={"neighbour_memory": True})})
    result = run_caption_training(cfg, log=lambda *_: None)
    assert result["metrics"]["step"] == 6 and result["model_uri"] == "models:/captioner-tiny/1"
    captioner = DecoderCaptioner(result["captioner"])
    assert captioner.name == "decoder-graph+edit"
    out = captioner.caption_smiles(["CCO", "not a smiles", "c1ccccc1O"])
    assert isinstance(out[0].caption, str) and out[0].neighbours and out[1].reason == "unparseable"
    assert "generated" in out[0].label
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.params["decoder.neighbour_memory"] == "True" and "val_loss" in run.data.metrics
    # Resume: a second run continues from the first one's checkpoint instead of starting over.
    resumed = run_caption_training(cfg.model_copy(update={
        "run_name": "tiny-resumed", "resume": str(tmp_path / "train" / "tiny"), "max_steps": 9,
        "register_model_name": None}), log_to_mlflow=False, log=lambda *_: None)
    assert resumed["metrics"]["restored_from_step"] == 6 and resumed["metrics"]["step"] == 9
    # Score the captioner on the bundled test slice (its molecules were excluded from training).
    metrics_path = tmp_path / "eval" / "metrics.json"
    assert main(["evaluate", "caption", "--model", result["captioner"], "--split", str(SAMPLE / "test_slice.tsv"),
                 "--limit", "6", "--output", str(metrics_path), "--meteor", "false"]) == 0
    printed = capsys.readouterr().out
    assert "BLEU-2" in printed and metrics_path.is_file()
    assert (tmp_path / "eval" / "predictions_decoder-graph+edit.tsv").is_file()
    # Batch captioning with the decoder: every row captioned or rejected with a reason, labelled as generated.
    import pyarrow.parquet as pq

    from momu.caption.config import CaptionJobConfig
    from momu.caption.job import run_caption_job

    library = tmp_path / "lib.smi"
    library.write_text("CCO ethanol\nnot_a_smiles bad\nc1ccccc1O phenol\n")
    summary = run_caption_job(CaptionJobConfig(inputs=[str(library)], captioner=result["captioner"],
                                               output_dir=str(tmp_path / "batch")))
    assert summary["accounting_ok"] and (summary["captioned"], summary["rejected"]) == (2, 1)
    assert summary["captioner"] == "decoder-graph+edit" and summary["kind"] == "decoder"
    rows = pq.read_table(tmp_path / "batch" / summary["captions"][0]).to_pylist()
    assert {r["captioner"] for r in rows} == {"decoder-graph+edit"} and all("generated" in r["label"] for r in rows)


def test_exported_captioner_generates_and_reranks(tmp_path):
    """A captioner directory written by export_captioner loads, generates (labelled as generated) and reranks
    (the chosen caption is one of the k nearest pool captions, labelled as retrieved)."""
    from momu.caption import pool as P
    from momu.caption.captioner import RERANK_LABEL, DecoderCaptioner, export_captioner
    from momu.caption.metrics import load_tokenizer, resolve_vocab
    from momu.models.published import PUBLISHED_DIR

    excerpt = tmp_path / "excerpt.tsv"
    excerpt.write_text("\n".join((SAMPLE / "validation_slice.tsv").read_text().splitlines()[:81]) + "\n")
    P.build_pool([("slice", str(excerpt))], [str(SAMPLE / "test_slice.tsv")], tmp_path / "pool")
    vocab = CaptionVocab.from_captions(load_tokenizer(), ["The molecule is an acid.", "It is a base."], min_count=1)
    config = DecoderConfig(d_model=32, layers=1, heads=2, ff_dim=64, max_length=24, vocab_size=len(vocab))
    torch.manual_seed(0)
    weights = CaptionDecoder(config).state_dict()
    for neighbour in (False, True):
        cfg = config.model_copy(update={"neighbour_memory": neighbour})
        weights = CaptionDecoder(cfg).state_dict()
        directory = export_captioner(tmp_path / f"captioner{int(neighbour)}", cfg, weights, vocab,
                                     str(resolve_vocab()), PUBLISHED_DIR / "momu-cpu", tmp_path / "pool",
                                     generation={"beams": 2}, training={"data": {"val_fraction": 0.2}})
        captioner = DecoderCaptioner(directory)
        generated = captioner.caption_smiles(["CCO", "CC(=O)O"], max_length=8)
        assert all(isinstance(r.caption, str) and r.label.startswith("generated") for r in generated)
        assert bool(generated[0].neighbours) == neighbour  # retrieve-and-edit names the caption it read
    with pytest.raises(ValueError, match="rerank"):
        captioner.rerank_smiles(["CCO"], k=3)
    captioner = DecoderCaptioner(tmp_path / "captioner0")
    reranked = captioner.rerank_smiles(["CCO", "c1ccccc1O", "nope"], k=4)
    for result in reranked[:2]:
        assert result.label == RERANK_LABEL and len(result.neighbours) == 4
        assert result.caption == result.neighbours[0].caption
        assert result.caption in {n.caption for n in captioner._rerank_pool.caption_smiles([result.query_smiles],
                                                                                          k=4)[0].neighbours}
    assert reranked[2].reason == "unparseable"
    # PMI rerank against a no-graph prior on the same vocabulary: still one of the k neighbours, scored by PMI.
    no_graph = config.model_copy(update={"graph_memory": "none"})
    prior_dir = export_captioner(tmp_path / "prior", no_graph, CaptionDecoder(no_graph).state_dict(), vocab,
                                 str(resolve_vocab()), PUBLISHED_DIR / "momu-cpu", tmp_path / "pool",
                                 generation={"beams": 2}, training={"data": {"val_fraction": 0.2}})
    pmi = captioner.rerank_smiles(["CCO"], k=4, prior=DecoderCaptioner(prior_dir))[0]
    assert pmi.similarity_kind == "decoder_mean_pmi" and pmi.caption in {n.caption for n in pmi.neighbours}

    # Selection on held-out pool molecules, leave-one-out: no query may be captioned with its own caption.
    from momu.caption.selection import held_out_rows, select_captioner

    result = select_captioner(str(tmp_path / "captioner0"), str(PUBLISHED_DIR / "momu-cpu"), tmp_path / "sel.json",
                              limit=6, fusion_ks=(5,), fusion_weights=(0.5,), rerank_ks=(3,), with_meteor=False,
                              log=lambda *_: None)
    assert set(result["table"]) == {"tanimoto", "fusion k=5 w=0.5", "rerank k=3", "decoder-graph"}
    assert result["best"] in result["table"] and result["held_out_rows"] == 6
    rows = held_out_rows(captioner.meta, captioner._rerank_pool.pool)[:6]
    reranked = captioner.rerank_smiles([captioner._rerank_pool.pool.smiles[r] for r in rows], k=3,
                                       exclude_ids=[captioner._rerank_pool.pool.ids[r] for r in rows])
    assert all(r.neighbours[0].id != captioner._rerank_pool.pool.ids[row] for r, row in zip(reranked, rows))
