"""Epoch time of the text modes on one Ray Train worker, and what the partial-mode cache costs.

Prints, for MoMu pretraining on the bundled ChEBI-20 slice (GIN 5x300, batch 32, 1 worker, 1 CPU):
  - the one-off cache time of locked (pooled features) and partial N=1 / N=2 (hidden states entering the top N
    text layers; float16, real tokens only), with the cache's size on disk;
  - the epoch time of locked, partial N=1, partial N=2 and finetune (both towers), from steady-state
    samples/s of the training loop (worker start-up and data preparation excluded), and each one's ratio to
    locked. The issue's rule keeps partial if it gains >= 2 MRR points at <= 3x the locked epoch time; MRR is
    not measured here;
  - with --size-of PAIRS (a ChEBI-20-style file), the token count of its paragraphs and the partial cache size
    that implies (tokens x hidden x 2 bytes in float16), to size the cache for a full split.

Usage: python benchmarks/partial_text_epoch.py [--steps 20] [--finetune-steps 4] [--rows N] [--size-of FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIDDEN = 384  # all-MiniLM-L6-v2


def dir_bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def token_stats(path: str) -> dict:
    """Paragraphs and real tokens of a pair file under the bundled tower's preprocessing (cut, truncation)."""
    from transformers import AutoTokenizer

    from momu.config import TextEncoderConfig
    from momu.data.readers import read_pairs
    from momu.models.text import resolve_text_encoder_path

    text = TextEncoderConfig()
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder_path(text.name_or_path))
    paragraphs = [t for row in read_pairs(path).table.column("texts").to_pylist() for t in row]
    ids = tokenizer([t[:text.max_chars] for t in paragraphs], truncation=True, max_length=text.max_length)["input_ids"]
    tokens = sum(len(i) for i in ids)
    return {"file": path, "paragraphs": len(paragraphs), "tokens": tokens,
            "mean_tokens_per_paragraph": round(tokens / max(1, len(paragraphs)), 1),
            "partial_cache_mib_float16": round(tokens * HIDDEN * 2 / 2 ** 20, 1),
            "padded_to_max_length_mib_float16": round(len(paragraphs) * text.max_length * HIDDEN * 2 / 2 ** 20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per locked / partial run")
    parser.add_argument("--finetune-steps", type=int, default=4, help="steps of the (slow) two-tower run")
    parser.add_argument("--data", default=str(REPO / "data/sample/chebi20/validation_slice.tsv"))
    parser.add_argument("--rows", type=int, default=None, help="use only the first ROWS pairs (quick runs on a "
                        "busy machine: the epoch-time ratios do not depend on the row count, the cache times do)")
    parser.add_argument("--size-of", default=None, help="pair file whose partial-cache size to estimate")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from momu.config import ScalingSection
    from momu.data.pipeline import cached_text_features, split_heldout
    from momu.pretrain.config import PretrainConfig
    from momu.pretrain.data import read_inputs
    from momu.pretrain.ray_train import run_pretrain
    from momu.ray_session import start_local_ray

    start_local_ray(os.cpu_count(), log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="momu-bench-partial-"))
    cache = str(work / "text_cache")
    if args.rows:
        lines = Path(args.data).read_text().splitlines()
        args.data = str(work / "pairs.tsv")
        Path(args.data).write_text("\n".join(lines[:args.rows + 1]) + "\n")  # header + rows
    table, _ = read_inputs(PretrainConfig(data_paths=[args.data]))
    train_part, heldout_part = split_heldout(table, PretrainConfig(data_paths=[args.data]).heldout_fraction)

    report: dict = {"train_rows": train_part.num_rows}
    modes = [("locked", None), ("partial", 1), ("partial", 2)]
    for mode, layers in modes:  # one-off caches first, so each is timed on its own
        name = mode if layers is None else f"partial_{layers}"
        start = time.perf_counter()
        _, train_dir = cached_text_features(train_part, PretrainConfig().model.text, cache, train_layers=layers)
        cached_text_features(heldout_part, PretrainConfig().model.text, cache, train_layers=layers)
        report[f"cache_seconds_{name}"] = round(time.perf_counter() - start, 1)
        report[f"cache_mib_train_{name}"] = round(dir_bytes(train_dir) / 2 ** 20, 1)

    def epoch_seconds(name: str, mode: str, layers, steps: int) -> float:
        cfg = PretrainConfig(data_paths=[args.data], text_mode=mode, text_train_layers=layers, text_cache_dir=cache,
                             batch_size=32, epochs=50, max_steps=steps, checkpoint_every=10 ** 6,
                             embedding_plot=False, scaling=ScalingSection(num_workers=1, cpus_per_worker=1),
                             storage_path=str(work / "ray_results"), run_name=name, max_failures=0)
        result = run_pretrain(cfg, log_to_mlflow=False, progress=False)
        return result.data_summary["train_rows"] / result.metrics["samples_per_s_overall"]

    for mode, layers in modes + [("finetune", None)]:
        name = mode if layers is None else f"partial_{layers}"
        steps = args.finetune_steps if mode == "finetune" else args.steps
        report[f"epoch_seconds_{name}"] = round(epoch_seconds(name, mode, layers, steps), 1)
    ray.shutdown()
    locked = report["epoch_seconds_locked"]
    for name in ("partial_1", "partial_2", "finetune"):
        report[f"epoch_ratio_{name}_vs_locked"] = round(report[f"epoch_seconds_{name}"] / locked, 2)
    if args.size_of:
        report["size_estimate"] = token_stats(args.size_of)
    report["cpu_count"] = os.cpu_count()
    print(json.dumps(report, indent=2))
    print(f"epoch time vs locked: partial N=1 {report['epoch_ratio_partial_1_vs_locked']}x, N=2 "
          f"{report['epoch_ratio_partial_2_vs_locked']}x, finetune {report['epoch_ratio_finetune_vs_locked']}x "
          "(the issue allows partial <= 3x)")


if __name__ == "__main__":
    main()
