"""MoMu on Ray: a molecule-graph <-> text contrastive foundation model, its data, training and serving."""

__version__ = "0.1.0"
