"""Published checkpoints: graph tower + heads in fp16, the bundled text tower referenced by name."""

import json

import pytest
import torch

from momu.chem.featurize import featurize_smiles
from momu.models import published
from momu.models.loading import resolve_model_dir
from momu.models.momu import MoMu
from momu.models.published import export_published, resolve_published

SMILES = ["CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1O", "CCN(CC)CC"]
TEXTS = ["The molecule is an aromatic carboxylic acid ester.", "A phenol.", "A tertiary amine."]


def test_export_then_load_gives_the_same_embeddings(small_model, tmp_path):
    out = export_published(small_model, tmp_path / "tiny", card="# tiny\ntest card")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["MODEL_CARD.md", "config.json", "model.safetensors"]
    payload = json.loads((out / "config.json").read_text())
    assert payload["text_weights"] == "bundled" and payload["dtype"] == "float16"
    loaded = MoMu.from_pretrained(out).eval()
    graphs = [featurize_smiles(s) for s in SMILES]
    ref_g, got_g = small_model.eval().embed_graphs(graphs), loaded.embed_graphs(graphs)
    ref_t, got_t = small_model.embed_texts(TEXTS), loaded.embed_texts(TEXTS)
    # fp16 weights: cosine between the original and the reloaded embedding stays ~1
    assert torch.nn.functional.cosine_similarity(ref_g, got_g).min() > 0.999
    assert torch.nn.functional.cosine_similarity(ref_t, got_t).min() > 0.999


def test_graph_only_loads_give_the_same_graph_embeddings_and_no_text_tower(small_model, tmp_path):
    saved = small_model.save_pretrained(tmp_path / "full")
    shipped = export_published(small_model, tmp_path / "tiny", card="# tiny")
    graphs = [featurize_smiles(s) for s in SMILES]
    for directory in (saved, shipped):
        whole, graph_only = MoMu.from_pretrained(directory).eval(), MoMu.from_pretrained(directory, graph_only=True)
        assert graph_only.text_encoder is None and graph_only.text_proj is None
        assert torch.equal(whole.embed_graphs(graphs), graph_only.eval().embed_graphs(graphs))
        with pytest.raises(RuntimeError, match="graph_only"):
            graph_only.embed_texts(TEXTS)


def test_a_trained_text_tower_is_refused(small_model, tmp_path):
    import copy

    model = copy.deepcopy(small_model)
    with torch.no_grad():
        next(model.text_encoder.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="text tower was trained"):
        export_published(model, tmp_path / "bad", card="x")


def test_names_resolve_to_shipped_directories(small_model, tmp_path, monkeypatch):
    monkeypatch.setattr(published, "PUBLISHED_DIR", tmp_path)
    export_published(small_model, tmp_path / "tiny-ship", card="# card")
    assert published.published_names() == ["tiny-ship"]
    assert resolve_published("tiny-ship") == tmp_path / "tiny-ship"
    assert resolve_model_dir("tiny-ship") == tmp_path / "tiny-ship"
    with pytest.raises(FileNotFoundError, match="shipped: tiny-ship"):
        resolve_model_dir("no-such-model")
    assert MoMu.from_pretrained("tiny-ship").config == small_model.config


def test_cli_publish_writes_a_checkpoint(small_model, tmp_path):
    from momu.cli import main

    saved = small_model.save_pretrained(tmp_path / "full")
    card = tmp_path / "card.md"
    card.write_text("# card\n")
    assert main(["publish", str(saved), "tiny", "--card", str(card), "--output", str(tmp_path / "pub")]) == 0
    assert (tmp_path / "pub" / "MODEL_CARD.md").read_text() == "# card\n"
    assert main(["publish", str(saved), "bad name", "--card", str(card)]) == 2


def test_shipped_checkpoints_load_are_small_and_carry_cards():
    from momu.config import DEFAULT_MODEL

    names = published.published_names()
    assert DEFAULT_MODEL in names and "momu-graphcl-cpu" in names, names
    for name in names:
        folder = published.PUBLISHED_DIR / name
        assert sum(f.stat().st_size for f in folder.iterdir()) <= 10 * 2 ** 20, name
        card = (folder / "MODEL_CARD.md").read_text()
        for must in ("## Data", "removed", "## Training", "## Metrics", "licence"):
            assert must.lower() in card.lower(), (name, must)
        assert json.loads((folder / "config.json").read_text())["text_weights"] == "bundled"


def test_default_checkpoint_matches_molecules_to_their_descriptions():
    """A sanity check of the shipped weights on 64 bundled ChEBI-20 validation pairs (training data of momu-cpu):
    1-of-64 retrieval far above chance (1.6 %) in both directions; the random-weight model is at chance."""
    from momu.config import DEFAULT_MODEL
    from conftest import SAMPLE

    lines = (SAMPLE / "chebi20" / "validation_slice.tsv").read_text().splitlines()[1:65]
    smiles = [line.split("\t")[1] for line in lines]
    texts = [line.split("\t")[2][:256] for line in lines]
    model = MoMu.from_pretrained(DEFAULT_MODEL).eval()
    sim = model.embed_graphs([featurize_smiles(s) for s in smiles]) @ model.embed_texts(texts).T
    truth = torch.arange(len(lines))
    assert (sim.argmax(1) == truth).float().mean() > 0.3
    assert (sim.argmax(0) == truth).float().mean() > 0.3


def test_jobs_default_to_the_shipped_checkpoint():
    from momu.config import DEFAULT_MODEL
    from momu.embed.config import EmbedConfig
    from momu.generate.config import GenerateConfig
    from momu.serve.config import ServeConfig

    assert EmbedConfig().model == ServeConfig().model == GenerateConfig().model == DEFAULT_MODEL
    assert resolve_model_dir(DEFAULT_MODEL) == published.PUBLISHED_DIR / DEFAULT_MODEL


def test_saved_weights_get_the_umask_mode_not_safetensors_0600(small_model, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        published_dir = export_published(small_model, tmp_path / "pub", card="# card")
        saved_dir = small_model.save_pretrained(tmp_path / "saved")
    finally:
        os.umask(old)
    for path in (published_dir / "model.safetensors", saved_dir / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # readable by the cluster's other users
