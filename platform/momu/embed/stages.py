"""The embedding pipeline's stages as plain callables over pyarrow tables (Ray Data runs them; no Ray import).

  read_parts        one input file -> its parts (PART_SCHEMA tables), skipping parts already completed; writes
                    a read marker (number of parts) when the whole file has been read
  featurize_rows    molecules: SMILES -> canonical SMILES + graph columns; failures become rejects
  EmbedRows         the model stage (class: loaded once per actor): graph columns -> MoMu.encode_graph, or
                    texts -> MoMu.encode_text; adds the `embedding` column (null for rejected rows)
  write_rows        groups rows by part, writes embedded rows to shards/ and rejected rows to rejects/
                    (temporary name, then rename) and returns one summary row per written group
  EmbedAndWriteRows EmbedRows then write_rows in the same actor (what the job runs)

Rows keep `_unit` (file part), `_seq` (row in part) and `_part_rows` from the read stage to the writer, so the
driver can tell when every row of a part has been written, whatever batching Ray Data chose in between.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from momu.chem.columns import GRAPH_COLUMNS, GRAPH_SCHEMA, graphs_to_columns
from momu.chem.featurize import MolGraph, Rejection, featurize_mol, parse_smiles
from momu.embed.sources import iter_parts

SHARDS_DIR = "shards"
REJECTS_DIR = "rejects"
READS_DIR = "_reads"
EMBEDDING = "embedding"
EMPTY_GRAPH = MolGraph(np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros((2, 0), np.int32),
                       np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.uint8))
REJECTS_SCHEMA = pa.schema([("id", pa.string()), ("input", pa.string()), ("reason", pa.string()),
                            ("detail", pa.string()), ("stage", pa.string()), ("source", pa.string())])
SUMMARY_SCHEMA = pa.schema([("unit", pa.string()), ("part_rows", pa.int64()), ("rows", pa.int64()),
                            ("embedded", pa.int64()), ("rejected", pa.int64()), ("reasons", pa.string()),
                            ("shard", pa.string()), ("rejects", pa.string())])


def shard_schema(mode: str, dim: int, dtype: str) -> pa.Schema:
    value = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema([("id", pa.string()), ("smiles" if mode == "molecules" else "text", pa.string()),
                      (EMBEDDING, pa.list_(value, dim)), ("model_name", pa.string()),
                      ("model_version", pa.string()), ("run_id", pa.string())])


def atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write Parquet under a hidden temporary name in the same folder, then rename: readers see the whole
    file or nothing."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_rejects(rows: pa.Table, path: Path) -> None:
    """Rejected rows of a batch stage (reject_reason/detail/stage columns) -> a rejects file (REJECTS_SCHEMA)."""
    atomic_write_table(pa.table([rows.column("id"), rows.column("input"), rows.column("reject_reason"),
                                 rows.column("reject_detail"), rows.column("reject_stage"), rows.column("source")],
                                schema=REJECTS_SCHEMA), path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- read -----------------------------------------------------------------------------------------------------

def read_parts(batch: pa.Table, output_dir: str, mode: str, part_rows: int, smiles_column: Optional[str],
               id_column: Optional[str], text_column: Optional[str], prefix_ids_with_file: bool,
               header: str = "auto") -> Iterator[pa.Table]:
    """For each input file row (path, key, done_parts) of `batch`: yield its parts not yet done; then write
    `_reads/<key>.json` with the file's number of parts and rows, and its failure (null when it read cleanly)."""
    for path, key, done in zip(batch.column("path").to_pylist(), batch.column("key").to_pylist(),
                               batch.column("done_parts").to_pylist()):
        done = set(done or [])
        parts = rows = 0
        failures: list = []
        for part in iter_parts(Path(path), mode, part_rows, smiles_column, id_column, text_column,
                               prefix_ids_with_file, header, failures):
            parts, rows = parts + 1, rows + part.rows
            if part.index not in done:
                yield part.table
        marker = Path(output_dir) / READS_DIR / f"{key}.json"
        atomic_write_text(marker, json.dumps({"path": path, "parts": parts, "rows": rows,
                                              "failed": failures[0] if failures else None}))


# -- featurize ------------------------------------------------------------------------------------------------

def featurize_rows(batch: pa.Table, max_atoms: int) -> pa.Table:
    """Good rows: RDKit parse once -> MoMu graph + canonical SMILES; a failure rejects the row with the
    featurizer's reason. Rejected rows get an empty graph (the model stage skips them)."""
    reasons = batch.column("reject_reason").to_pylist()
    details = batch.column("reject_detail").to_pylist()
    stages = batch.column("reject_stage").to_pylist()
    graphs, canonical = [], []
    for i, smi in enumerate(batch.column("input").to_pylist()):
        if reasons[i]:
            graphs.append(EMPTY_GRAPH)
            canonical.append(None)
            continue
        result, smiles = _featurize_one(smi, max_atoms)
        if isinstance(result, Rejection):
            reasons[i], details[i], stages[i] = result.reason, result.detail, "featurize"
            graphs.append(EMPTY_GRAPH)
            canonical.append(None)
        else:
            graphs.append(result)
            canonical.append(smiles)
    out = batch.drop_columns(["reject_reason", "reject_detail", "reject_stage"])
    out = out.append_column("reject_reason", pa.array(reasons, pa.string()))
    out = out.append_column("reject_detail", pa.array(details, pa.string()))
    out = out.append_column("reject_stage", pa.array(stages, pa.string()))
    out = out.append_column("smiles", pa.array(canonical, pa.string()))
    for name, column in graphs_to_columns(graphs).items():
        out = out.append_column(GRAPH_SCHEMA.field(name), column)
    return out


def _featurize_one(smiles, max_atoms: int):
    from rdkit import Chem

    try:
        mol = parse_smiles(smiles)
        if isinstance(mol, Rejection):
            return mol, None
        result = featurize_mol(mol, max_atoms=max_atoms)
        return result, (Chem.MolToSmiles(mol) if not isinstance(result, Rejection) else None)
    except Exception as exc:  # RDKit raising on one exotic molecule must not stop a 100M-row job
        return Rejection("featurize_error", f"{type(exc).__name__}: {exc}"[:200]), None


# -- model ----------------------------------------------------------------------------------------------------

class EmbedRows:
    """Model stage: one MoMu per actor (GPU when the actor has one). molecules: graph columns -> encode_graph;
    texts: `input` texts -> encode_text. Rejected rows pass through with a null embedding."""

    def __init__(self, model_source: str, mode: str, batch_size: int, dtype: str = "float32",
                 torch_threads: Optional[int] = None, expected_sha256: Optional[str] = None,
                 tracking_uri: Optional[str] = None):
        import torch

        from momu.models.loading import load_momu, resolve_model_dir, weights_sha256

        if tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        if torch_threads:
            torch.set_num_threads(torch_threads)
        local = resolve_model_dir(model_source)
        if expected_sha256 and weights_sha256(local) != expected_sha256:
            raise RuntimeError(f"model {model_source} changed since the job started (weights hash differs)")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # Molecules need only the graph tower: not building the text tower saves each actor ~1-2 s and its memory.
        self.model = load_momu(local, map_location=self.device, graph_only=mode == "molecules").eval()
        self.mode, self.batch_size = mode, batch_size
        self.dtype = np.float16 if dtype == "float16" else np.float32
        self.dim = self.model.config.proj_dim
        self.bond_feature = self.model.config.graph.bond_feature

    def __call__(self, batch: pa.Table) -> pa.Table:
        good = np.asarray(pc.equal(batch.column("reject_reason"), "").to_numpy(zero_copy_only=False), dtype=bool)
        rows = np.flatnonzero(good)
        emb = np.zeros((batch.num_rows, self.dim), dtype=self.dtype)
        if len(rows):
            emb[rows] = self.embed(batch.take(pa.array(rows)))
        column = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), self.dim, mask=pa.array(~good))
        out = batch.drop_columns([c for c in GRAPH_COLUMNS if c in batch.column_names])
        return out.append_column(EMBEDDING, column)

    def embed(self, good: pa.Table) -> np.ndarray:
        """Embeddings [n, dim] of rows that are all good (float32 computed, cast to the output dtype)."""
        import torch

        from momu.chem.columns import columns_to_pyg_batch

        parts = []
        with torch.inference_mode():
            for start in range(0, good.num_rows, self.batch_size):
                chunk = good.slice(start, self.batch_size)
                if self.mode == "molecules":
                    pyg = columns_to_pyg_batch(chunk.select(list(GRAPH_COLUMNS)), self.bond_feature, pyg=False)
                    if getattr(self.model, "uses_fingerprints", False):  # the fingerprint baseline needs SMILES
                        from momu.models.fingerprint import attach_fingerprints, fingerprints_for

                        cfg = self.model.config.fingerprint
                        attach_fingerprints(pyg, fingerprints_for(chunk.column("smiles").to_pylist(), cfg), cfg.n_bits)
                    pyg = pyg.to(self.device)
                    z = self.model.encode_graph(pyg)
                else:
                    tokens = self.model.text_encoder.tokenize(chunk.column("input").to_pylist(), self.device)
                    z = self.model.encode_text(**tokens)
                parts.append(z.float().cpu().numpy())
        return np.concatenate(parts).astype(self.dtype, copy=False)


class EmbedAndWriteRows(EmbedRows):
    """The model stage that also writes its rows (`write_rows`) and returns only their summary rows: the
    embeddings go from the actor straight to Parquet, never through the object store, and no separate writer
    tasks (worker processes, scheduling) are needed."""

    def __init__(self, model_source: str, mode: str, batch_size: int, write: dict, dtype: str = "float32",
                 torch_threads: Optional[int] = None, expected_sha256: Optional[str] = None,
                 tracking_uri: Optional[str] = None):
        super().__init__(model_source, mode, batch_size, dtype, torch_threads, expected_sha256, tracking_uri)
        self.write = {**write, "mode": mode, "dim": self.dim, "dtype": dtype}

    def __call__(self, batch: pa.Table) -> pa.Table:
        return write_rows(super().__call__(batch), **self.write)


# -- write ----------------------------------------------------------------------------------------------------

def write_rows(batch: pa.Table, output_dir: str, mode: str, dim: int, dtype: str, model_name: str,
               model_version: str, run_id: str) -> pa.Table:
    """Split the batch by part; per part, embedded rows -> shards/<part>-<first seq>.parquet and rejected rows
    -> rejects/<same>.parquet (both written atomically, names deterministic so a retried task overwrites its own
    files). Returns one SUMMARY_SCHEMA row per part group."""
    out_dir = Path(output_dir)
    schema = shard_schema(mode, dim, dtype)
    value_column = "smiles" if mode == "molecules" else "input"
    summary = {name: [] for name in SUMMARY_SCHEMA.names}
    units = batch.column("_unit")
    for unit in pc.unique(units).to_pylist():
        group = batch.filter(pc.equal(units, unit))
        group = group.take(pc.sort_indices(group.column("_seq")))
        reasons = group.column("reject_reason")
        ok = pc.equal(reasons, "")
        good, bad = group.filter(ok), group.filter(pc.invert(ok))
        name = f"{unit.replace('/', '-')}-s{group.column('_seq')[0].as_py():07d}.parquet"
        shard = rejects = ""
        if good.num_rows:
            n = good.num_rows
            table = pa.table([good.column("id"), good.column(value_column), good.column(EMBEDDING),
                              pa.array([model_name] * n, pa.string()), pa.array([model_version] * n, pa.string()),
                              pa.array([run_id] * n, pa.string())], schema=schema)
            atomic_write_table(table, out_dir / SHARDS_DIR / name)
            shard = name
        if bad.num_rows:
            write_rejects(bad, out_dir / REJECTS_DIR / name)
            rejects = name
        summary["unit"].append(unit)
        summary["part_rows"].append(int(group.column("_part_rows")[0].as_py()))
        summary["rows"].append(group.num_rows)
        summary["embedded"].append(good.num_rows)
        summary["rejected"].append(bad.num_rows)
        summary["reasons"].append(json.dumps(dict(Counter(bad.column("reject_reason").to_pylist()))))
        summary["shard"].append(shard)
        summary["rejects"].append(rejects)
    return pa.table(summary, schema=SUMMARY_SCHEMA)
