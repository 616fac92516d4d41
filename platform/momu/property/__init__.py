"""Molecular property prediction (MoleculeNet): GIN + head (model), masked metrics, finetuning (train), the Ray
Tune sweep and batch prediction; `momu finetune property`, `momu finetune property-sweep`, `momu predict property`."""
