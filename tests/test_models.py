import json

import pytest
import torch
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import add_self_loops

from momu.chem.featurize import featurize_smiles, graphs_to_pyg_batch
from momu.config import GINConfig, MoMuConfig, TextEncoderConfig
from momu.models.gin import GIN, global_mean_pool
from momu.models.momu import MoMu, build_model

from conftest import chebi_slice_smiles


class ReferenceGINConv(MessagePassing):
    """pretrain-gnns' GINConv, verbatim in structure (PyG MessagePassing, add aggregation)."""

    def __init__(self, ours, self_loop_bond_type):
        super().__init__(aggr="add")
        self.mlp, self.edge_embedding1, self.edge_embedding2 = ours.mlp, ours.edge_embedding1, ours.edge_embedding2
        self.self_loop_bond_type = self_loop_bond_type

    def forward(self, x, edge_index, edge_attr):
        edge_index, _ = add_self_loops(edge_index, num_nodes=x.size(0))
        self_loop_attr = torch.zeros(x.size(0), 2, dtype=edge_attr.dtype)
        self_loop_attr[:, 0] = self.self_loop_bond_type
        edge_attr = torch.cat((edge_attr, self_loop_attr), dim=0)
        edge_embeddings = self.edge_embedding1(edge_attr[:, 0]) + self.edge_embedding2(edge_attr[:, 1])
        return self.propagate(edge_index, x=x, edge_attr=edge_embeddings)

    def message(self, x_j, edge_attr):
        return x_j + edge_attr

    def update(self, aggr_out):
        return self.mlp(aggr_out)


def reference_gin_forward(gin: GIN, batch, self_loop_bond_type):
    h = gin.x_embedding1(batch.x[:, 0]) + gin.x_embedding2(batch.x[:, 1])
    for i, (conv, bn) in enumerate(zip(gin.gnns, gin.batch_norms)):
        h = bn(ReferenceGINConv(conv, self_loop_bond_type)(h, batch.edge_index, batch.edge_attr))
        if i < gin.num_layers - 1:
            h = torch.relu(h)
    return h


def real_batch(n=16, bond_feature="stereo"):
    graphs = [featurize_smiles(s) for s in chebi_slice_smiles()[:n]]
    return graphs, graphs_to_pyg_batch(graphs, bond_feature)


@pytest.mark.parametrize("self_loop", [0, 4])
def test_gin_matches_pretrain_gnns_reference(self_loop):
    torch.manual_seed(0)
    gin = GIN(num_layers=5, emb_dim=300, self_loop_bond_type=self_loop).eval()
    _, batch = real_batch()
    with torch.no_grad():
        ours = gin(batch.x, batch.edge_index, batch.edge_attr)
        ref = reference_gin_forward(gin, batch, self_loop)
    assert ours.shape == (batch.num_nodes, 300)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_self_loop_attribute_changes_output():
    torch.manual_seed(0)
    gin = GIN(num_layers=2, emb_dim=16).eval()
    _, batch = real_batch(4)
    with torch.no_grad():
        a = gin(batch.x, batch.edge_index, batch.edge_attr)
        for conv in gin.gnns:
            conv.self_loop_bond_type = 4
        b = gin(batch.x, batch.edge_index, batch.edge_attr)
    assert not torch.allclose(a, b)


def test_mean_pool_counts_isolated_nodes():
    h = torch.tensor([[1.0], [3.0], [5.0], [10.0]])
    batch = torch.tensor([0, 0, 0, 1])
    assert global_mean_pool(h, batch, 2).flatten().tolist() == [3.0, 10.0]


def test_gin_config_variants():
    assert GINConfig().self_loop_bond_type == 0 and GINConfig().bond_feature == "stereo"
    pg = GINConfig.pretrain_gnns()
    assert pg.self_loop_bond_type == 4 and pg.bond_feature == "direction"
    with pytest.raises(ValueError):
        GIN(num_layers=1)


def test_momu_encoders_shapes_and_normalisation(small_model):
    graphs, _ = real_batch(6)
    g = small_model.embed_graphs(graphs)
    t = small_model.embed_texts(["The molecule is an alcohol.", "A benzene derivative."] * 3)
    assert g.shape == (6, 16) and t.shape == (6, 16)
    torch.testing.assert_close(g.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(t.norm(dim=1), torch.ones(6))
    sim = small_model.similarity(g, t)
    assert sim.shape == (6, 6) and float(sim.abs().max()) <= 1.0 + 1e-5
    assert small_model.embed_texts([]).shape == (0, 16)


def test_graph_batch_without_pyg_gives_the_pyg_batch_embeddings(small_model):
    """Inference collates into a GraphBatch (no PyG import): the same tensors and embeddings as PyG's Batch,
    and .to() carries attributes set later (the fingerprint baseline's)."""
    graphs, pyg = real_batch(7)
    light = graphs_to_pyg_batch(graphs, "stereo", pyg=False)
    for field in ("x", "edge_index", "edge_attr", "batch", "ptr"):
        torch.testing.assert_close(getattr(light, field), getattr(pyg, field))
    assert light.num_graphs == pyg.num_graphs == 7
    small_model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(small_model.encode_graph(light), small_model.encode_graph(pyg))
    light.fingerprint = torch.ones(7, 4)
    moved = light.to("cpu")
    assert moved is not light and moved.fingerprint.shape == (7, 4) and moved.num_graphs == 7


def test_embedding_stages_import_neither_torch_for_reading_nor_pyg_for_embedding(small_model, tmp_path):
    """The reader tasks import momu.embed.stages without torch; a model actor embeds without importing PyG
    (each saved a fresh worker process 1-2.5 s of CPU at the start of every embedding run)."""
    import subprocess
    import sys

    model_dir = small_model.save_pretrained(tmp_path / "model")
    code = f"""
import sys
import pyarrow as pa
from momu.embed.stages import EmbedRows, featurize_rows
assert "torch" not in sys.modules, "reading imports torch"
n = 3
rows = pa.table({{"id": ["a", "b", "c"], "input": ["CCO", "c1ccccc1O", "CC(=O)O"], "reject_reason": [""] * n,
                  "reject_detail": [""] * n, "reject_stage": [""] * n}})
out = EmbedRows({str(model_dir)!r}, "molecules", 2)(featurize_rows(rows, max_atoms=100))
assert out.column("embedding").null_count == 0
assert "torch_geometric" not in sys.modules, "embedding imports PyG"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_text_pooling_modes_differ(small_model_config):
    outputs = {}
    for pooling in ("mean", "cls", "pooler"):
        cfg = small_model_config.model_copy(update={"text": TextEncoderConfig(pooling=pooling)})
        model = build_model(cfg).eval()
        tokens = model.text_encoder.tokenize(["The molecule is a monocarboxylic acid."])
        with torch.no_grad():
            outputs[pooling] = model.text_features(**tokens)
    assert outputs["mean"].shape == (1, 384)
    assert not torch.allclose(outputs["mean"], outputs["cls"]) and not torch.allclose(outputs["cls"], outputs["pooler"])


def test_tokenize_follows_momu_preprocessing(small_model_config):
    cfg = small_model_config.model_copy(update={"text": TextEncoderConfig(add_special_tokens=False, max_chars=10, max_length=8)})
    encoder = build_model(cfg).text_encoder
    tokens = encoder.tokenize(["abcdefghij klmnopqrstuvwxyz", "short"])
    ids = tokens["input_ids"][0].tolist()
    assert encoder.tokenizer.cls_token_id not in ids and encoder.tokenizer.sep_token_id not in ids
    assert encoder.tokenizer.decode(ids).replace(" ", "") == "abcdefghij"  # cut to 10 characters first
    assert tokens["input_ids"].shape[1] <= 8


def test_save_load_roundtrip_is_identical(small_model, tmp_path):
    graphs, _ = real_batch(8)
    texts = ["The molecule is a steroid.", "It has a role as a metabolite."]
    before_g, before_t = small_model.embed_graphs(graphs), small_model.embed_texts(texts)
    directory = small_model.save_pretrained(tmp_path / "model")
    assert {p.name for p in directory.iterdir()} == {"config.json", "model.safetensors", "text_encoder"}
    assert json.loads((directory / "config.json").read_text())["config"]["graph"]["num_layers"] == 2
    loaded = MoMu.from_pretrained(directory)
    assert torch.equal(loaded.embed_graphs(graphs), before_g)
    assert torch.equal(loaded.embed_texts(texts), before_t)
    for (name, a), (_, b) in zip(small_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved MoMu model"):
        MoMu.from_pretrained(tmp_path)


def test_unreachable_text_encoder_is_a_clear_error(small_model_config):
    cfg = small_model_config.model_copy(update={"text": TextEncoderConfig(name_or_path="/nonexistent/scibert")})
    with pytest.raises(RuntimeError, match="could not load text encoder"):
        build_model(cfg)
