"""The common record schema every reader yields, and the report of what a read found.

One record per molecule (row of a pyarrow Table):

    id      string               CID, file-derived id, or the row number as a string where the source has none
    smiles  string (nullable)    null for the MoMu corpus, which stores graphs only
    texts   list<string>         descriptions / paragraphs; an empty list where the source has none
    labels  list<float32> (nullable)  property labels; NaN marks a missing label
    source  string               the file or directory the record was read from

MoMu-corpus records additionally carry the graph columns of `momu.chem.columns.GRAPH_SCHEMA`.

Readers never raise on a malformed row and never drop one silently: each is counted in a `ReadReport` by
reason, with the first few kept as examples.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, NamedTuple, Optional, Sequence

import pyarrow as pa

from momu.chem.columns import GRAPH_COLUMNS, GRAPH_SCHEMA

RECORD_COLUMNS = ("id", "smiles", "texts", "labels", "source")
# Arrow fields are left nullable so Parquet written by other tools casts cleanly; readers fill id, texts and
# source for every record.
RECORD_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("smiles", pa.string()),
    ("texts", pa.list_(pa.string())),
    ("labels", pa.list_(pa.float32())),
    ("source", pa.string()),
])
RECORD_GRAPH_SCHEMA = pa.schema(list(RECORD_SCHEMA) + list(GRAPH_SCHEMA))

MAX_EXAMPLES = 20
MAX_SNIPPET_CHARS = 200


def record_schema(with_graph: bool = False) -> pa.Schema:
    """RECORD_SCHEMA, followed by the GRAPH_SCHEMA columns when `with_graph`."""
    return RECORD_GRAPH_SCHEMA if with_graph else RECORD_SCHEMA


class MalformedReason:
    """Why a reader refused a row (string constants, stable across versions)."""

    WRONG_FIELD_COUNT = "wrong_field_count"
    DUPLICATE_HEADER = "duplicate_header"
    EMPTY_ID = "empty_id"
    EMPTY_SMILES = "empty_smiles"
    EMPTY_DESCRIPTION = "empty_description"
    MISSING_SMILES = "missing_smiles"
    MISSING_ID = "missing_id"
    NON_NUMERIC_LABEL = "non_numeric_label"
    BAD_ENCODING = "bad_encoding"
    CSV_ERROR = "csv_error"
    BAD_SDF_RECORD = "bad_sdf_record"
    # MoMu corpus
    MISSING_GRAPH = "missing_graph"
    MISSING_TEXT = "missing_text"
    EMPTY_TEXT = "empty_text"
    UNREADABLE_TEXT = "unreadable_text"
    UNREADABLE_GRAPH = "unreadable_graph"  # the .pt did not load (corrupt, or not allow-listed content)
    NOT_A_GRAPH = "not_a_graph"  # loaded, but not a PyG Data with x / edge_index / edge_attr tensors
    GRAPH_SHAPE_MISMATCH = "graph_shape_mismatch"
    GRAPH_VALUE_OUT_OF_RANGE = "graph_value_out_of_range"
    EMPTY_GRAPH = "empty_graph"
    UNSUPPORTED_BOND = "unsupported_bond"


class MalformedExample(NamedTuple):
    """One refused row: `row` is the 1-based line number for text files, else the 0-based record index."""

    row: int
    reason: str
    raw: str


@dataclasses.dataclass
class ReadReport:
    """What one read (a file, a directory, or one streamed chunk) found. rows_read == rows_ok + rows_malformed."""

    path: str
    rows_read: int = 0
    rows_ok: int = 0
    malformed: Counter = dataclasses.field(default_factory=Counter)
    examples: list = dataclasses.field(default_factory=list)  # MalformedExample, at most max_examples
    task_names: list = dataclasses.field(default_factory=list)
    metadata: dict = dataclasses.field(default_factory=dict)
    # None keeps every malformed row: streamed chunk reports use it (a chunk is bounded by chunk_rows) so that
    # downstream jobs can write each bad row's raw input to a rejects file; merged reports keep a sample.
    max_examples: Optional[int] = MAX_EXAMPLES

    @property
    def rows_malformed(self) -> int:
        return sum(self.malformed.values())

    def add_ok(self, n: int = 1) -> None:
        self.rows_read += n
        self.rows_ok += n

    def add_malformed(self, row: int, reason: str, raw: object = "") -> None:
        self.rows_read += 1
        self.malformed[reason] += 1
        if self.max_examples is None or len(self.examples) < self.max_examples:
            self.examples.append(MalformedExample(row, reason, _snippet(raw)))

    def merge(self, other: "ReadReport", path: Optional[str] = None) -> "ReadReport":
        """A new report covering both. Examples from a different file get its name prefixed to the snippet,
        since row numbers alone are ambiguous across files."""
        examples = list(self.examples)
        for ex in other.examples[: max(0, MAX_EXAMPLES - len(examples))]:
            if other.path != self.path:
                ex = ex._replace(raw=_snippet(f"[{other.path}] {ex.raw}"))
            examples.append(ex)
        task_names = list(self.task_names) + [t for t in other.task_names if t not in self.task_names]
        return ReadReport(
            path=path if path is not None else self.path,
            rows_read=self.rows_read + other.rows_read,
            rows_ok=self.rows_ok + other.rows_ok,
            malformed=self.malformed + other.malformed,
            examples=examples,
            task_names=task_names,
            metadata={**self.metadata, **other.metadata},
        )

    def summary(self) -> str:
        text = f"{self.path}: read {self.rows_read} rows, {self.rows_ok} ok, {self.rows_malformed} malformed"
        if self.malformed:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self.malformed.most_common())
            text += f" ({reasons})"
        text += "."
        if self.examples:
            ex = self.examples[0]
            text += f" First malformed: row {ex.row}, {ex.reason}: {ex.raw[:80]!r}."
        if self.task_names:
            shown = ", ".join(self.task_names[:10]) + (", ..." if len(self.task_names) > 10 else "")
            text += f" {len(self.task_names)} tasks: {shown}."
        return text


class ReadResult(NamedTuple):
    table: pa.Table
    report: ReadReport


def _snippet(raw: object) -> str:
    text = raw if isinstance(raw, str) else repr(raw)
    return text if len(text) <= MAX_SNIPPET_CHARS else text[: MAX_SNIPPET_CHARS - 3] + "..."


def build_records(
    ids: Sequence[str],
    smiles: Sequence[Optional[str]],
    texts: Sequence[Sequence[str]],
    labels: Sequence[Optional[Sequence[float]]],
    source: str,
    graph_columns: Optional[dict[str, Any]] = None,
) -> pa.Table:
    """Columns (Python sequences or Arrow arrays) -> a Table following record_schema(with_graph=graph_columns
    is not None)."""
    columns: dict[str, Any] = {
        "id": _as_array(ids, pa.string()),
        "smiles": _as_array(smiles, pa.string()),
        "texts": _as_array(texts, pa.list_(pa.string())),
        "labels": _as_array(labels, pa.list_(pa.float32())),
        "source": pa.array([source] * len(ids), pa.string()),
    }
    if graph_columns is not None:
        columns.update({name: graph_columns[name] for name in GRAPH_COLUMNS})
    return pa.table(columns, schema=record_schema(with_graph=graph_columns is not None))


def _as_array(values: Any, type_: pa.DataType) -> pa.Array:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(type_)
    return pa.array(values, type_)


def empty_records(with_graph: bool = False) -> pa.Table:
    return record_schema(with_graph).empty_table()
