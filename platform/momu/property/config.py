"""Configs of property prediction: one finetuning run and the Ray Tune sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from momu.config import GINConfig, StrictModel


def _pretrain_gnns_finetune_gin() -> GINConfig:
    return GINConfig.pretrain_gnns(dropout=0.5)


class PropertyDataSection(StrictModel):
    """A property dataset: a CSV (or .csv.gz) with a SMILES column and label columns (blank = missing label)."""

    path: str = Field("../shared/data/moleculenet/bbbp.csv", description="CSV / .csv.gz with SMILES + labels")
    name: Optional[str] = Field(None, description="display name (default: the file name without extensions)")
    smiles_column: Optional[str] = Field(None, description="default: auto-detect (smiles / mol)")
    task_columns: Optional[list[str]] = Field(None, description="label columns (default: every other column)")
    max_tasks: Optional[int] = Field(None, ge=1, description="keep only the first N tasks (a reduced protocol)")
    task_type: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto: classification when every present label is 0 or 1")
    split: Literal["scaffold", "random"] = Field("scaffold", description="Bemis-Murcko scaffold (MoleculeNet "
                                                 "protocol, deterministic) or seeded random")
    split_fractions: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1], description="train/valid/test")
    split_seed: int = Field(0, description="seed of the random split and of any subsampling")
    split_file: Optional[str] = Field(None, description="reuse a saved split.json instead of computing one")
    max_atoms: int = Field(512, ge=1)
    max_train_molecules: Optional[int] = Field(None, ge=1, description="cap the training part (reduced protocol)")
    max_eval_molecules: Optional[int] = Field(None, ge=1, description="cap the valid and test parts each")
    subsample: Literal["random", "keep_positives"] = Field(
        "random", description="how capped parts are drawn: uniformly, or molecules with a positive label first "
                              "(up to half the cap) and the rest uniformly (keeps rare actives, e.g. MUV, HIV)")
    cache_dir: Optional[str] = Field("runs/property_cache", description="featurized data + split cache (None: off)")

    @model_validator(mode="after")
    def _fractions(self) -> "PropertyDataSection":
        f = self.split_fractions
        if len(f) != 3 or any(x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions: three non-negative numbers summing to 1 expected, got {f}")
        return self

    def display_name(self) -> str:
        if self.name:
            return self.name
        base = Path(self.path).name
        for suffix in (".gz", ".csv", ".tsv"):
            base = base[: -len(suffix)] if base.lower().endswith(suffix) else base
        return base


class PropertyModelSection(StrictModel):
    """GIN + mean pool + linear head. `init` picks the GIN's starting weights."""

    init: str = Field("random", description="'random', or a saved MoMu model (directory or models:/ URI) whose GIN "
                                            "initialises the encoder: a MoMu or a graph-only (graphcl) model")
    features_from: Literal["config", "init"] = Field(
        "config", description="config: bond feature and self-loop type from model.graph (default: the "
                              "pretrain-gnns finetuning featurization MoMu used, bond direction + self-loop (4,0)); "
                              "init: keep the pretrained model's own featurization")
    graph: GINConfig = Field(default_factory=_pretrain_gnns_finetune_gin,
                             description="random init: the whole GIN; pretrained init: only dropout and (with "
                                         "features_from=config) the featurization; sizes come from the init")
    head_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the pooled vector (the GIN's own "
                                                                  "dropout already follows its last layer)")


class PropertyTrainSection(StrictModel):
    """Finetuning hyperparameters (defaults: MoMu's / pretrain-gnns' recipe)."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    eval_batch_size: int = Field(256, ge=1)
    test_every_epoch: bool = Field(False, description="evaluate test every epoch (default: once, on the "
                                                      "best-validation weights, which gives the same reported number)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast (CPU AMX or GPU)")
    num_threads: Optional[int] = Field(None, ge=1, description="torch CPU threads")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class PropertyFinetuneConfig(StrictModel):
    """Finetune a GIN for molecular property prediction (`momu finetune property`)."""

    data: PropertyDataSection = Field(default_factory=PropertyDataSection)
    model: PropertyModelSection = Field(default_factory=PropertyModelSection)
    train: PropertyTrainSection = Field(default_factory=PropertyTrainSection)
    seed: int = Field(0, description="model initialisation and batch order (the scaffold split does not depend on it)")
    output_dir: str = "runs/finetune-property"
    save_model: bool = True
    mlflow_tracking_uri: Optional[str] = None
    mlflow_experiment: str = "momu-property"


class PropertySweepConfig(StrictModel):
    """Seeds x datasets x initialisations as parallel Ray Tune trials (`momu finetune property-sweep`)."""

    datasets: list[PropertyDataSection] = Field(default_factory=list, description="required: one entry per "
                                                "dataset, each with the fields of a finetune job's data section")
    inits: dict[str, str] = Field(default_factory=lambda: {"random": "random"},
                                  description="name -> 'random' or a saved MoMu model (dir or models:/ URI)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    model: PropertyModelSection = Field(default_factory=PropertyModelSection)
    train: PropertyTrainSection = Field(default_factory=PropertyTrainSection)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent_trials: Optional[int] = Field(None, ge=1, description="default: as many as resources allow")
    max_failures: int = Field(0, ge=0, description="retries of a failed trial")
    output_dir: str = "runs/property-sweep"
    storage_path: str = Field("runs/ray_results", description="Ray Tune storage")
    run_name: Optional[str] = Field(None, description="Tune experiment name (default: from the time); needed "
                                                      "for resume")
    resume: bool = Field(False, description="continue the sweep `run_name` (same output_dir and storage_path): "
                                            "finished trials are kept, unfinished or failed ones run again")
    save_models: bool = False
    reference_rows: bool = Field(True, description="add MoMu's published ROC-AUC rows to the summary table")
    mlflow_tracking_uri: Optional[str] = None
    mlflow_experiment: str = "momu-property-sweep"

    @model_validator(mode="after")
    def _consistent(self) -> "PropertySweepConfig":
        if not self.datasets:
            raise ValueError("datasets: give at least one")
        names = [d.display_name() for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"datasets: names must be unique, got {names}")
        if not self.inits:
            raise ValueError("inits: give at least one (e.g. {random: random})")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: give distinct seeds, got {self.seeds}")
        if self.model.init != "random":
            raise ValueError("model.init: the sweep takes its initialisations from `inits`; leave model.init unset")
        if self.resume and not self.run_name:
            raise ValueError("resume: give the run_name of the sweep to continue")
        return self
