"""What gathering negatives across workers does to retrieval, measured in one run.

Trains MoMu twice with identical data, seed and steps on 2 Ray Train workers (locked text tower, batch 32 per
worker): once with per-worker negatives (MoMu's setup: 1-of-32 contrast per worker) and once with negatives
gathered from both workers (1-of-64). Prints held-out 1-of-64 in-batch accuracy (both directions) and the
held-out InfoNCE for each, and their difference. Data: ChEBI-20 validation (shared copy if present, else the
bundled slice); the fixed 10 % held-out part is the validation split. Test data is never used.

Usage: python benchmarks/global_negatives.py [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared/data/chebi20/validation.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", default=str(SHARED if SHARED.exists() else REPO / "data/sample/chebi20/validation_slice.tsv"))
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from momu.config import ScalingSection
    from momu.pretrain.config import PretrainConfig
    from momu.ray_session import start_local_ray
    from momu.pretrain.ray_train import run_pretrain

    start_local_ray(os.cpu_count(), log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="momu-negatives-"))
    results = {}
    for gather in (False, True):
        cfg = PretrainConfig(data_paths=[args.data], text_mode="locked", text_cache_dir=str(work / "cache"),
                             batch_size=32, epochs=args.epochs, gather_negatives=gather, checkpoint_every=10 ** 6,
                             embedding_plot=False, scaling=ScalingSection(num_workers=2, cpus_per_worker=1),
                             storage_path=str(work / "ray_results"), run_name=f"gather-{gather}", seed=100)
        m = run_pretrain(cfg, log_to_mlflow=False, progress=False).metrics
        results["global (1-of-64)" if gather else "per-worker (1-of-32)"] = {
            "steps": m["step"], "val_acc_g2t": round(m["val_acc_g2t"], 4), "val_acc_t2g": round(m["val_acc_t2g"], 4),
            "val_loss": round(m["val_loss"], 4), "val_chance": round(m["val_chance"], 4),
            "samples_per_s": round(m["samples_per_s_overall"], 1)}
    ray.shutdown()
    print(json.dumps({"data": args.data, "epochs": args.epochs, "results": results}, indent=2))
    a, b = results["per-worker (1-of-32)"], results["global (1-of-64)"]
    print(f"global minus per-worker negatives: g2t {b['val_acc_g2t'] - a['val_acc_g2t']:+.4f}, "
          f"t2g {b['val_acc_t2g'] - a['val_acc_t2g']:+.4f}, val loss {b['val_loss'] - a['val_loss']:+.4f}")


if __name__ == "__main__":
    main()
