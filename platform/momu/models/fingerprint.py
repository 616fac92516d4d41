"""The fingerprint baseline's graph side: a Morgan fingerprint through an MLP, in the style of Text2Mol's MLP
model (Edwards et al. 2021: three linear layers with ReLU, then LayerNorm; Text2Mol fed mol2vec vectors, we feed
RDKit Morgan bits). It replaces the GIN inside MoMu (`MoMuConfig.graph_encoder: fingerprint`), so the text tower,
projection heads, training jobs, saving and evaluation are the same as for MoMu.

Fingerprints travel as a list<int32> Arrow column of on-bit indices (`FINGERPRINT_COLUMN`, ~50 ints a molecule)
and become a dense float tensor `batch.fingerprint` [graphs, n_bits] on the PyG batch the model receives.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from momu.chem.featurize import Rejection, parse_smiles
from momu.config import FingerprintConfig

FINGERPRINT_COLUMN = "fingerprint_bits"
NO_SMILES = "no_smiles_for_fingerprint"


def _generator(config: FingerprintConfig):
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=config.radius, fpSize=config.n_bits,
                                                     includeChirality=config.chirality)


def fingerprint_bits(smiles: object, config: FingerprintConfig, generator=None) -> Union[np.ndarray, Rejection]:
    """SMILES -> sorted on-bit indices (int32) of its Morgan fingerprint, or a Rejection saying why not."""
    if smiles is None:
        return Rejection(NO_SMILES, "a fingerprint needs a SMILES string (graph-only rows have none)")
    mol = parse_smiles(smiles)
    if isinstance(mol, Rejection):
        return mol
    fp = (generator or _generator(config)).GetFingerprint(mol)
    return np.asarray(list(fp.GetOnBits()), dtype=np.int32)


def fingerprints_for(smiles: Sequence[object], config: FingerprintConfig) -> list[Union[np.ndarray, Rejection]]:
    generator = _generator(config)
    return [fingerprint_bits(s, config, generator) for s in smiles]


def dense_fingerprints(bit_lists: Sequence[np.ndarray], n_bits: int) -> torch.Tensor:
    """On-bit index lists -> float32 [len, n_bits] 0/1 matrix."""
    out = torch.zeros(len(bit_lists), n_bits)
    if len(bit_lists):
        lengths = [len(b) for b in bit_lists]
        rows = torch.repeat_interleave(torch.arange(len(bit_lists)), torch.tensor(lengths, dtype=torch.long))
        cols = torch.from_numpy(np.concatenate([np.asarray(b, dtype=np.int64) for b in bit_lists])) \
            if sum(lengths) else torch.zeros(0, dtype=torch.long)
        if len(cols) and (cols.min() < 0 or cols.max() >= n_bits):
            raise ValueError(f"fingerprint bit index outside 0..{n_bits - 1}: the data was made with another n_bits")
        out[rows, cols] = 1.0
    return out


def attach_fingerprints(pyg_batch, bit_lists: Sequence[np.ndarray], n_bits: int):
    """Set `pyg_batch.fingerprint` (dense [graphs, n_bits]); returns the batch."""
    if len(bit_lists) != pyg_batch.num_graphs:
        raise ValueError(f"{len(bit_lists)} fingerprints for {pyg_batch.num_graphs} graphs")
    pyg_batch.fingerprint = dense_fingerprints(bit_lists, n_bits)
    return pyg_batch


class FingerprintEncoder(nn.Module):
    """Morgan bits -> MLP (Text2Mol MLP style) -> LayerNorm'd vector of `out_dim`; a drop-in for GraphEncoder."""

    def __init__(self, config: FingerprintConfig):
        super().__init__()
        self.config = config
        self.mlp = nn.Sequential(
            nn.Linear(config.n_bits, config.hidden_dim), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.hidden_dim), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.out_dim),
        )
        self.norm = nn.LayerNorm(config.out_dim)

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    def forward(self, batch) -> torch.Tensor:
        fingerprint = batch if isinstance(batch, torch.Tensor) else getattr(batch, "fingerprint", None)
        if fingerprint is None:
            raise ValueError("the fingerprint model needs Morgan fingerprints on the batch (batch.fingerprint); "
                             "build batches from SMILES (MoMu.embed_graphs(..., smiles=...)) or from data with a "
                             f"'{FINGERPRINT_COLUMN}' column")
        return self.norm(self.mlp(fingerprint))
