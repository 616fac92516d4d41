"""Ray Data stages shared by the jobs that featurize and tokenize records (pretraining, finetuning).
Graphs travel as Arrow columns, never as pickled objects. The pretraining ingest that wires them together is
`momu.pretrain.data`.

Stages are small UDFs over pyarrow batches:
  featurize_records       SMILES -> graph columns (rows from the MoMu corpus keep their own graphs)
  TokenizeTexts           every paragraph -> token ids (two-tower modes)
  EncodeTextFeatures      every paragraph -> pooled text-tower features (locked mode; cached in Parquet)
  EncodeTextHidden        every paragraph -> hidden states entering the top trained layers (partial mode; cached)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from momu.chem.columns import GRAPH_COLUMNS, GRAPH_SCHEMA, columns_to_graphs, graphs_to_columns
from momu.chem.featurize import MolGraph, Rejection, featurize_smiles
from momu.config import TextEncoderConfig
from momu.data.pairs import heldout_mask

TEXT_IDS = "text_input_ids"
TEXT_FEATURES = "text_features"
TEXT_HIDDEN = "text_hidden"
REJECT = "reject_reason"


# -- splitting --------------------------------------------------------------------------------------------------

def split_heldout(table: pa.Table, fraction: float) -> tuple[pa.Table, pa.Table]:
    mask = heldout_mask(table.column("id").to_pylist(), fraction)
    return table.filter(pa.array(~mask)), table.filter(pa.array(mask))


def to_blocks(table: pa.Table, rows_per_block: int = 256) -> list[pa.Table]:
    """Several blocks, so Ray Data stages run in parallel (one big table is one block)."""
    return [table.slice(i, rows_per_block) for i in range(0, max(1, table.num_rows), rows_per_block)]


# -- stages -----------------------------------------------------------------------------------------------------

def featurize_records(batch: pa.Table, max_atoms: int = 512, fingerprint: Optional[dict] = None) -> pa.Table:
    """Add graph columns and `reject_reason` ('' when the row is good). Rejected rows get empty graphs; the
    driver counts them by reason and filters them out. With `fingerprint` (a FingerprintConfig dict, for the
    fingerprint baseline) also a `fingerprint_bits` column of Morgan on-bits; rows without one are rejected."""
    has_graphs = "atom_type" in batch.column_names
    corpus_rows = {}
    if has_graphs:
        present = np.flatnonzero(batch.column("atom_type").is_valid().to_numpy(zero_copy_only=False))
        if len(present):
            for i, graph in zip(present, columns_to_graphs(batch.take(pa.array(present)).select(list(GRAPH_COLUMNS)))):
                corpus_rows[int(i)] = graph
    empty = MolGraph(np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros((2, 0), np.int32),
                     np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.uint8))
    graphs, reasons = [], []
    smiles = batch.column("smiles").to_pylist()
    for i, smi in enumerate(smiles):
        graph = corpus_rows.get(i)
        if graph is None:
            graph = featurize_smiles(smi, max_atoms=max_atoms)
        elif graph.num_nodes > max_atoms:
            graph = Rejection("too_many_atoms", f"{graph.num_nodes} atoms")
        if isinstance(graph, Rejection):
            graphs.append(empty)
            reasons.append(graph.reason)
        else:
            graphs.append(graph)
            reasons.append("")
    bits = None
    if fingerprint is not None:
        from momu.config import FingerprintConfig
        from momu.models.fingerprint import fingerprints_for

        bits = fingerprints_for([s if not r else None for s, r in zip(smiles, reasons)],
                                FingerprintConfig.model_validate(fingerprint))
        for i, b in enumerate(bits):
            if isinstance(b, Rejection):
                if not reasons[i]:
                    graphs[i], reasons[i] = empty, b.reason
                bits[i] = np.zeros(0, np.int32)
    others = [c for c in batch.column_names if c not in GRAPH_COLUMNS]
    out = batch.select(others)
    for name, column in graphs_to_columns(graphs).items():
        out = out.append_column(GRAPH_SCHEMA.field(name), column)
    if bits is not None:
        from momu.models.fingerprint import FINGERPRINT_COLUMN

        out = out.append_column(FINGERPRINT_COLUMN, pa.array([b.tolist() for b in bits], pa.list_(pa.int32())))
    return out.append_column(REJECT, pa.array(reasons, pa.string()))


def _cut(texts: list[str], max_chars: Optional[int]) -> list[str]:
    return [t[:max_chars] if max_chars else t for t in texts]


class TokenizeTexts:
    """Every paragraph of every row -> token ids (MoMu's cut to max_chars, truncation to max_length, no padding)."""

    def __init__(self, text_config: dict):
        from transformers import AutoTokenizer

        from momu.models.text import resolve_text_encoder_path

        self.config = TextEncoderConfig.model_validate(text_config)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_text_encoder_path(self.config.name_or_path))

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("texts").to_pylist()
        flat = [t for row in texts for t in row]
        encoded = self.tokenizer(_cut(flat, self.config.max_chars), add_special_tokens=self.config.add_special_tokens,
                                 truncation=True, max_length=self.config.max_length)["input_ids"] if flat else []
        rows, pos = [], 0
        for row in texts:
            rows.append(encoded[pos:pos + len(row)])
            pos += len(row)
        return batch.append_column(TEXT_IDS, pa.array(rows, pa.list_(pa.list_(pa.int32()))))


class _TextTowerStage:
    """A text tower in eval mode (no dropout, no grad) on the actor's device, and every paragraph of a batch in
    chunks of similar length (sorting by length keeps padding, and wasted compute, small inside each chunk)."""

    def __init__(self, text_config: dict, batch_size: int = 64, num_threads: Optional[int] = None):
        import torch

        from momu.models.text import TextEncoder

        if num_threads:
            torch.set_num_threads(num_threads)
        self.encoder = TextEncoder(TextEncoderConfig.model_validate(text_config)).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder.to(self.device)
        self.batch_size = batch_size

    def chunks(self, flat: list[str]):
        """(paragraph indices, their tokens) per chunk, under no_grad."""
        import torch

        order = sorted(range(len(flat)), key=lambda i: len(flat[i]))
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                yield idx, self.encoder.tokenize([flat[i] for i in idx], self.device)


class EncodeTextFeatures(_TextTowerStage):
    """Every paragraph of every row -> the text tower's pooled features (eval mode, no dropout, no grad)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("texts").to_pylist()
        flat = [t for row in texts for t in row]
        features = np.zeros((len(flat), self.encoder.out_dim), dtype=np.float32)
        for idx, tokens in self.chunks(flat):
            features[idx] = self.encoder.pool(**tokens).float().cpu().numpy()
        rows, pos = [], 0
        for row in texts:
            rows.append(features[pos:pos + len(row)])
            pos += len(row)
        values = pa.array([list(map(list, r)) for r in rows], pa.list_(pa.list_(pa.float32()))) if rows else \
            pa.array([], pa.list_(pa.list_(pa.float32())))
        return batch.append_column(TEXT_FEATURES, values)


class EncodeTextHidden(_TextTowerStage):
    """Every paragraph of every row -> the hidden states entering the text tower's top `train_layers` layers
    (partial mode): list<list<fixed_size_list<dtype>[H]>> per row, one [tokens, H] matrix per paragraph holding
    only the real tokens (no padding; the token count is the attention mask). Eval mode, no grad."""

    def __init__(self, text_config: dict, train_layers: int, dtype: str = "float16", batch_size: int = 64,
                 num_threads: Optional[int] = None):
        super().__init__(text_config, batch_size, num_threads)
        self.encoder.split_index(train_layers)  # a bad layer count fails here, before any text is encoded
        self.train_layers, self.dtype = train_layers, np.dtype(dtype)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("texts").to_pylist()
        flat = [t for row in texts for t in row]
        hidden: list = [None] * len(flat)
        for idx, tokens in self.chunks(flat):
            states = self.encoder.lower_hidden(**tokens, train_layers=self.train_layers).float().cpu().numpy()
            real = tokens["attention_mask"].bool().cpu().numpy()
            for j, i in enumerate(idx):
                hidden[i] = states[j][real[j]].astype(self.dtype)  # real tokens only, whichever side pads
        width = self.encoder.out_dim
        values = np.concatenate(hidden) if hidden else np.zeros((0, width), self.dtype)
        tokens_per_paragraph = np.array([len(h) for h in hidden], dtype=np.int64)
        paragraphs = pa.ListArray.from_arrays(
            pa.array(np.concatenate([[0], np.cumsum(tokens_per_paragraph)]), pa.int32()),
            pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width))
        rows = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum([len(r) for r in texts])]), pa.int32()),
                                        paragraphs)
        return batch.append_column(TEXT_HIDDEN, rows)


# -- locked-text cache ------------------------------------------------------------------------------------------

def text_cache_key(table: pa.Table, text_config: TextEncoderConfig, partial: Optional[dict] = None) -> str:
    """Content hash of (text tower config, every id and paragraph[, partial mode's layers and dtype]): a changed
    text, encoder or split is a new cache."""
    digest = hashlib.sha256(json.dumps(text_config.model_dump(mode="json"), sort_keys=True).encode())
    if partial:  # locked caches keep the keys they had before partial mode existed
        digest.update(json.dumps(partial, sort_keys=True).encode())
    for mol_id, texts in zip(table.column("id").to_pylist(), table.column("texts").to_pylist()):
        digest.update(str(mol_id).encode() + b"\0" + "\x1f".join(texts).encode() + b"\n")
    return digest.hexdigest()[:24]


def encoder_cpus(num_cpus: float, concurrency: int = 1) -> float:
    """CPUs each text-encoding actor reserves: `num_cpus`, but never so many that the actors hold every CPU of the
    cluster, because the Parquet writer after them needs one too (a 1-worker x 2-CPU job on a 2-CPU machine was seen
    waiting 8 min at 0 rows: "The Ray cluster currently does not have any available CPUs"; alone, the same
    reservation only waited ~10 s). Its torch threads stay num_cpus."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0)) if ray.is_initialized() else 0.0
    if total <= 0:
        return num_cpus
    return min(num_cpus, max(0.25, (total - 1.0) / max(1, concurrency)))


def cached_text_features(table: pa.Table, text_config: TextEncoderConfig, cache_dir: str, concurrency: int = 1,
                         num_cpus: float = 1.0, num_gpus: float = 0.0, train_layers: Optional[int] = None,
                         dtype: str = "float16"):
    """A Ray Dataset of `table` plus `text_features` (locked) or, with `train_layers`, `text_hidden` (partial: the
    hidden states entering the top `train_layers` layers, stored as `dtype`), computed once by a Ray Data
    batch-inference pass and stored under cache_dir/<key>/ (a `_COMPLETE` marker is written last: half-written
    caches are recomputed)."""
    import ray.data

    partial = {"train_layers": train_layers, "dtype": dtype} if train_layers else None
    key = text_cache_key(table, text_config, partial)
    final = Path(cache_dir) / key
    if not (final / "_COMPLETE").exists():
        tmp = Path(cache_dir) / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        kwargs = {"text_config": text_config.model_dump(mode="json"), "num_threads": max(1, int(num_cpus))}
        stage = EncodeTextHidden if partial else EncodeTextFeatures
        (ray.data.from_arrow(to_blocks(table, 64))
         .map_batches(stage, fn_constructor_kwargs={**kwargs, **(partial or {})},
                      batch_size=64, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=concurrency),
                      num_cpus=encoder_cpus(num_cpus, concurrency), num_gpus=num_gpus)
         .write_parquet(str(tmp)))
        (tmp / "_COMPLETE").write_text(json.dumps({"rows": table.num_rows, **(partial or {})}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    return ray.data.read_parquet(str(final), file_extensions=["parquet"]), str(final)
