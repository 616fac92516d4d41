"""Validated configuration objects. Field names are the same in YAML, CLI flags (`--a.b value`) and MLflow params.

Every config rejects unknown fields, so a typo in YAML fails before any work with the field's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

BUNDLED_TEXT_ENCODER = "bundled:all-MiniLM-L6-v2"


def _loss_pairs(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("at least one of g1t1, g1t2, g2t1, g2t2 is needed")
    return sorted(set(v), key=v.index)  # duplicates removed, order kept


# MoMu's four (graph view, text view) InfoNCE terms; any non-empty subset.
LossPairs = Annotated[list[Literal["g1t1", "g1t2", "g2t1", "g2t2"]], AfterValidator(_loss_pairs)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GINConfig(StrictModel):
    """Graph encoder. Defaults are MoMu's; `pretrain_gnns()` gives the pretrain-gnns variant."""

    num_layers: int = Field(5, ge=2)
    emb_dim: int = Field(300, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    jk: Literal["last", "sum", "concat", "max"] = "last"
    self_loop_bond_type: Literal[0, 4] = 0  # MoMu: (0, 0); pretrain-gnns: (4, 0)
    bond_feature: Literal["stereo", "direction"] = "stereo"  # MoMu pretraining: OGB stereo

    @classmethod
    def pretrain_gnns(cls, **overrides: Any) -> "GINConfig":
        return cls(**{"self_loop_bond_type": 4, "bond_feature": "direction", **overrides})


class TextEncoderConfig(StrictModel):
    """Any Hugging Face AutoModel (local path or hub id). Default: the bundled, offline all-MiniLM-L6-v2."""

    name_or_path: str = BUNDLED_TEXT_ENCODER
    pooling: Literal["pooler", "cls", "mean"] = "mean"  # MoMu used "pooler"; MiniLM's native mode is "mean"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_length: int = Field(128, ge=8, le=4096)  # tokens
    max_chars: Optional[int] = Field(256, ge=1)  # MoMu cut each text to its first 256 characters
    add_special_tokens: bool = True  # MoMu tokenised without [CLS]/[SEP]


class MoMuConfig(StrictModel):
    """The dual encoder: graph tower, text tower, two projection heads into a shared space."""

    graph: GINConfig = Field(default_factory=GINConfig)
    text: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    proj_dim: int = Field(256, ge=1)
    temperature: float = Field(0.1, gt=0.0)


class TrainConfig(StrictModel):
    """The single-process reference contrastive training loop (`momu train-local`)."""

    model: MoMuConfig = Field(default_factory=MoMuConfig)
    data_path: str = "data/sample/chebi20/validation_slice.tsv"
    data_format: Literal["auto", "chebi20", "momu_corpus", "parquet"] = "auto"
    heldout_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # fixed split for model selection / reporting
    max_atoms: int = Field(512, ge=1)
    text_mode: Literal["finetune", "frozen", "locked"] = Field(
        "locked", description="finetune: train both towers; frozen: text tower runs but does not train; locked: "
                              "text features computed once, only the graph tower and heads train")
    losses: LossPairs = ["g1t1", "g1t2", "g2t1", "g2t2"]
    augment1: Literal["drop_nodes", "subgraph", "none"] = "drop_nodes"
    augment2: Literal["drop_nodes", "subgraph", "none"] = "subgraph"
    drop_ratio: float = Field(0.1, ge=0.0, le=1.0)
    subgraph_ratio: float = Field(0.8, ge=0.0, le=1.0)
    batch_size: int = Field(32, ge=2)
    steps: int = Field(300, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-5, ge=0.0)
    eval_every: int = Field(50, ge=1)
    eval_batch_size: int = Field(64, ge=2)  # MoMu's 1-of-64 in-batch protocol
    seed: int = 100
    num_threads: Optional[int] = Field(None, ge=1)
    output_dir: str = "runs/train-local"
    mlflow_tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI or a local SQLite store in runs/
    mlflow_experiment: str = "momu-train-local"


TextMode = Literal["auto", "finetune", "frozen", "locked"]
Augmentation = Literal["drop_nodes", "subgraph", "none"]


class ScalingSection(StrictModel):
    """Ray Train scaling: how many workers and what each one gets."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes)")
    use_gpu: bool = Field(False, description="one GPU per worker; NCCL backend")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker (also its torch threads)")
    gpus_per_worker: Optional[float] = Field(None, gt=0, description="defaults to 1 when use_gpu")


class PretrainConfig(StrictModel):
    """Distributed contrastive pretraining (`momu pretrain`, jobs/pretrain.py).

    objective "momu": graph<->text, MoMu's four InfoNCE losses. objective "graphcl": graph-only, two augmented
    views of each molecule, InfoNCE between them (the GIN initialisation stage MoMu took from GraphCL)."""

    objective: Literal["momu", "graphcl"] = "momu"
    data_paths: list[str] = Field(default_factory=lambda: ["data/sample/chebi20/validation_slice.tsv"],
                                  description="pair files (ChEBI-20 TSV, MoMu corpus dir, records Parquet) for "
                                              "momu; molecule libraries (CSV/SMI/SDF/Parquet) for graphcl")
    data_format: Literal["auto", "chebi20", "momu_corpus", "records_parquet", "library"] = "auto"
    heldout_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="fixed validation part, chosen by id hash")
    max_atoms: int = Field(512, ge=1)
    model: MoMuConfig = Field(default_factory=MoMuConfig)
    graph_init: Optional[str] = Field(None, description="saved MoMu model (dir or models:/ URI) whose GIN "
                                                        "initialises this run, e.g. a graphcl run's output")
    text_mode: TextMode = Field("auto", description="finetune: train both towers; frozen: text tower runs but "
                                "does not train; locked: text features computed once, cached in Parquet; "
                                "auto: finetune on GPU, locked on CPU")
    text_cache_dir: str = Field("runs/text_cache", description="where locked-mode text features are cached")
    losses: LossPairs = ["g1t1", "g1t2", "g2t1", "g2t2"]
    gather_negatives: bool = Field(False, description="all-gather embeddings so negatives come from every "
                                                      "worker's batch (MoMu used per-GPU negatives)")
    augment1: Augmentation = "drop_nodes"
    augment2: Augmentation = "subgraph"
    drop_ratio: float = Field(0.1, ge=0.0, le=1.0)
    subgraph_ratio: float = Field(0.8, ge=0.0, le=1.0)
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-5, ge=0.0)
    batch_size: int = Field(32, ge=2, description="per worker")
    epochs: int = Field(1, ge=1)
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many optimiser steps")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimiser step")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast (GPU only)")
    shuffle_buffer: int = Field(1024, ge=0, description="rows in each worker's local shuffle buffer")
    checkpoint_every: int = Field(100, ge=1, description="optimiser steps between Ray Train checkpoints")
    checkpoints_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(3, ge=0, description="worker-group restarts from the last checkpoint")
    eval_batch_size: int = Field(64, ge=2, description="MoMu's 1-of-64 in-batch validation protocol")
    log_every: int = Field(10, ge=1, description="steps between MLflow metric flushes")
    seed: int = 100
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    storage_path: str = Field("runs/ray_results", description="Ray Train storage (local dir, s3://, gs://)")
    run_name: Optional[str] = Field(None, description="Ray Train run name (default: from objective and time). Reusing a name "
                                    "with the same storage_path continues that run from its last checkpoint")
    resume: Optional[str] = Field(None, description="checkpoint directory of an earlier run to continue from")
    mlflow_tracking_uri: Optional[str] = None
    mlflow_experiment: str = "momu-pretrain"
    register_model_name: Optional[str] = Field("momu", description="Model Registry name (None: do not register)")
    embedding_plot: bool = Field(True, description="log a t-SNE plot of validation embeddings")

    @model_validator(mode="after")
    def _consistent(self) -> "PretrainConfig":
        if self.precision == "bf16" and not self.scaling.use_gpu:
            raise ValueError("precision: bf16 autocast needs scaling.use_gpu: true")
        if not self.data_paths:
            raise ValueError("data_paths: give at least one input")
        return self

    def resolved_text_mode(self) -> str:
        if self.text_mode != "auto":
            return self.text_mode
        return "finetune" if self.scaling.use_gpu else "locked"


class ConfigError(ValueError):
    """A config that failed validation; the message names every bad field."""


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    lines = [f"invalid {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {field}: {e['msg']}" + (f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""))
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], value parsed as YAML, so 1e-4 / true / [a, b] work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like field.name=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else raw


def set_nested(data: dict, path: list[str], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {key} is not a section")
    data[path[-1]] = value


def load_config(cls: type[StrictModel], path: Optional[str | Path] = None, overrides: Optional[dict[str, Any]] = None):
    """Build a config from an optional YAML file plus dotted-name overrides; raise ConfigError naming fields."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of field names")
        data = loaded
    for dotted, value in (overrides or {}).items():
        set_nested(data, dotted.split("."), value)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path) if path else cls.__name__)) from None


def flatten_config(config: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {'model.graph.num_layers': 5, ...} (the MLflow param names)."""
    out: dict[str, Any] = {}
    for key, value in config:
        name = f"{prefix}{key}"
        if isinstance(value, BaseModel):
            out.update(flatten_config(value, name + "."))
        else:
            out[name] = value
    return out
