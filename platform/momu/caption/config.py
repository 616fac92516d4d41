"""Configs of the caption package: scoring (`momu evaluate caption`), the retrieval captioner's pool
(`momu caption pool`), batch captioning (`momu caption`) and split evaluation (`momu evaluate caption-retrieval`)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from momu.config import ScalingSection, StrictModel


class CaptionMetricsConfig(StrictModel):
    """How captions are scored; the defaults are MolT5's recipe."""

    vocab_file: Optional[str] = Field(
        None, description="SciBERT scivocab-uncased vocab.txt for BLEU/METEOR tokens "
                          "(default: the bundled data/scibert_vocab/vocab.txt, else ../shared/data/scibert_vocab/)")
    max_length: int = Field(512, ge=1, description="WordPiece tokens kept per caption (MolT5: 512)")
    meteor: bool = Field(True, description="compute METEOR (needs WordNet 3.0: run .ci/install-wordnet)")


class PoolSource(StrictModel):
    """One caption source: a ChEBI-20-style table (`CID<TAB>SMILES<TAB>description`, header line)."""

    name: str = Field(..., min_length=1, description="short name, the prefix of pool ids (e.g. chebi20-validation)")
    path: str = Field(..., min_length=1, description="the table file")


class CaptionSourcesConfig(StrictModel):
    """Caption sources minus the evaluated splits' molecules: the pool's and the decoder's training data."""

    sources: list[PoolSource] = Field(
        default_factory=lambda: [{"name": "chebi20-validation", "path": "../shared/data/chebi20/validation.txt"},
                                 {"name": "pubchem324k-valid", "path": "../shared/data/pubchem324k/valid.tsv"},
                                 {"name": "pubchem324k-test", "path": "../shared/data/pubchem324k/test.tsv"}],
        validate_default=True, min_length=1, description="caption sources, in priority order (a molecule in several keeps the first "
                                  "source's caption)")
    exclude: list[str] = Field(default_factory=lambda: ["../shared/data/chebi20/test.txt"],
                               description="evaluated splits (same table format): their molecules are removed by "
                                           "CID, canonical SMILES and InChIKey connectivity block")


class CaptionPoolConfig(CaptionSourcesConfig):
    """Build a retrieval caption pool (`momu caption pool`): sources minus the evaluated splits' molecules."""

    output_dir: str = Field("runs/caption/chebi20_pool", description="the pool directory (must not hold a pool "
                            "yet)")
    model: Optional[str] = Field(None, description="also store this MoMu model's graph and caption embeddings "
                                 "(directory, published name such as momu-cpu, or models:/ URI); null: none")
    ranker: bool = Field(True, description="with a model: also train the pool's learned caption ranker (momu "
                         "caption train-ranker with its defaults; ~1.5 min for 5.5k molecules on 2 cores)")
    batch_size: int = Field(128, ge=1, description="molecules / captions per forward pass when embedding")


class CaptionerSettings(StrictModel):
    """The retrieval captioner's pool, model and fusion settings (shared by the job and the split evaluation)."""

    captioner: str = Field("runs/caption/chebi20_pool", description="caption pool directory (momu caption pool), "
                           "or a decoder captioner directory (a momu finetune caption export)")
    model: Optional[str] = Field(None, description="MoMu model for kind momu/fusion/ranked (directory, published name "
                                 "such as momu-cpu, or models:/ URI)")
    fusion_k: int = Field(10, ge=1, description="fusion: Tanimoto candidates re-ranked")
    fusion_weight: float = Field(0.5, ge=0.0, le=1.0, description="fusion: weight of the MoMu graph<->caption "
                                 "cosine (1 - it: Tanimoto)")


class RetrievalCaptionerConfig(CaptionerSettings):
    """Which retrieval captioner: pool, similarity kind, model and fusion settings."""

    kind: Literal["auto", "tanimoto", "momu", "fusion", "ranked"] = Field(
        "auto", description="tanimoto: Morgan r2/2048 Tanimoto; momu: MoMu graph-embedding cosine; fusion: "
                            "Tanimoto top-k re-ranked by MoMu graph<->caption similarity; ranked: Tanimoto top-k "
                            "chosen by the pool's learned caption ranker (momu caption train-ranker); auto: ranked "
                            "when the pool holds a ranker (with the model its embeddings were made by, unless "
                            "`model` names one), else tanimoto")

    @model_validator(mode="after")
    def _model_for_momu(self):
        if self.kind not in ("tanimoto", "auto") and not self.model:
            raise ValueError(f"model: kind {self.kind!r} needs a MoMu model")
        return self


class CaptionJobConfig(RetrievalCaptionerConfig):
    """Batch captioning of molecule libraries on Ray Data (`momu caption`)."""

    inputs: list[str] = Field(default_factory=lambda: ["data/sample/moleculenet/bbbp_slice.csv"], min_length=1,
                              description="files, directories or globs: .smi, CSV/TSV, "
                              "Parquet, SDF(.gz), ChEBI-20 style .txt tables")
    output_dir: str = Field("runs/caption/batch", description="captions/*.parquet, rejects.parquet, "
                            "manifest.json (must be new or empty)")
    smiles_column: Optional[str] = Field(None, description="SMILES column (default: auto-detect)")
    id_column: Optional[str] = Field(None, description="id column or SDF property (default: auto-detect, else the "
                                     "row number)")
    part_rows: int = Field(4096, ge=1, description="input rows per part (one writer file each)")
    batch_size: int = Field(256, ge=1, description="molecules per captioner call")
    actors: int = Field(1, ge=1, description="captioner actors (each holds the pool and model)")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per captioner actor")

    @model_validator(mode="before")
    @classmethod
    def _single_input(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("inputs"), str):
            data = {**data, "inputs": [data["inputs"]]}  # `--inputs lib.smi` as well as `--inputs [a, b]`
        return data


class CaptionRetrievalEvalConfig(CaptionerSettings):
    """Caption an evaluated split with retrieval captioners and score them (`momu evaluate caption-retrieval`)."""

    split: str = Field("../shared/data/chebi20/test.txt", description="the evaluated split (ChEBI-20 format)")
    kinds: list[Literal["random", "tanimoto", "momu", "fusion", "ranked"]] = Field(
        default_factory=lambda: ["random", "tanimoto"], description="captioners to run (random: a random pool "
                                                                    "caption, the floor)")
    output_dir: str = Field("runs/caption/chebi20_test", description="predictions_<kind>.tsv and metrics.json")
    seed: int = Field(0, description="seed of the random floor")
    limit: Optional[int] = Field(None, ge=1, description="caption only the first N rows (smoke runs)")
    meteor: bool = Field(True, description="compute METEOR (needs WordNet 3.0: run .ci/install-wordnet)")

    @model_validator(mode="after")
    def _model_for_kinds(self):
        if any(k in ("momu", "fusion", "ranked") for k in self.kinds) and not self.model:
            raise ValueError("model: kinds momu/fusion/ranked need a MoMu model")
        return self


class CaptionRankerConfig(StrictModel):
    """Train the learned caption ranker of a pool (`momu caption train-ranker`; momu.caption.ranker)."""

    pool: str = Field("runs/caption/chebi20_pool", description="caption pool directory built with a MoMu "
                      "model (momu caption pool --model ...); the ranker is saved into it")
    k: int = Field(20, ge=2, description="Tanimoto-nearest candidates the ranker chooses among")
    val_fraction: float = Field(0.05, gt=0.0, lt=0.5, description="held-out share of the pool (by id hash, the "
                                "caption decoder's split): never trains the ranker, compares it with NN copying")
    epochs: int = Field(40, ge=1, description="passes over the training molecules")
    hidden: int = Field(64, ge=1, description="width of the ranker's two hidden layers")
    temperature: float = Field(0.05, gt=0, description="softmax temperature of the listwise targets")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate")
    batch_size: int = Field(256, ge=1, description="molecules per step")
    seed: int = Field(0, description="seed of weights and data order")
    limit: Optional[int] = Field(None, ge=2, description="use only the first N training / held-out molecules "
                                 "(smoke runs)")
    meteor: bool = Field(True, description="METEOR in the held-out comparison (needs WordNet 3.0)")


class DecoderConfig(StrictModel):
    """Architecture of the caption decoder (saved with every checkpoint)."""

    d_model: int = Field(256, ge=8, description="width of the decoder")
    layers: int = Field(3, ge=1, description="decoder layers")
    heads: int = Field(4, ge=1, description="attention heads (d_model must divide by it)")
    ff_dim: int = Field(1024, ge=8, description="feed-forward width")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in attention, feed-forward and embeddings")
    max_length: int = Field(160, ge=8, description="caption tokens the decoder reads and writes (incl. [CLS]/[SEP])")
    graph_memory: Literal["nodes", "pooled", "none"] = Field(
        "nodes", description="nodes: MoMu's pooled token + the GIN node embeddings; pooled: only MoMu's pooled "
                             "token (the paper's method); none: no graph at all (text-prior ablation)")
    neighbour_memory: bool = Field(False, description="retrieve-and-edit: also attend to the nearest pool "
                                   "molecule's caption")
    neighbour_layers: int = Field(1, ge=0, description="Transformer encoder layers over the neighbour caption")
    graph_dim: int = Field(300, ge=1, description="width of the GIN node / pooled features (the MoMu model's)")
    vocab_size: int = Field(0, ge=0, description="decoder vocabulary (set from the training captions)")


class CaptionTrainConfig(CaptionSourcesConfig):
    """Train the graph-conditioned caption decoder on Ray Train (`momu finetune caption`)."""

    encoder: str = Field("momu-cpu", description="frozen MoMu model whose GIN feeds the decoder (directory, "
                                                 "published name or models:/ URI)")
    decoder: DecoderConfig = Field(default_factory=DecoderConfig, description="decoder architecture")
    val_fraction: float = Field(0.05, gt=0.0, lt=0.5, description="held-out share of the training molecules "
                                "(chosen by a hash of the id) for validation and model selection")
    vocab_min_count: int = Field(2, ge=1, description="WordPiece tokens seen fewer times in training captions "
                                 "become [UNK]")
    epochs: int = Field(10, ge=1, description="passes over the training captions")
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(32, ge=1, description="captions per step per worker")
    lr: float = Field(5e-4, gt=0, description="peak AdamW learning rate")
    warmup_steps: int = Field(200, ge=0, description="linear warmup, then linear decay to 0")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the token loss")
    beams: int = Field(5, ge=1, description="beam width when captioning (MoMu / MolT5: 5)")
    length_penalty: float = Field(1.0, description="beam score = log p / length ** length_penalty")
    no_repeat_ngram: int = Field(0, ge=0, description="forbid repeating n-grams of this size (0: off)")
    eval_samples: int = Field(64, ge=0, description="validation molecules captioned (beam search) each epoch for "
                              "BLEU/METEOR and sample captions; 0: loss only")
    select_best: Literal["loss", "bleu4", "meteor", "last"] = Field(
        "loss", description="which validation number picks the exported weights (bleu4/meteor need eval_samples)")
    seed: int = Field(0, description="seed of weights, data order and dropout")
    scaling: ScalingSection = Field(default_factory=ScalingSection, description="Ray Train workers")
    checkpoint_every: int = Field(500, ge=1, description="also checkpoint every N steps (always each epoch)")
    checkpoints_to_keep: int = Field(2, ge=1, description="checkpoints kept by Ray Train")
    max_failures: int = Field(0, ge=0, description="worker-group restarts from the last checkpoint")
    resume: Optional[str] = Field(None, description="checkpoint (or run) directory to continue from")
    storage_path: str = Field("runs/train", description="Ray Train storage (checkpoints)")
    run_name: Optional[str] = Field(None, description="Ray Train / MLflow run name (default: caption-<time>)")
    output_dir: Optional[str] = Field(None, description="where the captioner is exported (default: "
                                      "<storage_path>/<run_name>/captioner)")
    mlflow_experiment: str = Field("momu-caption", description="MLflow experiment")
    mlflow_tracking_uri: Optional[str] = Field(None, description="MLflow store (default: runs/mlflow.db)")
    register_model_name: Optional[str] = Field(None, description="register the captioner in MLflow under this "
                                               "name")

    @model_validator(mode="after")
    def _selection_needs_samples(self):
        if self.select_best in ("bleu4", "meteor") and not self.eval_samples:
            raise ValueError(f"select_best: {self.select_best} needs eval_samples > 0")
        return self

