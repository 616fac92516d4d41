"""The pretraining ingest on Ray Data: records -> featurize (CPU tasks) -> tokenize or cached text features
(actors) -> materialized, deterministic per-worker splits. The stages themselves are in `momu.data.pipeline`."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from momu.chem.columns import GRAPH_COLUMNS
from momu.data.pipeline import (REJECT, TokenizeTexts, cached_text_features, featurize_records, split_heldout,
                                to_blocks)
from momu.data.records import ReadReport
from momu.pretrain.config import PretrainConfig


def read_inputs(config: PretrainConfig) -> tuple[pa.Table, ReadReport]:
    """All `data_paths` as one records table (id, smiles, texts[, graph columns]) and the merged read report."""
    from momu.data.readers import PAIR_FORMATS, _detect_pair_format, read_molecule_library, read_pairs

    tables, report = [], None
    for path in config.data_paths:
        fmt = config.data_format
        if fmt == "auto" and config.objective == "graphcl":
            try:
                fmt = _detect_pair_format(Path(path))
            except ValueError:
                fmt = "library"
        if fmt == "library":
            if config.objective != "graphcl":
                raise ValueError(f"data_paths: {path} is a molecule library; the {config.objective} objective "
                                 "needs text pairs")
            result = read_molecule_library(path)
        else:
            result = read_pairs(path, format=fmt if fmt in PAIR_FORMATS else "auto")
        table = result.table
        if fmt == "library" and len(config.data_paths) > 1:
            # Library ids are often row numbers: make them unique across files (muv.csv.gz:12, hiv.csv.gz:12).
            name = Path(path).name
            table = table.set_column(table.column_names.index("id"), "id",
                                     pa.array([f"{name}:{i}" for i in table.column("id").to_pylist()]))
        keep = ["id", "smiles", "texts"] + [c for c in GRAPH_COLUMNS if c in table.column_names]
        tables.append(table.select(keep))
        report = result.report if report is None else report.merge(result.report, path=", ".join(config.data_paths))
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    # The same molecule listed twice (two files, duplicated rows) would be its own negative: keep the first.
    # Pairs are keyed by id (CID); graph-only libraries by SMILES, since their ids may be mere row numbers.
    keys = table.column("smiles" if config.objective == "graphcl" else "id").to_pylist()
    first = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    if len(first) < len(keys):
        report.metadata["duplicate_ids_dropped" if config.objective != "graphcl" else "duplicate_smiles_dropped"] = \
            len(keys) - len(first)
        table = table.take(pa.array(sorted(first.values())))
    return table, report



# -- the whole ingest -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PretrainData:
    train_splits: list  # one MaterializedDataset per worker (equal row counts)
    val: object  # MaterializedDataset, file order
    summary: dict


def build_pretrain_data(config: PretrainConfig, num_workers: int, text_mode: str) -> PretrainData:
    """Read, split off the fixed held-out part, run the stages, materialize, and split equally per worker."""
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True  # deterministic order
    table, report = read_inputs(config)
    if config.objective != "graphcl":  # momu, vse: graph<->text
        has_text = np.array([len(t) > 0 for t in table.column("texts").to_pylist()])
        no_text = int((~has_text).sum())
        table = table.filter(pa.array(has_text))
    else:
        no_text = 0
        table = table.drop_columns(["texts"])
    train_table, val_table = split_heldout(table, config.heldout_fraction)
    cache_paths = []

    def prepare(part: pa.Table):
        if config.objective != "graphcl" and text_mode in ("locked", "partial"):
            ds, path = cached_text_features(part, config.model.text, config.text_cache_dir,
                                            num_cpus=config.scaling.cpus_per_worker,
                                            num_gpus=1.0 if config.scaling.use_gpu else 0.0,
                                            train_layers=config.text_train_layers if text_mode == "partial" else None,
                                            dtype=config.text_cache_dtype)
            cache_paths.append(path)
        else:
            ds = ray.data.from_arrow(to_blocks(part))
        fingerprint = config.model.fingerprint.model_dump() if config.model.graph_encoder == "fingerprint" else None
        ds = ds.map_batches(featurize_records, fn_kwargs={"max_atoms": config.max_atoms, "fingerprint": fingerprint},
                            batch_format="pyarrow", batch_size=256)
        if config.objective != "graphcl" and text_mode not in ("locked", "partial"):
            ds = ds.map_batches(TokenizeTexts, fn_constructor_kwargs={"text_config": config.model.text.model_dump(mode="json")},
                                batch_format="pyarrow", batch_size=256, compute=ray.data.ActorPoolStrategy(size=1))
        ds = ds.materialize()
        reasons = Counter(r[REJECT] for r in ds.filter(expr=f"{REJECT} != ''").select_columns([REJECT]).take_all())
        keep = [c for c in ds.columns() if c not in ("texts", "smiles", REJECT)]
        return ds.filter(expr=f"{REJECT} == ''").select_columns(keep).materialize(), reasons

    train_ds, train_rejects = prepare(train_table)
    val_ds, val_rejects = prepare(val_table)
    if train_ds.count() < num_workers * config.batch_size:
        raise ValueError(f"data_paths: {train_ds.count()} usable training rows cannot fill one batch of "
                         f"{config.batch_size} on each of {num_workers} workers")
    splits = train_ds.split(num_workers, equal=True)
    summary = {
        "rows_read": report.rows_read, "rows_malformed": report.rows_malformed,
        "malformed_by_reason": dict(report.malformed), "rows_without_text": no_text,
        "duplicate_ids_dropped": report.metadata.get("duplicate_ids_dropped", 0),
        "duplicate_smiles_dropped": report.metadata.get("duplicate_smiles_dropped", 0),
        "rejected_by_reason": dict(train_rejects + val_rejects),
        "train_rows": train_ds.count(), "val_rows": val_ds.count(),
        "train_rows_per_worker": splits[0].count(), "text_cache": cache_paths,
    }
    return PretrainData(splits, val_ds, summary)
