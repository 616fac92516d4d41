"""The MoMu / pretrain-gnns GIN graph encoder (node embeddings only; pooling and heads live outside).

Per layer: h_i' = BN(MLP(h_i + sum_{j in N(i) + self} (h_j + edge_emb(e_ji)))) with MLP 300 -> 600 -> 300,
ReLU between layers (not after the last), dropout after every layer, JK "last" by default. Self-loops are added
inside each layer with a configurable bond attribute: MoMu uses (0, 0), pretrain-gnns (4, 0).

This is written with `index_add_` rather than PyG's MessagePassing: the arithmetic is the same sum
aggregation, and it keeps the model free of optional scatter extensions.
"""

from __future__ import annotations

import torch
from torch import nn

from momu.chem.featurize import NUM_ATOM_TYPES, NUM_BOND_SECOND, NUM_BOND_TYPES, NUM_CHIRALITY_TAGS


class GINConv(nn.Module):
    """One GIN layer with bond embeddings added to neighbour messages (Hu et al. 2020)."""

    def __init__(self, emb_dim: int, self_loop_bond_type: int = 0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(emb_dim, 2 * emb_dim), nn.ReLU(), nn.Linear(2 * emb_dim, emb_dim))
        self.edge_embedding1 = nn.Embedding(NUM_BOND_TYPES, emb_dim)
        self.edge_embedding2 = nn.Embedding(NUM_BOND_SECOND, emb_dim)
        self.self_loop_bond_type = self_loop_bond_type
        nn.init.xavier_uniform_(self.edge_embedding1.weight)
        nn.init.xavier_uniform_(self.edge_embedding2.weight)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        edge_emb = self.edge_embedding1(edge_attr[:, 0]) + self.edge_embedding2(edge_attr[:, 1])
        # Self-loop message: h_i + embedding of the self-loop bond attribute (self_loop_bond_type, 0).
        loop_emb = self.edge_embedding1.weight[self.self_loop_bond_type] + self.edge_embedding2.weight[0]
        messages = x[edge_index[0]] + edge_emb
        aggregated = (x + loop_emb).index_add(0, edge_index[1], messages)
        return self.mlp(aggregated)


class GIN(nn.Module):
    """Stack of GINConv + BatchNorm layers over atom-type + chirality embeddings; returns node embeddings."""

    def __init__(
        self,
        num_layers: int = 5,
        emb_dim: int = 300,
        dropout: float = 0.0,
        jk: str = "last",
        self_loop_bond_type: int = 0,
    ):
        super().__init__()
        if num_layers < 2:
            raise ValueError("GIN needs at least 2 layers")
        if jk not in ("last", "sum", "concat", "max"):
            raise ValueError(f"jk must be one of last/sum/concat/max, got {jk!r}")
        self.num_layers, self.emb_dim, self.dropout, self.jk = num_layers, emb_dim, dropout, jk
        self.x_embedding1 = nn.Embedding(NUM_ATOM_TYPES, emb_dim)
        self.x_embedding2 = nn.Embedding(NUM_CHIRALITY_TAGS, emb_dim)
        nn.init.xavier_uniform_(self.x_embedding1.weight)
        nn.init.xavier_uniform_(self.x_embedding2.weight)
        self.gnns = nn.ModuleList(GINConv(emb_dim, self_loop_bond_type) for _ in range(num_layers))
        self.batch_norms = nn.ModuleList(nn.BatchNorm1d(emb_dim) for _ in range(num_layers))

    @property
    def out_dim(self) -> int:
        return self.emb_dim * self.num_layers if self.jk == "concat" else self.emb_dim

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        h = self.x_embedding1(x[:, 0]) + self.x_embedding2(x[:, 1])
        layers = []
        for i, (conv, bn) in enumerate(zip(self.gnns, self.batch_norms)):
            h = bn(conv(h, edge_index, edge_attr))
            if i < self.num_layers - 1:
                h = torch.relu(h)
            h = nn.functional.dropout(h, self.dropout, training=self.training)
            layers.append(h)
        if self.jk == "last":
            return layers[-1]
        if self.jk == "concat":
            return torch.cat(layers, dim=1)
        stacked = torch.stack(layers, dim=0)
        return stacked.sum(0) if self.jk == "sum" else stacked.max(0).values


def global_mean_pool(h: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Mean of node embeddings per graph (every node counts, isolated ones included)."""
    sums = h.new_zeros(num_graphs, h.shape[1]).index_add_(0, batch, h)
    counts = torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(h.dtype)
    return sums / counts.unsqueeze(1)


class GraphEncoder(nn.Module):
    """GIN + mean pooling: a PyG Batch -> one vector per molecule."""

    def __init__(self, gin: GIN):
        super().__init__()
        self.gin = gin

    @property
    def out_dim(self) -> int:
        return self.gin.out_dim

    def forward(self, batch) -> torch.Tensor:
        h = self.gin(batch.x, batch.edge_index, batch.edge_attr)
        return global_mean_pool(h, batch.batch, batch.num_graphs)
