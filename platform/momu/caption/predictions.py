"""Read predicted captions with their ground truth: MolT5's released TSV files, our TSV or Parquet files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# Accepted column names, MolT5's first. Exactly one of each group must be present.
REFERENCE_COLUMNS = ("ground truth", "ground_truth")
PREDICTION_COLUMNS = ("output", "caption")


@dataclass(frozen=True)
class CaptionPredictions:
    """Ground-truth and predicted captions, aligned by row."""

    references: list[str]
    predictions: list[str]
    path: Path


def _pick(columns: list[str], wanted: tuple[str, ...], role: str, path: Path) -> str:
    found = [c for c in wanted if c in columns]
    if len(found) != 1:
        what = "none" if not found else "several"
        raise ValueError(f"{path}: {what} of the {role} columns {' / '.join(map(repr, wanted))} "
                         f"(columns: {', '.join(map(repr, columns)) or 'none'})")
    return found[0]


def _read_tsv(path: Path) -> tuple[list[str], list[dict]]:
    # As MolT5 reads its files: tab-separated, no quoting (captions contain quotes), UTF-8, blank lines skipped.
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = next(reader, [])
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(columns):
                # A tab inside a caption or a cut line: MolT5's DictReader would crash or shift; we stop.
                raise ValueError(f"{path}: line {reader.line_num} has {len(fields)} fields, "
                                 f"the header has {len(columns)}")
            rows.append(dict(zip(columns, fields)))
    return columns, rows


def _read_parquet(path: Path) -> tuple[list[str], list[dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None
    return table.column_names, table.to_pylist()


def read_predictions(path: str | Path) -> CaptionPredictions:
    """Rows of (ground truth, prediction) from a .parquet file or a tab-separated text file with a header.

    Columns: `ground truth` or `ground_truth`, and `output` or `caption`; other columns (SMILES, ...) are ignored.
    An empty prediction is kept (it scores 0); a missing value or a malformed line raises ValueError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions: {path} not found")
    try:
        columns, rows = _read_parquet(path) if path.suffix == ".parquet" else _read_tsv(path)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    ref_col = _pick(columns, REFERENCE_COLUMNS, "ground-truth", path)
    pred_col = _pick(columns, PREDICTION_COLUMNS, "prediction", path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    references, predictions = [], []
    for i, row in enumerate(rows):
        for col in (ref_col, pred_col):
            if not isinstance(row[col], str):
                raise ValueError(f"{path}: row {i + 1}: column {col!r} is {row[col]!r}, not text "
                                 f"(write '' for an empty caption)")
        references.append(row[ref_col])
        predictions.append(row[pred_col])
    return CaptionPredictions(references=references, predictions=predictions, path=path)


def write_predictions(path: str | Path, smiles: list[str], references: list[str], outputs: list[str]) -> Path:
    """Write MolT5's predictions format: tab-separated `SMILES`, `ground truth`, `output` with a header line.
    Tabs and line breaks inside a text become spaces (the format has no quoting)."""
    if not len(smiles) == len(references) == len(outputs):
        raise ValueError(f"{len(smiles)} SMILES, {len(references)} references and {len(outputs)} outputs")

    def clean(text: str) -> str:
        return " ".join(text.replace("\t", " ").splitlines())

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["SMILES\tground truth\toutput"] + [f"{clean(s)}\t{clean(r)}\t{clean(o)}"
                                                for s, r, o in zip(smiles, references, outputs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
