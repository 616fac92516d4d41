"""Property-prediction finetuning (`momu finetune property`): MoMu's MoleculeNet recipe in one process.

Data: `read_moleculenet` -> `featurize_many` once (unparseable SMILES are reported by row and skipped) -> a scaffold
(or random) split, cached on disk with the graphs so repeated runs and sweep trials skip RDKit. Training: GIN + mean
pool + linear head, masked multi-task BCE (or MSE on standardised targets for regression), Adam, shuffled batches
collated with `graphs_to_pyg_batch`. Every epoch the validation metric is computed; the reported test metric is the
one at the best-validation epoch (ROC-AUC averaged over the tasks that have both classes; RMSE for regression).

Pure torch/RDKit/numpy: no Ray (the sweep's Ray Tune wiring lives in `momu.property.sweep`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from momu.job_output import progress_bar

from momu.chem.columns import GRAPH_COLUMNS, flat_column, graphs_to_columns
from momu.chem.featurize import MolGraph, featurize_many, graphs_to_pyg_batch
from momu.chem.scaffold import Split, make_split
from momu.property.config import PropertyDataSection, PropertyFinetuneConfig
from momu.property.metrics import (
    TaskScores,
    masked_bce_with_logits,
    masked_mse,
    multitask_rmse,
    multitask_roc_auc,
)
from momu.property.model import build_property_model, save_property_model

CACHE_FORMAT_VERSION = 1
MAX_REJECT_EXAMPLES = 20


# -- data -------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PropertyData:
    """A featurized property dataset with its split. Row i of every field is one parsed molecule."""

    name: str
    ids: list[str]  # source row ids (0-based data row of the CSV)
    smiles: list[str]
    graphs: Sequence[MolGraph]  # a list, or ColumnGraphs when read from the cache
    labels: np.ndarray  # float32 [N, T], NaN = missing
    task_names: list[str]
    task_type: str  # "classification" | "regression"
    split: Split
    report: dict  # rows read / malformed / rejected at featurization, with examples

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def summary(self) -> str:
        r = self.report
        text = (f"{self.name}: {r['rows_read']} rows, {len(self)} molecules, {self.num_tasks} "
                f"{self.task_type} task(s); {self.split.method} split {self.split.sizes()}")
        if r["rows_malformed"]:
            text += f"; malformed rows {r['rows_malformed']} ({r['malformed']})"
        if r["rejected"]:
            text += f"; skipped {sum(r['rejected'].values())} molecule(s) RDKit could not featurize ({r['rejected']})"
            ex = r["reject_examples"][0]
            text += f", first: CSV line {ex['line']}: {ex['detail']}"
        caps = r.get("subsampled")
        if caps:
            text += f"; capped parts {caps}"
        return text


def load_property_data(section: PropertyDataSection, progress: bool = True) -> PropertyData:
    """Read, featurize and split a dataset (from the cache when one matches), then apply task selection and caps."""
    data = _load_full(section, progress)
    data = select_tasks(data, section.max_tasks)
    return cap_parts(data, section.max_train_molecules, section.max_eval_molecules, section.subsample,
                     section.split_seed)


def _load_full(section: PropertyDataSection, progress: bool) -> PropertyData:
    path = Path(section.path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path: no such file {path}")
    cache = _cache_dir(section)
    if cache is not None and (cache / "meta.json").is_file():
        try:
            return _read_cache(cache, section)
        except (OSError, ValueError, KeyError, pa.ArrowException) as err:  # stale or partial: rebuild
            if progress:
                print(f"property cache {cache} unusable ({err}); rebuilding")
    data = _build(section, progress)
    if cache is not None:
        _write_cache(cache, data)
    return data


def _build(section: PropertyDataSection, progress: bool) -> PropertyData:
    from momu.data.readers import read_moleculenet

    name = section.display_name()
    read = read_moleculenet(section.path, section.smiles_column, section.task_columns)
    table, report = read.table, read.report
    if table.num_rows == 0:
        raise ValueError(f"{section.path}: no usable rows ({report.summary()})")
    smiles_all = table.column("smiles").to_pylist()
    ids_all = table.column("id").to_pylist()
    chunks = range(0, len(smiles_all), 2048)
    graphs: list[MolGraph] = []
    keep: list[int] = []
    rejected: list[tuple[int, object]] = []
    for start in progress_bar(chunks, desc=f"featurizing {name} ({len(smiles_all)} molecules)",
                              disable=not progress or len(smiles_all) < 4096, unit="chunk"):
        batch = featurize_many(smiles_all[start:start + 2048], max_atoms=section.max_atoms)
        graphs.extend(batch.graphs)
        keep.extend(start + i for i in batch.indices)
        rejected.extend((start + i, r) for i, r in batch.rejected)
    if not graphs:
        raise ValueError(f"{section.path}: none of the {len(smiles_all)} SMILES could be featurized")
    labels_all = _labels_matrix(table, len(report.task_names))
    labels = labels_all[keep]
    task_type = _task_type(section.task_type, labels, section.path)
    smiles = [smiles_all[i] for i in keep]
    split = _make_or_load_split(section, smiles)
    reject_counts: dict[str, int] = {}
    for _, r in rejected:
        reject_counts[r.reason] = reject_counts.get(r.reason, 0) + 1
    info = {
        "path": str(path_abs(section.path)),
        "rows_read": report.rows_read,
        "rows_malformed": report.rows_malformed,
        "malformed": dict(report.malformed),
        "malformed_examples": [{"line": e.row, "reason": e.reason, "raw": e.raw} for e in report.examples],
        "rejected": reject_counts,
        # ids are 0-based data rows; +2 gives the 1-based CSV line (header is line 1)
        "reject_examples": [{"line": int(ids_all[i]) + 2, "reason": r.reason, "detail": r.detail}
                            for i, r in rejected[:MAX_REJECT_EXAMPLES]],
    }
    return PropertyData(name, [ids_all[i] for i in keep], smiles, graphs, labels, list(report.task_names),
                        task_type, split, info)


def path_abs(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _labels_matrix(table: pa.Table, num_tasks: int) -> np.ndarray:
    column = table.column("labels").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(table.num_rows, num_tasks)


def _task_type(requested: str, labels: np.ndarray, path: str) -> str:
    present = labels[~np.isnan(labels)]
    binary = bool(np.isin(present, (0.0, 1.0)).all())
    if requested == "auto":
        return "classification" if binary else "regression"
    if requested == "classification" and not binary:
        bad = present[~np.isin(present, (0.0, 1.0))][:5]
        raise ValueError(f"data.task_type: classification needs labels 0/1 (or blank) in {path}; found {bad.tolist()}")
    return requested


def _make_or_load_split(section: PropertyDataSection, smiles: list[str]) -> Split:
    if section.split_file:
        split = Split.load(section.split_file, smiles)
        if split.num_molecules and split.num_molecules != len(smiles):
            raise ValueError(f"data.split_file: {section.split_file} covers {split.num_molecules} molecules, the data "
                             f"has {len(smiles)}")
        return split
    return make_split(smiles, section.split, section.split_fractions, section.split_seed)


def select_tasks(data: PropertyData, max_tasks: Optional[int]) -> PropertyData:
    """Keep the first `max_tasks` tasks (a reduced protocol for datasets with hundreds of tasks)."""
    if max_tasks is None or max_tasks >= data.num_tasks:
        return data
    return dataclasses.replace(data, labels=data.labels[:, :max_tasks], task_names=data.task_names[:max_tasks])


def cap_parts(data: PropertyData, max_train: Optional[int], max_eval: Optional[int], strategy: str = "random",
              seed: int = 0) -> PropertyData:
    """Cap the train part to `max_train` and the valid and test parts to `max_eval` molecules each.

    random: a uniform sample. keep_positives (classification, for rare actives such as MUV or HIV): the molecules
    with a positive label fill up to half of the cap (all of them when they fit, else a uniform sample), the rest
    is a uniform sample of the other molecules. Uniformly subsampling the negatives leaves a task's expected
    ROC-AUC unchanged, so a capped test part stays unbiased for single-task data (for multi-task data the negatives
    of one task are slightly enriched in other tasks' positives); a capped train part gets a higher positive rate."""
    if strategy == "keep_positives" and data.task_type != "classification":
        raise ValueError("data.subsample: keep_positives needs a classification dataset")
    split = data.split
    done = {}
    for code, (part, cap) in enumerate((("train", max_train), ("valid", max_eval), ("test", max_eval))):
        idx = split.parts()[part]
        if cap is None or len(idx) <= cap:
            continue
        rng = np.random.default_rng([seed, code])
        if strategy == "keep_positives":
            positive = np.nan_to_num(data.labels[idx], nan=0.0).max(axis=1) == 1.0
            pos, rest = idx[positive], idx[~positive]
            n_pos = min(len(pos), cap // 2)
            n_rest = min(len(rest), cap - n_pos)
            n_pos = min(len(pos), cap - n_rest)  # few negatives: positives fill the remainder
            chosen = np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(rest, n_rest, replace=False)])
        else:
            chosen = rng.choice(idx, cap, replace=False)
        split = split.subsample(part, chosen)
        done[part] = f"{len(idx)}->{cap}"
    if not done:
        return data
    return dataclasses.replace(data, split=split, report={**data.report, "subsampled": done, "subsample": strategy})


# -- cache ------------------------------------------------------------------------------------------------------

def _cache_key(section: PropertyDataSection) -> str:
    path = path_abs(section.path)
    stat = path.stat()
    split_file = None
    if section.split_file:
        split_path = path_abs(section.split_file)
        split_file = [str(split_path), split_path.stat().st_mtime_ns]
    key = {
        "v": CACHE_FORMAT_VERSION, "path": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns,
        "smiles_column": section.smiles_column, "task_columns": section.task_columns,
        "task_type": section.task_type, "max_atoms": section.max_atoms, "split": section.split,
        "fractions": section.split_fractions, "split_file": split_file,
        "split_seed": section.split_seed if section.split == "random" else None,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _cache_dir(section: PropertyDataSection) -> Optional[Path]:
    if not section.cache_dir:
        return None
    return path_abs(section.cache_dir) / f"{section.display_name()}-{_cache_key(section)}"


def _write_cache(cache: Path, data: PropertyData) -> None:
    """Write to a temporary sibling and rename it into place (concurrent writers cannot leave a partial cache)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".tmp-", dir=cache.parent))
    try:
        columns = graphs_to_columns(data.graphs)
        table = pa.table({
            "id": pa.array(data.ids, pa.string()),
            "smiles": pa.array(data.smiles, pa.string()),
            "labels": pa.FixedSizeListArray.from_arrays(pa.array(data.labels.reshape(-1), pa.float32()),
                                                        data.num_tasks),
            **{name: columns[name] for name in GRAPH_COLUMNS},
        })
        pq.write_table(table, tmp / "data.parquet")
        data.split.save(tmp / "split.json", ids=data.ids)
        meta = {"name": data.name, "task_names": data.task_names, "task_type": data.task_type,
                "report": data.report, "format_version": CACHE_FORMAT_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
        try:
            os.rename(tmp, cache)
        except OSError:  # another process got there first; theirs is equivalent
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(cache: Path, section: PropertyDataSection) -> PropertyData:
    meta = json.loads((cache / "meta.json").read_text())
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        raise ValueError("cache format changed")
    table = pq.read_table(cache / "data.parquet")
    smiles = table.column("smiles").to_pylist()
    split = Split.load(cache / "split.json", smiles)
    num_tasks = len(meta["task_names"])
    labels = table.column("labels").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    labels = labels.astype(np.float32).reshape(table.num_rows, num_tasks)
    graphs = ColumnGraphs(table)
    return PropertyData(section.display_name(), table.column("id").to_pylist(), smiles, graphs, labels,
                        meta["task_names"], meta["task_type"], split, meta["report"])


class ColumnGraphs(Sequence):
    """Read-only sequence of MolGraphs backed by a table's graph columns; each graph is sliced out on access, so
    a capped run over a large cached dataset (MUV: 93k molecules) only builds the graphs it uses."""

    def __init__(self, table: pa.Table):
        self._flat = {name: flat_column(table, name) for name in
                      ("atom_type", "chirality", "edge_src", "edge_dst", "bond_type", "bond_stereo", "bond_dir")}
        self._node_off = np.concatenate([[0], np.cumsum(self._flat["atom_type"][1])])
        self._edge_off = np.concatenate([[0], np.cumsum(self._flat["edge_src"][1])])
        self._len = table.num_rows

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        n0, n1, e0, e1 = self._node_off[i], self._node_off[i + 1], self._edge_off[i], self._edge_off[i + 1]
        f = self._flat
        return MolGraph(atom_type=f["atom_type"][0][n0:n1], chirality=f["chirality"][0][n0:n1],
                        edge_index=np.stack([f["edge_src"][0][e0:e1], f["edge_dst"][0][e0:e1]]),
                        bond_type=f["bond_type"][0][e0:e1], bond_stereo=f["bond_stereo"][0][e0:e1],
                        bond_dir=f["bond_dir"][0][e0:e1])


# -- training ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PropertyResult:
    output_dir: Path
    metrics: dict
    history: list[dict]
    model_dir: Optional[Path] = None
    mlflow_run_id: Optional[str] = None


def metric_name(task_type: str) -> str:
    return "roc_auc" if task_type == "classification" else "rmse"


def _device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class PropertyTrainer:
    """Model, optimiser and data of one finetuning run."""

    def __init__(self, config: PropertyFinetuneConfig, data: PropertyData):
        self.config, self.data = config, data
        t = config.train
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.device = _device(t.device)
        self.model, self.init_info = build_property_model(config.model, data.num_tasks)
        self.model.to(self.device)
        self.task_type = data.task_type
        self.metric = metric_name(self.task_type)
        self.train_idx = data.split.train
        if len(self.train_idx) < 2:
            raise ValueError(f"{data.name}: the train part has {len(self.train_idx)} molecules; need at least 2")
        if len(data.split.valid) == 0:
            raise ValueError(f"{data.name}: the valid part is empty; cannot select the best epoch")
        self.label_mean = self.label_std = None
        if self.task_type == "regression":
            train_labels = data.labels[self.train_idx]
            self.label_mean = np.nanmean(train_labels, axis=0).astype(np.float32)
            std = np.nanstd(train_labels, axis=0).astype(np.float32)
            self.label_std = np.where(std > 0, std, 1.0).astype(np.float32)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        bond = self.model.bond_feature
        # Evaluation batches are fixed: collate them once.
        self.eval_batches = {part: self._collate_all(data.split.parts()[part], t.eval_batch_size, bond)
                             for part in ("valid", "test")}

    def _collate_all(self, idx: np.ndarray, batch_size: int, bond: str):
        return [(graphs_to_pyg_batch([self.data.graphs[i] for i in idx[s:s + batch_size]], bond),
                 torch.from_numpy(self.data.labels[idx[s:s + batch_size]]))
                for s in range(0, len(idx), batch_size)]

    def _autocast(self):
        if self.config.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _target(self, labels: torch.Tensor) -> torch.Tensor:
        if self.label_std is None:
            return labels
        return (labels - torch.from_numpy(self.label_mean)) / torch.from_numpy(self.label_std)

    def _loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = self._target(labels).to(out.device)
        if self.task_type == "classification":
            return masked_bce_with_logits(out, target)
        return masked_mse(out, target)

    def train_epoch(self) -> float:
        """One pass over the train part in a fresh random order; returns the mean batch loss."""
        bs, bond = self.config.train.batch_size, self.model.bond_feature
        order = self.rng.permutation(self.train_idx)
        starts = list(range(0, len(order), bs))
        if len(order) - starts[-1] < 2 and len(starts) > 1:  # a 1-molecule batch could break BatchNorm
            starts.pop()
        self.model.train()
        losses = []
        for s in starts:
            idx = order[s:s + bs] if s != starts[-1] else order[s:]
            batch = graphs_to_pyg_batch([self.data.graphs[i] for i in idx], bond).to(self.device)
            labels = torch.from_numpy(self.data.labels[idx])
            with self._autocast():
                out = self.model(batch)
            loss = self._loss(out.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses))

    @torch.no_grad()
    def predict(self, part: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(labels, predictions, mean loss) on a part; predictions are probabilities or label-unit values."""
        self.model.eval()
        preds, labels, losses, weights = [], [], [], []
        for batch, y in self.eval_batches[part]:
            with self._autocast():
                out = self.model(batch.to(self.device))
            out = out.float().cpu()
            losses.append(float(self._loss(out, y)))
            weights.append(int((~torch.isnan(y)).sum()))
            if self.task_type == "classification":
                preds.append(torch.sigmoid(out).numpy())
            else:
                preds.append((out * torch.from_numpy(self.label_std) + torch.from_numpy(self.label_mean)).numpy())
            labels.append(y.numpy())
        loss = float(np.average(losses, weights=weights)) if sum(weights) else float("nan")
        return np.concatenate(labels), np.concatenate(preds), loss

    def score(self, part: str) -> tuple[TaskScores, float]:
        labels, preds, loss = self.predict(part)
        if self.task_type == "classification":
            return multitask_roc_auc(labels, preds, self.data.task_names), loss
        return multitask_rmse(labels, preds, self.data.task_names), loss


def finetune_property(config: PropertyFinetuneConfig, data: Optional[PropertyData] = None, progress: bool = True,
                      log_to_mlflow: bool = True, parent_run_id: Optional[str] = None,
                      run_name: Optional[str] = None, tags: Optional[dict] = None,
                      report_fn: Optional[Callable[[dict], None]] = None) -> PropertyResult:
    """Finetune end to end: data -> model -> epochs (validation every epoch) -> test at the best-validation epoch
    -> output_dir/{metrics.json, history.jsonl, split.json, model/} (+ one MLflow run, a child of `parent_run_id`
    when given). `report_fn` receives each epoch's metrics and then the final ones (the sweep's Tune hook)."""
    t = config.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if data is None:
        data = load_property_data(config.data, progress=progress)
    data_seconds = time.perf_counter() - started
    if progress:
        print(f"data: {data.summary()}")
    trainer = PropertyTrainer(config, data)
    metric = trainer.metric
    higher_better = metric == "roc_auc"
    valid_scores0, _ = trainer.score("valid")
    select_by = metric if valid_scores0.num_scored else "loss"
    if progress and select_by == "loss":
        print("warning: no validation task has both classes; selecting the best epoch by validation loss")
    data.split.save(output_dir / "split.json", ids=data.ids)

    run_ctx = _mlflow_context(config, log_to_mlflow, parent_run_id, run_name, tags, data, trainer.init_info)
    history: list[dict] = []
    with run_ctx as run:
        best: dict = {}
        best_state = None
        bar = progress_bar(range(1, t.epochs + 1), desc=f"finetune {data.name}", disable=not progress,
                           unit="epoch")
        train_seconds = 0.0
        for epoch in bar:
            tic = time.perf_counter()
            train_loss = trainer.train_epoch()
            train_seconds += time.perf_counter() - tic
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch}; lower train.lr?")
            valid_scores, valid_loss = trainer.score("valid")
            record = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                      f"valid_{metric}": valid_scores.mean}
            value = valid_scores.mean if select_by == metric else valid_loss
            better_is_higher = higher_better if select_by == metric else False
            improved = not best or (value > best["value"] if better_is_higher else value < best["value"])
            if t.test_every_epoch:
                test_scores, test_loss = trainer.score("test")
                record.update({f"test_{metric}": test_scores.mean, "test_loss": test_loss})
            if improved:
                best = {"value": value, "epoch": epoch, "valid": valid_scores, "valid_loss": valid_loss,
                        "record": record}
                best_state = copy.deepcopy(trainer.model.state_dict())
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            bar.set_postfix(loss=f"{train_loss:.3f}", valid=f"{valid_scores.mean:.3f}",
                            best=f"{best['valid'].mean:.3f}@{best['epoch']}")
            if run is not None:
                _log_metrics({f"epoch/{k}": v for k, v in record.items() if k != "epoch"}, epoch)
            if report_fn is not None:
                report_fn({**record, "done": False})

        # The test metric at the best-validation epoch: the best epoch's weights, evaluated once.
        trainer.model.load_state_dict(best_state)
        test_scores, test_loss = trainer.score("test")
        best["record"].update({f"test_{metric}": test_scores.mean, "test_loss": test_loss})
        best.update(test=test_scores, test_loss=test_loss)
        metrics = {
            "dataset": data.name,
            "init": config.model.init,
            "seed": config.seed,
            "task_type": data.task_type,
            "metric": metric,
            "selected_by": f"valid_{select_by}",
            "best_epoch": best["epoch"],
            "epochs": t.epochs,
            f"valid_{metric}": best["valid"].mean,
            f"test_{metric}": test_scores.mean,
            "valid_loss": best["valid_loss"],
            "test_loss": best["test_loss"],
            "test_tasks_scored": test_scores.num_scored,
            "test_tasks_skipped": test_scores.skipped,
            f"test_{metric}_per_task": dict(zip(test_scores.task_names, test_scores.per_task)),
            "num_tasks": data.num_tasks,
            "split": data.split.method,
            "split_sizes": data.split.sizes(),
            "train_molecules_per_s": len(data.split.train) * t.epochs / max(train_seconds, 1e-9),
            "train_seconds": train_seconds,
            "data_seconds": data_seconds,
            "seconds": time.perf_counter() - started,
            "data": data.report,
            "init_info": trainer.init_info,
        }
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (output_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        model_dir = None
        if config.save_model:
            model_dir = save_property_model(
                trainer.model, output_dir / "model", data.task_names, data.task_type,
                trainer.label_mean, trainer.label_std,
                extra={"dataset": data.name, "data_path": data.report.get("path"), "seed": config.seed,
                       "best_epoch": best["epoch"], **{k: v for k, v in trainer.init_info.items() if k != "graph"}})
        run_id = None
        if run is not None:
            import mlflow

            _log_metrics({k: metrics[k] for k in ("best_epoch", f"valid_{metric}", f"test_{metric}", "valid_loss",
                                                  "test_loss", "test_tasks_scored", "train_molecules_per_s",
                                                  "train_seconds")}, best["epoch"])
            mlflow.log_dict(metrics, "metrics.json")
            mlflow.log_artifact(str(output_dir / "split.json"))
            mlflow.log_artifact(str(output_dir / "history.jsonl"))
            if model_dir is not None:
                mlflow.log_artifacts(str(model_dir), artifact_path="model")
            run_id = run.info.run_id
        if report_fn is not None:
            report_fn({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))} | {"done": True})
    return PropertyResult(output_dir, metrics, history, model_dir, run_id)


def _mlflow_context(config: PropertyFinetuneConfig, enabled: bool, parent_run_id: Optional[str],
                    run_name: Optional[str], tags: Optional[dict], data: PropertyData, init_info: dict):
    if not enabled:
        return contextlib.nullcontext(None)
    from momu.tracking import mlflow_run

    @contextlib.contextmanager
    def ctx():
        with mlflow_run(config, config.mlflow_experiment, config.mlflow_tracking_uri,
                        run_name=run_name or f"{data.name}-seed{config.seed}") as run:
            import mlflow

            all_tags = {"dataset": data.name, "task_type": data.task_type, "split": data.split.method,
                        "seed": str(config.seed), **(tags or {})}
            if parent_run_id:
                all_tags["mlflow.parentRunId"] = parent_run_id
            mlflow.set_tags(all_tags)
            mlflow.log_dict({"data": data.report, "split_sizes": data.split.sizes(), "init": init_info},
                            "data_summary.json")
            yield run

    return ctx()


def _log_metrics(metrics: dict, step: int) -> None:
    import mlflow

    clean = {k: float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    if clean:
        mlflow.log_metrics(clean, step=step)


# -- prediction -------------------------------------------------------------------------------------------------

@torch.no_grad()
def predict_graphs(loaded, graphs: Sequence[MolGraph], batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """[len(graphs), num_tasks] probabilities (classification) or values (regression) from a finetuned model."""
    model = loaded.model.to(device)
    bond = model.bond_feature
    out = [loaded.predict_batch(graphs_to_pyg_batch(graphs[s:s + batch_size], bond).to(device)).cpu().numpy()
           for s in range(0, len(graphs), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(loaded.task_names)), np.float32)


def predict_file(model_source: str, input_path: str, output: str, smiles_column: Optional[str] = None,
                 id_column: Optional[str] = None, batch_size: int = 256, max_atoms: int = 512,
                 progress: bool = True, header: str = "auto") -> dict:
    """`momu predict property`: a molecule file -> id, smiles, one column per task (CSV or Parquet by suffix).
    Rows the reader refuses and SMILES RDKit cannot featurize are written to <output stem>.rejects.csv. A
    damaged input file does not stop the run: its rows before the damage are predicted, the damage is one
    rejected row and an entry of `files_failed` (rows_read = predicted + rejected, files = files_ok + failed)."""
    import csv

    from momu.chem.library import tally_files
    from momu.data.readers import FILE_FAILURE_REASONS, iter_molecule_library
    from momu.property.model import load_property_model

    out_path = Path(output)
    name = out_path.name.lower()
    if not name.endswith((".csv", ".csv.gz", ".parquet")):
        raise ValueError(f"output {output}: use a .csv, .csv.gz or .parquet file name")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    loaded = load_property_model(model_source)
    columns: dict[str, list] = {"id": [], "smiles": []}
    values, rejects, reasons = [], [], {}
    files = {"files": 0, "files_failed": [], "ignored_files": []}
    rows_read = 0
    bar = progress_bar(desc="predict", unit="mol", disable=not progress)
    # Chunk by chunk: graphs of one chunk at a time, and every reader-refused row kept (a merged report would keep
    # only a sample of them).
    for table, report in iter_molecule_library(input_path, smiles_column, id_column, header=header):
        rows_read += report.rows_read
        tally_files(files, report.metadata)
        for reason, count in report.malformed.items():
            reasons[reason] = reasons.get(reason, 0) + count
        for ex in report.examples:
            damage = ex.reason in FILE_FAILURE_REASONS
            rejects.append(["", "" if damage else ex.raw, ex.reason, ex.raw if damage else f"row {ex.row}", "read"])
        ids, smiles = table.column("id").to_pylist(), table.column("smiles").to_pylist()
        featurized = featurize_many(smiles, max_atoms=max_atoms)
        for i, rejection in featurized.rejected:
            reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
            rejects.append([ids[i], smiles[i], rejection.reason, rejection.detail, "featurize"])
        if featurized.graphs:
            values.append(predict_graphs(loaded, featurized.graphs, batch_size))
            columns["id"] += [ids[i] for i in featurized.indices]
            columns["smiles"] += [smiles[i] for i in featurized.indices]
        bar.update(report.rows_read)
    bar.close()
    predicted = np.concatenate(values) if values else np.zeros((0, len(loaded.task_names)), np.float32)
    arrays = {"id": pa.array(columns["id"], pa.string()), "smiles": pa.array(columns["smiles"], pa.string())}
    for t, task in enumerate(loaded.task_names):
        column = task if task not in arrays else f"task_{task}"
        arrays[column] = pa.array(predicted[:, t].astype(np.float64), pa.float64())
    table = pa.table(arrays)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".parquet"):
        pq.write_table(table, out_path)
    else:
        import pyarrow.csv as pacsv

        if name.endswith(".gz"):
            with pa.CompressedOutputStream(str(out_path), "gzip") as stream:
                pacsv.write_csv(table, stream)
        else:
            pacsv.write_csv(table, out_path)
    stem = name.removesuffix(".gz").removesuffix(".csv").removesuffix(".parquet")
    rejects_path = out_path.with_name(f"{stem}.rejects.csv")
    with open(rejects_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "input", "reason", "detail", "stage"])
        writer.writerows(rejects)
    if rows_read != table.num_rows + len(rejects):  # an accounting bug must never pass silently
        raise RuntimeError(f"row accounting mismatch: read {rows_read} != {table.num_rows} + {len(rejects)}")
    return {
        "model": str(model_source), "input": str(input_path), "output": str(out_path.resolve()),
        "rejects": str(rejects_path.resolve()), "task_type": loaded.task_type, "tasks": loaded.task_names,
        "rows_read": rows_read, "predicted": table.num_rows, "rejected": len(rejects), "rejected_by_reason": reasons,
        "files": files["files"], "files_ok": files["files"] - len(files["files_failed"]),
        "files_failed": files["files_failed"], "ignored_files": files["ignored_files"],
        "seconds": round(time.perf_counter() - started, 3),
    }
