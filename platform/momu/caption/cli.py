"""`momu evaluate caption`: score a predictions file with MolT5's caption metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRIC_LABELS = (("bleu2", "BLEU-2"), ("bleu4", "BLEU-4"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"),
                 ("rougeL", "ROUGE-L"), ("meteor", "METEOR"))


def register(sub, groups) -> None:
    """Add `momu evaluate caption` to the `evaluate` group (`sub`, the top-level subparsers, is unused)."""
    from momu.caption.config import CaptionMetricsConfig
    from momu.cli import add_config_arguments

    p = groups["evaluate"].add_parser(
        "caption", help="score predicted captions with MolT5's metrics (BLEU-2/4, ROUGE-1/2/L, METEOR)",
        description="Score predicted molecule captions against their ground truth exactly as MolT5 does: BLEU "
                    "and METEOR over SciBERT WordPiece tokens (nltk, no smoothing), ROUGE F-measure (rouge_score, "
                    "no stemmer) on the raw text, all x100. FILE is MolT5's released TSV (SMILES, ground truth, "
                    "output) or a TSV/Parquet file with ground_truth and caption columns.",
        epilog="example: momu evaluate caption --predictions ../shared/data/molt5_predictions/"
               "molt5-small-smiles2caption.txt --output runs/caption/metrics.json")
    p.add_argument("--predictions", required=True, metavar="FILE",
                   help="TSV (.txt/.tsv, header line) or .parquet with ground truth and predicted captions")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--output", metavar="metrics.json", help="also write the metrics as JSON to this file")
    add_config_arguments(p, CaptionMetricsConfig)
    p.set_defaults(func=cmd_evaluate_caption)


def format_table(metrics: dict) -> str:
    """The metrics as a two-column text table."""
    lines = [f"caption metrics (MolT5 recipe, x100): {metrics['rows']} rows of {metrics['predictions']}"]
    for key, label in METRIC_LABELS:
        value = metrics[key]
        lines.append(f"  {label:<8} {'not computed' if value is None else f'{value:6.2f}'}")
    return "\n".join(lines)


def cmd_evaluate_caption(args: argparse.Namespace) -> int:
    from momu.caption.config import CaptionMetricsConfig
    from momu.caption.metrics import score_captions
    from momu.caption.predictions import read_predictions
    from momu.cli import config_from_args

    config = config_from_args(CaptionMetricsConfig, args)
    data = read_predictions(args.predictions)
    scores = score_captions(data.references, data.predictions, vocab_file=config.vocab_file,
                            max_length=config.max_length, with_meteor=config.meteor)
    metrics = {"predictions": str(data.path), **scores.as_dict(), "config": config.model_dump()}
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2) if args.json else format_table(metrics))
    if args.output and not args.json:
        print(f"metrics: {Path(args.output).resolve()}")
    return 0
