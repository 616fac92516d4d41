"""Inputs of the embedding job, cut into deterministic *parts* (the unit of resume).

Each input file is read in order and cut into parts of `part_rows` input rows (good and malformed rows both
count), so part k of a file is always the same rows. Every row of a part, including the rows a reader refused,
becomes one row of a part table (PART_SCHEMA): reader-refused rows carry their reason and travel through the
pipeline to the rejects file, so `read = embedded + rejected` holds by construction.

Molecule libraries (.smi, CSV/TSV, Parquet, SDF, gz, PubChem's CID-SMILES, directories, globs) are read with
momu.data.readers.iter_molecule_library. ChEBI-20 style `.txt` files (tab-separated with a header line, e.g.
`CID<TAB>SMILES<TAB>description`) and, in texts mode, any CSV/TSV/Parquet with a text column are read by the
small table reader below. Pure Python/pyarrow: no Ray.

A damaged file (truncated or corrupt gzip, broken Parquet, unreadable, empty) does not stop the job: its rows
before the damage are parts like any others, the damage is one more rejected row (reason in
momu.data.readers.FILE_FAILURE_REASONS, detail naming the last good line / record), and iter_parts reports the
failure to its caller for the file-level summary.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import re
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from momu.data.readers import (
    BAD_HEADER,
    DAMAGE_ERRORS,
    EMPTY_FILE,
    FILE_FAILURE_REASONS,
    LIBRARY_FORMATS,
    LIBRARY_ID_COLUMNS,
    LIBRARY_SMILES_COLUMNS,
    _FileRead,
    _csv_rows,
    _decoded_lines,
    _find_column,
    _read_header,
    failure_detail,
    iter_molecule_library,
    library_format,
    library_layout,
)

MODES = ("molecules", "texts")
TEXT_COLUMNS = ("description", "text", "caption", "paragraph", "sentence")
# Suffixes the embedding job accepts: the library formats plus tab-separated `.txt` tables (ChEBI-20).
TABLE_FORMATS = {".txt.gz": "tsv", ".txt": "tsv", ".tsv.gz": "tsv", ".tsv": "tsv", ".csv.gz": "csv", ".csv": "csv",
                 ".parquet": "parquet"}

# Reasons added by the embedding job (the readers' and the featurizer's reasons are used as they are).
MISSING_TEXT = "missing_text"
MISSING_VALUE = "missing_smiles"

PART_SCHEMA = pa.schema([
    ("id", pa.string()),  # null where a malformed row has no readable id
    ("input", pa.string()),  # the raw SMILES / text (for malformed rows: the reader's snippet of the raw row)
    ("reject_reason", pa.string()),  # "" while the row is good
    ("reject_detail", pa.string()),
    ("reject_stage", pa.string()),  # read | featurize
    ("source", pa.string()),  # input file
    ("_unit", pa.string()),  # "<file key>/p<part>"
    ("_seq", pa.int32()),  # row position inside its part
    ("_part_rows", pa.int32()),  # rows in this part (the driver marks a part complete when all are written)
])


@dataclasses.dataclass(frozen=True)
class Part:
    index: int
    rows: int
    table: pa.Table  # PART_SCHEMA


def input_format(path: Path, mode: str) -> Optional[str]:
    """'library' (read by iter_molecule_library), 'table' (read by iter_table_rows) or None (unsupported)."""
    name = path.name.lower()
    if mode == "molecules":
        if library_format(path) is not None:
            return "library"
        return "table" if name.endswith((".txt", ".txt.gz")) else None
    return "table" if any(name.endswith(s) for s in TABLE_FORMATS) else None


def expand_inputs(inputs: Sequence[str], mode: str, ignored: Optional[list] = None) -> list[Path]:
    """Files, directories (their supported files, sorted) and globs -> the sorted list of input files.

    In directories and globs, hidden entries (.DS_Store, macOS ._* files), subdirectories and unsupported names
    (README.md) are skipped and appended to `ignored`; so are `.txt` files that are not tables with the column
    the mode needs (a README.txt next to the data). An entry with a supported name that is not a readable file
    (a dangling link, a FIFO) is kept: the read reports it as a failed file."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not inputs:
        raise ValueError("inputs: give at least one file, directory or glob")
    files: list[Path] = []
    skipped: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() or (not p.exists() and glob.has_magic(item)):
            entries = sorted(p.iterdir()) if p.is_dir() else sorted(Path(f) for f in glob.glob(item))
            found = [f for f in entries if not f.name.startswith(".") and not f.is_dir() and input_format(f, mode)
                     and not _stray_text_file(f, mode)]
            skipped += [str(f) for f in entries if f not in found]
        elif p.is_file():
            if input_format(p, mode) is None:
                raise ValueError(f"inputs: {p} has an unsupported suffix for mode {mode!r} "
                                 f"(supported: {', '.join(_suffixes(mode))})")
            found = [p]
        else:
            raise FileNotFoundError(f"inputs: no such file or directory: {item!r}")
        if not found:
            raise ValueError(f"inputs: {item!r} holds no file with a supported name for mode {mode!r} "
                             f"({', '.join(_suffixes(mode))})")
        files += found
    if ignored is not None:
        ignored += skipped
    unique = {f.absolute(): f for f in files}  # absolute, not resolve: a dangling link must stay itself
    return sorted(unique.values(), key=lambda f: str(f))


def _stray_text_file(path: Path, mode: str) -> bool:
    """A .txt found in a directory that is not a table with the needed column (notes, a README)."""
    if not path.name.lower().endswith((".txt", ".txt.gz")) or not path.is_file():
        return False
    try:
        header = _read_header(path, _tab_rows(path))
        _find_column(path, header, None, TEXT_COLUMNS if mode == "texts" else LIBRARY_SMILES_COLUMNS, "value")
    except (ValueError, *DAMAGE_ERRORS):
        return True
    return False


def _suffixes(mode: str) -> list[str]:
    return list(LIBRARY_FORMATS) + ["CID-SMILES[.gz]", ".txt", ".txt.gz"] if mode == "molecules" \
        else list(TABLE_FORMATS)


def check_columns(path: Path, mode: str, smiles_column: Optional[str] = None, id_column: Optional[str] = None,
                  text_column: Optional[str] = None, header: str = "auto") -> None:
    """Fail fast, before any distributed work, when a table lacks the value or id column (a ValueError naming
    the file and its columns). Formats without columns (.smi, SDF) have nothing to check, and a file too
    damaged to tell is left to its read, which reports the damage without failing the job."""
    if input_format(path, mode) == "library" and mode == "molecules":
        library_layout(path, smiles_column, id_column, header)
        return
    if not _FileRead(path, "line").opened():
        return
    try:
        if path.name.lower().endswith(".parquet"):
            names = pq.ParquetFile(path).schema_arrow.names
        else:
            tab = not path.name.lower().endswith((".csv", ".csv.gz"))
            names = _read_header(path, _tab_rows(path) if tab else _csv_rows(path, ","))
    except DAMAGE_ERRORS:
        return
    except ValueError:  # an empty or undecodable header: damage, reported by the read
        return
    if mode == "texts":
        _find_column(path, names, text_column, TEXT_COLUMNS, "text")
    else:
        _find_column(path, names, smiles_column, LIBRARY_SMILES_COLUMNS, "SMILES")
    _find_column(path, names, id_column, LIBRARY_ID_COLUMNS, "id", required=False)


def file_key(path: Path) -> str:
    """A stable, filesystem-safe key for an input file: its name plus a hash of its absolute path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name)[:48]
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{safe}-{digest}"


def file_fingerprint(path: Path) -> dict:
    try:
        st = path.stat()
    except OSError:  # a dangling link: fingerprint the link itself
        st = path.lstat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def unit_key(key: str, part: int) -> str:
    return f"{key}/p{part:06d}"


def iter_parts(path: Path, mode: str, part_rows: int, smiles_column: Optional[str] = None,
               id_column: Optional[str] = None, text_column: Optional[str] = None,
               prefix_ids_with_file: bool = False, header: str = "auto",
               failures: Optional[list] = None) -> Iterator[Part]:
    """The file's parts in order. Every input row is in exactly one part; empty parts are never yielded.
    If the file cannot be read to its end, its failure dict (file, reason, error, last_good, last_good_id) is
    appended to `failures` once the parts are exhausted; the failure is also the last row of the last part."""
    if part_rows < 1:
        raise ValueError(f"part_rows must be >= 1, got {part_rows}")
    key = file_key(path)
    prefix = f"{path.name}:" if prefix_ids_with_file else ""
    fmt = input_format(path, mode)
    if fmt is None:
        raise ValueError(f"{path}: unsupported input for mode {mode!r}")
    failures = [] if failures is None else failures
    if fmt == "library":
        chunks = _library_chunks(path, smiles_column, id_column, part_rows, header, failures)
    else:
        value_column = text_column if mode == "texts" else smiles_column
        candidates = TEXT_COLUMNS if mode == "texts" else LIBRARY_SMILES_COLUMNS
        missing = MISSING_TEXT if mode == "texts" else MISSING_VALUE
        chunks = _chunked(iter_table_rows(path, value_column, candidates, id_column, missing, failures), part_rows)
    index = 0
    for rows in chunks:
        if not rows:
            continue
        yield Part(index, len(rows), _part_table(rows, str(path), unit_key(key, index), prefix))
        index += 1


# A row before it becomes part of a table: (id, input, reason, detail); reason "" for good rows.
Row = tuple[Optional[str], Optional[str], str, str]


def _library_chunks(path: Path, smiles_column, id_column, part_rows: int, header: str,
                    failures: list) -> Iterator[list[Row]]:
    for table, report in iter_molecule_library(path, smiles_column, id_column, part_rows, header):
        rows: list[Row] = [(i, s, "", "") for i, s in zip(table.column("id").to_pylist(),
                                                           table.column("smiles").to_pylist())]
        # Library chunk reports keep every malformed row (max_examples=None), with its line / record number.
        for example in report.examples:
            if example.reason in FILE_FAILURE_REASONS:  # the damage itself: no input, the detail says where
                rows.append((None, "", example.reason, example.raw))
            else:
                rows.append((None, example.raw, example.reason, f"row {example.row}"))
        if "file_failed" in report.metadata:
            failures.append(report.metadata["file_failed"])
        if len(rows) != report.rows_read:
            raise RuntimeError(f"{path}: reader chunk has {report.rows_read} rows but {len(rows)} were recovered")
        yield rows


def _chunked(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    yield chunk


def _part_table(rows: list[Row], source: str, unit: str, prefix: str) -> pa.Table:
    n = len(rows)
    ids = [None if r[0] is None else prefix + r[0] for r in rows]
    reasons = [r[2] for r in rows]
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "input": pa.array([r[1] for r in rows], pa.string()),
        "reject_reason": pa.array(reasons, pa.string()),
        "reject_detail": pa.array([r[3] for r in rows], pa.string()),
        "reject_stage": pa.array(["read" if r else "" for r in reasons], pa.string()),
        "source": pa.array([source] * n, pa.string()),
        "_unit": pa.array([unit] * n, pa.string()),
        "_seq": pa.array(range(n), pa.int32()),
        "_part_rows": pa.array([n] * n, pa.int32()),
    }, schema=PART_SCHEMA)


def iter_table_rows(path: Path, value_column: Optional[str], candidates: Sequence[str], id_column: Optional[str],
                    missing_reason: str, failures: Optional[list] = None) -> Iterator[Row]:
    """Rows (id, value, reason, detail) of a CSV / tab-separated (.tsv, .txt) / Parquet table with a header.

    Tab-separated files are split on tabs without quote handling (descriptions contain quotes), like the
    ChEBI-20 reader. value/id columns: given, else the first candidate present (case-insensitive); without an
    id column the id is the 0-based data row. Malformed: wrong field count, csv errors, undecodable bytes,
    empty value, empty id. A damaged file ends with one row for the damage (and its failure in `failures`)."""
    fmt = next(f for s, f in TABLE_FORMATS.items() if path.name.lower().endswith(s))
    read = _FileRead(path, "row" if fmt == "parquet" else "line")
    if read.opened():
        if fmt == "parquet":
            rows = _parquet_rows(path, value_column, candidates, id_column, missing_reason, read)
        else:
            rows = _delimited_table_rows(path, fmt, value_column, candidates, id_column, missing_reason, read)
        for row in read.guard(rows):
            if row[0] is not None:
                read.last_id = row[0]
            yield row
    if read.failure is None and not read.saw_data:
        read.fail(EMPTY_FILE, "no data (nothing but blank lines)")
    if read.failure is not None:
        yield None, "", read.failure["reason"], failure_detail(read.failure)
        if failures is not None:
            failures.append(read.failure)


def _delimited_table_rows(path: Path, fmt: str, value_column, candidates, id_column, missing_reason,
                          read: _FileRead) -> Iterator[Row]:
    rows = _csv_rows(path, ",", read) if fmt == "csv" else _tab_rows(path, read)
    first = next(rows, None)
    if first is None:
        return
    read.saw_data = True
    if first[2] is not None:  # an undecodable or unparseable header
        read.fail(BAD_HEADER, f"line {first[0]}: {first[2]} {first[3][:120]!r}")
        return
    header = _read_header(path, iter([first]))
    v_idx = _find_column(path, header, value_column, candidates, "text" if missing_reason == MISSING_TEXT else "SMILES")
    id_idx = _find_column(path, header, id_column, LIBRARY_ID_COLUMNS, "id", required=False)
    sep = "," if fmt == "csv" else "\t"
    for data_row, (lineno, fields, reason, raw) in enumerate(rows):
        if reason is not None:
            yield None, raw, reason, f"line {lineno}"
        elif len(fields) != len(header):
            yield None, sep.join(fields), "wrong_field_count", f"line {lineno}: {len(fields)} fields, header has {len(header)}"
        elif not fields[v_idx].strip():
            yield (fields[id_idx].strip() or None) if id_idx is not None else str(data_row), sep.join(fields), \
                missing_reason, f"line {lineno}"
        elif id_idx is not None and not fields[id_idx].strip():
            yield None, sep.join(fields), "missing_id", f"line {lineno}"
        else:
            yield (fields[id_idx].strip() if id_idx is not None else str(data_row)), fields[v_idx].strip(), "", ""


def _tab_rows(path: Path, read: Optional[_FileRead] = None):
    for lineno, line, decoded in _decoded_lines(path, read):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        yield (lineno, fields, None, "") if decoded else (lineno, fields, "bad_encoding", line)


def _parquet_rows(path: Path, value_column, candidates, id_column, missing_reason, read: _FileRead) -> Iterator[Row]:
    parquet = pq.ParquetFile(path)
    read.saw_data = True
    names = parquet.schema_arrow.names
    value_name = names[_find_column(path, names, value_column, candidates, "value")]
    id_idx = _find_column(path, names, id_column, LIBRARY_ID_COLUMNS, "id", required=False)
    id_name = names[id_idx] if id_idx is not None else None
    offset = 0
    for batch in parquet.iter_batches(batch_size=65_536, columns=list(dict.fromkeys([value_name, id_name] if id_name
                                                                                     else [value_name]))):
        values = batch.column(value_name).cast(pa.string()).to_pylist()
        ids = batch.column(id_name).cast(pa.string()).to_pylist() if id_name else [str(offset + i)
                                                                                    for i in range(len(values))]
        for i, (mol_id, value) in enumerate(zip(ids, values)):
            mol_id = mol_id.strip() if mol_id is not None else None
            if value is None or not value.strip():
                yield mol_id or None, value, missing_reason, f"record {offset + i}"
            elif not mol_id:
                yield None, value, "missing_id", f"record {offset + i}"
            else:
                yield mol_id, value.strip(), "", ""
        offset += len(values)
        read.position = offset
