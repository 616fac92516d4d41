"""Training data of the caption decoder: captions minus the evaluated molecules, frozen GIN features, a
train/validation split by id hash, the vocabulary, and each molecule's nearest neighbour for retrieve-and-edit.

The frozen encoder's features are computed once (the GIN is not trained here): per molecule its node embeddings
(GIN last layer, float16) and the pooled GIN vector -- exactly what `CaptionDecoder.memory` reads. Pure torch /
RDKit / numpy: no Ray.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import torch
from rdkit import Chem, DataStructs

from momu.caption import pool as P
from momu.chem.featurize import Rejection, featurize_smiles, graphs_to_pyg_batch
from momu.models.gin import global_mean_pool


class GraphFeatureEncoder:
    """Frozen MoMu GIN -> per-molecule node embeddings [n_atoms, d] and pooled vector [d]."""

    def __init__(self, momu):
        if momu.config.graph_encoder != "gin":
            raise ValueError(f"encoder: the caption decoder reads GIN node embeddings; this model's graph encoder "
                             f"is {momu.config.graph_encoder!r}")
        self.momu = momu.eval()
        self.gin = momu.graph_encoder.gin
        self.bond_feature = momu.config.graph.bond_feature
        self.dim = self.gin.out_dim

    @torch.no_grad()
    def encode_graphs(self, graphs: Sequence, batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for start in range(0, len(graphs), batch_size):
            batch = graphs_to_pyg_batch(graphs[start:start + batch_size], self.bond_feature)
            h = self.gin(batch.x, batch.edge_index, batch.edge_attr)
            pooled = global_mean_pool(h, batch.batch, batch.num_graphs)
            counts = torch.bincount(batch.batch, minlength=batch.num_graphs).tolist()
            for nodes, vector in zip(torch.split(h, counts), pooled):
                out.append((nodes.to(torch.float16).clone(), vector.float().clone()))
        return out

    def encode_smiles(self, smiles: Sequence[str], batch_size: int = 256
                      ) -> list[Union[tuple[torch.Tensor, torch.Tensor], Rejection]]:
        """Features per SMILES, or the featurizer's Rejection (unparseable, too large, exotic bond)."""
        graphs = [featurize_smiles(s) for s in smiles]
        good = [i for i, g in enumerate(graphs) if not isinstance(g, Rejection)]
        out: list = list(graphs)
        for i, features in zip(good, self.encode_graphs([graphs[i] for i in good], batch_size)):
            out[i] = features
        return out


def is_validation(identifier: str, fraction: float) -> bool:
    """A stable split: the id's SHA-1 decides, so adding sources never moves a molecule between splits."""
    value = int.from_bytes(hashlib.sha1(identifier.encode()).digest()[:8], "big") / 2 ** 64
    return value < fraction


@dataclass
class CaptionData:
    """What the training job needs, plain arrays only (travels through Ray's object store)."""

    ids: list[str]
    smiles: list[str]
    captions: list[str]
    is_val: np.ndarray                     # bool [n]
    node_offsets: np.ndarray               # int64 [n + 1]: rows of `nodes` per molecule
    nodes: np.ndarray                      # float16 [total_atoms, d]
    pooled: np.ndarray                     # float32 [n, d]
    neighbour: np.ndarray                  # int64 [n]: nearest *training* molecule (never itself)
    neighbour_similarity: np.ndarray       # float32 [n]
    summary: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def features(self, rows: Sequence[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        nodes = [torch.tensor(self.nodes[self.node_offsets[r]:self.node_offsets[r + 1]]) for r in rows]
        return nodes, [torch.tensor(self.pooled[r]) for r in rows]


def nearest_training_neighbours(smiles: Sequence[str], train_rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """For every molecule, the most Tanimoto-similar training molecule other than itself (Morgan r2/2048, the
    retrieval captioner's fingerprint), so training sees the neighbour a test query would get from the pool."""
    gen = P.morgan_generator()
    fps = [P.morgan_fingerprint(Chem.MolFromSmiles(s), gen) for s in smiles]
    train_fps = [fps[r] for r in train_rows]
    train_rows = np.asarray(train_rows)
    best = np.zeros(len(smiles), np.int64)
    score = np.zeros(len(smiles), np.float32)
    for i, fp in enumerate(fps):
        sims = np.asarray(DataStructs.BulkTanimotoSimilarity(fp, train_fps), np.float32)
        sims[train_rows == i] = -1.0
        j = int(np.argmax(sims))
        best[i], score[i] = train_rows[j], sims[j]
    return best, score


def build_caption_data(pool, encoder: GraphFeatureEncoder, val_fraction: float, log=print) -> CaptionData:
    """Training data from a caption pool (`momu.caption.pool`: the sources minus every evaluated molecule by CID,
    canonical SMILES and InChIKey connectivity, deduplicated): encode the molecules with the frozen GIN, split by
    id hash and find retrieve-and-edit neighbours. `summary` counts what was left out and why."""
    started = time.perf_counter()
    removed = {}
    keep = [i for i, c in enumerate(pool.captions) if c and c.strip()]
    removed["empty_caption"] = len(pool) - len(keep)
    features = encoder.encode_smiles([pool.smiles[i] for i in keep])
    good = []
    for j, f in enumerate(features):
        if isinstance(f, Rejection):
            reason = f"featurizer_{f.reason}"
            removed[reason] = removed.get(reason, 0) + 1
        else:
            good.append(j)
    if not good:
        raise ValueError("sources: no trainable molecule left after removing the evaluated molecules")
    rows = [keep[j] for j in good]
    ids = [pool.ids[i] for i in rows]
    captions = [pool.captions[i] for i in rows]
    smiles = [pool.smiles[i] for i in rows]
    feats = [features[j] for j in good]
    is_val = np.array([is_validation(i, val_fraction) for i in ids])
    if len(ids) > 1 and (is_val.all() or not is_val.any()):  # tiny inputs: at least one molecule on each side
        is_val[:] = False
        is_val[-max(1, len(ids) // 10):] = True
    counts = np.array([len(f[0]) for f in feats])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nodes = np.concatenate([f[0].numpy() for f in feats]).astype(np.float16)
    pooled = np.stack([f[1].numpy() for f in feats]).astype(np.float32)
    neighbour, similarity = nearest_training_neighbours(smiles, np.flatnonzero(~is_val))
    summary = {"pool_rows": len(pool), "removed_from_pool": pool.manifest["removed"], "left_out": removed,
               "molecules": len(ids), "train": int((~is_val).sum()), "val": int(is_val.sum()),
               "val_fraction": val_fraction, "atoms": int(offsets[-1]),
               "neighbour_tanimoto_mean": round(float(similarity.mean()), 4),
               "seconds": round(time.perf_counter() - started, 1)}
    log(f"caption data: {summary['molecules']} molecules ({summary['train']} train, {summary['val']} val); "
        f"evaluated molecules removed from the sources: {pool.manifest['removed']['evaluated_total']}")
    return CaptionData(ids, smiles, captions, is_val, offsets, nodes, pooled, neighbour, similarity, summary)


def check_no_evaluated_molecules(data: CaptionData, exclude: Sequence[str]) -> None:
    """Raise if any training molecule is an evaluated one (a guard on top of the removal)."""
    evaluated = [key for path in exclude for key in P.source_keys(P.read_caption_source(path))]
    keys = [P.molecule_keys(i.split(":", 1)[-1], s) for i, s in zip(data.ids, data.smiles)]
    report = P.remove_evaluated_molecules(keys, evaluated)
    leaked = {r: n for r, n in report.counts.items() if r in P.EVALUATED_REASONS}
    if leaked:
        raise AssertionError(f"evaluated molecules in the caption training data: {leaked}")

