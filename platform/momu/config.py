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
    views of each molecule, InfoNCE between them (the GIN initialisation stage MoMu took from GraphCL).
    objective "vse": graph<->text VSE++ max-violation hinge on one graph view and one text (retrieval finetuning,
    `momu finetune retrieval`)."""

    objective: Literal["momu", "graphcl", "vse"] = "momu"
    data_paths: list[str] = Field(default_factory=lambda: ["data/sample/chebi20/validation_slice.tsv"],
                                  description="pair files (ChEBI-20 TSV, MoMu corpus dir, records Parquet) for "
                                              "momu; molecule libraries (CSV/SMI/SDF/Parquet) for graphcl")
    data_format: Literal["auto", "chebi20", "momu_corpus", "records_parquet", "library"] = "auto"
    heldout_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="fixed validation part, chosen by id hash")
    max_atoms: int = Field(512, ge=1)
    model: MoMuConfig = Field(default_factory=MoMuConfig)
    graph_init: Optional[str] = Field(None, description="saved MoMu model (dir or models:/ URI) whose GIN "
                                                        "initialises this run, e.g. a graphcl run's output")
    init_from: Optional[str] = Field(None, description="saved MoMu model (dir or models:/ URI) whose every weight "
                                     "initialises this run (finetuning); its config replaces `model`")
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
    lr_schedule: Literal["constant", "warmup_linear"] = Field(
        "constant", description="warmup_linear: linear warm-up over warmup_fraction of the planned steps, then "
                                "linear decay to 0 (BERT/MoMu retrieval finetuning)")
    warmup_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    margin: float = Field(0.2, gt=0.0, description="VSE++ hinge margin (objective vse)")
    select_best: Optional[Literal["acc_mean", "acc_g2t", "acc_t2g"]] = Field(
        None, description="export the weights of the validation (epoch-end, and step 0) with the best held-out "
                          "in-batch accuracy instead of the last ones; acc_mean = mean of both directions")
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
        if self.init_from and self.graph_init:
            raise ValueError("graph_init: init_from already sets every weight; give one of them")
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


# -- serving (issue 6) -------------------------------------------------------------------------------------------

class ServeLimits(StrictModel):
    """Request limits of the Serve app. A request beyond any of them gets a 4xx naming the field and the reason."""

    max_k: int = Field(100, ge=1, le=10_000, description="largest top-k a search may ask for")
    max_items: int = Field(64, ge=1, le=4096, description="SMILES, texts or pairs in one embed/similarity request")
    max_text_chars: int = Field(2000, ge=1, description="longest text (query or description) in characters")
    max_smiles_chars: int = Field(1000, ge=1, description="longest SMILES string in characters")
    max_atoms: int = Field(256, ge=1, description="molecules with more atoms are refused")
    max_body_bytes: int = Field(262_144, ge=1024, description="largest request body in bytes (413 beyond it)")


class ServeBatching(StrictModel):
    """Dynamic batching (`@serve.batch`) in the encoder and index deployments."""

    enabled: bool = Field(True, description="false: every request is encoded on its own (for comparisons)")
    max_batch_size: int = Field(32, ge=1, le=4096, description="items (texts, molecules, queries) per model call")
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, le=10.0, description="longest wait for a batch to fill")


class ServeConfig(StrictModel):
    """Arguments of the Serve application (`serving/app.py`, the `args:` of serving/config.yaml, `momu serve`).

    Relative paths are resolved against the repository root (the directory holding `serving/`)."""

    model: str = Field("runs/demo/model", description="saved MoMu model directory or MLflow models:/ URI")
    molecule_index: Optional[str] = Field("runs/index/moleculenet",
                                          description="index directory (momu index build) or embedding shards "
                                                      "(momu embed) of molecules: text -> molecules; null: off")
    text_index: Optional[str] = Field("runs/index/chebi20_texts",
                                      description="the same for descriptions: SMILES -> texts; null: off")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="encoder device; auto: cuda when available")
    torch_threads: Optional[int] = Field(1, ge=1, description="torch intra-op threads per encoder replica on CPU")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="encoder math: bf16 autocast (AMX CPUs, GPUs) "
                                               "is faster; embeddings differ from fp32 by ~1e-5 in cosine")
    batching: ServeBatching = Field(default_factory=ServeBatching)
    limits: ServeLimits = Field(default_factory=ServeLimits)
    draw_width: int = Field(260, ge=50, le=2000, description="width of the SVG drawings in pixels")
    draw_height: int = Field(200, ge=50, le=2000, description="height of the SVG drawings in pixels")
    api_key: Optional[str] = Field(None, description="if set, every /v1 request needs header x-api-key: <it>")
    api_key_env: Optional[str] = Field(None, description="name of an environment variable holding the API key "
                                                         "(read by the ingress replica; keeps it out of the YAML)")


# -- property prediction (issue 7) --------------------------------------------------------------------------------

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


# -- retrieval evaluation and finetuning (issue 4) ---------------------------------------------------------------

class RetrievalEvalConfig(StrictModel):
    """Cross-modal retrieval evaluation (`momu evaluate retrieval`, jobs/evaluate_retrieval.py): every model in
    `models` (plus chance) on one paired set, graph->text and text->graph, under MoMu's protocol (1-of-64
    in-batch accuracy, Recall@20 vs the whole set; paragraph and sentence level), full rank (MRR, R@1/5/10,
    mean/median rank) and, with `pool_paths`, Text2Mol's text -> molecule-pool ranking."""

    models: dict[str, str] = Field(default_factory=dict, description="name -> saved MoMu model (directory or "
                                   "models:/ URI), reported in this order; a chance row is always added")
    data_path: str = Field("data/sample/chebi20/test_slice.tsv", description="pairs: ChEBI-20 TSV, MoMu corpus "
                           "dir, records Parquet, or (data_format pcdes) a SMILES file aligned by line with text_path")
    data_format: Literal["auto", "chebi20", "pcdes", "momu_corpus", "records_parquet"] = "auto"
    text_path: Optional[str] = Field(None, description="pcdes: the description file, line i describes SMILES line i")
    pool_paths: list[str] = Field(default_factory=list, description="Text2Mol pool: molecule files (pair files or "
                                  "libraries) ranked together with the evaluated molecules, deduplicated by "
                                  "canonical SMILES; [] skips pool ranking")
    limit: Optional[int] = Field(None, ge=2, description="evaluate only the first N usable pairs in file order")
    max_atoms: int = Field(512, ge=1)
    batch_size: int = Field(64, ge=2, description="MoMu's in-batch protocol: consecutive unshuffled batches")
    recall_k: int = Field(20, ge=1, description="MoMu's Recall@k against the whole set")
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], description="full-rank Recall@k values")
    paragraph_chars: Optional[int] = Field(256, ge=1, description="paragraph level: each text's first N characters")
    sentence_level: bool = Field(True, description="also score sentence level (split on '.', mean over sentences)")
    min_sentence_words: int = Field(5, ge=1)
    ties: Literal["pessimistic", "optimistic", "expected"] = Field(
        "pessimistic", description="equal scores: pessimistic counts every tied candidate above the true one")
    embed_batch_size: int = Field(128, ge=1)
    ray_threshold: int = Field(50_000, ge=0, description="embed with Ray Data model actors when more texts + "
                               "molecules than this are to be embedded (0: always)")
    ray_actors: int = Field(1, ge=1, description="model actors per Ray Data embedding stage")
    num_threads: Optional[int] = Field(None, ge=1, description="torch threads (fix it to compare machines)")
    output_dir: str = "runs/evaluate-retrieval"
    mlflow_tracking_uri: Optional[str] = None
    mlflow_experiment: str = "momu-evaluate-retrieval"

    @model_validator(mode="after")
    def _consistent(self) -> "RetrievalEvalConfig":
        if not self.models:
            raise ValueError("models: give at least one model (name: path or models:/ URI)")
        if "chance" in self.models:
            raise ValueError("models: 'chance' is the name of the chance row; pick another name")
        if self.data_format == "pcdes" and not self.text_path:
            raise ValueError("text_path: data_format pcdes needs the description file aligned with data_path")
        if self.text_path and self.data_format not in ("pcdes", "auto"):
            raise ValueError(f"text_path: only used with data_format pcdes, not {self.data_format}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks: give positive ranks, got {self.ks}")
        return self


class RetrievalFinetuneConfig(PretrainConfig):
    """Retrieval finetuning (`momu finetune retrieval`, jobs/finetune_retrieval.py): the Ray Train job of
    `momu pretrain` with MoMu's retrieval recipe as defaults: start from a pretrained model (init_from), VSE++
    max-violation hinge on cosine (margin 0.2), lr 5e-5 with 20% linear warm-up then linear decay, batch 64, no
    graph augmentation, the weights with the best held-out 1-of-64 accuracy exported and registered."""

    objective: Literal["vse", "momu"] = Field("vse", description="vse: VSE++ max-violation hinge (MoMu's retrieval "
                                              "finetuning); momu: the pretraining InfoNCE losses")
    init_from: Optional[str] = Field(None, description="the pretrained MoMu model to finetune (dir or models:/ "
                                     "URI); required. Its config is the run's model config")
    augment1: Augmentation = "none"
    augment2: Augmentation = "none"
    lr: float = Field(5e-5, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    lr_schedule: Literal["constant", "warmup_linear"] = "warmup_linear"
    warmup_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    select_best: Optional[Literal["acc_mean", "acc_g2t", "acc_t2g"]] = Field(
        "acc_mean", description="held-out accuracy that picks the exported weights (MoMu used graph->text)")
    batch_size: int = Field(64, ge=2, description="per worker (in-batch negatives come from this batch)")
    epochs: int = Field(30, ge=1, description="MoMu: at most 30 epochs")
    checkpoint_every: int = Field(500, ge=1, description="optimiser steps between Ray Train checkpoints")
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    embedding_plot: bool = False
    mlflow_experiment: str = "momu-finetune-retrieval"
    register_model_name: Optional[str] = Field("momu-retrieval", description="Model Registry name (None: do not "
                                               "register)")

    @model_validator(mode="after")
    def _needs_init(self) -> "RetrievalFinetuneConfig":
        if not self.init_from:
            raise ValueError("init_from: retrieval finetuning starts from a pretrained model (dir or models:/ URI)")
        return self


# -- batch embedding and vector index (issue 5) ------------------------------------------------------------------

class EmbedConfig(StrictModel):
    """Batch embedding of molecule libraries or texts on Ray Data (`momu embed`, jobs/embed.py).

    Every input row ends up embedded (shards/) or rejected (rejects.parquet, with its reason). Re-running with the
    same output_dir resumes: parts already written are skipped (manifest.json + parts.jsonl)."""

    inputs: list[str] = Field(default_factory=lambda: ["data/sample/moleculenet/bbbp_slice.csv"],
                              description="files, directories or globs: .smi, CSV/TSV, Parquet, SDF(.gz) molecule "
                                          "libraries, ChEBI-20 style .txt tables; texts mode: CSV/TSV/.txt/Parquet")
    mode: Literal["molecules", "texts"] = Field("molecules", description="molecules: graph tower on SMILES; texts: "
                                                "text tower on a text column (e.g. ChEBI-20 descriptions)")
    model: str = Field("runs/demo/model", description="saved MoMu directory or MLflow models:/name/version URI")
    output_dir: str = Field("runs/embeddings/default", description="shards/, rejects.parquet, manifest, DONE.json")
    smiles_column: Optional[str] = Field(None, description="SMILES column (default: auto-detect)")
    id_column: Optional[str] = Field(None, description="id column or SDF property, e.g. PUBCHEM_COMPOUND_CID "
                                     "(default: auto-detect, else the row number)")
    text_column: Optional[str] = Field(None, description="texts mode: text column (default: description/text)")
    prefix_ids_with_file: bool = Field(False, description="ids become '<file name>:<id>' (row-number ids of "
                                       "several files would otherwise collide)")
    max_atoms: int = Field(512, ge=1, description="molecules with more atoms are rejected (too_many_atoms)")
    embedding_dtype: Literal["float32", "float16"] = Field("float32", description="stored embedding precision")
    part_rows: int = Field(16_384, ge=1, description="input rows per part, the unit of resume")
    featurize_batch_rows: int = Field(1024, ge=1, description="rows per featurization task batch")
    batch_size: int = Field(256, ge=1, description="molecules / texts per model forward pass")
    shard_rows: int = Field(16_384, ge=1, description="rows collected before a writer task writes shard files")
    model_actors: int = Field(1, ge=1, description="model actors (one model replica each)")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per model actor")
    gpus_per_actor: Optional[float] = Field(None, ge=0, description="GPUs per model actor (default: 1 when the "
                                            "cluster has GPUs, else 0)")
    torch_threads: Optional[int] = Field(None, ge=1, description="torch threads per model actor (default: "
                                         "cpus_per_actor)")
    featurize_cpus: float = Field(1.0, gt=0, description="CPUs reserved per featurization task")
    read_cpus: float = Field(0.25, gt=0, description="CPUs reserved per file-reading task")
    read_tasks: int = Field(2, ge=1, description="files read at the same time (each reader holds its CPUs until "
                            "its file is read; SDF parsing is RDKit work, so raise it for many .sdf.gz files)")
    check_duplicate_ids: bool = Field(True, description="count ids that occur more than once (both rows are "
                                      "embedded; the count is reported as a warning)")
    stop_after_parts: Optional[int] = Field(None, ge=1, description="stop cleanly after this many parts (staged "
                                            "runs; the next run resumes)")
    progress: bool = Field(True, description="Ray Data progress bars")
    mlflow_tracking_uri: Optional[str] = None
    mlflow_experiment: str = "momu-embed"

    @model_validator(mode="before")
    @classmethod
    def _single_input(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("inputs"), str):
            data = {**data, "inputs": [data["inputs"]]}  # `--inputs file.smi` as well as `--inputs [a, b]`
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "EmbedConfig":
        if not self.inputs:
            raise ValueError("inputs: give at least one file, directory or glob")
        if not self.model:
            raise ValueError("model: give a saved MoMu directory or a models:/ URI")
        return self


class IndexParamsSection(StrictModel):
    """FAISS / exact-search parameters (momu.index.DEFAULT_PARAMS; null = derived from the data)."""

    exact_max_rows: int = Field(200_000, ge=0, description="kind auto: exact search up to this many rows, else ivf_pq")
    nlist: Optional[int] = Field(None, ge=1, description="ivf_pq inverted lists (default ~4*sqrt(rows))")
    m: Optional[int] = Field(None, ge=1, description="ivf_pq sub-quantizers = bytes per row (default dim/4)")
    nbits: Optional[int] = Field(None, ge=1, le=16, description="ivf_pq bits per code (default 8)")
    nprobe: int = Field(32, ge=1, description="ivf_pq lists visited per query")
    train_rows: Optional[int] = Field(None, ge=1, description="ivf_pq training sample size")
    refine_k_factor: int = Field(0, ge=0, description="ivf_pq: re-rank k*factor candidates exactly (0 = off)")
    hnsw_m: int = Field(32, ge=2, description="hnsw graph degree")
    ef_construction: int = Field(100, ge=1)
    ef_search: int = Field(64, ge=1, description="hnsw candidates per query")
    seed: int = Field(0, ge=0)


class IndexBuildConfig(StrictModel):
    """Build a vector index over embedding shards (`momu index build`, jobs/build_index.py)."""

    shards: str = Field("runs/embeddings/default", description="embedding job output dir, a dir of Parquet "
                        "shards, or a glob")
    output: str = Field("runs/index/default", description="index directory to write")
    kind: Literal["auto", "exact", "ivf_pq", "hnsw"] = "auto"
    params: IndexParamsSection = Field(default_factory=IndexParamsSection)
    recall_queries: int = Field(1000, ge=0, description="approximate kinds: measure recall@recall_k against exact "
                                "search on this many indexed rows used as queries (0 = skip)")
    recall_k: int = Field(10, ge=1)
    mlflow_tracking_uri: Optional[str] = None
    mlflow_experiment: str = "momu-index"
