"""Readers for the source formats: ChEBI-20 pairs, the MoMu pretraining corpus, MoleculeNet CSVs and molecule
libraries (.smi, CSV/TSV, Parquet, SDF). Each returns a `ReadResult` (records table + `ReadReport`); library
formats also stream in chunks so PubChem-scale files are never loaded whole.

Readers check structure only. SMILES are not parsed here (except SDF, where RDKit is the parser): featurization
is a later stage that reports its own rejections.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import itertools
import logging
import os
import re
import stat
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rdkit import Chem, rdBase

from momu.chem.columns import GRAPH_COLUMNS, graphs_to_columns
from momu.chem.featurize import MolGraph, Rejection
from momu.data.records import (
    RECORD_COLUMNS,
    MalformedReason as R,
    ReadReport,
    ReadResult,
    build_records,
    empty_records,
    record_schema,
)

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Chunks = Iterator[tuple[pa.Table, ReadReport]]

DEFAULT_CHUNK_ROWS = 65_536
DEFAULT_MOMU_CHUNK_ROWS = 1_024

CHEBI20_HEADER = ("cid", "smiles", "description")
MOLECULENET_SMILES_COLUMNS = ("smiles", "mol")
# Isomeric before canonical: PubChem's "canonical" SMILES drop stereo, and chirality is a MoMu atom feature.
LIBRARY_SMILES_COLUMNS = ("smiles", "isomeric_smiles", "isosmiles", "canonical_smiles", "canonicalsmiles", "mol")
LIBRARY_ID_COLUMNS = ("cid", "pubchem_cid", "id", "name", "chembl_id")

# Longest suffixes first so ".csv.gz" wins over ".gz".
LIBRARY_FORMATS = {
    ".smi.gz": "smi", ".smiles.gz": "smi", ".csv.gz": "csv", ".tsv.gz": "tsv", ".sdf.gz": "sdf",
    ".smi": "smi", ".smiles": "smi", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".sdf": "sdf",
}
PAIR_FORMATS = ("chebi20", "momu_corpus", "records_parquet")


# ----------------------------------------------------------------------------------------------- ChEBI-20


def read_chebi20(path: PathLike) -> ReadResult:
    """A tab-separated pair table with a header line -> records (texts = [description]): ChEBI-20's
    `CID<TAB>SMILES<TAB>description`, and the same columns in another order or among others, as PubChem324k
    (`cid smiles description`) and PCdes (`idx cid smiles description`) ship them. Header names are matched
    case-insensitively; id = the CID.

    Blank lines are skipped and not counted. Malformed: wrong field count, duplicate header, empty CID,
    empty SMILES, empty description, undecodable bytes.
    """
    path = _existing_file(path)
    report = ReadReport(str(path))
    ids, smiles, texts = [], [], []
    header: Optional[tuple] = None
    for lineno, line, decoded in _decoded_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        names = tuple(f.strip().lower() for f in fields)
        if header is None:
            if not set(CHEBI20_HEADER) <= set(names):
                raise ValueError(f"{path}: expected a header with the columns CID, SMILES and description (ChEBI-20: "
                                 f"'CID<TAB>SMILES<TAB>description') on line {lineno}, found {line[:120]!r}")
            header = names
            columns = [names.index(c) for c in CHEBI20_HEADER]
            continue
        if not decoded:
            report.add_malformed(lineno, R.BAD_ENCODING, line)
        elif names == header:
            report.add_malformed(lineno, R.DUPLICATE_HEADER, line)
        elif len(fields) != len(header):
            report.add_malformed(lineno, R.WRONG_FIELD_COUNT, line)
        else:
            cid, smi, description = (fields[i].strip() for i in columns)
            if not cid:
                report.add_malformed(lineno, R.EMPTY_ID, line)
            elif not smi:
                report.add_malformed(lineno, R.EMPTY_SMILES, line)
            elif not description:
                report.add_malformed(lineno, R.EMPTY_DESCRIPTION, line)
            else:
                ids.append(cid)
                smiles.append(smi)
                texts.append([description])
                report.add_ok()
    table = build_records(ids, smiles, texts, [None] * len(ids), str(path))
    return ReadResult(table, report)


# ----------------------------------------------------------------------------------------------- MoMu corpus

_TEXT_NAME = re.compile(r"text_(\d+)\.txt")
_GRAPH_NAME = re.compile(r"graph_(\d+)\.pt")
OGB_NUM_ATOM_FEATURES = 9
OGB_NUM_BOND_FEATURES = 3
OGB_MAX_ATOM_INDEX = 118  # 0..117 = atomic number - 1, 118 = OGB "misc"
OGB_CHIRALITY_VALUES = 5  # unspecified, CW, CCW, other, misc
OGB_BOND_TYPE_MISC = 4
OGB_BOND_STEREO_VALUES = 6


def read_momu_corpus(corpus_dir: PathLike) -> ReadResult:
    """MoMu pretraining corpus directory (`text/text_<i>.txt`, `graph/graph_<i>.pt`) -> records with graph
    columns, one per molecule index i, in increasing i. id = "<i>", smiles = null, texts = the non-empty lines.

    bond_dir is all zeros: OGB features store bond stereo but no bond direction. Models using
    bond_feature="direction" therefore see no direction information on these graphs.
    """
    tables, report = [], ReadReport(str(Path(corpus_dir)))
    for table, chunk_report in iter_momu_corpus(corpus_dir):
        tables.append(table)
        report = report.merge(chunk_report)
    return ReadResult(pa.concat_tables(tables), report)


def iter_momu_corpus(corpus_dir: PathLike, chunk_rows: int = DEFAULT_MOMU_CHUNK_ROWS) -> Chunks:
    """Stream the corpus as (records chunk, report for the molecules in that chunk); see read_momu_corpus.
    The last chunk is always yielded, possibly empty, so the reports cover every molecule."""
    _check_chunk_rows(chunk_rows)
    corpus_dir = Path(corpus_dir)
    texts, graphs, ignored = _momu_files(corpus_dir)
    source = str(corpus_dir)
    batch = _GraphChunk(source)
    if ignored:
        batch.report.metadata["ignored_files"] = ignored
    for index in sorted(texts.keys() | graphs.keys()):
        record = _read_momu_molecule(texts.get(index), graphs.get(index))
        if isinstance(record, Rejection):
            batch.report.add_malformed(index, record.reason, record.detail)
            continue
        batch.add(str(index), *record)
        if batch.size >= chunk_rows:
            yield batch.flush()
            batch = _GraphChunk(source)
    yield batch.flush()


def convert_momu_corpus(corpus_dir: PathLike, out_path: PathLike,
                        chunk_rows: int = DEFAULT_MOMU_CHUNK_ROWS) -> ReadReport:
    """Read the corpus once (unpickling .pt files safely) and write its records to Parquet. The file appears
    atomically: it is written under a temporary name in the same folder, then renamed."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    report = ReadReport(str(Path(corpus_dir)))
    try:
        with pq.ParquetWriter(tmp_path, record_schema(with_graph=True)) as writer:
            for table, chunk_report in iter_momu_corpus(corpus_dir, chunk_rows=chunk_rows):
                if table.num_rows:
                    writer.write_table(table)
                report = report.merge(chunk_report)
        os.replace(tmp_path, out_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return report


def load_momu_graph(pt_path: PathLike) -> Union[MolGraph, Rejection]:
    """One MoMu `graph_<i>.pt` -> MolGraph, or a Rejection (reason from MalformedReason)."""
    try:
        data = safe_load_pyg(pt_path)
    except Exception as exc:  # corrupt file, or pickle content outside the allow-list
        return Rejection(R.UNREADABLE_GRAPH, f"{type(exc).__name__}: {_short_error(exc)}")
    return momu_graph_from_pyg(data)


def _short_error(exc: Exception) -> str:
    # torch's weights_only errors start with paragraphs of advice; the line naming the cause is what matters.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (causes or lines or [""])[0]


def safe_load_pyg(pt_path: PathLike):
    """torch.load a pickled PyG object with weights_only=True, allow-listing only the classes a saved `Data`
    references (Data, DataEdgeAttr, DataTensorAttr, GlobalStorage). Never executes arbitrary pickle code.

    Note: importing torch_geometric itself registers a few more PyG classes (HeteroData, ...) as safe globals
    process-wide; those are plain containers too."""
    import torch

    if not hasattr(torch.serialization, "safe_globals"):
        raise RuntimeError("reading .pt graphs safely needs torch>=2.5 (torch.serialization.safe_globals)")
    with torch.serialization.safe_globals(_pyg_safe_globals()):
        return torch.load(pt_path, map_location="cpu", weights_only=True)


def momu_graph_from_pyg(data) -> Union[MolGraph, Rejection]:
    """A PyG Data with OGB features (x [N,9], edge_index [2,E], edge_attr [E,3]) -> MolGraph, or a Rejection.

    atom_type = x[:,0]; chirality = x[:,1] with OGB CHI_OTHER/misc (3, 4) mapped to unspecified as in
    featurize.py; bond_type = edge_attr[:,0] (4 = OGB misc is rejected as unsupported_bond); bond_stereo =
    edge_attr[:,1] (OGB order = ours); bond_dir = 0 (OGB stores none)."""
    import torch
    from torch_geometric.data import Data

    if not isinstance(data, Data):
        return Rejection(R.NOT_A_GRAPH, f"expected a torch_geometric Data, got {type(data).__name__}")
    tensors = {name: getattr(data, name, None) for name in ("x", "edge_index", "edge_attr")}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor) or value.is_floating_point() or value.is_complex():
            return Rejection(R.NOT_A_GRAPH, f"Data.{name} is not an integer tensor ({type(value).__name__})")
    x, edge_index, edge_attr = (t.detach().cpu().numpy().astype(np.int64) for t in tensors.values())
    if x.ndim != 2 or x.shape[1] != OGB_NUM_ATOM_FEATURES:
        return Rejection(R.GRAPH_SHAPE_MISMATCH, f"x has shape {x.shape}, expected [N, {OGB_NUM_ATOM_FEATURES}]")
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        return Rejection(R.GRAPH_SHAPE_MISMATCH, f"edge_index has shape {edge_index.shape}, expected [2, E]")
    if edge_attr.ndim != 2 or edge_attr.shape != (edge_index.shape[1], OGB_NUM_BOND_FEATURES):
        return Rejection(R.GRAPH_SHAPE_MISMATCH, f"edge_attr has shape {edge_attr.shape}, expected "
                                                 f"[{edge_index.shape[1]}, {OGB_NUM_BOND_FEATURES}]")
    num_nodes = x.shape[0]
    if num_nodes == 0:
        return Rejection(R.EMPTY_GRAPH, "graph has no atoms")
    checks = [
        ("atom type", x[:, 0], OGB_MAX_ATOM_INDEX + 1),
        ("chirality", x[:, 1], OGB_CHIRALITY_VALUES),
        ("edge_index", edge_index, num_nodes),
        ("bond type", edge_attr[:, 0], OGB_BOND_TYPE_MISC + 1),
        ("bond stereo", edge_attr[:, 1], OGB_BOND_STEREO_VALUES),
    ]
    for what, values, limit in checks:
        if values.size and (values.min() < 0 or values.max() >= limit):
            return Rejection(R.GRAPH_VALUE_OUT_OF_RANGE,
                             f"{what} values {values.min()}..{values.max()} outside 0..{limit - 1}")
    if (edge_attr[:, 0] == OGB_BOND_TYPE_MISC).any():
        return Rejection(R.UNSUPPORTED_BOND, "OGB bond type 'misc' is not single/double/triple/aromatic")
    chirality = x[:, 1]
    return MolGraph(
        atom_type=x[:, 0].astype(np.uint8),
        chirality=np.where(chirality > 2, 0, chirality).astype(np.uint8),
        edge_index=edge_index.astype(np.int32),
        bond_type=edge_attr[:, 0].astype(np.uint8),
        bond_stereo=edge_attr[:, 1].astype(np.uint8),
        bond_dir=np.zeros(edge_index.shape[1], dtype=np.uint8),
    )


def read_records_parquet(path: PathLike) -> ReadResult:
    """Parquet following RECORD_SCHEMA (with or without all graph columns) -> records. Extra columns are
    dropped; a missing record column, or only some graph columns, is a ValueError naming them. Rows with a
    null id are malformed ("missing_id")."""
    path = _existing_file(path)
    table = pq.read_table(path)
    names = table.column_names
    missing = [c for c in RECORD_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{path}: not a records Parquet: missing column(s) {missing}; columns are {names}")
    present_graph = [c for c in GRAPH_COLUMNS if c in names]
    missing_graph = [c for c in GRAPH_COLUMNS if c not in names]
    if present_graph and missing_graph:
        raise ValueError(f"{path}: has graph columns {present_graph} but is missing graph column(s) "
                         f"{missing_graph}")
    schema = record_schema(with_graph=bool(present_graph))
    columns = []
    for field in schema:
        try:
            columns.append(table.column(field.name).cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ValueError(f"{path}: column {field.name!r} has type {table.schema.field(field.name).type}, "
                             f"expected {field.type}: {exc}") from exc
    table = pa.table(columns, schema=schema)

    report = ReadReport(str(path))
    null_ids = np.flatnonzero(table.column("id").is_null().to_numpy(zero_copy_only=False))
    for row in null_ids:
        report.add_malformed(int(row), R.MISSING_ID, f"record {row}")
    if len(null_ids):
        table = table.filter(pc.invert(table.column("id").is_null()))
    report.add_ok(table.num_rows)
    return ReadResult(table, report)


def _momu_files(corpus_dir: Path) -> tuple[dict[int, Path], dict[int, Path], int]:
    """({i: text path}, {i: graph path}, number of files ignored for not matching the naming scheme)."""
    text_dir, graph_dir = corpus_dir / "text", corpus_dir / "graph"
    if not text_dir.is_dir() and not graph_dir.is_dir():
        raise FileNotFoundError(f"{corpus_dir}: not a MoMu corpus directory (needs text/ and graph/ subfolders)")
    ignored = 0

    def index(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
        nonlocal ignored
        found = {}
        for entry in (folder.iterdir() if folder.is_dir() else ()):
            match = pattern.fullmatch(entry.name)
            if match and entry.is_file():
                found[int(match.group(1))] = entry
            else:
                ignored += 1
        return found

    return index(text_dir, _TEXT_NAME), index(graph_dir, _GRAPH_NAME), ignored


def _read_momu_molecule(text_path: Optional[Path], graph_path: Optional[Path]):
    """(texts, MolGraph) for one molecule, or a Rejection."""
    if text_path is None:
        return Rejection(R.MISSING_TEXT, f"{graph_path.name} has no matching text file")
    if graph_path is None:
        return Rejection(R.MISSING_GRAPH, f"{text_path.name} has no matching graph file")
    try:
        content = text_path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Rejection(R.UNREADABLE_TEXT, f"{text_path.name}: {exc}")
    paragraphs = [line.strip() for line in content.split("\n") if line.strip()]
    if not paragraphs:
        return Rejection(R.EMPTY_TEXT, f"{text_path.name} has no non-blank line")
    graph = load_momu_graph(graph_path)
    if isinstance(graph, Rejection):
        return Rejection(graph.reason, f"{graph_path.name}: {graph.detail}")
    return paragraphs, graph


def _pyg_safe_globals() -> list:
    from torch_geometric.data import data as pyg_data, storage as pyg_storage

    names = [(pyg_data, "Data"), (pyg_data, "DataEdgeAttr"), (pyg_data, "DataTensorAttr"),
             (pyg_storage, "GlobalStorage")]
    return [getattr(module, name) for module, name in names if hasattr(module, name)]


class _GraphChunk:
    def __init__(self, source: str):
        self.source = source
        self.report = ReadReport(source)
        self.ids, self.texts, self.graphs = [], [], []

    @property
    def size(self) -> int:
        return len(self.ids)

    def add(self, id_: str, texts: list[str], graph: MolGraph) -> None:
        self.ids.append(id_)
        self.texts.append(texts)
        self.graphs.append(graph)
        self.report.add_ok()

    def flush(self) -> tuple[pa.Table, ReadReport]:
        n = len(self.ids)
        table = build_records(self.ids, [None] * n, self.texts, [None] * n, self.source,
                              graph_columns=graphs_to_columns(self.graphs))
        return table, self.report


# ----------------------------------------------------------------------------------------------- MoleculeNet


def read_moleculenet(path: PathLike, smiles_column: Optional[str] = None,
                     task_columns: Optional[Sequence[str]] = None) -> ReadResult:
    """MoleculeNet CSV (or .csv.gz) -> records with labels (float32, blank -> NaN). id = 0-based data row.

    The SMILES column is `smiles_column` or auto-detected (smiles / mol, case-insensitive); tasks are
    `task_columns` or every other column, listed in report.task_names. Malformed: wrong field count, empty
    SMILES, a non-numeric label, undecodable bytes."""
    path = _existing_file(path)
    rows = _csv_rows(path, delimiter=",")
    header = _read_header(path, rows)
    smiles_idx = _find_column(path, header, smiles_column, MOLECULENET_SMILES_COLUMNS, "SMILES")
    if task_columns is None:
        task_idx = [i for i in range(len(header)) if i != smiles_idx]
    else:
        task_idx = [_find_column(path, header, name, (), "task") for name in task_columns]
    report = ReadReport(str(path), task_names=[header[i] for i in task_idx])

    ids, smiles, labels = [], [], []
    for data_row, (lineno, fields, reason, raw) in enumerate(rows):
        if reason is not None:
            report.add_malformed(lineno, reason, raw)
            continue
        if len(fields) != len(header):
            report.add_malformed(lineno, R.WRONG_FIELD_COUNT, ",".join(fields))
            continue
        smi = fields[smiles_idx].strip()
        if not smi:
            report.add_malformed(lineno, R.MISSING_SMILES, ",".join(fields))
            continue
        try:
            values = [float(v) if v.strip() else float("nan") for v in (fields[i] for i in task_idx)]
        except ValueError:
            report.add_malformed(lineno, R.NON_NUMERIC_LABEL, ",".join(fields))
            continue
        ids.append(str(data_row))
        smiles.append(smi)
        labels.append(values)
        report.add_ok()
    table = build_records(ids, smiles, [[] for _ in ids], labels, str(path))
    return ReadResult(table, report)


# ----------------------------------------------------------------------------------------------- libraries

# A file that cannot be read to its end does not stop a job: the rows before the damage are kept, and the damage
# is one malformed row with one of these reasons (so rows_read = rows_ok + rows_malformed still holds), plus
# report.metadata["file_failed"] = {file, reason, error, last_good, last_good_id}.
UNREADABLE_FILE = "unreadable_file"  # cannot be opened: permissions, a dangling link, a FIFO / socket
EMPTY_FILE = "empty_file"  # 0 bytes, or nothing but blank lines
TRUNCATED_FILE = "truncated_file"  # the compressed stream ends early (an interrupted download or copy)
CORRUPT_FILE = "corrupt_file"  # bad gzip data or CRC, broken Parquet footer or page, ...
BAD_HEADER = "bad_header"  # the header row is not valid CSV, or is undecodable and lacks the columns needed
FILE_FAILURE_REASONS = (UNREADABLE_FILE, EMPTY_FILE, TRUNCATED_FILE, CORRUPT_FILE, BAD_HEADER)
# Errors that mean "these bytes are bad", as opposed to a user error (ValueError naming a column) or a bug.
DAMAGE_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException, UnicodeDecodeError, csv.Error)

HEADER_MODES = ("auto", "yes", "no")
# Words that make a first row a header in header="auto" (besides the given column names).
HEADER_WORDS = frozenset(LIBRARY_SMILES_COLUMNS + LIBRARY_ID_COLUMNS + (
    "description", "text", "title", "label", "activity", "smi", "structure", "molecule", "compound", "inchi",
    "inchikey", "formula", "mw", "value", "target", "y"))
# PubChem's CID-SMILES(.gz): CID<TAB>SMILES, no header; also as renamed with a tag (CID-SMILES-2024-05.gz)
_PUBCHEM_CID_SMILES = re.compile(r"cid-smiles([-_][\w-]*)?(\.gz)?")
PUBCHEM_SDF_ID = "PUBCHEM_COMPOUND_CID"


def read_molecule_library(path: PathLike, smiles_column: Optional[str] = None, id_column: Optional[str] = None,
                          chunk_rows: int = DEFAULT_CHUNK_ROWS, header: str = "auto") -> ReadResult:
    """A molecule library file, directory or glob -> records (texts empty, labels null), loaded whole.
    See iter_molecule_library for formats and column rules; use that for files that do not fit in memory.
    report.metadata: "files" (files read), "files_failed" (list of failure dicts), "ignored_files"."""
    tables, report = [], ReadReport(str(Path(path)))
    failed, files, ignored = [], 0, []
    for table, chunk_report in iter_molecule_library(path, smiles_column, id_column, chunk_rows, header):
        tables.append(table)
        meta = chunk_report.metadata
        files += "file_end" in meta
        failed += [meta["file_failed"]] if "file_failed" in meta else []
        ignored += meta.get("ignored_files", [])
        report = report.merge(chunk_report, path=report.path)
    for key in ("file_end", "file_failed"):
        report.metadata.pop(key, None)
    report.metadata.update({"files": files, "files_failed": failed, "ignored_files": ignored})
    return ReadResult(pa.concat_tables(tables) if tables else empty_records(), report)


def iter_molecule_library(path: PathLike, smiles_column: Optional[str] = None, id_column: Optional[str] = None,
                          chunk_rows: int = DEFAULT_CHUNK_ROWS, header: str = "auto") -> Chunks:
    """Stream a library as (records chunk of at most chunk_rows, report for the rows read for that chunk).
    Merging every chunk's report gives the whole read's report. Each file ends with one chunk (possibly empty)
    whose report.metadata has "file_end" (the path) and, if the file could not be read to its end,
    "file_failed" (see FILE_FAILURE_REASONS); the first chunk lists "ignored_files" of a directory or glob.

    Formats by name:
      .smi/.smiles[.gz]   `SMILES [whitespace id...]` per line; blank lines skipped; a first line starting with
                          the word "SMILES" is a header; no id -> the 1-based line number. Column args ignored.
      .csv/.tsv[.gz]      SMILES column given or auto-detected (LIBRARY_SMILES_COLUMNS, case-insensitive); id
      .parquet            column given or auto-detected (LIBRARY_ID_COLUMNS), else the 0-based data row. Empty
                          SMILES -> "missing_smiles"; empty id -> "missing_id". CSV/TSV `header`: "yes", "no" or
                          "auto" (the first row is data when none of its fields is a column name such as smiles
                          or cid, and one parses as SMILES with RDKit). Without a header, columns are 0-based
                          numbers ("1"); defaults: SMILES = the first column that parses, id = the first other.
      CID-SMILES[.gz]     PubChem's bulk file (by name, also CID-SMILES-<tag>[.gz]): `CID<TAB>SMILES`, no header.
      .sdf[.gz]           RDKit; smiles = Chem.MolToSmiles(mol); id = property id_column, else
                          PUBCHEM_COMPOUND_CID, else the title line, else the 0-based record index. A record
                          RDKit cannot read -> "bad_sdf_record".
      directory / glob    every file with a supported name, in sorted order; other entries (hidden files,
                          subdirectories, README.txt, ...) are skipped and listed as ignored_files.
    """
    _check_chunk_rows(chunk_rows)
    if header not in HEADER_MODES:
        raise ValueError(f"header must be one of {HEADER_MODES}, got {header!r}")
    files, ignored = library_files(path)
    if ignored:
        log.info("%s: skipped %d entries that are not molecule libraries: %s", path, len(ignored), ignored[:5])
    first = True
    for file in files:
        reader = _LIBRARY_READERS[library_format(file)]
        for table, report in reader(file, smiles_column, id_column, chunk_rows, header):
            if first and ignored:
                report.metadata["ignored_files"] = ignored
            first = False
            yield table, report


def library_format(path: PathLike) -> Optional[str]:
    """The library format of a file by its name ("smi", "csv", "tsv", "parquet", "sdf", "cid_smiles"), or None."""
    name = Path(path).name.lower()
    fmt = next((fmt for suffix, fmt in LIBRARY_FORMATS.items() if name.endswith(suffix)), None)
    if fmt is None and _PUBCHEM_CID_SMILES.fullmatch(name):
        fmt = "cid_smiles"
    return fmt


def library_files(path: PathLike) -> tuple[list[Path], list[str]]:
    """(library files, ignored entries) of a file, directory or glob. In directories and globs, hidden entries,
    subdirectories and names without a supported suffix are ignored; entries with a supported name that are not
    readable files (dangling links, FIFOs) are kept, so the read reports them as failed instead of hiding them."""
    supported = ", ".join(list(LIBRARY_FORMATS) + ["CID-SMILES[.gz]"])
    p = Path(path)
    if p.is_dir():
        candidates = sorted(p.iterdir())
    elif p.is_file() or (os.path.lexists(p) and not glob.has_magic(str(path))):  # a FIFO, a dangling link
        if library_format(p) is None:
            raise ValueError(f"{p}: unsupported molecule library format; supported: {supported}")
        return [p], []
    elif glob.has_magic(str(path)):
        candidates = sorted(Path(f) for f in glob.glob(str(path)))
        if not candidates:
            raise FileNotFoundError(f"no files match {str(path)!r}")
    else:
        raise FileNotFoundError(f"no such file or directory: {str(path)!r}")
    files = [f for f in candidates if not f.name.startswith(".") and not f.is_dir() and library_format(f)]
    ignored = [str(f) for f in candidates if f not in files]
    if not files:
        raise ValueError(f"{path}: no files with a supported name ({supported})")
    return files, ignored


def library_layout(path: PathLike, smiles_column: Optional[str] = None, id_column: Optional[str] = None,
                   header: str = "auto") -> Optional[dict]:
    """How a CSV/TSV/CID-SMILES/Parquet library will be read ({"header": bool, "smiles": col, "id": col or None}),
    checked before any distributed work: a ValueError names the file and the missing column. None for formats
    without columns (.smi, SDF) and for files too damaged to tell (their read reports the damage)."""
    path = Path(path)
    fmt = library_format(path)
    read = _FileRead(path, "line")
    if fmt in ("smi", "sdf", None) or not read.opened():
        return None
    try:
        if fmt == "parquet":
            names = pq.ParquetFile(path).schema_arrow.names
            smiles = _find_column(path, names, smiles_column, LIBRARY_SMILES_COLUMNS, "SMILES")
            id_ = _find_column(path, names, id_column, LIBRARY_ID_COLUMNS, "id", required=False)
            return {"header": True, "smiles": names[smiles], "id": None if id_ is None else names[id_]}
        rows = read.guard(_csv_rows(path, "\t" if fmt != "csv" else ",", read))
        layout, _ = _delimited_layout(path, fmt, rows, read, smiles_column, id_column, header)
    except DAMAGE_ERRORS:
        return None
    if layout is None:
        return None
    return {"header": layout.header is not None, "smiles": layout.smiles, "id": layout.id}


class _FileRead:
    """One file's read: where it got to (`position`, 1-based line / record / row) and why it stopped early.

    Errors that mean damaged bytes (DAMAGE_ERRORS) end the read cleanly through `guard`, so the rows before the
    damage still count; `finish` then records the damage as one malformed row of the file's last chunk."""

    def __init__(self, path: Path, unit: str):
        self.path, self.unit = path, unit
        self.position, self.last_id, self.saw_data = 0, None, False
        self.failure: Optional[dict] = None

    def opened(self) -> bool:
        """False (with the failure recorded) unless the path is a non-empty regular file. Checked before opening:
        opening a FIFO would block the job forever."""
        try:
            st = os.stat(self.path)
        except OSError as exc:  # a dangling link (e.g. an annexed file not fetched), permissions on a folder
            self.fail(UNREADABLE_FILE, f"{type(exc).__name__}: {exc.strerror or exc}")
            return False
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "special"
            self.fail(UNREADABLE_FILE, f"not a regular file ({kind})")
            return False
        if st.st_size == 0:
            self.fail(EMPTY_FILE, "the file is empty (0 bytes)")
            return False
        return True

    def guard(self, iterable: Iterable) -> Iterator:
        iterator = iter(iterable)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except DAMAGE_ERRORS as exc:
                self.fail(_damage_reason(exc), f"{type(exc).__name__}: {exc}")
                return
            yield item

    def fail(self, reason: str, error: str) -> None:
        if self.failure is None:
            # Nothing good was read from a file that failed before its first row (a bad header, no data).
            before_data = reason in (UNREADABLE_FILE, EMPTY_FILE, BAD_HEADER) or not self.position
            self.failure = {"file": str(self.path), "reason": reason, "error": error[:300],
                            "last_good": None if before_data else f"{self.unit} {self.position}",
                            "last_good_id": None if before_data else self.last_id}

    def finish(self, report: ReadReport) -> None:
        """Mark the end of the file in `report`, with its failure as one malformed row (if it failed)."""
        if self.failure is None and not self.saw_data:
            self.fail(EMPTY_FILE, "no data (nothing but blank lines)")
        report.metadata["file_end"] = str(self.path)
        if self.failure is not None:
            report.add_malformed(self.position, self.failure["reason"], failure_detail(self.failure))
            report.metadata["file_failed"] = self.failure


def failure_detail(failure: dict) -> str:
    """One line for a failed file: 'truncated_file after line 9961 (id 9960): EOFError: ...'."""
    where = ""
    if failure["reason"] not in (UNREADABLE_FILE, EMPTY_FILE, BAD_HEADER):
        where = f" after {failure['last_good']}" if failure["last_good"] else " before the first row"
        where += f" (id {failure['last_good_id']})" if failure["last_good_id"] is not None else ""
    return f"{failure['reason']}{where}: {failure['error']}"


def _damage_reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return TRUNCATED_FILE
    if isinstance(exc, OSError) and exc.errno is not None:  # EACCES, EISDIR, EIO, ... (not gzip/Arrow errors)
        return UNREADABLE_FILE
    return CORRUPT_FILE


def _iter_smi(path: Path, smiles_column, id_column, chunk_rows: int, header: str) -> Chunks:
    read = _FileRead(path, "line")
    chunk = _LibraryChunk(str(path), read)
    lines = read.guard(_decoded_lines(path, read)) if read.opened() else ()
    for lineno, line, decoded in lines:
        text = line.strip()
        if not text:
            continue
        if not read.saw_data:
            read.saw_data = True
            if text.split(None, 1)[0].lower() == "smiles":
                continue
        if not decoded:
            chunk.report.add_malformed(lineno, R.BAD_ENCODING, text)
        else:
            parts = text.split(None, 1)
            chunk.add(parts[1].strip() if len(parts) > 1 else str(lineno), parts[0])
        if chunk.size >= chunk_rows:
            yield chunk.flush()
            chunk = _LibraryChunk(str(path), read)
    yield chunk.finish()


@dataclasses.dataclass(frozen=True)
class _Layout:
    header: Optional[list]  # the header fields; None when the file has no header row
    smiles: int
    id: Optional[int]
    width: int


def _iter_delimited(path: Path, smiles_column, id_column, chunk_rows: int, header: str) -> Chunks:
    delimiter = "," if library_format(path) == "csv" else "\t"
    read = _FileRead(path, "line")
    chunk = _LibraryChunk(str(path), read)
    if read.opened():
        rows = read.guard(_csv_rows(path, delimiter, read))
        layout, rows = _delimited_layout(path, library_format(path), rows, read, smiles_column, id_column, header)
        for data_row, (lineno, fields, reason, raw) in enumerate(rows if layout is not None else ()):
            if reason is not None:
                chunk.report.add_malformed(lineno, reason, raw)
            elif len(fields) != layout.width:
                chunk.report.add_malformed(lineno, R.WRONG_FIELD_COUNT, delimiter.join(fields))
            elif not fields[layout.smiles].strip():
                chunk.report.add_malformed(lineno, R.MISSING_SMILES, delimiter.join(fields))
            elif layout.id is not None and not fields[layout.id].strip():
                chunk.report.add_malformed(lineno, R.MISSING_ID, delimiter.join(fields))
            else:
                id_ = fields[layout.id].strip() if layout.id is not None else str(data_row)
                chunk.add(id_, fields[layout.smiles].strip())
            if chunk.size >= chunk_rows:
                yield chunk.flush()
                chunk = _LibraryChunk(str(path), read)
    yield chunk.finish()


def _delimited_layout(path: Path, fmt: str, rows: Iterator, read: _FileRead, smiles_column, id_column,
                      header: str) -> tuple[Optional[_Layout], Iterator]:
    """Read the first row and decide the layout; returns (layout, the data rows). layout is None when the file
    has no row (the read then reports it empty) or a damaged header (recorded as a bad_header failure). A ValueError
    is a user error: a column that is not there."""
    first = next(rows, None)
    if first is None:
        return None, rows
    read.saw_data = True
    lineno, fields, reason, raw = first
    if reason == R.CSV_ERROR:
        read.fail(BAD_HEADER, f"line {lineno}: {raw[:120]}")
        return None, rows
    fields = [f.strip() for f in fields]
    fields[0] = fields[0].lstrip("\ufeff")  # byte-order mark written by some spreadsheet exports
    if fmt == "cid_smiles":
        has_header = False
        smiles_column, id_column = ("1" if smiles_column is None else smiles_column,
                                    "0" if id_column is None else id_column)
    elif header == "auto":
        has_header = _is_header_row(fields, smiles_column, id_column)
    else:
        has_header = header == "yes"
    try:
        if has_header:
            layout = _Layout(fields, _find_column(path, fields, smiles_column, LIBRARY_SMILES_COLUMNS, "SMILES"),
                             _find_column(path, fields, id_column, LIBRARY_ID_COLUMNS, "id", required=False),
                             len(fields))
        else:
            layout = _headerless_layout(path, fields, smiles_column, id_column)
    except ValueError:
        if reason == R.BAD_ENCODING:  # an undecodable header that lacks the columns: damage, not a user error
            read.fail(BAD_HEADER, f"line {lineno} has undecodable bytes: {raw[:120]!r}")
            return None, rows
        raise
    if has_header:
        if reason == R.BAD_ENCODING:
            log.warning("%s: header line %d has undecodable bytes; columns found anyway", path, lineno)
        return layout, rows
    return layout, itertools.chain([first], rows)


def _headerless_layout(path: Path, fields: list[str], smiles_column, id_column) -> _Layout:
    width = len(fields)
    smiles = _column_number(path, smiles_column, width, "smiles_column")
    if smiles is None:
        smiles = next((i for i, f in enumerate(fields) if _parses_as_smiles(f)), None)
        if smiles is None:
            raise ValueError(f"{path}: no header row, and no field of the first row {fields[:6]} parses as SMILES; "
                             f"pass smiles_column as a 0-based column number")
    id_ = _column_number(path, id_column, width, "id_column")
    if id_ is None and id_column is None:
        id_ = next((i for i in range(width) if i != smiles), None)
    return _Layout(None, smiles, id_, width)


def _is_header_row(fields: list[str], smiles_column, id_column) -> bool:
    names = set(HEADER_WORDS) | {str(c).lower() for c in (smiles_column, id_column)
                                 if c is not None and not _is_number(c)}
    if any(f.lower() in names for f in fields):
        return True
    number = int(smiles_column) if _is_number(smiles_column) else None
    if number is not None and number < len(fields):
        return not _parses_as_smiles(fields[number])
    return not any(_parses_as_smiles(f) for f in fields)


def _parses_as_smiles(text: str) -> bool:
    if not text or len(text) > 2000:
        return False
    with rdBase.BlockLogs():  # a header word failing to parse is expected: keep RDKit quiet
        mol = Chem.MolFromSmiles(text)
    return mol is not None and mol.GetNumAtoms() > 0


def _is_number(value) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())


def _column_number(path: Path, given, width: int, field: str) -> Optional[int]:
    if given is None:
        return None
    if not _is_number(given):
        raise ValueError(f"{path}: has no header row, so {field} must be a 0-based column number, got {given!r}")
    if int(given) >= width:
        raise ValueError(f"{path}: {field} {given} is out of range: the first row has {width} column(s)")
    return int(given)


def _iter_parquet(path: Path, smiles_column, id_column, chunk_rows: int, header: str) -> Chunks:
    read = _FileRead(path, "row")
    parquet = None
    if read.opened():
        try:
            parquet = pq.ParquetFile(path)
        except DAMAGE_ERRORS as exc:  # e.g. "Parquet magic bytes not found in footer"
            read.fail(_damage_reason(exc), f"{type(exc).__name__}: {exc}")
    if parquet is not None:
        read.saw_data = True
        names = parquet.schema_arrow.names
        smiles_name = names[_find_column(path, names, smiles_column, LIBRARY_SMILES_COLUMNS, "SMILES")]
        id_idx = _find_column(path, names, id_column, LIBRARY_ID_COLUMNS, "id", required=False)
        id_name = names[id_idx] if id_idx is not None else None
        columns = [smiles_name] + ([id_name] if id_name and id_name != smiles_name else [])
        for batch in read.guard(parquet.iter_batches(batch_size=chunk_rows, columns=columns)):
            yield _parquet_chunk(path, batch, smiles_name, id_name, read)
    report = ReadReport(str(path), max_examples=None)
    read.finish(report)
    yield empty_records(), report


def _parquet_chunk(path: Path, batch: pa.RecordBatch, smiles_name: str, id_name: Optional[str],
                   read: _FileRead) -> tuple[pa.Table, ReadReport]:
    offset, n = read.position, batch.num_rows
    smiles = pc.utf8_trim_whitespace(batch.column(smiles_name).cast(pa.string()))
    if id_name is not None:
        ids = pc.utf8_trim_whitespace(batch.column(id_name).cast(pa.string()))
    else:
        ids = pa.array([str(i) for i in range(offset, offset + n)], pa.string())
    no_smiles = _is_blank(smiles)
    no_id = _is_blank(ids)
    report = ReadReport(str(path), max_examples=None)
    for i in np.flatnonzero(no_smiles | no_id):
        reason = R.MISSING_SMILES if no_smiles[i] else R.MISSING_ID
        report.add_malformed(offset + int(i), reason, f"id={ids[i].as_py()!r} smiles={smiles[i].as_py()!r}")
    keep = pa.array(~(no_smiles | no_id))
    ids, smiles = ids.filter(keep), smiles.filter(keep)
    report.add_ok(len(ids))
    read.position += n
    if len(ids):
        read.last_id = ids[-1].as_py()
    return build_records(ids, smiles, [[]] * len(ids), [None] * len(ids), str(path)), report


def _iter_sdf(path: Path, smiles_column, id_column, chunk_rows: int, header: str) -> Chunks:
    read = _FileRead(path, "record")
    chunk = _LibraryChunk(str(path), read)
    supplier = Chem.SDMolSupplier()
    records = read.guard(_sdf_records(path)) if read.opened() else ()
    for index, record in enumerate(records):
        read.saw_data, read.position = True, index + 1
        supplier.SetData(record.decode("utf-8", errors="replace"))
        mol = supplier[0]
        if mol is None:
            chunk.report.add_malformed(index, R.BAD_SDF_RECORD, f"SDF record {index} could not be read")
        else:
            keys = [id_column] if id_column is not None else [PUBCHEM_SDF_ID, "_Name"]
            key = next((k for k in keys if mol.HasProp(k) and mol.GetProp(k).strip()), None)
            id_ = mol.GetProp(key).strip() if key else ""
            smiles = Chem.MolToSmiles(mol)
            if not smiles:
                chunk.report.add_malformed(index, R.MISSING_SMILES, f"SDF record {index} ({id_}) has no atoms")
            elif not id_ and id_column is not None:
                chunk.report.add_malformed(index, R.MISSING_ID, f"SDF record {index} has no {id_column}")
            else:
                chunk.add(id_ or str(index), smiles)
        if chunk.size >= chunk_rows:
            yield chunk.flush()
            chunk = _LibraryChunk(str(path), read)
    yield chunk.finish()


def _sdf_records(path: Path) -> Iterator[bytes]:
    """The file's SDF records as bytes (each up to its `$$$$` line). Read here, in Python, so that a damaged
    stream raises an error the read can catch: handed to RDKit's C++ reader, a truncated gzip became a SystemError
    that killed the job. A record cut by the damage is never yielded."""
    lines: list[bytes] = []
    with _open_binary(path) as handle:
        for line in handle:
            lines.append(line)
            if line.startswith(b"$$$$"):
                yield b"".join(lines)
                lines = []
    if any(line.strip() for line in lines):  # a last record without its `$$$$` line, as RDKit accepts
        yield b"".join(lines)


_LIBRARY_READERS = {"smi": _iter_smi, "csv": _iter_delimited, "tsv": _iter_delimited, "cid_smiles": _iter_delimited,
                    "parquet": _iter_parquet, "sdf": _iter_sdf}


class _LibraryChunk:
    def __init__(self, source: str, read: _FileRead):
        self.source, self.read = source, read
        self.report = ReadReport(source, max_examples=None)  # every malformed row, for rejects files
        self.ids, self.smiles = [], []

    @property
    def size(self) -> int:
        """Rows taken into this chunk, good or malformed (bounds the memory of both)."""
        return len(self.ids) + self.report.rows_malformed

    def add(self, id_: str, smiles: str) -> None:
        self.ids.append(id_)
        self.smiles.append(smiles)
        self.report.add_ok()
        self.read.last_id = id_

    def flush(self) -> tuple[pa.Table, ReadReport]:
        n = len(self.ids)
        return build_records(self.ids, self.smiles, [[]] * n, [None] * n, self.source), self.report

    def finish(self) -> tuple[pa.Table, ReadReport]:
        """The file's last chunk: flushed with the end-of-file mark (and the file's failure, if any)."""
        self.read.finish(self.report)
        return self.flush()


# ----------------------------------------------------------------------------------------------- read_pairs


def read_pairs(path: PathLike, format: str = "auto") -> ReadResult:
    """Molecule-text pairs for training: "chebi20" (.txt/.tsv), "momu_corpus" (a directory with text/ and
    graph/) or "records_parquet" (.parquet); "auto" picks by path."""
    if format == "auto":
        format = _detect_pair_format(Path(path))
    if format == "chebi20":
        return read_chebi20(path)
    if format == "momu_corpus":
        return read_momu_corpus(path)
    if format == "records_parquet":
        return read_records_parquet(path)
    raise ValueError(f"unknown pair format {format!r}; expected 'auto' or one of {PAIR_FORMATS}")


def _detect_pair_format(path: Path) -> str:
    if path.is_dir():
        if (path / "text").is_dir() or (path / "graph").is_dir():
            return "momu_corpus"
        raise ValueError(f"{path}: a directory, but not a MoMu corpus (no text/ or graph/ subfolder)")
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "records_parquet"
    if suffix in (".txt", ".tsv"):
        return "chebi20"
    raise ValueError(f"{path}: cannot tell the pair format from the suffix {suffix!r}; pass format= one of "
                     f"{PAIR_FORMATS}")


# ----------------------------------------------------------------------------------------------- helpers


def _existing_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    return p


def _check_chunk_rows(chunk_rows: int) -> None:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _decoded_lines(path: Path, read: Optional[_FileRead] = None) -> Iterator[tuple[int, str, bool]]:
    """(1-based line number, text, decoded cleanly). Undecodable bytes become U+FFFD and decoded=False, so
    callers can report the line instead of failing the whole file. `read` tracks the last line read."""
    with _open_binary(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            if read is not None:
                read.position = lineno
            try:
                yield lineno, raw.decode("utf-8"), True
            except UnicodeDecodeError:
                yield lineno, raw.decode("utf-8", errors="replace"), False


def _csv_rows(path: Path, delimiter: str,
              read: Optional[_FileRead] = None) -> Iterator[tuple[int, list[str], Optional[str], str]]:
    """CSV rows as (line number, fields, malformed reason or None, raw text); blank lines skipped.
    A line with undecodable bytes or a csv parse error makes its row malformed rather than stopping the read."""
    bad_lines: list[int] = []

    def lines() -> Iterator[str]:
        for lineno, text, decoded in _decoded_lines(path, read):
            if not decoded:
                bad_lines.append(lineno)
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, [], R.CSV_ERROR, str(exc)
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if bad_lines and bad_lines[0] <= reader.line_num:
            del bad_lines[:]
            yield reader.line_num, fields, R.BAD_ENCODING, delimiter.join(fields)
            continue
        yield reader.line_num, fields, None, ""


def _read_header(path: Path, rows: Iterator) -> list[str]:
    for lineno, fields, reason, raw in rows:
        if reason is not None:
            raise ValueError(f"{path}: unreadable header on line {lineno}: {reason} {raw[:120]!r}")
        header = [f.strip() for f in fields]
        header[0] = header[0].lstrip("\ufeff")  # byte-order mark written by some spreadsheet exports
        return header
    raise ValueError(f"{path}: empty file (no header row)")


def _find_column(path: Path, header: Sequence[str], given: Optional[str], candidates: Sequence[str], what: str,
                 required: bool = True) -> Optional[int]:
    """Index of the `given` column (exact, else case-insensitive, else a 0-based column number), else of the
    first candidate present (case-insensitive, candidates in priority order)."""
    lowered = [h.lower() for h in header]
    if given is not None:
        given_name = str(given)
        if given_name in header:
            return list(header).index(given_name)
        if given_name.lower() in lowered:
            return lowered.index(given_name.lower())
        if given_name.strip().isdigit() and int(given_name) < len(header):
            return int(given_name)
        raise ValueError(f"{path}: no {what} column {given!r}; columns are {list(header)}")
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    if not required:
        return None
    raise ValueError(f"{path}: no {what} column found (looked for {list(candidates)}, any case); columns are "
                     f"{list(header)}; pass the column name (or, for a file without a header row, its 0-based "
                     f"number)")


def _is_blank(values: pa.Array) -> np.ndarray:
    blank = pc.fill_null(pc.equal(pc.utf8_length(values), 0), True)
    return blank.to_numpy(zero_copy_only=False).astype(bool)


# ----------------------------------------------------------------------------------------------- PCdes-style


UNPAIRED_LINE = "unpaired_line"  # one file of an aligned pair has more lines than the other


def read_aligned_pairs(smiles_path: PathLike, text_path: PathLike) -> ReadResult:
    """PCdes-style pairs: a SMILES file and a description file aligned by line (line i describes SMILES i).
    id = the 1-based line number. Nothing is skipped silently, since a dropped line would shift every later
    pair: a blank SMILES or description line is malformed (empty_smiles / empty_description), and the lines
    past the shorter file's end are malformed as unpaired_line (counts per file in report.metadata)."""
    smiles_file, text_file = _existing_file(smiles_path), _existing_file(text_path)
    smiles_lines = [(lineno, line.rstrip("\r\n"), ok) for lineno, line, ok in _decoded_lines(smiles_file)]
    text_lines = [(lineno, line.rstrip("\r\n"), ok) for lineno, line, ok in _decoded_lines(text_file)]
    report = ReadReport(f"{smiles_file} + {text_file}")
    report.metadata.update({"smiles_lines": len(smiles_lines), "description_lines": len(text_lines)})
    ids, smiles, texts = [], [], []
    for (lineno, smi, ok_s), (_, text, ok_t) in zip(smiles_lines, text_lines):
        if not (ok_s and ok_t):
            report.add_malformed(lineno, R.BAD_ENCODING, smi if not ok_s else text)
        elif not smi.strip():
            report.add_malformed(lineno, R.EMPTY_SMILES, text)
        elif not text.strip():
            report.add_malformed(lineno, R.EMPTY_DESCRIPTION, smi)
        else:
            ids.append(str(lineno))
            smiles.append(smi.strip().split()[0])  # a SMILES never holds whitespace; "SMILES name" lines keep SMILES
            texts.append([text.strip()])
            report.add_ok()
    longer, name = (smiles_lines, "SMILES") if len(smiles_lines) > len(text_lines) else (text_lines, "description")
    for lineno, line, _ in longer[min(len(smiles_lines), len(text_lines)):]:
        report.add_malformed(lineno, UNPAIRED_LINE, f"[{name} file] {line}")
    if len(smiles_lines) != len(text_lines):
        log.warning("%s has %d lines but %s has %d: pairs after line %d are unpaired and excluded; check the "
                    "alignment", smiles_file, len(smiles_lines), text_file, len(text_lines),
                    min(len(smiles_lines), len(text_lines)))
    table = build_records(ids, smiles, texts, [None] * len(ids), str(smiles_file))
    return ReadResult(table, report)
