"""The corpus builders as jobs: read sources (driver), canonicalise and mark evaluation molecules with Ray
Data, then group / deduplicate, account for every row and write the Parquet + manifest (driver, pure).

    build_corpus(CorpusConfig)       pairs    -> records Parquet (`momu pretrain --data_paths <it>`)
    build_molecules(MoleculesConfig) molecules -> records Parquet without texts (objective graphcl)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from momu.data.corpus import (
    DUPLICATE_PAIR, DUPLICATE_SMILES, REMOVED, RemovalKeys, account_sources, dedup_molecules, group_pairs,
    mark_removed, sha256_path, text_stats,
)
from momu.data.corpus_config import CorpusConfig, MoleculesConfig
from momu.data.corpus_sources import annotate_batch, read_source

Config = Union[CorpusConfig, MoleculesConfig]


def build_corpus(config: CorpusConfig) -> dict:
    """Build the pair corpus; returns the manifest (also written next to the output)."""
    has_graphs = any(s.format == "momu_corpus" for s in config.sources)
    return _build(config, "pairs", group_pairs, DUPLICATE_PAIR, graph_keys=has_graphs)


def build_molecules(config: MoleculesConfig) -> dict:
    """Build the molecule set; returns the manifest (also written next to the output)."""
    return _build(config, "molecules", dedup_molecules, DUPLICATE_SMILES, graph_keys=False)


def manifest_path(config: Config) -> Path:
    out = Path(config.output)
    return Path(config.manifest) if config.manifest else out.with_name(out.name.split(".")[0] + ".manifest.json")


def _build(config: Config, kind: str, group: Callable, duplicate_reason: str, graph_keys: bool) -> dict:
    started = time.perf_counter()
    seconds = {}
    for spec in config.sources + config.removal.evaluation:
        if not Path(spec.path).exists():
            raise FileNotFoundError(f"{spec.name}: no such file or directory: {spec.path!r}")
    import ray

    from momu.ray_session import init_ray_if_needed

    train, train_reports = _read_all(config.sources)
    evaluation, eval_reports = _read_all(config.removal.evaluation)
    seconds["read"] = time.perf_counter() - started

    init_ray_if_needed()
    t = time.perf_counter()
    stereo_free = config.removal.stereo_free
    keys = RemovalKeys()
    eval_rows = None
    if evaluation is not None:
        eval_rows = _collect(ray, _dataset(ray, evaluation, config.block_rows).map_batches(
            annotate_batch, fn_kwargs={"stereo_free": stereo_free, "graph_keys_for_smiles": graph_keys},
            batch_format="pyarrow", batch_size=config.block_rows))
        keys = RemovalKeys.from_rows(eval_rows, by_cid=config.removal.by_cid)
    annotated = _collect(ray, _dataset(ray, train, config.block_rows)
                         .map_batches(annotate_batch, fn_kwargs={"stereo_free": stereo_free},
                                      batch_format="pyarrow", batch_size=config.block_rows)
                         .map_batches(mark_removed, fn_kwargs={"keys": keys}, batch_format="pyarrow",
                                      batch_size=config.block_rows))
    seconds["canonicalise_and_filter"] = time.perf_counter() - t

    t = time.perf_counter()
    # Source priority (config order), then reader order: the grouping keeps the first copy of anything.
    rank = {spec.name: i for i, spec in enumerate(config.sources)}
    annotated = annotated.append_column("_rank", pa.array([rank[s] for s in annotated.column("source").to_pylist()],
                                                          pa.int32()))
    annotated = annotated.sort_by([("_rank", "ascending"), ("row", "ascending")]).drop_columns(["_rank"])
    good = pc.and_(pc.equal(annotated.column("reject_reason"), ""),
                           pc.equal(annotated.column(REMOVED), ""))
    table, kept, duplicates = group(annotated.filter(good))
    accounts = account_sources(config.sources, train_reports, annotated, kept, duplicates, duplicate_reason,
                               config.max_rejected_examples)
    seconds["group_and_account"] = time.perf_counter() - t

    t = time.perf_counter()
    out = Path(config.output)
    _write_parquet(table.combine_chunks(), out)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    manifest = _manifest(config, kind, table, accounts, keys, eval_rows, eval_reports, seconds)
    _write_json(manifest, manifest_path(config))
    return manifest


def _read_all(specs) -> tuple:
    tables, reports = [], {}
    for spec in specs:
        table, reports[spec.name] = read_source(spec)
        tables.append(table)
    if not tables:
        return None, reports
    return pa.concat_tables(tables, promote_options="default"), reports


def _dataset(ray, table: pa.Table, block_rows: int):
    blocks = [table.slice(i, block_rows) for i in range(0, max(1, table.num_rows), block_rows)]
    return ray.data.from_arrow(blocks)


def _collect(ray, dataset) -> pa.Table:
    tables = [t for t in ray.get(dataset.to_arrow_refs())]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def _write_parquet(table: pa.Table, out: Path) -> None:
    """Fixed writer settings, written under a temporary name then renamed: same rows -> same bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=65_536, write_statistics=True)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _manifest(config: Config, kind: str, table: pa.Table, accounts: dict, keys: RemovalKeys, eval_rows,
              eval_reports: dict, seconds: dict) -> dict:
    from rdkit import rdBase

    sources = {}
    for spec in config.sources:
        sources[spec.name] = {**accounts[spec.name].as_dict(), "sha256": sha256_path(spec.path)}
    evaluation = {}
    for spec in config.removal.evaluation:
        mine = eval_rows.filter(pc.equal(eval_rows.column("source"), spec.name))
        rejected = [r for r in mine.column("reject_reason").to_pylist() if r]
        report = eval_reports[spec.name]
        evaluation[spec.name] = {
            "path": spec.path, "format": spec.format, "sha256": sha256_path(spec.path), "read": report.rows_read,
            "malformed": report.rows_malformed, "unparseable_smiles": len(rejected),
            "molecules": len({s for s in mine.column("canonical").to_pylist() if s is not None}),
        }
    totals = {"read": 0, "kept": 0, "removed_by_reason": {}, "rejected_by_reason": {}}
    for account in accounts.values():
        totals["read"] += account.read
        totals["kept"] += account.kept
        for field in ("removed_by_reason", "rejected_by_reason"):
            for reason, n in getattr(account, field).items():
                totals[field][reason] = totals[field].get(reason, 0) + n
    output = {"path": str(config.output), "sha256": sha256_path(config.output)}
    output.update(text_stats(table) if kind == "pairs" else {"molecules": table.num_rows})
    return {
        "kind": kind, "output": output, "totals": totals, "sources": sources,
        "removal": {"by_cid": config.removal.by_cid, "stereo_free": config.removal.stereo_free,
                    "keys": keys.counts(), "evaluation": evaluation},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "rdkit_version": rdBase.rdkitVersion, "config": config.model_dump(mode="json"),
    }
