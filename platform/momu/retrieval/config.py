"""Configs of retrieval: the evaluation job and VSE++ retrieval finetuning (the pretraining job's recipe)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from momu.config import ScalingSection, StrictModel
from momu.pretrain.config import Augmentation, PretrainConfig


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
