"""Config machinery and the model configs every task shares. Field names are the same in YAML, CLI flags
(`--a.b value`) and MLflow params.

Every config rejects unknown fields, so a typo in YAML fails before any work with the field's name. Each task's
job configs live in its own package (`momu.pretrain.config`, `momu.retrieval.config`, `momu.property.config`,
`momu.embed.config`, `momu.index.config`, `momu.serve.config`, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

BUNDLED_TEXT_ENCODER = "bundled:all-MiniLM-L6-v2"
# The shipped checkpoint (momu/checkpoints/) every job that needs a trained MoMu uses by default.
DEFAULT_MODEL = "momu-cpu"


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


class FingerprintConfig(StrictModel):
    """Morgan-fingerprint MLP graph side (Text2Mol's MLP style), used when `graph_encoder: fingerprint`:
    bits -> Linear(n_bits, hidden) - ReLU - Linear(hidden, hidden) - ReLU - Linear(hidden, out_dim) - LayerNorm."""

    radius: int = Field(2, ge=0, le=6)
    n_bits: int = Field(2048, ge=16)
    chirality: bool = True  # RDKit includeChirality
    hidden_dim: int = Field(600, ge=1)
    out_dim: int = Field(300, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class MoMuConfig(StrictModel):
    """The dual encoder: graph tower, text tower, two projection heads into a shared space."""

    graph_encoder: Literal["gin", "fingerprint"] = "gin"  # fingerprint: the Morgan-fingerprint MLP baseline
    graph: GINConfig = Field(default_factory=GINConfig)
    fingerprint: FingerprintConfig = Field(default_factory=FingerprintConfig)
    text: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    proj_dim: int = Field(256, ge=1)
    temperature: float = Field(0.1, gt=0.0)


class ScalingSection(StrictModel):
    """Ray Train scaling: how many workers and what each one gets."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes)")
    use_gpu: bool = Field(False, description="one GPU per worker; NCCL backend")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker (also its torch threads)")
    gpus_per_worker: Optional[float] = Field(None, gt=0, description="defaults to 1 when use_gpu")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement group strategy of the workers; STRICT_SPREAD puts each on its own node "
                            "(the run waits until that many nodes have room)")


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
