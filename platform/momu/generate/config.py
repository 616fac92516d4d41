"""Config of `momu generate`: MoMu-guided graph genetic algorithm (mol-ga operators) and its chemistry priors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from momu.config import DEFAULT_MODEL, StrictModel
from momu.generate.moflow.config import MoFlowOptimiseConfig


def check_edit_lambdas(value: list[float]) -> list[float]:
    """Editing's lambda sweep: at least one lambda, none negative (the CLI's and the server's settings)."""
    if not value or any(v < 0 for v in value):
        raise ValueError("needs at least one lambda, all >= 0")
    return value


class PriorWeights(StrictModel):
    """total = cosine * cosine(text, graph) + qed * QED - sa * (SA - 1) / 9 - size * (heavy atoms outside the
    window). Disallowed elements are a hard constraint (total -inf), like unparseable/unfeaturizable molecules."""

    cosine: float = Field(1.0, ge=0.0, description="weight of the MoMu text-graph cosine")
    qed: float = Field(0.3, ge=0.0, description="weight of RDKit QED (0..1, drug-likeness)")
    sa: float = Field(0.3, ge=0.0, description="weight of the synthetic-accessibility penalty (SA 1..10 -> 0..1)")
    size: float = Field(0.1, ge=0.0, description="penalty per heavy atom below min / above max heavy atoms")


class PoolConfig(StrictModel):
    """Start molecules: never ChEBI-20 test molecules (the exclude files are removed by canonical SMILES)."""

    path: str = Field("../shared/data/chebi20/train_cid_smiles_superset.tsv",
                      description="molecule pool: .tsv/.txt with a SMILES column or .csv[.gz] with a smiles column "
                                  "(ChEBI-20 train pool or ZINC250k ../shared/data/zinc250k/zinc250k.csv.gz)")
    exclude: list[str] = Field(default_factory=lambda: ["../shared/data/chebi20/test.txt"],
                               description="files whose molecules (SMILES column) are removed from the pool, "
                                           "stereo-insensitively")
    sample: int = Field(400, ge=1, description="pool molecules drawn (seeded) and scored to pick the start population")
    retrieval: bool = Field(True, description="start from the drawn molecules nearest to the text by MoMu cosine "
                                              "(else the best by total score)")


class MoFlowMethodSection(StrictModel):
    """`--method moflow`: MoMu's own zero-shot generation, optimising latents of a trained MoFlow."""

    model: str = Field("", description="trained MoFlow: a directory written by `momu finetune moflow` "
                                       "(<run>/model) or a models:/ URI")
    optimise: MoFlowOptimiseConfig = Field(default_factory=MoFlowOptimiseConfig)


class GenerateConfig(StrictModel):
    """`momu generate` (text -> molecules) and its editing mode (`--edit SMILES`)."""

    method: Literal["ga", "moflow"] = Field("ga", description="ga: MoMu-guided graph genetic algorithm (the "
                                                              "default); moflow: MoMu's MoFlow latent optimisation "
                                                              "(needs moflow.model; editing from the input's latent)")
    model: str = Field(DEFAULT_MODEL, description="MoMu model: published name, directory or models:/ URI")
    n: int = Field(10, ge=1, description="molecules returned (editing: best per lambda)")
    seed: int = 0
    budget_evaluations: int = Field(2000, ge=1, description="fitness evaluations (molecules embedded by the GIN), "
                                                            "start population included")
    budget_seconds: float = Field(60.0, gt=0, description="wall-clock budget, start population included; near it a "
                                                          "generation is cut to what the time left can score")
    max_generations: int = Field(1000, ge=0)
    population_size: int = Field(100, ge=2)
    offspring_size: int = Field(100, ge=1)
    weights: PriorWeights = Field(default_factory=PriorWeights)
    min_heavy_atoms: int = Field(5, ge=1)
    max_heavy_atoms: int = Field(60, ge=1)
    allowed_elements: list[str] = Field(
        default_factory=lambda: ["C", "N", "O", "S", "P", "F", "Cl", "Br", "I", "B", "Si", "Se"],
        description="heavy-atom elements a candidate may contain")
    pool: PoolConfig = Field(default_factory=PoolConfig)
    edit_lambdas: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                      description="editing: total = fitness + lambda * Tanimoto(candidate, input) "
                                                  "(Morgan r=2), one result per lambda")
    edit_seeds: int = Field(30, ge=0, description="editing: mutations of the input added to the start population")
    edit_keep_input: bool = Field(False, description="editing: the unchanged input may be a lambda's result when it "
                                                     "scores best (default: every result is a changed molecule)")
    batch_size: int = Field(256, ge=1, description="graphs per GIN forward pass")
    moflow: MoFlowMethodSection = Field(default_factory=MoFlowMethodSection)

    @model_validator(mode="after")
    def _moflow_needs_a_model(self):
        if self.method == "moflow" and not self.moflow.model.strip():
            raise ValueError("moflow.model: --method moflow needs a trained MoFlow (a `momu finetune moflow` "
                             "model directory or models:/ URI)")
        return self

    @field_validator("edit_lambdas")
    @classmethod
    def _lambdas(cls, value: list[float]) -> list[float]:
        return check_edit_lambdas(value)

    @field_validator("allowed_elements")
    @classmethod
    def _elements(cls, value: list[str]) -> list[str]:
        from rdkit import Chem

        table = Chem.GetPeriodicTable()
        for symbol in value:
            try:
                table.GetAtomicNumber(symbol)
            except RuntimeError:
                raise ValueError(f"unknown element {symbol!r}") from None
        return value
