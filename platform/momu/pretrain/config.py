"""Configs of contrastive pretraining: the single-process reference loop and the Ray Train job."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, model_validator

from momu.config import MoMuConfig, ScalingSection, StrictModel


def _loss_pairs(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("at least one of g1t1, g1t2, g2t1, g2t2 is needed")
    return sorted(set(v), key=v.index)  # duplicates removed, order kept


# MoMu's four (graph view, text view) InfoNCE terms; any non-empty subset.
LossPairs = Annotated[list[Literal["g1t1", "g1t2", "g2t1", "g2t2"]], AfterValidator(_loss_pairs)]


TRAIN_LAYERS_HELP = ("text_mode partial: how many top text-encoder layers train (the hidden states entering "
                     "them are cached once); needed by partial, refused by the other modes")


def check_text_train_layers(text_mode: str, text_train_layers: Optional[int]) -> None:
    if text_mode == "partial" and text_train_layers is None:
        raise ValueError("text_train_layers: text_mode partial needs the number of top text layers to train")
    if text_mode != "partial" and text_train_layers is not None:
        raise ValueError(f"text_train_layers: only text_mode partial uses it (text_mode is {text_mode})")


class TrainConfig(StrictModel):
    """The single-process reference contrastive training loop (`momu train-local`)."""

    model: MoMuConfig = Field(default_factory=MoMuConfig)
    data_path: str = "data/sample/chebi20/validation_slice.tsv"
    data_format: Literal["auto", "chebi20", "momu_corpus", "parquet"] = "auto"
    heldout_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # fixed split for model selection / reporting
    max_atoms: int = Field(512, ge=1)
    text_mode: Literal["finetune", "frozen", "locked", "partial"] = Field(
        "locked", description="finetune: train both towers; frozen: text tower runs but does not train; locked: "
                              "text features computed once, only the graph tower and heads train; partial: the "
                              "hidden states below the top text_train_layers layers computed once, those layers train")
    text_train_layers: Optional[int] = Field(None, ge=1, description=TRAIN_LAYERS_HELP)
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

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        check_text_train_layers(self.text_mode, self.text_train_layers)
        return self


TextMode = Literal["auto", "finetune", "frozen", "locked", "partial"]
Augmentation = Literal["drop_nodes", "subgraph", "none"]


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
                                "partial: the top text_train_layers layers train on cached lower-layer hidden "
                                "states; auto: finetune on GPU, locked on CPU")
    text_train_layers: Optional[int] = Field(None, ge=1, description=TRAIN_LAYERS_HELP)
    text_cache_dir: str = Field("runs/text_cache", description="where locked/partial-mode text inputs are cached")
    text_cache_dtype: Literal["float16", "float32"] = Field(
        "float16", description="partial mode: the cached hidden states' type (float16 halves the cache)")
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
        check_text_train_layers(self.resolved_text_mode(), self.text_train_layers)
        return self

    def resolved_text_mode(self) -> str:
        if self.text_mode != "auto":
            return self.text_mode
        return "finetune" if self.scaling.use_gpu else "locked"
