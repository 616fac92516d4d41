"""Read (ground-truth SMILES, predicted SMILES) pairs from a predictions file.

Formats: MolT5's released files (tab-separated, header ``description``, ``ground truth``, ``output``), any
TSV/TXT with a header (tab-separated), CSV (comma-separated, standard quoting) and Parquet. Columns: the
reference is ``ground truth``, ``ground_truth`` or ``reference``; the prediction is ``output`` or ``smiles``
(first match wins, in that order).
"""

from __future__ import annotations

import csv
from pathlib import Path

REFERENCE_COLUMNS = ("ground truth", "ground_truth", "reference")
PREDICTION_COLUMNS = ("output", "smiles")


def _pick(columns: list[str], candidates: tuple[str, ...], what: str, path: Path) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"{path}: no {what} column (expected one of {', '.join(repr(c) for c in candidates)}; "
                     f"found {', '.join(repr(c) for c in columns) or 'none'})")


def _read_text_table(path: Path, delimiter: str) -> tuple[list[str], list[dict]]:
    # Tab files are read as MolT5 reads them (QUOTE_NONE): SMILES and descriptions may hold a literal '"'.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_predictions(path: str | Path) -> tuple[list[str], list[str]]:
    """(references, predictions) from a MolT5-format, TSV, CSV or Parquet file; ValueError names the problem.

    A missing prediction (empty cell, null) becomes "" and scores as an invalid molecule; a missing reference is
    an error, since there is nothing to compare with.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            columns = pq.read_schema(path).names
        except Exception as err:
            raise ValueError(f"{path}: not a readable Parquet file ({err})") from None
        ref_col = _pick(columns, REFERENCE_COLUMNS, "reference", path)
        out_col = _pick(columns, PREDICTION_COLUMNS, "prediction", path)
        table = pq.read_table(path, columns=[ref_col, out_col])
        references, predictions = table.column(ref_col).to_pylist(), table.column(out_col).to_pylist()
    elif suffix in (".csv", ".tsv", ".txt"):
        try:
            columns, rows = _read_text_table(path, "," if suffix == ".csv" else "\t")
        except (UnicodeDecodeError, csv.Error) as err:
            raise ValueError(f"{path}: not a readable {suffix[1:].upper()} file ({err})") from None
        ref_col = _pick(columns, REFERENCE_COLUMNS, "reference", path)
        out_col = _pick(columns, PREDICTION_COLUMNS, "prediction", path)
        references = [row.get(ref_col) for row in rows]
        predictions = [row.get(out_col) for row in rows]
    else:
        raise ValueError(f"{path}: unsupported predictions format {suffix or '(no suffix)'!r} "
                         "(expected .txt/.tsv (tab-separated), .csv or .parquet)")
    if not references:
        raise ValueError(f"{path}: no rows")
    for i, ref in enumerate(references):
        if ref is None or not str(ref).strip():
            raise ValueError(f"{path}: row {i + 1}: empty reference in column {ref_col!r}")
    # Strings are kept as written (no stripping): BLEU and Levenshtein score the raw strings, as MolT5 does.
    return [str(r) for r in references], ["" if p is None else str(p) for p in predictions]


def read_descriptions(path: str | Path) -> list[str]:
    """The `description` (or `text`) column of a predictions file, row-aligned with `read_predictions`: the
    prompts, for scoring text-molecule agreement."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        columns = pq.read_schema(path).names
        column = _pick(columns, ("description", "text"), "description", path)
        return [str(v or "") for v in pq.read_table(path, columns=[column]).column(column).to_pylist()]
    columns, rows = _read_text_table(path, "," if path.suffix.lower() == ".csv" else "\t")
    column = _pick(columns, ("description", "text"), "description", path)
    return [str(row.get(column) or "") for row in rows]
