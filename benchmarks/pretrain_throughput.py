"""Distributed pretraining throughput on the local Ray cluster, measured in one run.

Prints, for MoMu pretraining on the bundled ChEBI-20 slice (GIN 5x300, batch 32 per worker):
  - samples/s with 1 worker and with 2 workers (1 CPU each, locked text), and their ratio (goal >= 1.8x);
  - the fraction of step time spent waiting on data (goal < 5%);
  - locked-text vs two-tower (finetune) time per epoch on CPU, from steady-state step times (goal >= 20x);
    the locked mode's one-off text-feature caching is reported separately (it is amortised over epochs).
Throughput counts only the training loop (worker start-up and data preparation are excluded).

Usage: python benchmarks/pretrain_throughput.py [--steps 40] [--finetune-steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="optimiser steps per locked-text run")
    parser.add_argument("--finetune-steps", type=int, default=6, help="steps of the (slow) two-tower run")
    parser.add_argument("--data", default=str(REPO / "data/sample/chebi20/validation_slice.tsv"))
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from momu.config import PretrainConfig, ScalingSection
    from momu.train.ray_train import run_pretrain, start_local_ray

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
    from momu.data.pipeline import cached_text_features, read_inputs, split_heldout

    cfg0 = PretrainConfig(data_paths=[args.data], text_cache_dir=cache)
    table, _ = read_inputs(cfg0)
    for part in split_heldout(table, cfg0.heldout_fraction):
        cached_text_features(part, cfg0.model.text, cache)
    cache_seconds = time.perf_counter() - t0

    one, _ = run("w1-locked", 1, "locked", args.steps)
    two, _ = run("w2-locked", 2, "locked", args.steps)
    fine, _ = run("w1-finetune", 1, "finetune", args.finetune_steps)
    ray.shutdown()

    s1, s2 = one.metrics["samples_per_s_overall"], two.metrics["samples_per_s_overall"]
    rows_per_epoch = one.data_summary["train_rows"]
    locked_epoch = rows_per_epoch / s1
    finetune_epoch = rows_per_epoch / fine.metrics["samples_per_s_overall"]
    report = {
        "train_rows_per_epoch": rows_per_epoch,
        "samples_per_s_1_worker": round(s1, 1), "samples_per_s_2_workers": round(s2, 1),
        "scaling_2_vs_1": round(s2 / s1, 2),
        "data_wait_fraction_1_worker": round(one.metrics["data_wait_fraction"], 4),
        "data_wait_fraction_2_workers": round(two.metrics["data_wait_fraction"], 4),
        "epoch_seconds_locked_1_worker": round(locked_epoch, 1),
        "epoch_seconds_finetune_1_worker": round(finetune_epoch, 1),
        "locked_vs_finetune_speedup": round(finetune_epoch / locked_epoch, 1),
        "locked_text_cache_seconds_one_off": round(cache_seconds, 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    print(f"2 workers vs 1: {report['scaling_2_vs_1']}x (goal >= 1.8x); data wait "
          f"{100 * report['data_wait_fraction_2_workers']:.1f}% of step time (goal < 5%); locked-text epoch "
          f"{report['locked_vs_finetune_speedup']}x faster than two-tower (goal >= 20x)")


if __name__ == "__main__":
    main()
