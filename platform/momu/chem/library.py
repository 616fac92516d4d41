"""Featurize a whole molecule library to Parquet: graph columns for good rows, a rejects file for the rest.

Every input row is accounted for: rows_read = featurized + rejected (reader-malformed rows are in the rejects
file too, with the reader's reason), and files = files_ok + failed: a damaged file (truncated or corrupt gzip,
broken Parquet, unreadable, empty) does not stop the run, its rows before the damage are featurized and the
damage is one rejected row (stage "read") and an entry of `files_failed`. Outputs are written to temporary names and renamed at the end, so a
half-written file is never mistaken for a finished one.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
from momu.job_output import progress_bar

from momu.chem.columns import GRAPH_SCHEMA, graphs_to_columns
from momu.chem.featurize import DEFAULT_MAX_ATOMS, Rejection, canonical_smiles, featurize_smiles

FEATURIZED_SCHEMA = pa.schema([("id", pa.string()), ("smiles", pa.string())] + list(GRAPH_SCHEMA))
REJECTS_SCHEMA = pa.schema([("id", pa.string()), ("input", pa.string()), ("reason", pa.string()),
                            ("detail", pa.string()), ("stage", pa.string())])


def rejects_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".parquet") + ".rejects.parquet")


def featurize_library(input_path: str, output: str, smiles_column: Optional[str] = None,
                      id_column: Optional[str] = None, max_atoms: int = DEFAULT_MAX_ATOMS,
                      chunk_rows: int = 65_536, progress: bool = True, header: str = "auto") -> dict:
    """Read `input_path` (any library format), featurize, write `output` and its rejects file; return a summary."""
    from momu.data.readers import FILE_FAILURE_REASONS, iter_molecule_library

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rejects_path = rejects_path_for(output)
    tmp_out = output.with_name(f".{output.name}.tmp")
    tmp_rej = rejects_path.with_name(f".{rejects_path.name}.tmp")
    counts: Counter = Counter()
    rows_read = featurized = 0
    start = time.perf_counter()
    files = {"files": 0, "files_failed": [], "ignored_files": []}
    bar = progress_bar(desc="featurize", unit="mol", disable=not progress)
    with pq.ParquetWriter(tmp_out, FEATURIZED_SCHEMA) as out_writer, \
            pq.ParquetWriter(tmp_rej, REJECTS_SCHEMA) as rej_writer:
        for table, report in iter_molecule_library(input_path, smiles_column, id_column, chunk_rows, header):
            rows_read += report.rows_read
            tally_files(files, report.metadata)
            rejects = {name: [] for name in REJECTS_SCHEMA.names}
            # Reader-level malformed rows: streamed chunk reports keep every one (position + raw text).
            counts.update(report.malformed)
            for example in report.examples:
                if example.reason in FILE_FAILURE_REASONS:  # a damaged file: the detail says where and why
                    _add_reject(rejects, None, "", example.reason, example.raw, "read")
                else:
                    _add_reject(rejects, None, example.raw, example.reason, f"row {example.row}", "read")
            ids, smiles = table.column("id").to_pylist(), table.column("smiles").to_pylist()
            good_ids, good_smiles, graphs = [], [], []
            for mol_id, smi in zip(ids, smiles):
                result = featurize_smiles(smi, max_atoms=max_atoms)
                if isinstance(result, Rejection):
                    counts[result.reason] += 1
                    _add_reject(rejects, mol_id, smi, result.reason, result.detail, "featurize")
                else:
                    good_ids.append(mol_id)
                    good_smiles.append(canonical_smiles(smi))
                    graphs.append(result)
            if graphs:
                cols = {"id": pa.array(good_ids, pa.string()), "smiles": pa.array(good_smiles, pa.string()),
                        **graphs_to_columns(graphs)}
                out_writer.write_table(pa.table(cols, schema=FEATURIZED_SCHEMA))
            if rejects["id"]:
                rej_writer.write_table(pa.table(rejects, schema=REJECTS_SCHEMA))
            featurized += len(graphs)
            bar.update(report.rows_read)
    bar.close()
    os.replace(tmp_out, output)
    os.replace(tmp_rej, rejects_path)
    elapsed = time.perf_counter() - start
    rejected = sum(counts.values())
    if rows_read != featurized + rejected:  # an accounting bug must never pass silently
        raise RuntimeError(f"row accounting mismatch: read {rows_read} != {featurized} + {rejected}")
    return {"input": str(input_path), "output": str(output.resolve()), "rejects": str(rejects_path.resolve()),
            "rows_read": rows_read, "featurized": featurized, "rejected": rejected,
            "rejected_by_reason": dict(counts), "files": files["files"],
            "files_ok": files["files"] - len(files["files_failed"]), "files_failed": files["files_failed"],
            "ignored_files": files["ignored_files"], "seconds": round(elapsed, 3),
            "molecules_per_second": round(rows_read / elapsed, 1) if elapsed > 0 else None}


def tally_files(files: dict, metadata: dict) -> None:
    """Add a chunk report's file-level marks (end of a file, its failure, ignored entries) to `files`."""
    files["files"] += "file_end" in metadata
    files["files_failed"] += [metadata["file_failed"]] if "file_failed" in metadata else []
    files["ignored_files"] += metadata.get("ignored_files", [])


def _add_reject(rejects: dict, mol_id, raw, reason: str, detail: str, stage: str) -> None:
    rejects["id"].append(None if mol_id is None else str(mol_id))
    rejects["input"].append(None if raw is None else str(raw))
    rejects["reason"].append(reason)
    rejects["detail"].append(detail)
    rejects["stage"].append(stage)
