"""Benchmark A: MoleculeSTM's text-guided editing, single-objective tasks 101-108 on its 200 ZINC inputs
(`../shared/data/moleculestm_editing/`).

A hit: the edited molecule parses and its RDKit property moved the prompt's way by more than Delta (loose: Delta 0,
MoleculeSTM's strict inequality; strict: ChatDrug's thresholds, LogP 0.5, QED 0.1, TPSA 10, HBA/HBD 1). Every
method offers 5 candidates per input and the input counts as a hit if any candidate hits (MoleculeSTM's `np.any`
over its 5 lambdas). Hit ratio = 100 * hits / inputs.

Methods:
- `momu-ga`: the MoMu-guided GA's editing mode (`momu.generate.ga.edit`), one candidate per lambda of the sweep.
- `textfree-ga` (control): the same GA, same budget and lambdas, with the text's weight set to 0 (chemistry
  priors + lambda * Tanimoto only): what the search does without reading the prompt.
- `mutate` (control, GS-Mutate): 5 random single Graph GA mutations of the input.
- `moflow`: MoMu's own path, MoFlow latent editing (`momu.generate.moflow.optimise.edit_ranked`): from the input's
  latent, one optimised latent per lambda (cos - lambda * latent distance); needs `moflow_model`.
- `moflow-random` (control): the input's latent moved by Gaussian noise of 5 sizes (`moflow_perturb_scales`),
  decoded: MoFlow without the text.

Before the hit ratios, `property_correlations` asks whether the model knows the property at all: the Spearman
correlation between cos(prompt, molecule) and the property over a ZINC sample (the editing inputs left out)."""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

from pydantic import Field, field_validator, model_validator
from rdkit import Chem, RDLogger
from rdkit.Chem import QED, Descriptors

from momu.config import DEFAULT_MODEL, StrictModel
from momu.generate.config import check_edit_lambdas

METHODS = ("momu-ga", "textfree-ga", "mutate", "moflow", "moflow-random")
DEFAULT_METHODS = ("momu-ga", "textfree-ga", "mutate")
CANDIDATES_PER_INPUT = 5
# The descriptors MoleculeSTM and ChatDrug judge with (by the names in tasks.tsv).
PROPERTIES: dict[str, Callable[[Chem.Mol], float]] = {
    "MolLogP": Descriptors.MolLogP, "qed": QED.qed, "TPSA": Descriptors.TPSA,
    "NumHAcceptors": Descriptors.NumHAcceptors, "NumHDonors": Descriptors.NumHDonors,
}


@dataclass(frozen=True)
class EditTask:
    task_id: int
    prompt: str
    prop: str
    increase: bool
    strict_delta: float

    def hit(self, before: float, after: Optional[float], delta: float) -> bool:
        """ChatDrug's rule: after > before + delta (increase) or after + delta < before (decrease)."""
        if after is None:
            return False
        return after > before + delta if self.increase else after + delta < before


def read_tasks(path: str | Path, task_ids: Sequence[int]) -> list[EditTask]:
    """The single-property tasks of tasks.tsv named in `task_ids` (101-108 are the ones a descriptor judges)."""
    rows = {int(r["task_id"]): r for r in csv.DictReader(Path(path).open(), delimiter="\t")}
    tasks = []
    for task_id in task_ids:
        row = rows.get(task_id)
        if row is None:
            raise ValueError(f"tasks: {task_id} is not in {path}")
        prop, rule = row["rdkit_property"].strip(), row["hit_if"].strip()
        if prop not in PROPERTIES or ";" in prop:
            raise ValueError(f"tasks: {task_id} ({row['moleculestm_prompt']!r}) is not judged by one RDKit "
                             f"descriptor in {path}; the descriptor tasks are 101-108")
        increase = rule.startswith("edited >")
        if not increase and not rule.startswith("edited <"):
            raise ValueError(f"tasks: cannot read the direction of task {task_id} from {rule!r}")
        tasks.append(EditTask(task_id, row["moleculestm_prompt"].strip(), prop, increase,
                              float(row["delta_strict"])))
    return tasks


def property_value(prop: str, smiles: Optional[str]) -> Optional[float]:
    """The descriptor of a SMILES, or None when RDKit cannot parse it."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return None if mol is None or mol.GetNumAtoms() == 0 else float(PROPERTIES[prop](mol))


class EditingBenchmarkConfig(StrictModel):
    """`momu evaluate editing`: Benchmark A (MoleculeSTM tasks 101-108)."""

    model: str = Field(DEFAULT_MODEL, description="MoMu model: published name, directory or models:/ URI")
    data_dir: str = Field("../shared/data/moleculestm_editing",
                          description="folder with tasks.tsv and input_smiles.txt (MoleculeSTM's 200 ZINC inputs)")
    tasks: list[int] = Field(default_factory=lambda: list(range(101, 109)), description="task ids (101-108)")
    methods: list[str] = Field(default_factory=lambda: list(DEFAULT_METHODS),
                               description="momu-ga, textfree-ga, mutate; moflow and moflow-random need moflow_model")
    limit: Optional[int] = Field(None, ge=1, description="first N inputs per task (default: all 200)")
    seed: int = 0
    budget_evaluations: int = Field(300, ge=1, description="GA fitness evaluations per input (all lambdas)")
    budget_seconds: float = Field(30.0, gt=0, description="GA wall-clock budget per input (all lambdas)")
    edit_lambdas: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
                                      description="the GA's lambda sweep: one candidate per lambda (5 as MoleculeSTM)")
    moflow_model: Optional[str] = Field(None, description="trained MoFlow for the moflow methods (a `momu finetune "
                                                          "moflow` model directory or models:/ URI)")
    moflow_steps: int = Field(100, ge=0, description="moflow: Adam steps per input (all lambdas batched)")
    moflow_mode: Literal["momu-exact", "soft-bond"] = Field(
        "momu-exact", description="moflow: momu-exact (the input's bond skeleton is kept, atoms change) or soft-bond "
                                  "(bonds change too)")
    moflow_perturb_scales: list[float] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 0.75, 1.0],
        description="moflow-random: noise sizes, in units of the sampling temperature (0.85) x prior std")
    correlation_sample: int = Field(1000, ge=0, description="ZINC molecules for the Spearman check (0: skip it)")
    zinc_path: str = Field("../shared/data/zinc250k/zinc250k.csv.gz", description="ZINC250k for the Spearman check")
    output_dir: str = Field("runs/evaluate-editing", description="where results.json and candidates.jsonl go")

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(METHODS))
        if unknown or not value:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
        return value

    @field_validator("edit_lambdas")
    @classmethod
    def _lambdas(cls, value: list[float]) -> list[float]:
        return check_edit_lambdas(value)

    @model_validator(mode="after")
    def _moflow(self) -> "EditingBenchmarkConfig":
        wanted = [m for m in self.methods if m.startswith("moflow")]
        if wanted and not self.moflow_model:
            raise ValueError(f"methods {wanted} need moflow_model (a trained MoFlow: `momu finetune moflow`)")
        if len(self.moflow_perturb_scales) != CANDIDATES_PER_INPUT or any(v < 0 for v in self.moflow_perturb_scales):
            raise ValueError(f"moflow_perturb_scales: {CANDIDATES_PER_INPUT} sizes >= 0, one per candidate")
        return self


def _generate_config(config: EditingBenchmarkConfig, text_weight: float, seed: int, moflow: bool = False):
    from momu.generate.config import GenerateConfig, PriorWeights

    extra = {"method": "moflow", "moflow": {"model": config.moflow_model, "optimise": {
        "steps": config.moflow_steps, "mode": config.moflow_mode}}} if moflow else {}
    return GenerateConfig(model=config.model, seed=seed, budget_evaluations=config.budget_evaluations,
                          budget_seconds=config.budget_seconds, edit_lambdas=config.edit_lambdas,
                          weights=PriorWeights(cosine=text_weight), **extra)


def candidates_for(method: str, model, task: EditTask, smiles: str, config: EditingBenchmarkConfig,
                   seed: int, flow=None) -> tuple[list[str], dict]:
    """The candidates one method proposes for one input, and facts about the run (evaluations, seconds)."""
    from momu.generate.ga import _mutations, edit

    if method == "moflow-random":
        from momu.generate.moflow.optimise import perturb_latent

        return [s for s in perturb_latent(flow, smiles, config.moflow_perturb_scales, seed) if s], {}
    if method == "moflow":
        from momu.generate.moflow.optimise import edit_ranked

        result = edit_ranked(flow, model, task.prompt, smiles, _generate_config(config, 1.0, seed, moflow=True))
        return ([r["smiles"] for r in result["results"] if r["smiles"]],
                {"moflow_seconds": result["seconds"], "unchanged": sum(r["is_input"] for r in result["results"])})
    if method == "mutate":
        source = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
        return _mutations(source, CANDIDATES_PER_INPUT, random.Random(seed)), {}
    weight = 1.0 if method == "momu-ga" else 0.0
    result = edit(model, task.prompt, smiles, _generate_config(config, weight, seed))
    return ([r["smiles"] for r in result["results"]],
            {"evaluations": result["evaluations"], "ga_seconds": result["seconds"],
             "stopped_by": result["stopped_by"]})


def property_correlations(model, tasks: Sequence[EditTask], molecules: Sequence[str]) -> list[dict]:
    """Per task: Spearman rho between cos(prompt, molecule) and the property over `molecules`, and whether its sign
    is the prompt's direction (a model that knows the property ranks the molecules that way)."""
    import numpy as np
    from scipy.stats import spearmanr

    from momu.generate.fitness import embed_smiles

    graph_emb, readable = embed_smiles(model, molecules)
    kept = [molecules[i] for i in readable]
    text_emb = model.embed_texts([t.prompt for t in tasks]).float()
    cos = (graph_emb @ text_emb.T).numpy()
    rows = []
    for j, task in enumerate(tasks):
        values = np.array([property_value(task.prop, s) for s in kept], dtype=float)
        rho, p = spearmanr(cos[:, j], values)
        rho = float(rho) if not math.isnan(rho) else 0.0
        rows.append({"task": task.task_id, "prompt": task.prompt, "property": task.prop,
                     "direction": "increase" if task.increase else "decrease", "molecules": len(kept),
                     "spearman": round(rho, 4), "p_value": float(p),
                     "right_sign": (rho > 0) == task.increase and float(p) < 0.05})
    return rows


def _zinc_sample(path: str, n: int, exclude: set[str], seed: int) -> list[str]:
    from momu.generate.pool import canonical, read_smiles_column

    smiles = [s for s in read_smiles_column(path) if canonical(s) not in exclude]
    random.Random(seed).shuffle(smiles)
    return smiles[:n]


def run_editing_benchmark(config: EditingBenchmarkConfig, model=None, progress: bool = True,
                          on_row: Optional[Callable[[dict], None]] = None) -> dict:
    """Every (task, input, method): candidates, properties, loose/strict hit. Inputs a method cannot start from
    are counted as misses with their reason, so hits + misses = inputs for every cell."""
    from momu.generate.pool import canonical
    from momu.job_output import ProgressLine

    RDLogger.DisableLog("rdApp.*")
    data = Path(config.data_dir)
    for name in ("tasks.tsv", "input_smiles.txt"):
        if not (data / name).is_file():
            raise FileNotFoundError(f"data_dir: {data / name} not found (MoleculeSTM's editing inputs; see "
                                    "../shared/data/PROVENANCE.md)")
    tasks = read_tasks(data / "tasks.tsv", config.tasks)
    inputs = [s.strip() for s in (data / "input_smiles.txt").read_text().splitlines() if s.strip()]
    inputs = inputs[:config.limit] if config.limit else inputs
    if model is None:
        from momu.models.loading import load_momu

        model = load_momu(config.model)
    flow = None
    if any(m.startswith("moflow") for m in config.methods):
        from momu.generate.moflow.model import load_moflow

        flow = load_moflow(config.moflow_model)
    started = time.perf_counter()
    correlations = []
    if config.correlation_sample:
        every_input = {canonical(s) for s in (data / "input_smiles.txt").read_text().split()}
        correlations = property_correlations(
            model, tasks, _zinc_sample(config.zinc_path, config.correlation_sample, every_input, config.seed))
    cells = {(t.task_id, m): {"hits_loose": 0, "hits_strict": 0, "failed": 0, "inputs": 0}
             for t in tasks for m in config.methods}
    line = ProgressLine("momu evaluate editing", total=len(tasks) * len(inputs) * len(config.methods))
    done = 0
    for task in tasks:
        for i, smiles in enumerate(inputs):
            before = property_value(task.prop, smiles)
            for method in config.methods:
                seed = config.seed * 1_000_003 + task.task_id * 1000 + i
                row = {"task": task.task_id, "input_index": i, "input": smiles, "method": method,
                       "property": task.prop, "input_value": before}
                try:
                    if before is None:
                        raise ValueError(f"input {smiles!r} is not a valid SMILES (RDKit cannot parse it)")
                    candidates, facts = candidates_for(method, model, task, smiles, config, seed, flow)
                    values = [property_value(task.prop, c) for c in candidates]
                    row.update(facts, candidates=candidates, values=values,
                               hit_loose=any(task.hit(before, v, 0.0) for v in values),
                               hit_strict=any(task.hit(before, v, task.strict_delta) for v in values))
                except ValueError as err:  # an input the method cannot start from: a miss, with its reason
                    row.update(candidates=[], values=[], hit_loose=False, hit_strict=False, failed=str(err))
                cell = cells[(task.task_id, method)]
                cell["inputs"] += 1
                cell["hits_loose"] += row["hit_loose"]
                cell["hits_strict"] += row["hit_strict"]
                cell["failed"] += "failed" in row
                if on_row:
                    on_row(row)
                done += 1
                if progress:
                    line.update(done, task=task.task_id)
    table = []
    for task in tasks:
        entry = {"task": task.task_id, "prompt": task.prompt, "property": task.prop,
                 "direction": "increase" if task.increase else "decrease", "strict_delta": task.strict_delta}
        for method in config.methods:
            cell = cells[(task.task_id, method)]
            entry[method] = {**cell, "loose": round(100 * cell["hits_loose"] / cell["inputs"], 2),
                             "strict": round(100 * cell["hits_strict"] / cell["inputs"], 2)}
        table.append(entry)
    return {"config": config.model_dump(mode="json"), "inputs": len(inputs), "tasks": table,
            "correlations": correlations, "seconds": round(time.perf_counter() - started, 1),
            "accounting_ok": all(c["inputs"] == len(inputs) for c in cells.values())}


def format_results(result: dict) -> str:
    """The hit-ratio table (loose / strict per method) and the Spearman check, as text."""
    methods = result["config"]["methods"]
    lines = [f"hit ratio % over {result['inputs']} inputs, loose / strict (any of {CANDIDATES_PER_INPUT} "
             "candidates)",
             f"{'task':>4}  {'prompt':<48} " + " ".join(f"{m:>15}" for m in methods)]
    for row in result["tasks"]:
        lines.append(f"{row['task']:>4}  {row['prompt'][:48]:<48} "
                     + " ".join(f"{row[m]['loose']:>7.1f}/{row[m]['strict']:<7.1f}" for m in methods))
    if result["correlations"]:
        lines.append(f"Spearman(cos(prompt, molecule), property) over {result['correlations'][0]['molecules']} "
                     "ZINC molecules (sign should match the direction)")
        for c in result["correlations"]:
            lines.append(f"{c['task']:>4}  {c['property']:<14} {c['direction']:<9} rho {c['spearman']:+.3f}"
                         f"  p {c['p_value']:.1e}  {'ok' if c['right_sign'] else 'WRONG SIGN or n.s.'}")
    lines.append(f"{result['seconds']:.0f} s")
    return "\n".join(lines)
