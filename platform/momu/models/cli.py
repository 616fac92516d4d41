"""`momu publish`: turn a trained model into a small checkpoint shipped with the package."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub, groups) -> None:
    p = sub.add_parser(
        "publish", help="trained MoMu -> small shipped checkpoint (graph tower + heads, fp16, model card)",
        description="Export a trained MoMu model (directory or models:/ URI) whose text tower is the bundled "
                    "encoder into platform/momu/checkpoints/<name>/ (or --output): config.json, model.safetensors "
                    "with the graph tower and both projection heads in fp16 (the text tower is referenced by name, "
                    "not copied) and MODEL_CARD.md from --card. Every job then takes the name as its model.",
        epilog="example: momu publish runs/models/momu_corpus momu-cpu --card docs/cards/momu-cpu.md")
    p.add_argument("model", help="trained model: directory or models:/ URI")
    p.add_argument("name", help="checkpoint name (letters, digits, '-', '_')")
    p.add_argument("--card", required=True, help="Markdown model card: data and removals, steps, time, metrics, "
                                                 "licences")
    p.add_argument("--output", default=None, help="directory to write (default: the package's checkpoints/<name>)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    p.set_defaults(func=_cmd_publish)


def _cmd_publish(args: argparse.Namespace) -> int:
    import re

    from momu.models.loading import load_momu, weights_sha256
    from momu.models.published import PUBLISHED_DIR, export_published

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", args.name):
        raise ValueError(f"name {args.name!r}: use letters, digits, '-' and '_'")
    card = Path(args.card)
    if not card.is_file():
        raise FileNotFoundError(f"--card {card}: no such file")
    model = load_momu(args.model).eval()
    out = export_published(model, args.output or PUBLISHED_DIR / args.name, card.read_text(), dtype=args.dtype,
                           metadata={"source": str(args.model)})
    size = sum(f.stat().st_size for f in out.iterdir())
    print(json.dumps({"checkpoint": str(out), "bytes": size, "weights_sha256": weights_sha256(out)}, indent=2))
    return 0
