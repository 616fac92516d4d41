"""Configs of MoFlow: the model's hyperparameters (MoFlow's `Hyperparameters`) and the training job
(`momu finetune moflow`). Defaults are MoFlow's ZINC250k setting (Zang & Wang 2020, calvin-zcx/moflow README)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from momu.config import ScalingSection, StrictModel

# MoFlow's ZINC250k atom vocabulary: C N O F P S Cl Br I, and 0 = the virtual (padding) atom, always last.
ZINC250K_ATOMIC_NUMBERS = [6, 7, 8, 9, 15, 16, 17, 35, 53, 0]


class MoFlowConfig(StrictModel):
    """MoFlow = Glow on the bond tensor [4, N, N] + graph-conditional flow on the atom matrix [N, T]."""

    max_atoms: int = Field(38, ge=2, description="N: atoms per molecule incl. virtual padding (ZINC250k: 38)")
    atomic_numbers: list[int] = Field(default_factory=lambda: list(ZINC250K_ATOMIC_NUMBERS),
                                      description="atom types T; the last must be 0 (virtual atom)")
    # Bond flow (Glow): squeeze folds [4, N, N] into [4 f^2, N/f, N/f]; each coupling conditions one channel half
    # on the other with conv3x3 layers.
    bond_flows: int = Field(10, ge=1, description="coupling layers per Glow block (MoFlow b_n_flow)")
    bond_blocks: int = Field(1, ge=1, description="Glow blocks (MoFlow b_n_block)")
    squeeze_fold: int = Field(19, ge=1, description="squeeze fold f; must divide max_atoms (MoFlow ZINC: 19)")
    bond_hidden: list[int] = Field(default_factory=lambda: [512, 512],
                                   description="conv3x3 channels of each coupling network (MoFlow b_hidden_ch)")
    bond_mixing: Literal["swap", "lu", "plain"] = Field(
        "swap", description="channel mixing between couplings (MoFlow b_conv_lu): swap = no 1x1 conv, alternate "
                            "which half is updated (2, MoFlow's ZINC setting); lu = invertible 1x1 conv, LU-"
                            "parametrised (1, its QM9 setting); plain = invertible 1x1 conv, full matrix (0)")
    # Atom flow: each coupling updates mask_row_size rows (atoms) from the others and the graph (relational GCN).
    atom_flows: int = Field(38, ge=1, description="coupling layers per atom block (MoFlow a_n_flow)")
    atom_blocks: int = Field(1, ge=1, description="MoFlow a_n_block")
    atom_gnn_hidden: list[int] = Field(default_factory=lambda: [256], description="RelGCN widths (a_hidden_gnn)")
    atom_linear_hidden: list[int] = Field(default_factory=lambda: [512, 64],
                                          description="per-atom linear widths after the GCN (a_hidden_lin)")
    mask_row_size: int = Field(1, ge=1, description="atoms updated per coupling")
    mask_row_stride: int = Field(1, ge=1, description="shift of the updated rows between couplings")
    noise_scale: float = Field(0.6, gt=0.0, description="dequantisation: x + U(0, 1) * noise_scale in training")
    learn_prior_var: bool = Field(True, description="learn one prior log-variance (MoFlow learn_dist)")
    atom_logdet: Literal["exact", "moflow"] = Field(
        "exact", description="exact: the atom couplings' log-det sums log s over the rows they change; moflow: "
                             "over every row, as MoFlow's released code does (its comment: 'possibly wrong')")

    @model_validator(mode="after")
    def _consistent(self) -> "MoFlowConfig":
        if self.max_atoms % self.squeeze_fold:
            raise ValueError(f"squeeze_fold {self.squeeze_fold} must divide max_atoms {self.max_atoms}")
        if len(self.atomic_numbers) < 2 or self.atomic_numbers[-1] != 0 or 0 in self.atomic_numbers[:-1]:
            raise ValueError("atomic_numbers: the last entry (only) must be 0, the virtual atom")
        if self.mask_row_size >= self.max_atoms:
            raise ValueError("mask_row_size must be below max_atoms")
        if not self.bond_hidden or not self.atom_linear_hidden:
            raise ValueError("bond_hidden and atom_linear_hidden need at least one layer")
        return self

    @property
    def num_atom_types(self) -> int:
        return len(self.atomic_numbers)

    @property
    def atom_size(self) -> int:
        return self.max_atoms * self.num_atom_types

    @property
    def bond_size(self) -> int:
        return 4 * self.max_atoms * self.max_atoms

    @property
    def latent_size(self) -> int:
        return self.atom_size + self.bond_size


class MoFlowDataSection(StrictModel):
    """ZINC250k (or any CSV with a smiles column / .smi file) and its held-out part."""

    path: str = Field("../shared/data/zinc250k/zinc250k.csv.gz", description="CSV[.gz] with a smiles column, or .smi")
    split: Literal["moflow", "ddvae", "random", "none"] = Field(
        "moflow", description="held-out part: moflow = MoFlow's valid_idx_zinc.json, ddvae = the ddvae_split column "
                              "(valid + test), random = a seeded heldout_fraction, none")
    valid_idx_path: Optional[str] = Field("../shared/data/zinc250k/valid_idx_zinc.json",
                                          description="MoFlow's held-out indices (split moflow)")
    heldout_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="split random")
    max_molecules: Optional[int] = Field(None, ge=1, description="cap the training molecules (first in file order)")
    max_heldout: Optional[int] = Field(2000, ge=1, description="held-out molecules kept (validation NLL, FCD "
                                                               "reference)")


class MoFlowEvalSection(StrictModel):
    """What the job measures: held-out NLL every epoch; at the end, molecules sampled from the prior."""

    val_molecules: int = Field(512, ge=0, description="held-out molecules of the per-epoch NLL (0: none)")
    epoch_samples: int = Field(100, ge=0, description="molecules sampled after each epoch for a validity check")
    samples: int = Field(1000, ge=0, description="molecules sampled after training for the quality metrics")
    temperature: float = Field(0.85, gt=0.0, description="sampling temperature (MoFlow's and MoMu's 0.85)")
    fcd: bool = Field(True, description="FCD of the corrected samples against the held-out molecules")


class MoFlowTrainConfig(StrictModel):
    """`momu finetune moflow`: MoFlow maximum likelihood on ZINC250k with Ray Train (MoFlow's recipe: Adam 1e-3,
    batch 256, 200 epochs, no schedule)."""

    data: MoFlowDataSection = Field(default_factory=MoFlowDataSection)
    model: MoFlowConfig = Field(default_factory=MoFlowConfig)
    scaling: ScalingSection = Field(default_factory=lambda: ScalingSection(num_workers=2))
    eval: MoFlowEvalSection = Field(default_factory=MoFlowEvalSection)
    batch_size: int = Field(128, ge=2, description="molecules per worker per step (MoFlow: 256 in all)")
    epochs: int = Field(200, ge=1)
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many optimiser steps")
    max_minutes: Optional[float] = Field(None, gt=0.0, description="stop the training loop after this many minutes "
                                         "(of this run; a resumed run starts a new budget), then evaluate and save")
    lr: float = Field(1e-3, gt=0.0)
    seed: int = Field(1, description="initial weights, batch order and dequantisation noise")
    num_threads: Optional[int] = Field(None, ge=1, description="torch threads per worker (default: cpus_per_worker)")
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints (and one after each epoch)")
    checkpoints_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(3, ge=0, description="worker-group restarts from the last checkpoint")
    resume: Optional[str] = Field(None, description="continue from a checkpoint or run directory")
    log_every: int = Field(20, ge=1, description="steps between MLflow metric flushes")
    storage_path: str = "runs/ray_results"
    run_name: Optional[str] = None
    output_dir: Optional[str] = Field(None, description="where the final model is saved (default: in the run)")
    mlflow_tracking_uri: Optional[str] = None
    mlflow_experiment: str = "momu-moflow"
    register_model_name: Optional[str] = Field("moflow-zinc250k", description="MLflow registry name (None: none)")


class MoFlowOptimiseConfig(StrictModel):
    """Zero-shot text -> molecule generation as MoMu did it: optimise MoFlow latents so that MoMu's embedding of the
    decoded graph approaches the prompt's. Defaults: the released procedure (Graph_generate.py)."""

    mode: Literal["momu-exact", "soft-bond"] = Field(
        "momu-exact", description="momu-exact: the GIN sees the decoded, discrete (kekulized) bond skeleton, so only "
                                  "the atom part of z gets gradient (the released code); soft-bond: bond "
                                  "probabilities weight the GIN's messages, so the bond part of z gets gradient too "
                                  "(our variant; MoFlow's no-bond channel is never read as MoMu's aromatic bond)")
    seeds: int = Field(60, ge=1, description="latent seeds per prompt, optimised together as one batch")
    steps: int = Field(500, ge=0, description="Adam updates")
    lr: float = Field(0.1, gt=0.0)
    lr_step: int = Field(400, ge=1, description="StepLR step size")
    lr_gamma: float = Field(0.1, gt=0.0, le=1.0, description="StepLR factor")
    temperature: float = Field(0.85, gt=0.0, description="initial z ~ N(0, (temperature * prior std)^2)")
    loss_temperature: float = Field(0.1, gt=0.0, description="loss = -cosine / loss_temperature (MoMu's 0.1)")
    seed: int = Field(0, description="base seed: seed s draws its initial z from (seed, s)")
    correct: bool = Field(True, description="decode the final z with MoFlow's valency correction")
