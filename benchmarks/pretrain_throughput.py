"""Distributed pretraining throughput on the local Ray cluster, measured in one run.

Prints, for MoMu pretraining on the bundled ChEBI-20 slice (GIN 5x300, batch 32 per worker):
  - samples/s with 1 worker and with 2 workers (1 CPU each, locked text), and their ratio (goal >= 1.8x);
  - the machine's ceiling for that ratio: the same locked-text step (same model, batch, data, 1 thread per
    process) in plain torch processes with no Ray, 1 process alone vs 2 in DistributedDataParallel over gloo,
    and how much of that ceiling the Ray Train job reaches, and the Ray job's 2-worker samples/s as a fraction of
    plain DDP's 2 processes (goal >= 0.95), both in steady state (each side leaves out its first 3 steps);
  - the fraction of step time spent waiting on data (goal < 5%);
  - locked-text vs two-tower (finetune) time per epoch on CPU, from steady-state step times (goal >= 20x);
    the locked mode's one-off text-feature caching is reported separately (it is amortised over epochs).
Throughput counts only the training loop (worker start-up and data preparation are excluded).

Usage: python benchmarks/pretrain_throughput.py [--steps 120] [--finetune-steps 6] [--ceiling-steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plain_ddp_worker(rank: int, world: int, port: int, cache_dir: str, config_json: dict, steps: int, out) -> None:
    """One process of the ceiling run: the Ray job's locked-text step (collate, forward, loss, backward, AdamW)
    on rank-strided batches of the cached pairs, with torch.distributed directly instead of Ray Train."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    import torch.distributed as dist

    from momu.pretrain.config import PretrainConfig
    from momu.data.pipeline import featurize_records
    from momu.models.momu import build_model
    from momu.pretrain.contrastive import ContrastiveCollator, ContrastiveModule, contrastive_objective

    torch.set_num_threads(1)
    cfg = PretrainConfig.model_validate(config_json)
    table = featurize_records(pq.read_table(cache_dir), max_atoms=cfg.max_atoms)
    table = table.filter(pa.compute.equal(table.column("reject_reason"), ""))
    torch.manual_seed(cfg.seed)
    module = ContrastiveModule(build_model(cfg.model), cfg.objective, "locked").train()
    forward = module
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        forward = torch.nn.parallel.DistributedDataParallel(module)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    collate = ContrastiveCollator.for_config(cfg, rank, "locked")
    order = np.random.default_rng(cfg.seed).permutation(table.num_rows)
    per_step = cfg.batch_size * world
    warmup = 3
    for step in range(warmup + steps):
        if step == warmup:
            if world > 1:
                dist.barrier()
            start = time.perf_counter()
        first = (step * per_step + rank * cfg.batch_size) % (len(order) - per_step)
        inputs = collate(table.take(pa.array(order[first:first + cfg.batch_size])), 0, step)
        loss = contrastive_objective(forward(inputs), cfg.objective, cfg.model.temperature, cfg.losses)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    out.put(steps * cfg.batch_size / (time.perf_counter() - start))
    if world > 1:
        dist.destroy_process_group()


def plain_ddp_samples_per_s(world: int, cache_dir: str, cfg, steps: int) -> float:
    """samples/s of `world` plain torch processes (all ranks together)."""
    import multiprocessing
    import socket

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that ran Ray and torch threads
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = ctx.Queue()
    procs = [ctx.Process(target=plain_ddp_worker, args=(r, world, port, cache_dir, cfg.model_dump(mode="json"),
                                                        steps, out)) for r in range(world)]
    for p in procs:
        p.start()
    rates = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a ceiling process exited with {p.exitcode}")
    return world * min(rates)  # ranks step together: the slowest one sets the pace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="optimiser steps per locked-text run")
    parser.add_argument("--finetune-steps", type=int, default=6, help="steps of the (slow) two-tower run")
    parser.add_argument("--ceiling-steps", type=int, default=60, help="steps per plain-torch ceiling run")
    parser.add_argument("--data", default=str(REPO / "data/sample/chebi20/validation_slice.tsv"))
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from momu.config import ScalingSection
    from momu.pretrain.config import PretrainConfig
    from momu.ray_session import start_local_ray
    from momu.pretrain.ray_train import run_pretrain

    start_local_ray(os.cpu_count(), log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="momu-bench-"))
    cache = str(work / "text_cache")

    def run(name, workers, mode, steps):
        cfg = PretrainConfig(data_paths=[args.data], text_mode=mode, text_cache_dir=cache, batch_size=32,
                             epochs=50, max_steps=steps, checkpoint_every=10 ** 6, embedding_plot=False,
                             scaling=ScalingSection(num_workers=workers, cpus_per_worker=1),
                             storage_path=str(work / "ray_results"), run_name=name, max_failures=0)
        start = time.perf_counter()
        result = run_pretrain(cfg, log_to_mlflow=False, progress=False)
        return result, time.perf_counter() - start

    # Warm the locked-text cache first so its one-off cost is measured on its own.
    t0 = time.perf_counter()
    from momu.data.pipeline import cached_text_features, split_heldout
    from momu.pretrain.data import read_inputs

    cfg0 = PretrainConfig(data_paths=[args.data], text_cache_dir=cache)
    table, _ = read_inputs(cfg0)
    train_part, heldout_part = split_heldout(table, cfg0.heldout_fraction)
    _, train_cache_dir = cached_text_features(train_part, cfg0.model.text, cache)
    cached_text_features(heldout_part, cfg0.model.text, cache)
    cache_seconds = time.perf_counter() - t0

    # Each ceiling run right before its Ray run: this machine's speed drifts over minutes (shared host), and
    # neighbours in time see the same drift.
    ceiling_cfg = PretrainConfig(data_paths=[args.data], batch_size=32)
    c1 = plain_ddp_samples_per_s(1, train_cache_dir, ceiling_cfg, args.ceiling_steps)
    one, _ = run("w1-locked", 1, "locked", args.steps)
    c2 = plain_ddp_samples_per_s(2, train_cache_dir, ceiling_cfg, args.ceiling_steps)
    two, _ = run("w2-locked", 2, "locked", args.steps)
    fine, _ = run("w1-finetune", 1, "finetune", args.finetune_steps)
    ray.shutdown()

    # Steady state on both sides: the Ray runs leave out their first 3 optimiser steps (samples_per_s_steady), as
    # the plain-torch processes leave out their 3 warm-up steps.
    s1, s2 = one.metrics["samples_per_s_steady"], two.metrics["samples_per_s_steady"]
    rows_per_epoch = one.data_summary["train_rows"]
    locked_epoch = rows_per_epoch / s1
    finetune_epoch = rows_per_epoch / fine.metrics["samples_per_s_overall"]
    report = {
        "train_rows_per_epoch": rows_per_epoch,
        "samples_per_s_1_worker": round(s1, 1), "samples_per_s_2_workers": round(s2, 1),
        "samples_per_s_2_workers_incl_first_steps": round(two.metrics["samples_per_s_overall"], 1),
        "scaling_2_vs_1": round(s2 / s1, 2),
        "plain_torch_samples_per_s_1_process": round(c1, 1), "plain_torch_samples_per_s_2_ddp": round(c2, 1),
        "ceiling_scaling_2_vs_1": round(c2 / c1, 2),
        "scaling_vs_ceiling": round((s2 / s1) / (c2 / c1), 2),
        "ray_2_workers_vs_plain_ddp": round(s2 / c2, 2),
        "data_wait_fraction_1_worker": round(one.metrics["data_wait_fraction"], 4),
        "data_wait_fraction_2_workers": round(two.metrics["data_wait_fraction"], 4),
        "epoch_seconds_locked_1_worker": round(locked_epoch, 1),
        "epoch_seconds_finetune_1_worker": round(finetune_epoch, 1),
        "locked_vs_finetune_speedup": round(finetune_epoch / locked_epoch, 1),
        "locked_text_cache_seconds_one_off": round(cache_seconds, 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    print(f"2 workers vs 1: {report['scaling_2_vs_1']}x (goal >= 1.8x); this machine's ceiling (plain torch DDP, "
          f"no Ray): {report['ceiling_scaling_2_vs_1']}x, so {report['scaling_vs_ceiling']} of it; data wait "
          f"{100 * report['data_wait_fraction_2_workers']:.1f}% of step time (goal < 5%); Ray job with 2 workers "
          f"vs plain torch DDP with 2 processes: {report['ray_2_workers_vs_plain_ddp']} (goal >= 0.95); locked-text epoch "
          f"{report['locked_vs_finetune_speedup']}x faster than two-tower (goal >= 20x)")


if __name__ == "__main__":
    main()
