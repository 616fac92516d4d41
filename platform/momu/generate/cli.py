"""`momu evaluate generation`: score a text -> molecule predictions file with MolT5's metrics and FCD."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

# (key, label, which direction is better); the order of MolT5's result tables.
_ROWS = [
    ("bleu", "BLEU (SMILES characters)", "higher"),
    ("exact_match", "exact match (InChI)", "higher"),
    ("levenshtein", "Levenshtein", "lower"),
    ("maccs_fts", "MACCS FTS", "higher"),
    ("rdk_fts", "RDK FTS", "higher"),
    ("morgan_fts", "Morgan FTS (r=2, counts)", "higher"),
    ("fcd", "FCD", "lower"),
    ("validity", "validity", "higher"),
]


def register(sub, groups) -> None:
    """Add `evaluate generation` to the `evaluate` group (``sub``: the top-level subparsers, unused here)."""
    p = groups["evaluate"].add_parser(
        "generation", help="text -> molecule generation: MolT5's metrics (BLEU, exact, Levenshtein, FTS, validity) "
                           "and FCD",
        description="Score generated SMILES against ground truth, row by row, with MolT5's recipe: BLEU on SMILES "
                    "characters, InChI exact match, Levenshtein distance, MACCS/RDK/Morgan fingerprint Tanimoto, "
                    "validity, and FCD between the ground-truth set and the valid outputs (both padded to one "
                    "common length: policy common-pad). Input: MolT5's prediction files (tab-separated, columns "
                    "'ground truth' and 'output'), or TSV/CSV/Parquet with columns ground_truth|reference and "
                    "output|smiles.",
        epilog="example: momu evaluate generation --predictions molt5-base-caption2smiles.txt --output metrics.json")
    p.add_argument("--predictions", required=True, metavar="FILE", help="predictions file (.txt/.tsv, .csv, .parquet)")
    p.add_argument("--no-fcd", action="store_true", help="skip FCD (ChemNet; the slow part on CPU)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--output", default=None, metavar="METRICS_JSON", help="also write the metrics to this JSON file")
    p.add_argument("--device", default=None, help="torch device for ChemNet (default: cuda if available, else cpu)")
    p.set_defaults(func=cmd_evaluate_generation)


def format_table(metrics: dict) -> str:
    """A two-column text table of the metrics present in ``metrics``."""
    lines = [f"{'metric':<26} {'value':>9}  better", f"{'-' * 26} {'-' * 9}  ------"]
    for key, label, better in _ROWS:
        if key in metrics:
            value = metrics[key]
            text = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
            lines.append(f"{label:<26} {text:>9}  {better}")
    lines.append(f"rows {metrics['n']}, valid outputs {metrics['n_valid']}, "
                 f"fingerprint pairs {metrics['n_fingerprint_pairs']}")
    if "fcd" in metrics:
        lines.append(f"FCD policy {metrics['fcd_policy']} (pad {metrics['fcd_pad_len']}): ground truth "
                     f"{metrics['fcd_n_reference']} vs valid outputs {metrics['fcd_n_prediction']}")
    return "\n".join(lines)


def _json_safe(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def cmd_evaluate_generation(args: argparse.Namespace) -> int:
    from momu.generate.metrics import generation_metrics
    from momu.generate.predictions import read_predictions

    references, predictions = read_predictions(args.predictions)
    start = time.perf_counter()
    metrics = generation_metrics(references, predictions, with_fcd=not args.no_fcd, fcd_device=args.device)
    result = {"predictions": str(Path(args.predictions).resolve()),
              **{k: _json_safe(v) for k, v in metrics.items()},
              "seconds": round(time.perf_counter() - start, 2)}
    text = json.dumps(result, indent=2)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(format_table(metrics))
        if args.output:
            print(f"metrics: {Path(args.output).resolve()}")
    return 0
