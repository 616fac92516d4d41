"""Config of batch embedding (`momu embed`)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from momu.config import DEFAULT_MODEL, StrictModel


class EmbedConfig(StrictModel):
    """Batch embedding of molecule libraries or texts on Ray Data (`momu embed`, jobs/embed.py).

    Every input row ends up embedded (shards/) or rejected (rejects.parquet, with its reason). Re-running with the
    same output_dir resumes: parts already written are skipped (manifest.json + parts.jsonl)."""

    inputs: list[str] = Field(default_factory=lambda: ["data/sample/moleculenet/bbbp_slice.csv"],
                              description="files, directories or globs: .smi, CSV/TSV, Parquet, SDF(.gz) molecule "
                                          "libraries, ChEBI-20 style .txt tables; texts mode: CSV/TSV/.txt/Parquet")
    mode: Literal["molecules", "texts"] = Field("molecules", description="molecules: graph tower on SMILES; texts: "
                                                "text tower on a text column (e.g. ChEBI-20 descriptions)")
    model: str = Field(DEFAULT_MODEL, description="shipped checkpoint name, saved MoMu directory or MLflow "
                                                  "models:/name/version URI")
    output_dir: str = Field("runs/embeddings/default", description="shards/, rejects.parquet, manifest, DONE.json")
    smiles_column: Optional[str] = Field(None, description="SMILES column name, or its 0-based number in a "
                                         "header-less table (default: auto-detect)")
    id_column: Optional[str] = Field(None, description="id column or SDF property, e.g. PUBCHEM_COMPOUND_CID "
                                     "(default: auto-detect, else the row number)")
    header: Literal["auto", "yes", "no"] = Field("auto", description="CSV/TSV header line: auto (sniffed: a first row "
                                                 "with no known column name and a SMILES field is data), yes or no; "
                                                 "PubChem's CID-SMILES files are header-less by name")
    text_column: Optional[str] = Field(None, description="texts mode: text column (default: description/text)")
    prefix_ids_with_file: bool = Field(False, description="ids become '<file name>:<id>' (row-number ids of "
                                       "several files would otherwise collide)")
    max_atoms: int = Field(512, ge=1, description="molecules with more atoms are rejected (too_many_atoms)")
    embedding_dtype: Literal["float32", "float16"] = Field("float32", description="stored embedding precision")
    part_rows: int = Field(16_384, ge=1, description="input rows per part, the unit of resume")
    featurize_batch_rows: int = Field(1024, ge=1, description="rows per featurization task batch")
    batch_size: int = Field(256, ge=1, description="molecules / texts per model forward pass")
    shard_rows: int = Field(16_384, ge=1, description="rows per model-actor call; the actor writes them as one "
                            "shard file per part they belong to (the model runs batch_size rows at a time)")
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
