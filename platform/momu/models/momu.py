"""The MoMu dual encoder: GIN graph tower + HF text tower, each with a projection head into one space.

A saved model is a directory: `config.json` (MoMuConfig), `model.safetensors` (every weight, no pickle) and
`text_encoder/` (the HF architecture config + tokenizer), so it reloads anywhere without the original text
encoder path and without executing pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from momu.config import MoMuConfig
from momu.models.gin import GIN, GraphEncoder
from momu.models.text import TextEncoder
from momu.files import chmod_like_umask

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TEXT_ENCODER_DIR = "text_encoder"
FORMAT_VERSION = 1


class ProjectionHead(nn.Module):
    """Linear(in, in) - ReLU - Linear(in, out), as in MoMu."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_graph_encoder(config: MoMuConfig) -> nn.Module:
    """The GIN (MoMu) or, with `graph_encoder: fingerprint`, the Morgan-fingerprint MLP baseline."""
    if config.graph_encoder == "fingerprint":
        from momu.models.fingerprint import FingerprintEncoder

        return FingerprintEncoder(config.fingerprint)
    g = config.graph
    return GraphEncoder(GIN(g.num_layers, g.emb_dim, g.dropout, g.jk, g.self_loop_bond_type))


class MoMu(nn.Module):
    """Dual encoder. `encode_graph` / `encode_text` return L2-normalised embeddings in the shared space."""

    def __init__(self, config: MoMuConfig, text_hf_dir: Optional[str] = None, with_text: bool = True):
        super().__init__()
        self.config = config
        # with_text=False: a graph-only model (batch molecule embedding), without the text tower's load time
        # and memory; its text methods raise. (Modules are created in this order so that seeds and parameter
        # order, which optimizer checkpoints rely on, stay as they were.)
        self.graph_encoder = build_graph_encoder(config)
        self.text_encoder = TextEncoder(config.text, hf_dir=text_hf_dir) if with_text else None
        self.graph_proj = ProjectionHead(self.graph_encoder.out_dim, config.proj_dim)
        self.text_proj = ProjectionHead(self.text_encoder.out_dim, config.proj_dim) if with_text else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def uses_fingerprints(self) -> bool:
        """True for the fingerprint baseline: its graph batches need `batch.fingerprint` (made from SMILES)."""
        return self.config.graph_encoder == "fingerprint"

    # -- graph side -------------------------------------------------------------------------------------------
    def graph_features(self, batch) -> torch.Tensor:
        """Pooled GIN output before the projection head (what property heads and captioners consume)."""
        return self.graph_encoder(batch)

    def encode_graph(self, batch, normalize: bool = True) -> torch.Tensor:
        z = self.graph_proj(self.graph_features(batch))
        return nn.functional.normalize(z, dim=-1) if normalize else z

    # -- text side --------------------------------------------------------------------------------------------
    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled text-tower output before the projection head (what locked-text mode caches)."""
        self._need_text()
        return self.text_encoder(input_ids, attention_mask)

    def _need_text(self) -> None:
        if self.text_encoder is None:
            raise RuntimeError("this MoMu was loaded graph_only: it has no text tower")

    def project_text(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        self._need_text()
        z = self.text_proj(features)
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.project_text(self.text_features(input_ids, attention_mask), normalize)

    # -- convenience for inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Texts -> normalised embeddings [len(texts), proj_dim] (eval mode, batched)."""
        self._need_text()
        was_training = self.training
        self.eval()
        try:
            out = [self.encode_text(**self.text_encoder.tokenize(texts[i:i + batch_size], self.device))
                   for i in range(0, len(texts), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.config.proj_dim)

    def graph_batch(self, graphs: Sequence, smiles: Optional[Sequence[str]] = None):
        """MolGraphs (+ their SMILES, needed by the fingerprint baseline) -> the batch `encode_graph` takes (a
        GraphBatch: no PyG import)."""
        from momu.chem.featurize import Rejection, graphs_to_pyg_batch

        batch = graphs_to_pyg_batch(graphs, self.config.graph.bond_feature, pyg=False)
        if self.uses_fingerprints:
            from momu.models.fingerprint import attach_fingerprints, fingerprints_for

            if smiles is None or len(smiles) != len(graphs):
                raise ValueError("the fingerprint model needs the SMILES of every graph (smiles=...)")
            bits = fingerprints_for(smiles, self.config.fingerprint)
            bad = [i for i, b in enumerate(bits) if isinstance(b, Rejection)]
            if bad:
                raise ValueError(f"no fingerprint for SMILES {bad[0]} ({smiles[bad[0]]!r}): {bits[bad[0]].detail}")
            attach_fingerprints(batch, bits, self.config.fingerprint.n_bits)
        return batch

    @torch.no_grad()
    def embed_graphs(self, graphs: Sequence, batch_size: int = 256,
                     smiles: Optional[Sequence[str]] = None) -> torch.Tensor:
        """MolGraphs -> normalised embeddings [len(graphs), proj_dim] (eval mode, batched). The fingerprint
        baseline also needs each graph's SMILES."""
        was_training = self.training
        self.eval()
        try:
            out = [self.encode_graph(self.graph_batch(graphs[i:i + batch_size],
                                                      None if smiles is None else smiles[i:i + batch_size])
                                     .to(self.device))
                   for i in range(0, len(graphs), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.config.proj_dim)

    def similarity(self, graph_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix [G, T] between normalised graph and text embeddings."""
        return graph_emb @ text_emb.t()

    # -- persistence --------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        self._need_text()  # a saved model is always whole
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / WEIGHTS_FILE), metadata={"format": "momu", "version": str(FORMAT_VERSION)})
        chmod_like_umask(directory / WEIGHTS_FILE)
        self.text_encoder.save_hf_files(directory / TEXT_ENCODER_DIR)
        payload = {"format_version": FORMAT_VERSION, "config": self.config.model_dump(mode="json")}
        (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu",
                        graph_only: bool = False) -> "MoMu":
        """A saved model directory, or the name of a checkpoint shipped with the package (`momu.models.published`).

        A published checkpoint holds only the graph tower and both heads (fp16 allowed); its text tower is the
        bundled encoder it names, loaded from that encoder's own weights. graph_only: the graph tower and its
        head only (no text tower is built or loaded)."""
        from momu.models.published import resolve_published

        directory = resolve_published(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{directory} is not a saved MoMu model (no {CONFIG_FILE})")
        payload = json.loads(config_path.read_text())
        config = MoMuConfig.model_validate(payload["config"])
        if graph_only or payload.get("text_weights") == "bundled":
            # graph_only: no text tower at all; bundled: the text tower's weights come from its own files
            model = cls(config, with_text=not graph_only)
            state = load_file(str(directory / WEIGHTS_FILE), device=str(map_location))
            if graph_only:
                state = {k: v for k, v in state.items() if k.startswith(("graph_encoder.", "graph_proj."))}
            missing, unexpected = model.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("text_encoder.")]
            if missing or unexpected:
                raise ValueError(f"{directory / WEIGHTS_FILE} does not fit its config: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}")
            return model.to(map_location)
        model = cls(config, text_hf_dir=str(directory / TEXT_ENCODER_DIR))
        load_model(model, str(directory / WEIGHTS_FILE), strict=True, device=str(map_location))
        return model


def build_model(config: MoMuConfig) -> MoMu:
    """Factory: a fresh MoMu (text tower from its pretrained weights, graph tower and heads randomly initialised)."""
    return MoMu(config)
