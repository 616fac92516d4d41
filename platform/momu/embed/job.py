"""`momu embed`: molecule libraries (or texts) -> MoMu embedding shards, on Ray Data.

    from_items(files) -> read_parts (CPU tasks, one per file, a part at a time)
                      -> featurize_rows (CPU tasks; molecules mode)
                      -> EmbedAndWriteRows (actor pool, `model_actors` actors, num_gpus per actor when the
                         cluster has GPUs): embeddings, then write_rows in the same actor (Parquet shards +
                         rejects, atomic), so embeddings never cross the object store
                      -> summary rows consumed by the driver, which marks parts complete in parts.jsonl

The driver prints and logs to MLflow `read = embedded + rejected` (over the whole output, resumed runs
included), `files = ok + failed`, rejects by reason, rows/s and where the output is. Bad rows and damaged files
never fail the job (a damaged file's rows before the damage are embedded, the damage is a rejected row and a
`files_failed` entry); only a user error (a missing input, a missing column: checked here, before Ray starts) or
an infrastructure error (a crashed stage, a full disk, an unreadable model) raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from momu.embed.config import EmbedConfig
from momu.embed.output import REJECTS_FILE, EmbedOutput
from momu.embed.sources import check_columns, expand_inputs, file_fingerprint, file_key
from momu.embed.stages import EmbedAndWriteRows, featurize_rows, read_parts
from momu.models.loading import weights_sha256


BLOCK_BYTES = 1 << 18


@dataclasses.dataclass
class EmbedResult:
    output_dir: Path
    complete: bool
    summary: dict
    mlflow_run_id: Optional[str] = None


def describe_model(source: str) -> dict:
    """Where the model is, what it is (name, version, weights hash, embedding size), and a pinned source that
    every actor loads (models:/name/latest and aliases are resolved to a version number once, here)."""
    from momu.models.loading import resolve_model_dir

    local = resolve_model_dir(source)
    config = json.loads((local / "config.json").read_text())["config"]
    sha = weights_sha256(local)
    if source.startswith("models:/"):
        from mlflow.tracking import MlflowClient

        rest = source[len("models:/"):].strip("/")
        client = MlflowClient()
        if "@" in rest:
            name, alias = rest.split("@", 1)
            version = str(client.get_model_version_by_alias(name, alias).version)
        else:
            name, _, version = rest.rpartition("/")
            if version == "latest":
                version = str(max(int(v.version) for v in client.search_model_versions(f"name='{name}'")))
        pinned = f"models:/{name}/{version}"
    elif source.startswith(("runs:/", "mlflow-artifacts:/")):
        name, version, pinned = source, f"sha256:{sha[:12]}", source
    else:
        # "runs/demo/model" -> "demo/model": the last folder alone is often just "model".
        resolved = local.resolve()
        name = f"{resolved.parent.name}/{resolved.name}" if resolved.parent.name else resolved.name
        version, pinned = f"sha256:{sha[:12]}", str(resolved)
    return {"model_name": name, "model_version": version, "model_source": pinned, "weights_sha256": sha,
            "embedding_dim": int(config["proj_dim"]), "bond_feature": config["graph"]["bond_feature"],
            "graph_encoder": config.get("graph_encoder", "gin"), "text_encoder": config["text"]["name_or_path"]}


def _fingerprint(config: EmbedConfig, model: dict) -> dict:
    """Settings that change what a part's output is: resuming with other values would mix two outputs."""
    return {"mode": config.mode, "weights_sha256": model["weights_sha256"], "model_version": model["model_version"],
            "embedding_dtype": config.embedding_dtype, "max_atoms": config.max_atoms, "part_rows": config.part_rows,
            "smiles_column": config.smiles_column, "id_column": config.id_column, "text_column": config.text_column,
            "prefix_ids_with_file": config.prefix_ids_with_file, "header": config.header}


def run_embedding(config: EmbedConfig, log_to_mlflow: bool = True) -> EmbedResult:
    ignored: list[str] = []
    files = expand_inputs(config.inputs, config.mode, ignored)
    for f in files:
        check_columns(f, config.mode, config.smiles_column, config.id_column, config.text_column,
                      header=config.header)
    if config.mlflow_tracking_uri:  # models:/ URIs resolve against the configured store (here and in actors)
        os.environ["MLFLOW_TRACKING_URI"] = config.mlflow_tracking_uri
    model = describe_model(config.model)
    keys = {file_key(f): f for f in files}
    out = EmbedOutput(config.output_dir)
    manifest = out.open(_fingerprint(config, model), {k: file_fingerprint(f) for k, f in keys.items()})
    completed = out.completed_parts()
    removed = out.clean_orphans(completed)
    status = out.file_status(list(keys), completed)
    todo = [k for k in keys if status[k] is not None]

    run_ctx = contextlib.nullcontext(None)
    if log_to_mlflow:
        from momu.tracking import mlflow_run

        run_ctx = mlflow_run(config, config.mlflow_experiment, config.mlflow_tracking_uri,
                             run_name=f"embed-{manifest['run_id']}")
    with run_ctx as run:
        mlflow_run_id = run.info.run_id if run is not None else None
        manifest["attempts"].append({"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "mlflow_run_id": mlflow_run_id, "orphan_files_removed": removed,
                                     "parts_already_done": len(completed)})
        out.write_manifest(manifest)
        attempt = {"parts_done": 0, "rows": 0, "seconds": 0.0, "files_skipped": len(keys) - len(todo),
                   "parts_skipped": len(completed), "stopped_early": False}
        if todo:
            attempt.update(_run_pipeline(config, model, manifest["run_id"], out, [keys[k] for k in todo],
                                         completed))
        completed = out.completed_parts()
        status = out.file_status(list(keys), completed)
        complete = all(v is None for v in status.values())
        if not complete and not attempt["stopped_early"]:
            missing = {str(keys[k]): v for k, v in status.items() if v is not None}
            raise RuntimeError(f"the pipeline finished but parts are missing (file: missing parts, -1 = not read "
                               f"to the end): {missing}")
        summary = _summarise(config, model, manifest, out, completed, attempt, complete)
        summary.update(_file_totals(out, keys, ignored))
        if complete:
            out.write_done(summary)
        if summary["files_failed"]:
            manifest["files_failed"] = summary["files_failed"]
            out.write_manifest(manifest)
        if run is not None:
            _log_mlflow(summary, out)
    return EmbedResult(out.root, complete, summary, mlflow_run_id)


def _run_pipeline(config: EmbedConfig, model: dict, run_id: str, out: EmbedOutput, files: list[Path],
                  completed: dict[str, dict]) -> dict:
    import ray
    import ray.data

    from momu.ray_session import init_ray_if_needed

    started_local = init_ray_if_needed()
    check_cpus_suffice(config, ray.cluster_resources(), joined=not started_local)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.target_max_block_size
    ctx.enable_progress_bars = config.progress
    # Ray Data buffers a task's outputs into blocks of up to target_max_block_size (128 MiB by default): a
    # reader would then emit a whole file as one block, processed by one actor task, written at the very end.
    # Small blocks (~2k input rows, ~200 embedded rows) keep the stream flowing and spread a file's parts over
    # all actors: with 1 MiB blocks (~10k input rows, ~40 s of CPU work each) a 30k-row file made 3 blocks for
    # 2 actors, and one actor sat idle for the last half of the run.
    ctx.target_max_block_size = BLOCK_BYTES
    try:
        return _stream(config, model, run_id, out, files, completed)
    finally:
        ctx.enable_progress_bars, ctx.target_max_block_size = saved


def actor_gpus(config: EmbedConfig, resources: dict) -> float:
    """GPUs per model actor: the configured number, else one when the cluster has GPUs."""
    if config.gpus_per_actor is not None:
        return config.gpus_per_actor
    return 1.0 if resources.get("GPU", 0) > 0 else 0.0


def check_cpus_suffice(config: EmbedConfig, resources: dict, joined: bool) -> None:
    """The stream needs its model actors and at least one reader at once (and a featurize task when featurization
    is not fused into the actors); with fewer CPUs Ray Data waits forever at "0/? rows". On a local Ray that is a
    user error, said in one line; a joined cluster may still add nodes (autoscaling), so there it is a warning."""
    gpus = actor_gpus(config, resources)
    fused = config.mode != "molecules" or (config.featurize_cpus == config.cpus_per_actor and not gpus)
    need = config.model_actors * config.cpus_per_actor + config.read_cpus + (0.0 if fused else config.featurize_cpus)
    have = float(resources.get("CPU", 0.0))
    if need <= have + 1e-9:
        return
    parts = (f"model_actors {config.model_actors} x cpus_per_actor {config.cpus_per_actor:g} + read_cpus "
             f"{config.read_cpus:g}" + ("" if fused else f" + featurize_cpus {config.featurize_cpus:g}"))
    fit = max(0.25, (have - config.read_cpus) / config.model_actors)
    # equal featurize and actor CPUs keep featurization fused into the actors (no separate featurize tasks)
    hint = f"--cpus_per_actor {fit:g}" + (f" --featurize_cpus {fit:g}" if config.mode == "molecules" and not gpus else "")
    message = (f"{parts} = {need:g} CPUs, but the Ray cluster has {have:g}: the stream could not start. Lower "
               f"--model_actors or the CPUs per stage (e.g. {hint})")
    if not joined:
        raise ValueError(message)
    print(f"warning: {message} (waiting for the cluster to add CPUs)", file=sys.stderr, flush=True)


def _stream(config: EmbedConfig, model: dict, run_id: str, out: EmbedOutput, files: list[Path],
            completed: dict[str, dict]) -> dict:
    import ray
    import ray.data

    gpus = actor_gpus(config, ray.cluster_resources())
    tracking_uri = None
    if model["model_source"].startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        from momu.tracking import resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(config.mlflow_tracking_uri)

    done_by_file = defaultdict(list)
    for unit in completed:
        key, part = unit.rsplit("/p", 1)
        done_by_file[key].append(int(part))
    items = [{"path": str(f.absolute()), "key": file_key(f), "done_parts": sorted(done_by_file[file_key(f)])}
             for f in files]
    root = str(out.root.resolve())
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # Readers are generators that keep their CPUs for a whole file: their number is capped so they never take
    # the CPUs the other stages need (which would stall the stream until every file is read).
    ds = ds.map_batches(read_parts, batch_size=1, batch_format="pyarrow", num_cpus=config.read_cpus,
                        compute=ray.data.TaskPoolStrategy(size=min(config.read_tasks, len(items))),
                        fn_kwargs={"output_dir": root, "mode": config.mode, "part_rows": config.part_rows,
                                   "smiles_column": config.smiles_column, "id_column": config.id_column,
                                   "text_column": config.text_column,
                                   "prefix_ids_with_file": config.prefix_ids_with_file, "header": config.header})
    if config.mode == "molecules":
        ds = ds.map_batches(featurize_rows, batch_size=config.featurize_batch_rows, batch_format="pyarrow",
                            num_cpus=config.featurize_cpus, fn_kwargs={"max_atoms": config.max_atoms})
    # A task stage followed by an actor stage with the same resources is fused by Ray Data (featurization then
    # runs inside the model actors: one hop less, good on CPU-only nodes); with GPUs, or different CPU requests,
    # featurization stays a separate pool of CPU tasks feeding the GPU actors.
    # The actors write what they embed (one call = shard_rows rows = one shard file per part it touches; the
    # model runs on batch_size rows at a time). Writing in separate tasks cost the embeddings a trip through the
    # object store and, on a 2-core machine, ~5 % of the CPU in writer processes and scheduling.
    ds = ds.map_batches(EmbedAndWriteRows, batch_size=config.shard_rows, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=config.model_actors),
                        num_cpus=config.cpus_per_actor, num_gpus=gpus,
                        fn_constructor_kwargs={"model_source": model["model_source"], "mode": config.mode,
                                               "batch_size": config.batch_size, "dtype": config.embedding_dtype,
                                               "torch_threads": config.torch_threads or max(1, int(config.cpus_per_actor)),
                                               "expected_sha256": model["weights_sha256"],
                                               "tracking_uri": tracking_uri,
                                               "write": {"output_dir": root, "model_name": model["model_name"],
                                                         "model_version": model["model_version"],
                                                         "run_id": run_id}})

    pending: dict[str, dict] = {}
    counters = {"parts_done": 0, "rows": 0, "stopped": False, "first_at": None, "first_rows": 0, "last_at": None}
    start = time.perf_counter()
    batches = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    try:
        _consume(batches, pending, out, config.stop_after_parts, counters)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stopping early: shut the streaming executor down now, not at garbage collection
    parts_done, rows, stopped = counters["parts_done"], counters["rows"], counters["stopped"]
    end = time.perf_counter()
    stats = {"parts_done": parts_done, "rows": rows, "seconds": round(end - start, 3), "stopped_early": stopped,
             "model_actors": config.model_actors, "gpus_per_actor": gpus}
    if counters["first_at"] is not None:
        # Start-up (workers, model load) ends when the first rows are written; the rate after it is what a long
        # run converges to.
        stats["first_output_s"] = round(counters["first_at"] - start, 3)
        span = counters["last_at"] - counters["first_at"]
        if span > 0 and rows > counters["first_rows"]:
            stats["rows_per_s_after_first_output"] = round((rows - counters["first_rows"]) / span, 1)
    return stats


def _consume(batches, pending: dict, out: EmbedOutput, stop_after_parts: Optional[int], counters: dict) -> None:
    """Accumulate the writer's summary rows per part; a part whose rows are all written is appended to
    parts.jsonl (its files are already in place)."""
    for batch in batches:
        now = time.perf_counter()
        if counters["first_at"] is None:
            counters["first_at"], counters["first_rows"] = now, int(pa.compute.sum(batch.column("rows")).as_py() or 0)
        counters["last_at"] = now
        for row in batch.to_pylist():
            unit = row["unit"]
            p = pending.setdefault(unit, {"unit": unit, "rows": 0, "embedded": 0, "rejected": 0,
                                          "rejected_by_reason": Counter(), "shards": [], "rejects": []})
            p["rows"] += row["rows"]
            p["embedded"] += row["embedded"]
            p["rejected"] += row["rejected"]
            p["rejected_by_reason"].update(json.loads(row["reasons"]))
            p["shards"] += [row["shard"]] if row["shard"] else []
            p["rejects"] += [row["rejects"]] if row["rejects"] else []
            counters["rows"] += row["rows"]
            if p["rows"] > row["part_rows"]:
                raise RuntimeError(f"part {unit}: {p['rows']} rows written, but it has {row['part_rows']}")
            if p["rows"] == row["part_rows"]:
                record = pending.pop(unit)
                record["rejected_by_reason"] = dict(record["rejected_by_reason"])
                record["shards"], record["rejects"] = sorted(record["shards"]), sorted(record["rejects"])
                record["completed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                out.append_part(record)
                counters["parts_done"] += 1
                # Checked per part, not per batch: one batch can finish many parts (or all of them, on a small
                # input), and a staged run must record exactly this many. Files of parts finished later in the
                # batch are not in parts.jsonl; the next run removes them as orphans and redoes those parts.
                if stop_after_parts and counters["parts_done"] >= stop_after_parts:
                    counters["stopped"] = True
                    return


def _summarise(config: EmbedConfig, model: dict, manifest: dict, out: EmbedOutput, completed: dict, attempt: dict,
               complete: bool) -> dict:
    totals = out.totals(completed)
    shards = out.shard_files(completed)
    summary = {
        "run_id": manifest["run_id"], "complete": complete, "mode": config.mode,
        "output_dir": str(out.root.resolve()), "shards": shards, "model_info": {**model, "run_id": manifest["run_id"]},
        "embedding_dtype": config.embedding_dtype, **totals,
        "accounting_ok": totals["rows_read"] == totals["embedded"] + totals["rejected"],
        "this_run": {**attempt, "rows_per_s": round(attempt["rows"] / attempt["seconds"], 1)
                     if attempt["seconds"] else None},
    }
    previous = out.done_info()
    if complete and previous and attempt["parts_done"] == 0 and previous.get("shards") == shards:
        # Nothing new since the run finished: keep its final files and checks (a PubChem-size duplicate scan
        # reads every id again).
        for key in ("rejects_file", "rejects_written", "duplicate_ids", "finished_at"):
            if key in previous:
                summary[key] = previous[key]
    elif complete:
        summary["rejects_file"] = REJECTS_FILE
        summary["rejects_written"] = out.write_rejects(completed)
        if config.check_duplicate_ids:
            summary["duplicate_ids"] = out.duplicate_ids(shards)
        summary["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if not summary["accounting_ok"]:  # an accounting bug must never pass silently
        raise RuntimeError(f"row accounting mismatch: read {totals['rows_read']} != embedded {totals['embedded']} "
                           f"+ rejected {totals['rejected']}")
    return summary


def _file_totals(out: EmbedOutput, keys: dict[str, Path], ignored: list[str]) -> dict:
    """files = ok + failed over the files read to the end so far (their read markers), and the entries of the
    input directories that were not molecule libraries."""
    markers = out.read_markers()
    failed = [markers[k]["failed"] for k in keys if k in markers and markers[k].get("failed")]
    read = sum(1 for k in keys if k in markers)
    return {"files": len(keys), "files_read": read, "files_ok": read - len(failed), "files_failed": failed,
            "ignored_files": ignored}


def _log_mlflow(summary: dict, out: EmbedOutput) -> None:
    import mlflow

    metrics = {"rows_read": summary["rows_read"], "rows_embedded": summary["embedded"],
               "rows_rejected": summary["rejected"], "parts_completed": summary["parts"],
               "complete": float(summary["complete"]), "this_run_rows": summary["this_run"]["rows"],
               "this_run_seconds": summary["this_run"]["seconds"], "files": summary["files"],
               "files_ok": summary["files_ok"], "files_failed": len(summary["files_failed"])}
    if summary["this_run"]["rows_per_s"]:
        metrics["rows_per_s"] = summary["this_run"]["rows_per_s"]
    if "duplicate_ids" in summary:
        metrics["duplicate_id_rows"] = summary["duplicate_ids"]["rows"]
    for reason, count in summary["rejected_by_reason"].items():
        metrics[f"rejected.{reason}"] = count
    metrics["accounting_ok"] = float(summary["accounting_ok"])  # read == embedded + rejected
    mlflow.log_metrics(metrics)
    mlflow.set_tags({"embed_run_id": summary["run_id"], "output_dir": summary["output_dir"],
                     "model_name": summary["model_info"]["model_name"],
                     "model_version": summary["model_info"]["model_version"]})
    mlflow.log_dict({k: v for k, v in summary.items() if k != "shards"}, "embed_summary.json")


def format_files(summary: dict) -> str:
    """One line: 'files: 9 = 7 ok + 2 failed (a.sdf.gz: truncated_file after record 3; ...), 2 ignored (...)'."""
    failed = summary["files_failed"]
    text = f"files: {summary['files']:,} = {summary['files_ok']:,} ok + {len(failed):,} failed"
    if summary["files_read"] != summary["files"]:
        text += f" ({summary['files'] - summary['files_read']:,} not read yet)"
    if failed:
        text += " (" + "; ".join(f"{Path(f['file']).name}: {f['reason']}" + (f" after {f['last_good']}"
                                                                          if f["last_good"] else "")
                                 for f in failed[:10]) + ("; ..." if len(failed) > 10 else "") + \
                "; details in the rejects file, stage read)"
    if summary["ignored_files"]:
        names = [Path(f).name for f in summary["ignored_files"]]
        text += f", {len(names)} ignored (not molecule files: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''})"
    return text


def format_summary(summary: dict) -> str:
    """The job's closing report (what `momu embed` prints)."""
    run = summary["this_run"]
    lines = []
    if run["rows"]:
        lines.append(f"this run: {run['rows']:,} rows in {run['parts_done']} parts, {run['seconds']:.1f} s "
                     f"({run['rows_per_s']:,.0f} rows/s)" + (", stopped early as asked" if run["stopped_early"] else ""))
        if run.get("rows_per_s_after_first_output"):
            lines.append(f"  start-up {run['first_output_s']:.1f} s to the first written rows, then "
                         f"{run['rows_per_s_after_first_output']:,.0f} rows/s")
    if run["parts_skipped"]:
        lines.append(f"resumed: {run['parts_skipped']} parts ({run['files_skipped']} whole files) were already done")
    ok = "ok" if summary["accounting_ok"] else "MISMATCH"
    lines.append(f"read = embedded + rejected: {summary['rows_read']:,} = {summary['embedded']:,} + "
                 f"{summary['rejected']:,} ({ok})")
    if summary["rejected_by_reason"]:
        lines.append("rejected by reason: " + ", ".join(f"{r} {n:,}" for r, n in summary["rejected_by_reason"].items()))
    if "files" in summary:
        lines.append(format_files(summary))
    dup = summary.get("duplicate_ids")
    if dup and dup["rows"]:
        lines.append(f"warning: {dup['ids']:,} ids occur more than once ({dup['rows']:,} extra rows, all embedded), "
                     f"e.g. {dup['examples'][:3]}")
    info = summary["model_info"]
    lines.append(f"model: {info['model_name']} version {info['model_version']} (run id {summary['run_id']})")
    lines.append(f"output: {summary['output_dir']} ({len(summary['shards'])} shards"
                 + (f", {summary['rejects_written']:,} rejects in {summary['rejects_file']})" if summary["complete"]
                    else ")"))
    if not summary["complete"]:
        lines.append("incomplete: run the same command again to resume")
    return "\n".join(lines)
