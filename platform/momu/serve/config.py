"""Config of the Serve application (serving/app.py, serving/config.yaml, `momu serve`)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from momu.config import DEFAULT_MODEL, StrictModel


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
    # 0 by default: the model call blocks the replica's event loop, so requests that arrive meanwhile queue and form
    # the next batch anyway; waiting only delays a lone request (benchmarks/serve_load.py: at 32 clients the same
    # batch sizes and req/s with 0 as with 2 ms, and 2-3 ms less p50 at 1 client).
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, le=10.0,
                                        description="longest wait for a batch to fill (0: take what has queued)")
    # The batch queue costs ~0.3 ms per call on 2 cores; an idle replica's batch would hold one request anyway
    # (serving/deployments.py, IdleBypass).
    idle_direct_ms: float = Field(5.0, ge=0.0, le=1000.0,
                                  description="a request finding the replica idle this long (no model call, nothing "
                                              "queued) is computed at once, skipping the batch queue; 0: never; "
                                              "only with batch_wait_timeout_s 0")


class ServeGenerate(StrictModel):
    """POST /v1/generate: the MoMu-guided genetic algorithm of `momu generate` (momu.generate.ga) in a `Generator`
    deployment holding its own copy of the served model and the start-molecule pool, with a hard time budget per
    request. Off (503 not_configured) while `pool` is null."""

    pool: Optional[str] = Field(None, description="start-molecule pool of POST /v1/generate: .tsv/.txt with a SMILES "
                                "column or .csv[.gz] with a smiles column (read once when the replica starts); "
                                "null: generation off")
    exclude: list[str] = Field(default_factory=list, description="files whose molecules (SMILES column) are removed "
                               "from the pool, stereo-insensitively (e.g. an evaluation split)")
    default_seconds: float = Field(5.0, gt=0, description="time budget of a request that names none")
    max_seconds: float = Field(20.0, gt=0, le=600, description="largest budget a request may ask for; keep it "
                               "below http_options.request_timeout_s")
    max_evaluations: int = Field(2000, ge=1, description="fitness evaluations (molecules embedded) per request at "
                                 "most, start population included")
    pool_sample: int = Field(200, ge=1, description="pool molecules drawn and scored per request to pick the start "
                             "population")
    population_size: int = Field(50, ge=2, description="GA population; smaller generations end closer to the "
                                 "deadline")
    offspring_size: int = Field(50, ge=1)
    edit_lambdas: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                      description="editing: one molecule per lambda of total + lambda * Tanimoto")
    edit_seeds: int = Field(30, ge=0, description="editing: mutations of the input added to the start population")
    seed: int = Field(0, description="GA seed: a request repeated under an evaluation-bound budget gives the same "
                                     "molecules")

    @field_validator("edit_lambdas")
    @classmethod
    def _lambdas(cls, value: list[float]) -> list[float]:
        from momu.generate.config import check_edit_lambdas

        return check_edit_lambdas(value)

    @model_validator(mode="after")
    def _default_within_max(self) -> "ServeGenerate":
        if self.default_seconds > self.max_seconds:
            raise ValueError(f"default_seconds ({self.default_seconds:g}) is above max_seconds ({self.max_seconds:g})")
        return self


class ServeConfig(StrictModel):
    """Arguments of the Serve application (`serving/app.py`, the `args:` of serving/config.yaml, `momu serve`).

    Relative paths are resolved against the repository root (the directory holding `serving/`)."""

    model: str = Field(DEFAULT_MODEL, description="shipped checkpoint name, saved MoMu model directory or MLflow "
                                                  "models:/ URI")
    molecule_index: Optional[str] = Field("runs/index/moleculenet",
                                          description="index directory (momu index build) or embedding shards "
                                                      "(momu embed) of molecules: text -> molecules; null: off")
    text_index: Optional[str] = Field("runs/index/chebi20_texts",
                                      description="the same for descriptions: SMILES -> texts; null: off")
    caption_pool: Optional[str] = Field(None, description="caption pool directory (momu caption pool) of the "
                                        "retrieval captioner behind POST /v1/caption; null: off")
    caption_kind: Literal["auto", "tanimoto", "momu", "fusion", "ranked"] = Field(
        "auto", description="caption similarity: tanimoto (Morgan), momu (graph cosine), fusion, ranked (the "
                            "pool's learned caption ranker) or auto (ranked when the pool holds a ranker, else "
                            "tanimoto); all but tanimoto need pool embeddings made by the served model (momu "
                            "caption pool --model)")
    caption_fusion_k: int = Field(10, ge=1, description="fusion: Tanimoto candidates re-ranked")
    caption_fusion_weight: float = Field(0.5, ge=0.0, le=1.0, description="fusion: weight of the MoMu "
                                         "graph<->caption cosine")
    generate: ServeGenerate = Field(default_factory=ServeGenerate)
    # Why two: every handle call between deployments costs ~4-7 ms on a 2-core machine (benchmarks/serve_floor.py),
    # and a search makes two (ingress -> Encoder -> Index). Colocated makes none, at the price of a model and index
    # copy per ingress replica and no separate scaling of the towers.
    topology: Literal["split", "colocated"] = Field(
        "split", description="split: the towers and the indexes in their own Encoder and Index deployments (scaled "
                             "apart, e.g. the encoder on GPUs); colocated: both inside each MoMuAPI replica, no "
                             "handle calls on search and embed (lowest latency; give MoMuAPI the encoder's CPUs)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="encoder and generator device; auto: cuda when "
                                                                    "available")
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
