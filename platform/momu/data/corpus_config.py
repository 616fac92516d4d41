"""Configs of the corpus builders (`momu data build-corpus`, `momu data build-molecules`).

Paths are relative to the working directory (the repository root), like every other config: shared data is
`../shared/data/...`.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from momu.config import StrictModel

# chebi20 / pubchem324k: `CID SMILES description` TSV with a header (read_chebi20 accepts both headers);
# pcdes: `idx cid smiles description` TSV; parquet: any Parquet with SMILES / text (/ CID) columns;
# momu_corpus: MoMu's text/ + graph/ directory or its converted records Parquet (graphs, no SMILES);
# library: molecule files (.smi, CSV/TSV, Parquet, SDF; read_molecule_library), no texts.
SourceFormat = Literal["chebi20", "pubchem324k", "pcdes", "parquet", "momu_corpus", "library"]
PAIR_SOURCE_FORMATS = ("chebi20", "pubchem324k", "pcdes", "parquet", "momu_corpus")
StereoFreeKey = Literal["smiles", "inchikey", "none"]


class SourceSpec(StrictModel):
    """One input file (or MoMu corpus directory) and how to read it."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="short unique name; it is the `source` value in the output and the manifest")
    path: str = Field(..., min_length=1)
    format: SourceFormat
    smiles_column: Optional[str] = Field(None, description="parquet/library: SMILES column (default: auto)")
    text_column: str = Field("text", description="parquet: text column (string or list of strings)")
    cid_column: Optional[str] = Field(None, description="parquet: PubChem CID column (default: none)")
    id_column: Optional[str] = Field(None, description="library: id column (default: auto-detect)")
    id_is_cid: bool = Field(False, description="library: the id column holds PubChem CIDs (removal by CID)")


def _unique_names(sources: list[SourceSpec], field: str) -> None:
    seen = set()
    for spec in sources:
        if spec.name in seen:
            raise ValueError(f"{field}: source name {spec.name!r} is used twice")
        seen.add(spec.name)


def _non_empty(sources: list[SourceSpec]) -> None:
    # A default (not a required field) so that generated CLI flags can show it; checked here instead.
    if not sources:
        raise ValueError("sources: give at least one source")


class RemovalSection(StrictModel):
    """What counts as "the same molecule" as an evaluation molecule (each match is removed)."""

    evaluation: list[SourceSpec] = Field(
        default_factory=list, description="evaluation sets whose molecules must not be trained on")
    by_cid: bool = Field(True, description="remove rows whose PubChem CID is an evaluation CID")
    # Canonical isomeric SMILES is always a removal key: it is the molecule identity everything else uses.
    stereo_free: StereoFreeKey = Field(
        "smiles", description="also remove stereoisomers of evaluation molecules: 'smiles' = non-isomeric "
                              "canonical SMILES, 'inchikey' = InChIKey connectivity block (also merges tautomers "
                              "and protonation states), 'none' = off")


class CorpusConfig(StrictModel):
    """`momu data build-corpus`: merge molecule-text pair sources into one records Parquet, with every
    evaluation molecule removed, exact duplicate pairs dropped, and a manifest that accounts for every row."""

    sources: list[SourceSpec] = Field(default_factory=list, description="training pair sources, in priority order")
    removal: RemovalSection = Field(default_factory=RemovalSection)
    output: str = Field("runs/corpus/pairs.parquet", description="corpus Parquet (records schema)")
    manifest: Optional[str] = Field(None, description="manifest JSON (default: <output stem>.manifest.json)")
    max_rejected_examples: int = Field(20, ge=0, description="rejected rows kept as examples in the manifest")
    block_rows: int = Field(2048, ge=1, description="rows per Ray Data block")

    @model_validator(mode="after")
    def _check(self) -> "CorpusConfig":
        _non_empty(self.sources)
        _unique_names(self.sources + self.removal.evaluation, "sources/removal.evaluation")
        for spec in self.sources:
            if spec.format not in PAIR_SOURCE_FORMATS:
                raise ValueError(f"sources: {spec.name} has format {spec.format!r}, which has no texts; pair "
                                 f"sources need one of {PAIR_SOURCE_FORMATS}")
        return self


class MoleculesConfig(StrictModel):
    """`momu data build-molecules`: molecule-only sources (graph-only pretraining) -> one Parquet of unique
    canonical SMILES with every evaluation molecule removed, and the same manifest accounting."""

    sources: list[SourceSpec] = Field(default_factory=list, description="molecule sources, in priority order")
    removal: RemovalSection = Field(default_factory=RemovalSection)
    output: str = Field("runs/corpus/molecules.parquet", description="molecule Parquet (id, source, smiles, ...)")
    manifest: Optional[str] = Field(None, description="manifest JSON (default: <output stem>.manifest.json)")
    max_rejected_examples: int = Field(20, ge=0, description="rejected rows kept as examples in the manifest")
    block_rows: int = Field(8192, ge=1, description="rows per Ray Data block")

    @model_validator(mode="after")
    def _check(self) -> "MoleculesConfig":
        _non_empty(self.sources)
        _unique_names(self.sources + self.removal.evaluation, "sources/removal.evaluation")
        for spec in self.sources:
            if spec.format == "momu_corpus":
                raise ValueError(f"sources: {spec.name} is a MoMu corpus (graphs without SMILES); the molecule "
                                 "set holds SMILES")
        return self
