"""`momu finetune moflow`: MoFlow maximum likelihood on ZINC250k with Ray Train (DDP).

Driver: read ZINC250k, encode it with Ray Data (canonical SMILES -> MoFlow's compact graph), split it equally per
worker, open the MLflow run, start a TorchTrainer; afterwards export the model, sample from it, score the samples
(validity with/without correction, uniqueness, novelty, FCD) and register it.
Workers: every rank initialises the same weights and the same ActNorm statistics (one fixed batch, one seed), then
trains on its own shard. Checkpoints hold model, optimiser, step and data position; batch order and
dequantisation noise are keyed by (seed, epoch/step, rank), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from momu.generate.moflow.config import MoFlowTrainConfig
from momu.generate.moflow.data import encode_smiles, read_zinc250k, to_dense
from momu.generate.moflow.model import MoFlow, count_parameters, save_moflow
from momu.job_output import ProgressLine, configure_job_output, verbose
from momu.pretrain.ray_train import CHECKPOINT_FILE
from momu.ray_session import load_train_checkpoint, make_torch_trainer, resume_checkpoint_dir, storage_path_for
from momu.tracking import MetricsLogger

# -- data -------------------------------------------------------------------------------------------------------


def encode_table(batch, atomic_numbers: list[int], max_atoms: int):
    """Ray Data stage: a pyarrow batch with `smiles` -> canonical smiles, atom_types (list<uint8>), bonds
    (flattened (i, j, channel) triples, list<uint8>) and reject (reason, '' when kept)."""
    import pyarrow as pa

    smiles, types, bonds, reject = [], [], [], []
    for s in batch.column("smiles").to_pylist():
        e = encode_smiles(s, atomic_numbers, max_atoms)
        if isinstance(e, str):
            smiles.append(s or "")
            types.append([])
            bonds.append([])
            reject.append(e)
        else:
            smiles.append(e.smiles)
            types.append(e.atom_types.tolist())
            bonds.append(e.bonds.reshape(-1).tolist())
            reject.append("")
    return pa.table({"smiles": smiles, "atom_types": pa.array(types, pa.list_(pa.uint8())),
                     "bonds": pa.array(bonds, pa.list_(pa.uint8())), "reject": reject})


def _ragged(column) -> list[np.ndarray]:
    """A list<uint8> Arrow column -> one numpy array per row (zero-copy slices)."""
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets, values = column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(column))]


class CompactMolecules:
    """A worker's molecules in memory: atom type indices and bond triples per molecule."""

    def __init__(self, types: list[np.ndarray], bonds: list[np.ndarray]):
        self.types, self.bonds = types, [b.reshape(-1, 3) for b in bonds]

    @classmethod
    def from_tables(cls, tables) -> "CompactMolecules":
        types, bonds = [], []
        for table in tables:
            types += _ragged(table.column("atom_types"))
            bonds += _ragged(table.column("bonds"))
        return cls(types, bonds)

    @classmethod
    def from_lists(cls, types: list, bonds: list) -> "CompactMolecules":
        return cls([np.asarray(t, np.uint8) for t in types], [np.asarray(b, np.uint8) for b in bonds])

    def __len__(self) -> int:
        return len(self.types)

    def dense(self, index, config) -> tuple[torch.Tensor, torch.Tensor]:
        return to_dense([self.types[i] for i in index], [self.bonds[i] for i in index], config.max_atoms,
                        config.num_atom_types)


# -- worker side ------------------------------------------------------------------------------------------------

def _any_rank(flag: bool) -> bool:
    """True when `flag` holds on any rank (one all-reduce of one number; the flag itself on a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class StepBudget:
    """When to stop training: after `max_steps` optimiser steps or `max_seconds` of this run's training loop,
    whichever comes first. The ranks' clocks differ, so they agree on the time limit through `any_rank` (every rank
    stops at the same step; none is left waiting in a collective the others have left)."""

    def __init__(self, max_steps: Optional[int], max_seconds: Optional[float], clock=time.monotonic,
                 any_rank=_any_rank):
        self.max_steps, self.max_seconds = max_steps or 10 ** 12, max_seconds
        self.clock, self.any_rank, self.start = clock, any_rank, clock()
        self.out_of_time = False

    def exhausted(self, step: int) -> bool:
        if step >= self.max_steps:
            return True
        if self.max_seconds is not None:
            self.out_of_time = self.any_rank(self.clock() - self.start >= self.max_seconds)
        return self.out_of_time


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class _Likelihood(nn.Module):
    """DDP wraps this: the forward returns MoFlow's two loss terms, so every parameter (ln_var too) is used in it."""

    def __init__(self, flow: MoFlow):
        super().__init__()
        self.flow = flow

    def forward(self, atoms, bonds):
        return self.flow.nll(*self.flow(atoms, bonds))


@torch.no_grad()
def evaluate_epoch(model: MoFlow, heldout: Optional[CompactMolecules], cfg: MoFlowTrainConfig, device) -> dict:
    """Held-out NLL (bits/dim, dequantised with fixed noise) and validity of a few prior samples."""
    from momu.generate.moflow.sample import quality, sample

    was_training = model.training
    model.eval()
    out: dict = {}
    try:
        if heldout is not None and len(heldout) and cfg.eval.val_molecules:
            generator = torch.Generator().manual_seed(cfg.seed)
            sums, count = np.zeros(2), 0
            n = min(len(heldout), cfg.eval.val_molecules)
            for start in range(0, n, 256):
                atoms, bonds = heldout.dense(range(start, min(n, start + 256)), cfg.model)
                z, la, lb = model(atoms.to(device), bonds.to(device), dequantize=True, generator=generator)
                parts = model.nll(z, la, lb)
                sums += np.array([float(p) for p in parts]) * len(atoms)
                count += len(atoms)
            out.update(val_nll=float(sums.sum() / count), val_nll_atoms=float(sums[0] / count),
                       val_nll_bonds=float(sums[1] / count))
        if cfg.eval.epoch_samples:
            q = quality(sample(model, cfg.eval.epoch_samples, cfg.eval.temperature, seed=cfg.seed))
            out.update(sample_validity=q["validity"],
                       sample_validity_without_correction=q["validity_without_correction"],
                       sample_uniqueness=q["uniqueness"])
    finally:
        model.train(was_training)
    return out


def train_func(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg = MoFlowTrainConfig.model_validate(loop_config["config"])
    configure_job_output(verbose())
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.num_threads or max(1, int(cfg.scaling.cpus_per_worker)))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = MoFlow(cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "restored_from_step": 0, "skipped_steps": 0}
    saved = load_train_checkpoint(loop_config, CHECKPOINT_FILE)
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["state"])
        state["restored_from_step"] = state["step"]
    else:
        # ActNorm's data-dependent initialisation: one fixed batch and noise seed, so every rank agrees.
        init = CompactMolecules.from_lists(*loop_config["init_batch"])
        atoms, bonds = init.dense(range(len(init)), cfg.model)
        torch.manual_seed(cfg.seed)
        model.train()
        with torch.no_grad():
            model(atoms, bonds)
    device = ray.train.torch.get_device()
    ddp = ray.train.torch.prepare_model(_Likelihood(model))
    shard = ray.train.get_dataset_shard(f"train_{rank}")
    data = CompactMolecules.from_tables(shard.iter_batches(batch_size=8192, batch_format="pyarrow"))
    heldout = CompactMolecules.from_lists(*loop_config["heldout"]) if rank == 0 and loop_config["heldout"] else None
    per_epoch = len(data) // cfg.batch_size
    if per_epoch == 0:
        raise ValueError(f"worker {rank} has {len(data)} molecules, fewer than batch_size {cfg.batch_size}")
    budget = StepBudget(cfg.max_steps, cfg.max_minutes * 60 if cfg.max_minutes else None)
    total = min(budget.max_steps, cfg.epochs * per_epoch)
    logger = MetricsLogger(loop_config.get("mlflow_run_id"), loop_config.get("mlflow_tracking_uri")) \
        if rank == 0 else None
    progress = ProgressLine("moflow step", total) if rank == 0 else None
    params = [p for p in model.parameters() if p.requires_grad]

    def save_and_report(metrics: dict) -> None:
        metrics = {**metrics, **{k: state[k] for k in ("step", "epoch", "restored_from_step", "skipped_steps")},
                   "stopped_by_time": int(budget.out_of_time)}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": dict(state)},
                           Path(tmp) / CHECKPOINT_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)

    last = {"train_loss": float("nan"), "nll_atoms": float("nan"), "nll_bonds": float("nan")}
    finished = budget.exhausted(state["step"])
    model.train()
    for epoch in range(state["epoch"], cfg.epochs):
        if finished:
            break
        order = np.random.default_rng([cfg.seed, epoch, rank]).permutation(len(data))
        first = state["batch_in_epoch"] if epoch == state["epoch"] else 0
        state["epoch"] = epoch
        for b in range(first, per_epoch):
            t0 = time.perf_counter()
            atoms, bonds = data.dense(order[b * cfg.batch_size:(b + 1) * cfg.batch_size], cfg.model)
            torch.manual_seed(_seed(cfg.seed, rank, state["step"]))  # dequantisation noise of this step
            nll_atoms, nll_bonds = ddp(atoms.to(device), bonds.to(device))
            loss = nll_atoms + nll_bonds
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Gradients are all-reduced, so every rank takes the same decision on a non-finite step.
            grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
            if torch.isfinite(grad_norm):
                optimizer.step()
            else:
                state["skipped_steps"] += 1
            state["step"] += 1
            state["batch_in_epoch"] = b + 1
            seconds = time.perf_counter() - t0
            last = {"train_loss": loss.item(), "nll_atoms": nll_atoms.item(), "nll_bonds": nll_bonds.item()}
            if logger:
                logger.log({**last, "samples_per_s": len(atoms) * world / seconds, "step_seconds": seconds},
                           state["step"])
                if state["step"] % cfg.log_every == 0:
                    logger.flush()
            if progress:
                progress.update(state["step"], epoch=epoch, loss=last["train_loss"], step_s=round(seconds, 2))
            if state["step"] % cfg.checkpoint_every == 0:
                save_and_report(last)
            if budget.exhausted(state["step"]):
                finished = True
                break
        if not finished:
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        val = evaluate_epoch(model, heldout, cfg, device) if rank == 0 else {}
        if logger:
            logger.log(val, state["step"])
            logger.flush()
        save_and_report({**last, **val})


# -- driver side ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class MoFlowTrainResult:
    run_name: str
    checkpoint_path: Optional[str]
    model_dir: Optional[Path]
    metrics: dict
    sample_metrics: dict
    data_summary: dict
    parameters: int
    mlflow_run_id: Optional[str] = None
    model_uri: Optional[str] = None


def build_data(cfg: MoFlowTrainConfig, num_workers: int):
    """(per-worker train datasets, held-out compact molecules + SMILES, canonical train SMILES, init batch,
    summary)."""
    import pyarrow as pa
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True  # deterministic order
    d = cfg.data
    train, heldout = read_zinc250k(d.path, d.split, d.valid_idx_path, d.max_molecules, d.max_heldout,
                                   d.heldout_fraction, cfg.seed)
    kwargs = {"atomic_numbers": cfg.model.atomic_numbers, "max_atoms": cfg.model.max_atoms}
    ds = ray.data.from_arrow(pa.table({"smiles": train})).repartition(max(1, len(train) // 8192 + 1))
    ds = ds.map_batches(encode_table, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=1024).materialize()
    reasons = Counter(r["reject"] for r in ds.filter(expr="reject != ''").select_columns(["reject"]).take_all())
    ds = ds.filter(expr="reject == ''").select_columns(["smiles", "atom_types", "bonds"]).materialize()
    rows = ds.count()
    if rows < num_workers * cfg.batch_size:
        raise ValueError(f"data.path: {rows} usable training molecules cannot fill one batch of {cfg.batch_size} "
                         f"on each of {num_workers} workers")
    train_smiles = set(ds.select_columns(["smiles"]).to_pandas()["smiles"])
    first = ds.take(cfg.batch_size)
    init_batch = ([r["atom_types"] for r in first], [r["bonds"] for r in first])
    held = encode_table(pa.table({"smiles": heldout}), **kwargs)
    kept = [i for i, r in enumerate(held.column("reject").to_pylist()) if not r]
    held = held.take(pa.array(kept, pa.int64()))
    held_lists = (held.column("atom_types").to_pylist(), held.column("bonds").to_pylist())
    splits = ds.select_columns(["atom_types", "bonds"]).split(num_workers, equal=True)
    summary = {"train_read": len(train), "train_rows": rows, "rejected_by_reason": dict(reasons),
               "heldout_rows": held.num_rows, "train_rows_per_worker": splits[0].count(),
               "distinct_train_smiles": len(train_smiles)}
    return splits, held_lists, held.column("smiles").to_pylist(), train_smiles, init_batch, summary


def run_moflow_training(cfg: MoFlowTrainConfig, log_to_mlflow: bool = True,
                        progress: bool = True) -> MoFlowTrainResult:

    from momu.ray_session import init_ray_if_needed

    resume_from = resume_checkpoint_dir(cfg.resume, CHECKPOINT_FILE)  # a bad path fails before any work
    init_ray_if_needed()
    n = cfg.scaling.num_workers
    splits, held_lists, held_smiles, train_smiles, init_batch, summary = build_data(cfg, n)
    parameters = count_parameters(MoFlow(cfg.model))
    summary["parameters"] = parameters
    if progress:
        print(f"data: {json.dumps(summary)}")
    run_name = cfg.run_name or f"moflow-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = storage_path_for(cfg.storage_path)
    for ds in splits:
        ds.context.enable_progress_bars = verbose()
        ds.context.print_on_execution_start = verbose()
    from momu.tracking import optional_mlflow_run

    with optional_mlflow_run(cfg, log_to_mlflow, cfg.mlflow_experiment, cfg.mlflow_tracking_uri, run_name,
                             summary) as (run_id, tracking_uri):
        trainer = make_torch_trainer(
            train_func, {"config": cfg.model_dump(mode="json"), "init_batch": init_batch, "heldout": held_lists,
                         "mlflow_run_id": run_id, "mlflow_tracking_uri": tracking_uri,
                         "resume_from": resume_from},
            cfg.scaling, run_name, storage, cfg.max_failures, cfg.checkpoints_to_keep,
            datasets={f"train_{i}": split for i, split in enumerate(splits)})
        result = trainer.fit()
        metrics = dict(result.metrics or {})
        checkpoint_path = result.checkpoint.path if result.checkpoint else None
        model_dir = model_uri = None
        sample_metrics: dict = {}
        if checkpoint_path:
            model = export_model(cfg, checkpoint_path)
            model_dir = save_moflow(model, Path(cfg.output_dir) if cfg.output_dir else Path(storage) / run_name /
                                    "model", extra={"trained_steps": metrics.get("step"), "parameters": parameters})
            if cfg.eval.samples:
                sample_metrics = final_samples(model, cfg, train_smiles, held_smiles, model_dir)
            if run_id:
                model_uri = _log_and_register(cfg, model_dir, metrics, sample_metrics)
    return MoFlowTrainResult(run_name, checkpoint_path, model_dir, metrics, sample_metrics, summary, parameters,
                             run_id, model_uri)


def export_model(cfg: MoFlowTrainConfig, checkpoint_path: str) -> MoFlow:
    model = MoFlow(cfg.model)
    saved = torch.load(Path(checkpoint_path) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    return model.eval()


def final_samples(model: MoFlow, cfg: MoFlowTrainConfig, train_smiles: set, held_smiles: list,
                  model_dir: Path) -> dict:
    """Sample eval.samples molecules from the prior, score them, write samples.txt and sample_metrics.json."""
    from momu.generate.moflow.sample import quality, sample, sample_smiles

    raw = sample(model, cfg.eval.samples, cfg.eval.temperature, seed=cfg.seed)
    (model_dir / "samples.txt").write_text("\n".join(s or "" for s in sample_smiles(raw)) + "\n")
    metrics = quality(raw, train_smiles, held_smiles if cfg.eval.fcd else None, fcd=cfg.eval.fcd)
    metrics["temperature"] = cfg.eval.temperature
    (model_dir / "sample_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _log_and_register(cfg: MoFlowTrainConfig, model_dir: Path, metrics: dict, sample_metrics: dict) -> str:
    import importlib.util

    import mlflow

    mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    # generated_*: the end-of-training samples (sample_* are the small per-epoch checks)
    mlflow.log_metrics({f"generated_{k}": float(v) for k, v in sample_metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if sample_metrics:
        mlflow.log_dict(sample_metrics, "sample_metrics.json")
    flavour = importlib.util.find_spec("momu.generate.moflow.mlflow_model").origin
    info = mlflow.pyfunc.log_model(name="model", python_model=flavour, artifacts={"moflow": str(model_dir)},
                                   pip_requirements=["momu", "torch", "rdkit", "safetensors"])
    if not cfg.register_model_name:
        return info.model_uri
    version = mlflow.register_model(info.model_uri, cfg.register_model_name)
    return f"models:/{cfg.register_model_name}/{version.version}"

