"""The embedding job's output directory: layout, manifest (resume), completion and the final files.

    <output_dir>/
      manifest.json        run id, settings fingerprint, input files (size, mtime); rewritten atomically
      parts.jsonl          one JSON line per completed part (rows, embedded, rejected, reasons, its files);
                           append-only, a torn last line is ignored (that part is simply redone)
      _reads/<file>.json   written when a file has been read to the end: how many parts it has
      shards/*.parquet     embedded rows: id, smiles | text, embedding, model_name, model_version, run_id
      rejects/*.parquet    rejected rows per part: id, input, reason, detail, stage, source
      rejects.parquet      all rejected rows (written when the run completes)
      DONE.json            written last: totals, model info, the list of shards (what `momu index build` reads)

Every data file is written under a temporary name and renamed. A part counts as done only once its line is in
parts.jsonl, which happens after all its files are renamed into place; on resume, files of parts that are not
done (left by an interrupted run) are deleted before anything is recomputed.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from momu.embed.stages import READS_DIR, REJECTS_DIR, REJECTS_SCHEMA, SHARDS_DIR, atomic_write_table, atomic_write_text

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTS_LOG = "parts.jsonl"
DONE = "DONE.json"
REJECTS_FILE = "rejects.parquet"
FORMAT_VERSION = 1


class EmbedOutput:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self.parts_path = self.root / PARTS_LOG

    # -- opening / resuming -----------------------------------------------------------------------------------
    def open(self, fingerprint: dict, inputs: dict[str, dict]) -> dict:
        """Create the output, or check that an existing one was made with the same settings and inputs.
        Returns the manifest (with its run_id)."""
        if self.manifest_path.is_file():
            manifest = json.loads(self.manifest_path.read_text())
            diffs = [f"{k}: {manifest['fingerprint'].get(k)!r} -> {v!r}" for k, v in fingerprint.items()
                     if manifest["fingerprint"].get(k) != v]
            if diffs:
                raise ValueError(f"output_dir {self.root} holds a run made with other settings ({'; '.join(diffs)}); "
                                 "use a new output_dir, or the same settings to resume it")
            old, new = set(manifest["inputs"]), set(inputs)
            if old != new:
                raise ValueError(f"output_dir {self.root} was made from other inputs (only before: "
                                 f"{sorted(manifest['inputs'][k]['path'] for k in old - new)[:3]}, only now: "
                                 f"{sorted(inputs[k]['path'] for k in new - old)[:3]}); use a new output_dir")
            changed = [inputs[k]["path"] for k in new if manifest["inputs"][k] != inputs[k]]
            if changed:
                raise ValueError(f"input files changed since {self.root} was started (size or mtime): {changed[:3]}; "
                                 "use a new output_dir")
            return manifest
        if self.root.exists() and any(self.root.iterdir()):
            raise ValueError(f"output_dir {self.root} exists and is not an embedding output (no {MANIFEST}); "
                             "choose an empty or new directory")
        for sub in (SHARDS_DIR, REJECTS_DIR, READS_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        manifest = {"format_version": FORMAT_VERSION, "run_id": uuid.uuid4().hex[:16],
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "fingerprint": fingerprint, "inputs": inputs,
                    "attempts": []}
        self.write_manifest(manifest)
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2) + "\n")

    def completed_parts(self) -> dict[str, dict]:
        """unit -> record of every part in parts.jsonl (unparseable lines, e.g. a torn last write, are skipped)."""
        done: dict[str, dict] = {}
        if not self.parts_path.is_file():
            return done
        self._drop_torn_tail()
        for lineno, line in enumerate(self.parts_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                done[record["unit"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s line %d is incomplete (interrupted write); that part will be redone",
                            self.parts_path, lineno)
        return done

    def _drop_torn_tail(self) -> None:
        """A write interrupted mid-line leaves text without a final newline; later appends would glue onto it
        and be lost with it. Cut the log back to its last complete line."""
        data = self.parts_path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s ends with an incomplete line (interrupted write); dropping it, that part will be redone",
                        self.parts_path)
            with open(self.parts_path, "r+b") as handle:
                handle.truncate(keep)

    def read_markers(self) -> dict[str, dict]:
        out = {}
        for f in (self.root / READS_DIR).glob("*.json"):
            try:
                out[f.stem] = json.loads(f.read_text())
            except json.JSONDecodeError:
                continue
        return out

    def clean_orphans(self, completed: dict[str, dict]) -> int:
        """Delete shard/reject files not belonging to a completed part (left by an interrupted run) and
        temporary files. Returns how many files were removed."""
        keep = {SHARDS_DIR: set(), REJECTS_DIR: set()}
        for record in completed.values():
            keep[SHARDS_DIR].update(record["shards"])
            keep[REJECTS_DIR].update(record["rejects"])
        removed = 0
        for sub, names in keep.items():
            for f in (self.root / sub).iterdir():
                if f.name not in names:
                    f.unlink()
                    removed += 1
        for f in [*self.root.glob(".*.tmp-*"), *(self.root / READS_DIR).glob(".*.tmp-*")]:
            f.unlink()
        return removed

    def append_part(self, record: dict) -> None:
        with open(self.parts_path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()

    # -- completion -------------------------------------------------------------------------------------------
    def file_status(self, keys: list[str], completed: dict[str, dict]) -> dict[str, Optional[int]]:
        """key -> None if the file is complete, else the number of parts known to be missing (-1: unknown,
        the file has not been read to the end)."""
        markers = self.read_markers()
        status: dict[str, Optional[int]] = {}
        for key in keys:
            marker = markers.get(key)
            if marker is None:
                status[key] = -1
                continue
            missing = sum(1 for p in range(marker["parts"]) if f"{key}/p{p:06d}" not in completed)
            status[key] = None if missing == 0 else missing
        return status

    def totals(self, completed: dict[str, dict]) -> dict:
        reasons: Counter = Counter()
        for record in completed.values():
            reasons.update(record["rejected_by_reason"])
        return {"rows_read": sum(r["rows"] for r in completed.values()),
                "embedded": sum(r["embedded"] for r in completed.values()),
                "rejected": sum(r["rejected"] for r in completed.values()),
                "rejected_by_reason": dict(reasons.most_common()),
                "parts": len(completed)}

    def shard_files(self, completed: dict[str, dict]) -> list[str]:
        return sorted(f"{SHARDS_DIR}/{name}" for r in completed.values() for name in r["shards"])

    def write_rejects(self, completed: dict[str, dict]) -> int:
        names = sorted(name for r in completed.values() for name in r["rejects"])
        tables = [pq.read_table(self.root / REJECTS_DIR / n, schema=REJECTS_SCHEMA) for n in names]
        table = pa.concat_tables(tables) if tables else REJECTS_SCHEMA.empty_table()
        atomic_write_table(table, self.root / REJECTS_FILE)
        return table.num_rows

    def duplicate_ids(self, shards: list[str], examples: int = 5) -> dict:
        """Rows whose id occurs more than once among the embedded rows (beyond its first occurrence)."""
        if not shards:
            return {"rows": 0, "ids": 0, "examples": []}
        ids = pa.chunked_array([pq.read_table(self.root / s, columns=["id"]).column("id").combine_chunks()
                                for s in shards])
        counts = ids.value_counts()
        values, n = counts.field("values"), counts.field("counts")
        dup = pc.greater(n, 1)
        dup_counts = n.filter(dup).to_numpy()
        dup_values = values.filter(dup).to_pylist()
        return {"rows": int((dup_counts - 1).sum()), "ids": len(dup_values), "examples": dup_values[:examples]}

    def write_done(self, info: dict) -> None:
        atomic_write_text(self.root / DONE, json.dumps(info, indent=2) + "\n")

    def done_info(self) -> Optional[dict]:
        path = self.root / DONE
        return json.loads(path.read_text()) if path.is_file() else None
