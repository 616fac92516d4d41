"""`momu generate batch`: many prompts -> molecules, one Ray task per prompt, every prompt answered or failed with a
reason, in one Parquet file.

Prompt files: `.txt` (every line is one prompt, ids are line numbers), or `.csv` / `.tsv` / `.parquet` / `.jsonl`
with a `text` column and optional `id` (default: the row number) and `edit` (a SMILES: editing mode for that row)
columns. Each prompt runs `momu.generate.ga.generate` (or `edit`) with the job's GenerateConfig, so its budget is
`budget_seconds` / `budget_evaluations` per prompt and a prompt's molecules are those `momu generate --text` finds
with the same config and seed. A task loads the model once per Ray worker process (warmed up, with the pool files
read, outside any prompt's budget) and keeps it for the next prompts that worker runs.

Output rows (OUTPUT_SCHEMA): per answered prompt, one row per molecule (`rank` 1..n; editing: one per lambda, in
sweep order, with `lambda` and `tanimoto`); per failed prompt one row with status `failed`, a `reason` of
REASONS and a `detail`. Counted per prompt: answered + failed = total.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections import Counter, deque
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from momu.generate.config import GenerateConfig

PROMPT_SUFFIXES = (".txt", ".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")
# Why a prompt failed: checked before any work (the first two) or while it ran.
REASONS = {
    "empty_prompt": "the prompt text is empty",
    "invalid_edit_smiles": "the edit SMILES cannot be read or scored (unparseable, disallowed element, ...)",
    "timeout": "the task ran past the per-prompt timeout and was cancelled",
    "exception": "the generator raised an error (or its worker died); detail holds it",
}
OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("edit", pa.string()), ("status", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()), ("rank", pa.int32()), ("smiles", pa.string()),
    ("score", pa.float64()), ("cosine", pa.float64()), ("qed", pa.float64()), ("sa", pa.float64()),
    ("lambda", pa.float64()), ("tanimoto", pa.float64()), ("evaluations", pa.int64()), ("generations", pa.int64()),
    ("seconds", pa.float64()), ("stopped_by", pa.string()),
])
SUMMARY_KEY = b"momu.generate_batch"  # the summary, as JSON, in the Parquet file's metadata


@dataclasses.dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    edit: Optional[str]
    row: int  # 1-based data row (line number for .txt)


# -- reading prompts ------------------------------------------------------------------------------------------------

def _cell(value) -> Optional[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _from_records(path: Path, columns: list[str], records: list[dict]) -> list[Prompt]:
    lowered = {c.strip().lower(): c for c in columns if isinstance(c, str)}
    if "text" not in lowered:
        raise ValueError(f"{path}: no 'text' column (found {', '.join(repr(c) for c in columns) or 'none'}); "
                         "prompt tables need a text column and may have id and edit columns")
    text_col, id_col, edit_col = lowered["text"], lowered.get("id"), lowered.get("edit")
    prompts = []
    for row, record in enumerate(records, start=1):
        pid = _cell(record.get(id_col)) if id_col else None
        edit = _cell(record.get(edit_col)) if edit_col else None
        prompts.append(Prompt(pid.strip() if pid and pid.strip() else str(row), _cell(record.get(text_col)) or "",
                              edit if edit and edit.strip() else None, row))
    return prompts


def read_prompts(path: str | Path) -> list[Prompt]:
    """The prompts of a .txt (one per line), .csv, .tsv, .parquet or .jsonl file, in file order. A file problem
    (missing, unreadable, no text column, duplicate ids, no rows) is a ValueError/FileNotFoundError naming it;
    an empty text or a bad edit SMILES is not: that prompt fails with a reason when the job runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            prompts = [Prompt(str(i), line, None, i) for i, line in enumerate(lines, start=1)]
        elif suffix in (".csv", ".tsv"):
            # Tab files are read unquoted (descriptions may hold a literal '"'), CSV with standard quoting.
            quoting = csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",", quoting=quoting)
                records = list(reader)
                prompts = _from_records(path, list(reader.fieldnames or []), records)
        elif suffix == ".parquet":
            try:
                table = pq.read_table(path)
            except Exception as err:
                raise ValueError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
            prompts = _from_records(path, table.column_names, table.to_pylist())
        elif suffix in (".jsonl", ".ndjson"):
            records, columns = [], {}
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}: line {number}: expected a JSON object, got {type(record).__name__}")
                records.append(record)
                columns.update(dict.fromkeys(record))
            prompts = _from_records(path, list(columns), records)
        else:
            raise ValueError(f"{path}: unsupported prompts format {suffix or '(no suffix)'!r} (expected "
                             f"{', '.join(PROMPT_SUFFIXES)})")
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a readable {suffix[1:].upper()} file ({err})") from None
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    seen: dict[str, int] = {}
    for p in prompts:
        if p.id in seen:
            raise ValueError(f"{path}: id {p.id!r} appears twice (rows {seen[p.id]} and {p.row}); ids must be unique")
        seen[p.id] = p.row
    return prompts


def check_prompt(prompt: Prompt, config: GenerateConfig) -> Optional[tuple[str, str]]:
    """(reason, detail) when the prompt cannot run, else None: checked before any model work."""
    from momu.generate.fitness import edit_input_problem

    if not prompt.text.strip():
        return "empty_prompt", "the text is empty" if not prompt.text else "the text is only whitespace"
    if prompt.edit is not None:
        problem = edit_input_problem(prompt.edit, config.allowed_elements)
        if problem:
            return "invalid_edit_smiles", problem
    return None


# -- the task -------------------------------------------------------------------------------------------------------

_MODELS: dict = {}  # per worker process: model source -> loaded MoMu


def _model(config: GenerateConfig):
    """The worker's model, loaded and warmed up once: the towers' first calls, and reading the pool and exclude
    files (cached per process), cost seconds that would otherwise come out of the first prompt's budget."""
    if config.model not in _MODELS:
        from momu.generate.fitness import Fitness, text_embedding
        from momu.generate.pool import load_pool
        from momu.job_output import verbose
        from momu.models.loading import load_momu

        if not verbose():  # one "Loading weights" bar per worker says nothing in a job's log
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        model = load_momu(config.model)
        Fitness(model, text_embedding(model, "warm-up"), config).score(
            load_pool(config.pool.path, config.pool.exclude, sample=8))
        _MODELS[config.model] = model
    return _MODELS[config.model]


_FLOWS: dict = {}


def _flow(source: str):
    """The worker's MoFlow for --method moflow, loaded once."""
    if source not in _FLOWS:
        from momu.generate.moflow.model import load_moflow

        _FLOWS[source] = load_moflow(source)
    return _FLOWS[source]


def run_prompt(text: str, edit_smiles: Optional[str], config: dict, torch_threads: int = 1) -> dict:
    """One prompt (the Ray task's body; runs in-process too): {"status": "ok", "result": <generate/edit result>}
    or {"status": "failed", "reason": "exception", "detail": ...}. Never raises for a generator error."""
    started = time.perf_counter()
    try:
        import torch

        from momu.generate.ga import edit, generate

        torch.set_num_threads(max(1, int(torch_threads)))
        cfg = GenerateConfig.model_validate(config)
        model = _model(cfg)
        if cfg.method == "moflow":
            from momu.generate.moflow.optimise import edit_ranked, generate_ranked

            flow = _flow(cfg.moflow.model)
            result = (edit_ranked(flow, model, text, edit_smiles, cfg) if edit_smiles
                      else generate_ranked(flow, model, text, cfg))
        else:
            result = edit(model, text, edit_smiles, cfg) if edit_smiles else generate(model, text, cfg)
        return {"status": "ok", "result": result}
    except Exception as err:  # the prompt fails; the job goes on
        message = (str(err).strip().splitlines() or [""])[0]
        return {"status": "failed", "reason": "exception", "detail": f"{type(err).__name__}: {message}"[:500],
                "seconds": round(time.perf_counter() - started, 3)}


# -- rows -----------------------------------------------------------------------------------------------------------

def _row(prompt: Prompt, **values) -> dict:
    row = {name: None for name in OUTPUT_SCHEMA.names}
    row.update(id=prompt.id, text=prompt.text, edit=prompt.edit, **values)
    return row


def failed_row(prompt: Prompt, reason: str, detail: str, seconds: Optional[float] = None) -> dict:
    return _row(prompt, status="failed", reason=reason, detail=detail, seconds=seconds)


def answer_rows(prompt: Prompt, result: dict) -> list[dict]:
    """A generate/edit result -> one row per molecule, in the result's order."""
    common = dict(status="ok", evaluations=int(result["evaluations"]), generations=int(result["generations"]),
                  seconds=float(result["seconds"]), stopped_by=str(result["stopped_by"]))
    rows = []
    for i, r in enumerate(result["results"], start=1):
        rows.append(_row(prompt, rank=int(r.get("rank", i)), smiles=r["smiles"],
                         score=None if r.get("total") is None else float(r["total"]),
                         cosine=r.get("cosine"), qed=r.get("qed"), sa=r.get("sa"), tanimoto=r.get("tanimoto"),
                         **{"lambda": r.get("lambda")}, **common))
    return rows


# -- the job --------------------------------------------------------------------------------------------------------

def run_batch(prompts_path: str | Path, output: str | Path, config: GenerateConfig, *, workers: Optional[int] = None,
              cpus_per_task: float = 1.0, timeout: Optional[float] = None, overwrite: bool = False,
              progress: bool = True) -> dict:
    """Run every prompt of `prompts_path` as a Ray task (at most `workers` at a time, `cpus_per_task` CPUs each),
    cancel one that runs past `timeout` seconds (default budget_seconds + 60: a worker's start and model load
    included), and write OUTPUT_SCHEMA rows to `output`. Returns the summary (also in the file's metadata)."""
    out = Path(output)
    if out.suffix.lower() != ".parquet":
        raise ValueError(f"output: {out} should be a .parquet file")
    if out.exists() and not overwrite:
        raise ValueError(f"output: {out} exists; choose a new file or pass --overwrite")
    if workers is not None and workers < 1:
        raise ValueError(f"workers: must be at least 1, got {workers}")
    if cpus_per_task <= 0:
        raise ValueError(f"cpus_per_task: must be > 0, got {cpus_per_task}")
    timeout = float(timeout) if timeout is not None else config.budget_seconds + 60.0
    if timeout <= 0:
        raise ValueError(f"timeout: must be > 0 seconds, got {timeout}")
    prompts = read_prompts(prompts_path)
    # Fail here, before Ray starts, on a missing model or pool (not once per prompt in the workers).
    from momu.generate.pool import load_pool
    from momu.models.loading import resolve_model_dir

    resolve_model_dir(config.model)
    load_pool(config.pool.path, config.pool.exclude, sample=1)

    import ray

    from momu.job_output import ProgressLine
    from momu.ray_session import init_ray_if_needed

    started = time.perf_counter()
    rows_of: dict[int, list[dict]] = {}
    reasons: Counter = Counter()

    def fail(i: int, reason: str, detail: str, seconds: Optional[float] = None) -> None:
        rows_of[i] = [failed_row(prompts[i], reason, detail, seconds)]
        reasons[reason] += 1

    queue: deque[int] = deque()
    for i, prompt in enumerate(prompts):
        problem = check_prompt(prompt, config)
        if problem:
            fail(i, *problem)
        else:
            queue.append(i)

    init_ray_if_needed()
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_task))
    task = ray.remote(num_cpus=cpus_per_task, max_retries=0)(run_prompt)
    payload = config.model_dump(mode="json")
    threads = max(1, int(cpus_per_task))
    running: dict = {}  # ObjectRef -> (prompt index, submitted at)
    line = ProgressLine("momu generate batch", total=len(prompts))
    while queue or running:
        while queue and len(running) < workers:
            i = queue.popleft()
            running[task.remote(prompts[i].text.strip(), prompts[i].edit, payload, threads)] = (i, time.monotonic())
        next_deadline = min(t for _, t in running.values()) + timeout
        ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.05, min(1.0, next_deadline - time.monotonic())))
        for ref in ready:
            i, _ = running.pop(ref)
            try:
                answer = ray.get(ref)
            except Exception as err:  # the worker died (killed, out of memory): this prompt fails, the job goes on
                fail(i, "exception", f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"[:500])
                continue
            if answer["status"] == "ok":
                rows_of[i] = answer_rows(prompts[i], answer["result"])
            else:
                fail(i, answer["reason"], answer["detail"], answer.get("seconds"))
        now = time.monotonic()
        for ref, (i, submitted) in list(running.items()):
            if now - submitted > timeout:
                ray.cancel(ref, force=True)  # kills that worker process; the next task starts a fresh one
                running.pop(ref)
                fail(i, "timeout", f"no answer within {timeout:g} s (budget_seconds {config.budget_seconds:g}; "
                                   "raise --timeout or lower the budget)", round(now - submitted, 3))
        if progress:
            line.update(len(rows_of), failed=sum(reasons.values()))

    ordered = [row for i in range(len(prompts)) for row in rows_of[i]]
    failed = sum(reasons.values())
    answered = len(rows_of) - failed
    ok_rows = [r for r in ordered if r["status"] == "ok"]
    seconds = time.perf_counter() - started
    # an edit's first row may be a MoFlow decode that failed (score None): the mean is over scored rows
    best_scores = [r["score"] for r in ok_rows if r["rank"] == 1 and r["score"] is not None]
    summary = {
        "prompts": str(Path(prompts_path).resolve()), "output": str(out.resolve()), "total": len(prompts),
        "answered": answered, "failed": failed, "failed_by_reason": dict(reasons.most_common()),
        "accounting_ok": answered + failed == len(prompts) == len(rows_of), "rows": len(ordered),
        "molecules": len(ok_rows),
        "mean_best_score": round(sum(best_scores) / len(best_scores), 4) if best_scores else None,
        "model": config.model, "mode_counts": {"generate": sum(1 for p in prompts if p.edit is None),
                                               "edit": sum(1 for p in prompts if p.edit is not None)},
        "workers": workers, "cpus_per_task": cpus_per_task, "timeout_seconds": timeout,
        "budget": {"seconds": config.budget_seconds, "evaluations": config.budget_evaluations},
        "seconds": round(seconds, 2), "config": config.model_dump(mode="json"),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    table = pa.Table.from_pylist(ordered, schema=OUTPUT_SCHEMA).replace_schema_metadata(
        {SUMMARY_KEY: json.dumps(summary).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    from momu.embed.stages import atomic_write_table

    atomic_write_table(table, out)
    if not summary["accounting_ok"]:
        raise RuntimeError(f"prompt accounting mismatch: total {len(prompts)} != answered {answered} + failed {failed}")
    return summary


def format_summary(summary: dict) -> str:
    ok = "ok" if summary["accounting_ok"] else "MISMATCH"
    lines = [f"prompts = answered + failed: {summary['total']:,} = {summary['answered']:,} + {summary['failed']:,} "
             f"({ok})"]
    if summary["failed_by_reason"]:
        lines.append("failed by reason: " + ", ".join(f"{r} {n:,}" for r, n in summary["failed_by_reason"].items()))
    best = summary["mean_best_score"]
    lines.append(f"molecules: {summary['molecules']:,} rows for {summary['answered']:,} answered prompts"
                 + (f", mean best score {best:.4f}" if best is not None else ""))
    budget = summary["budget"]
    lines.append(f"{summary['seconds']:.1f} s with {summary['workers']} parallel tasks (Ray start-up and model loads "
                 f"included); per prompt: {budget['evaluations']:,} evaluations / {budget['seconds']:g} s budget, "
                 f"timeout {summary['timeout_seconds']:g} s")
    lines.append(f"output: {summary['output']}")
    return "\n".join(lines)


def read_summary(path: str | Path) -> dict:
    """The summary a batch job stored in its output file's metadata."""
    metadata = pq.read_schema(path).metadata or {}
    if SUMMARY_KEY not in metadata:
        raise ValueError(f"{path}: not written by `momu generate batch` (no {SUMMARY_KEY.decode()} metadata)")
    return json.loads(metadata[SUMMARY_KEY])
