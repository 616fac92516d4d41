"""Benchmark B: ChEBI-20 text -> molecule. `momu generate predict` writes one MolT5-format predictions file
(`description`, `ground truth`, `output`, tab-separated) per method for a fixed subset of ChEBI-20 test (its first
`limit` rows, in file order), so that `momu evaluate generation` scores every row with the same code as MolT5's
released outputs.

Methods:
- `random`: a seeded random ZINC250k molecule per description (the floor).
- `retrieval`: the pool molecule (ChEBI-20 train, every ChEBI-20 test molecule removed) whose MoMu graph embedding
  is nearest the description's text embedding.
- `ga`: the MoMu-guided GA (`momu generate batch`: parallel Ray tasks, one prompt each), its best molecule.
- `moflow`: MoMu's own path, MoFlow latent optimisation (`momu generate batch --method moflow`), the decoded
  molecule of highest MoMu cosine over its seeds; needs `moflow_model`.
- `molt5`: the rows of one of MolT5's released caption2smiles files for the same descriptions (checked to match)."""

from __future__ import annotations

import csv
import random
import tempfile
import time
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from momu.config import DEFAULT_MODEL, StrictModel

METHODS = ("random", "retrieval", "ga", "moflow", "molt5")


class Text2MolConfig(StrictModel):
    """`momu generate predict`: one method's predictions for the first `limit` rows of ChEBI-20 test."""

    method: Literal["random", "retrieval", "ga", "moflow", "molt5"] = Field("retrieval",
                                                                           description="which row to produce")
    model: str = Field(DEFAULT_MODEL, description="MoMu model (retrieval, ga): published name, directory or models:/")
    test_path: str = Field("../shared/data/chebi20/test.txt", description="ChEBI-20 test (CID, SMILES, description)")
    limit: Optional[int] = Field(500, ge=1, description="the first N test rows (the documented subset; null: all)")
    pool_path: str = Field("../shared/data/chebi20/train_cid_smiles_superset.tsv",
                           description="retrieval pool and the GA's start pool (ChEBI-20 train molecules)")
    exclude: list[str] = Field(default_factory=lambda: ["../shared/data/chebi20/test.txt"],
                               description="files whose molecules are removed from the pool (by SMILES, "
                                           "stereo-insensitively)")
    random_path: str = Field("../shared/data/zinc250k/zinc250k.csv.gz", description="molecules of the random row")
    molt5_path: str = Field("../shared/data/molt5_predictions/molt5-small-caption2smiles.txt",
                            description="MolT5 released caption2smiles file (method molt5)")
    seed: int = 0
    budget_seconds: float = Field(10.0, gt=0, description="ga: wall-clock budget per description")
    budget_evaluations: int = Field(600, ge=1, description="ga: fitness evaluations per description")
    workers: Optional[int] = Field(None, ge=1, description="ga, moflow: parallel Ray tasks (default: one per CPU)")
    moflow_model: Optional[str] = Field(None, description="moflow: a trained MoFlow (`momu finetune moflow` model "
                                                          "directory or models:/ URI)")
    moflow_seeds: int = Field(60, ge=1, description="moflow: latents per description (MoMu's 60)")
    moflow_steps: int = Field(500, ge=0, description="moflow: Adam steps (MoMu's 500)")
    moflow_mode: Literal["momu-exact", "soft-bond"] = Field("momu-exact", description="moflow: optimisation mode")
    output: str = Field("runs/generate/predictions.tsv", description="the predictions file written (.tsv)")


def read_test_rows(path: str | Path, limit: Optional[int]) -> list[dict]:
    """The first `limit` rows of a ChEBI-20 split file: cid, smiles, description."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"test_path: {path} not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"CID", "SMILES", "description"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"test_path: {path} has no {', '.join(sorted(missing))} column")
        # ChEBI-20's files write some backslashes doubled (MolT5's prediction files do not): one, as RDKit reads it.
        rows = [{"cid": r["CID"], "smiles": r["SMILES"].replace("\\\\", "\\"), "description": r["description"]}
                for r in reader]
    return rows[:limit] if limit else rows


def predict_random(rows: list[dict], path: str, seed: int) -> list[str]:
    from momu.generate.pool import read_smiles_column

    molecules = read_smiles_column(path)
    rng = random.Random(seed)
    return [rng.choice(molecules) for _ in rows]


def nearest_pool_molecules(model, texts: list[str], pool: list[str], batch_size: int = 256) -> list[str]:
    """For each text, the pool molecule whose graph embedding has the highest cosine with the text's."""
    import torch

    from momu.generate.fitness import embed_smiles

    graph_emb, kept = embed_smiles(model, pool, batch_size)
    with torch.no_grad():
        text_emb = model.embed_texts(texts).float()
    best = (text_emb @ graph_emb.T).argmax(dim=1).tolist()
    return [pool[kept[i]] for i in best]


def predict_retrieval(rows: list[dict], config: Text2MolConfig, model=None) -> list[str]:
    from momu.generate.pool import load_pool

    if model is None:
        from momu.models.loading import load_momu

        model = load_momu(config.model)
    pool = load_pool(config.pool_path, config.exclude)
    return nearest_pool_molecules(model, [r["description"] for r in rows], pool)


def predict_ga(rows: list[dict], config: Text2MolConfig, progress: bool = True) -> tuple[list[str], dict]:
    """The best molecule per description of the GA (or, with method moflow, of MoFlow latent optimisation),
    through `momu generate batch` (a failed prompt gives "", scored as an invalid molecule). Returns the outputs
    and the batch summary."""
    import pyarrow.parquet as pq

    from momu.generate.batch import run_batch
    from momu.generate.config import GenerateConfig

    moflow = {"method": "moflow", "moflow": {"model": config.moflow_model, "optimise": {
        "seeds": config.moflow_seeds, "steps": config.moflow_steps, "mode": config.moflow_mode}}} \
        if config.method == "moflow" else {}
    gen = GenerateConfig(model=config.model, n=1, seed=config.seed, budget_seconds=config.budget_seconds,
                         budget_evaluations=config.budget_evaluations,
                         pool={"path": config.pool_path, "exclude": config.exclude}, **moflow)
    with tempfile.TemporaryDirectory(prefix="momu-text2mol-") as tmp:
        prompts = Path(tmp) / "prompts.tsv"
        with prompts.open("w", encoding="utf-8") as handle:
            handle.write("id\ttext\n" + "".join(f"{i}\t{r['description']}\n" for i, r in enumerate(rows)))
        summary = run_batch(prompts, Path(tmp) / "out.parquet", gen, workers=config.workers, progress=progress)
        best = {r["id"]: r["smiles"] for r in pq.read_table(Path(tmp) / "out.parquet").to_pylist()
                if r["status"] == "ok" and r["rank"] == 1}
    return [best.get(str(i), "") for i in range(len(rows))], summary


def predict_molt5(rows: list[dict], path: str) -> list[str]:
    """MolT5's outputs for the same descriptions (its files are in another order: matched by description, and its
    ground truth checked to be the row's molecule)."""
    with open(path, newline="", encoding="utf-8") as handle:
        released = {r["description"].strip(): r
                    for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)}
    outputs = []
    for i, row in enumerate(rows):
        theirs = released.get(row["description"].strip())
        if theirs is None:
            raise ValueError(f"molt5_path: {path} has no row for the description of test row {i + 1}")
        if theirs["ground truth"] != row["smiles"]:
            raise ValueError(f"molt5_path: {path} gives another ground truth for test row {i + 1} "
                             f"({theirs['ground truth']!r} vs {row['smiles']!r})")
        outputs.append(theirs["output"])
    return outputs


def write_predictions(path: str | Path, rows: list[dict], outputs: list[str]) -> Path:
    """MolT5's format: description, ground truth, output (tabs; no field holds a tab or a newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = lambda text: " ".join(str(text).split("\t")).replace("\n", " ")  # noqa: E731
    with path.open("w", encoding="utf-8") as handle:
        handle.write("description\tground truth\toutput\n")
        for row, out in zip(rows, outputs):
            handle.write(f"{clean(row['description'])}\t{clean(row['smiles'])}\t{clean(out)}\n")
    return path


def run_predict(config: Text2MolConfig, model=None, progress: bool = True) -> dict:
    """Write `config.output` for `config.method`; returns a summary (rows, empty outputs, seconds)."""
    started = time.perf_counter()
    rows = read_test_rows(config.test_path, config.limit)
    extra: dict = {}
    if config.method == "random":
        outputs = predict_random(rows, config.random_path, config.seed)
    elif config.method == "retrieval":
        outputs = predict_retrieval(rows, config, model)
    elif config.method in ("ga", "moflow"):
        if config.method == "moflow" and not config.moflow_model:
            raise ValueError("moflow_model: method moflow needs a trained MoFlow (`momu finetune moflow`)")
        outputs, batch = predict_ga(rows, config, progress)
        extra[config.method] = {k: batch[k] for k in ("answered", "failed", "failed_by_reason", "workers",
                                                      "seconds")}
    else:
        outputs = predict_molt5(rows, config.molt5_path)
    path = write_predictions(config.output, rows, outputs)
    return {"method": config.method, "rows": len(rows), "empty_outputs": sum(1 for o in outputs if not o.strip()),
            "output": str(path.resolve()), "seconds": round(time.perf_counter() - started, 1), **extra,
            "config": config.model_dump(mode="json")}
