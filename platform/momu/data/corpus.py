"""Pure pieces of the corpus builders: the evaluation-molecule key set, removal, duplicate handling, the
output tables and the row accounting. No Ray here (corpus_job.py runs these around its Ray Data stages).

Decisions (see docs/corpus.md):
- An evaluation molecule is removed from training by PubChem CID, by canonical isomeric SMILES, by a
  stereo-free key (default: non-isomeric canonical SMILES; PCdes test repeats 299 train molecules up to
  stereo) and, for SMILES-less MoMu-corpus graphs, by the canonical heavy-atom skeleton of the graph.
- Pairs: one output row per molecule (canonical SMILES) holding every distinct text from every source, in
  source order. MoMu samples two texts of a molecule per step, and read_inputs keeps one row per id, so one
  row per molecule keeps every text and never makes a molecule its own negative. A text equal (up to
  whitespace) to one the molecule already has is an exact duplicate pair and is dropped, counted.
- Molecules: one row per canonical SMILES; the first source (config order) names it, later copies counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa

from momu.chem.columns import GRAPH_COLUMNS, GRAPH_SCHEMA
from momu.data.records import RECORD_SCHEMA

REMOVAL_REASONS = ("eval_cid", "eval_smiles", "eval_stereo_free", "eval_graph")
DUPLICATE_PAIR = "duplicate_pair"
DUPLICATE_SMILES = "duplicate_smiles"
REMOVED = "removed_reason"
PAIR_EXTRA_SCHEMA = pa.schema([("cid", pa.string()), ("cids", pa.list_(pa.string())),
                               ("text_sources", pa.list_(pa.string()))])
MOLECULE_EXTRA_SCHEMA = pa.schema([("cid", pa.string()), ("sources", pa.list_(pa.string()))])


@dataclasses.dataclass(frozen=True)
class RemovalKeys:
    """The evaluation molecules as key sets; a training row matching any of them is removed."""

    cids: frozenset = frozenset()
    smiles: frozenset = frozenset()
    stereo: frozenset = frozenset()
    graphs: frozenset = frozenset()

    @classmethod
    def from_rows(cls, rows: pa.Table, by_cid: bool = True) -> "RemovalKeys":
        """From annotated evaluation rows (whatever their reject_reason: an unparseable one still has a CID)."""
        def values(name: str) -> frozenset:
            return frozenset(v for v in rows.column(name).to_pylist() if v is not None)

        return cls(values("cid") if by_cid else frozenset(), values("canonical"), values("stereo_key"),
                   values("graph_key"))

    def counts(self) -> dict:
        return {"cids": len(self.cids), "canonical_smiles": len(self.smiles), "stereo_free_keys": len(self.stereo),
                "graph_keys": len(self.graphs)}

    def reason(self, cid: Optional[str], canonical: Optional[str], stereo: Optional[str],
               graph: Optional[str]) -> str:
        """The first matching removal reason (REMOVAL_REASONS order), or ''."""
        if cid is not None and cid in self.cids:
            return "eval_cid"
        if canonical is not None and canonical in self.smiles:
            return "eval_smiles"
        if stereo is not None and stereo in self.stereo:
            return "eval_stereo_free"
        # Graph keys only for graph rows (no SMILES): on SMILES rows the skeleton would also merge charge
        # states (acetate / acetic acid), which are distinct molecules with distinct texts.
        if canonical is None and graph is not None and graph in self.graphs:
            return "eval_graph"
        return ""


def mark_removed(batch: pa.Table, keys: RemovalKeys) -> pa.Table:
    """Add `removed_reason` to annotated rows ('' = not an evaluation molecule, or rejected)."""
    columns = [batch.column(c).to_pylist() for c in ("cid", "canonical", "stereo_key", "graph_key", "reject_reason")]
    reasons = ["" if rejected else keys.reason(cid, can, stereo, graph)
               for cid, can, stereo, graph, rejected in zip(*columns)]
    return batch.append_column(REMOVED, pa.array(reasons, pa.string()))


def _normal_text(text: str) -> str:
    return " ".join(text.split())


def _molecule_id(canonical: str) -> str:
    return "smi:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def group_pairs(rows: pa.Table) -> tuple[pa.Table, list, list]:
    """Surviving training rows (annotated, in source priority order) -> (corpus table, kept (source, row)
    pairs, duplicate (source, row) pairs). SMILES rows group by canonical SMILES; graph rows stay one molecule
    each (their skeleton key is too coarse to merge on) unless graph key and texts repeat exactly."""
    data = rows.select(["source", "row", "source_id", "cid", "canonical", "graph_key", "texts"]).to_pylist()
    has_graphs = all(c in rows.column_names for c in GRAPH_COLUMNS)
    molecules: dict = {}
    kept, duplicates = [], []
    for index, r in enumerate(data):
        where = (r["source"], r["row"])
        if r["canonical"] is not None:
            mol = molecules.setdefault(("smiles", r["canonical"]), {
                "id": _molecule_id(r["canonical"]), "smiles": r["canonical"], "texts": [], "seen": set(),
                "text_sources": [], "cids": [], "sources": [], "graph_row": None})
        else:
            texts_key = tuple(_normal_text(t) for t in r["texts"])
            key = ("graph", r["graph_key"], texts_key)
            if key in molecules:
                duplicates.append(where)
                continue
            mol = molecules[key] = {"id": f"{r['source']}:{r['source_id']}", "smiles": None, "texts": [],
                                    "seen": set(), "text_sources": [], "cids": [], "sources": [], "graph_row": index}
        added = False
        for text in r["texts"]:
            norm = _normal_text(text)
            if norm and norm not in mol["seen"]:
                mol["seen"].add(norm)
                mol["texts"].append(text.strip())
                mol["text_sources"].append(f"{r['source']}:{r['source_id']}")
                added = True
        if not added:
            duplicates.append(where)
            continue
        kept.append(where)
        if r["cid"] is not None and r["cid"] not in mol["cids"]:
            mol["cids"].append(r["cid"])
        if r["source"] not in mol["sources"]:
            mol["sources"].append(r["source"])
    # A stable order that does not depend on input order: SMILES molecules by SMILES, then graph rows by id.
    ordered = sorted(molecules.values(), key=lambda m: (m["smiles"] is None, m["smiles"] or "", m["id"]))
    table = pa.table({
        "id": [m["id"] for m in ordered], "smiles": [m["smiles"] for m in ordered],
        "texts": [m["texts"] for m in ordered], "labels": pa.nulls(len(ordered), pa.list_(pa.float32())),
        "source": [",".join(m["sources"]) for m in ordered],
        "cid": [m["cids"][0] if m["cids"] else None for m in ordered], "cids": [m["cids"] for m in ordered],
        "text_sources": [m["text_sources"] for m in ordered],
    }, schema=pa.schema(list(RECORD_SCHEMA) + list(PAIR_EXTRA_SCHEMA)))
    if has_graphs:
        table = _append_graphs(table, rows, [m["graph_row"] for m in ordered])
    return table, kept, duplicates


def _append_graphs(table: pa.Table, rows: pa.Table, graph_rows: list) -> pa.Table:
    """Graph columns: the corpus graph for graph rows, null for SMILES rows (the featurize stage fills those)."""
    take = pa.array(graph_rows, pa.int64())  # None -> a null row
    for field in GRAPH_SCHEMA:
        table = table.append_column(field, rows.column(field.name).take(take).cast(field.type))
    return table


def dedup_molecules(rows: pa.Table) -> tuple[pa.Table, list, list]:
    """Surviving molecule rows (annotated, in source priority order) -> (table sorted by SMILES, kept rows,
    duplicate rows). Output follows the records schema (texts empty, labels null), so `momu pretrain` with
    objective graphcl reads it as a data path, plus cid and the list of sources holding the molecule."""
    data = rows.select(["source", "row", "source_id", "cid", "canonical"]).to_pylist()
    first: dict = {}
    kept, duplicates = [], []
    for r in data:
        mol = first.get(r["canonical"])
        if mol is None:
            first[r["canonical"]] = {"id": f"{r['source']}:{r['source_id']}", "source": r["source"],
                                     "cid": r["cid"], "sources": [r["source"]]}
            kept.append((r["source"], r["row"]))
            continue
        duplicates.append((r["source"], r["row"]))
        if mol["cid"] is None:
            mol["cid"] = r["cid"]
        if r["source"] not in mol["sources"]:
            mol["sources"].append(r["source"])
    smiles = sorted(first)
    n = len(smiles)
    table = pa.table({
        "id": [first[s]["id"] for s in smiles], "smiles": smiles, "texts": pa.array([[]] * n, pa.list_(pa.string())),
        "labels": pa.nulls(n, pa.list_(pa.float32())), "source": [first[s]["source"] for s in smiles],
        "cid": [first[s]["cid"] for s in smiles], "sources": [first[s]["sources"] for s in smiles],
    }, schema=pa.schema(list(RECORD_SCHEMA) + list(MOLECULE_EXTRA_SCHEMA)))
    return table, kept, duplicates


# -- accounting -------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SourceAccount:
    """Where every row of one source went: read == kept + removed + rejected."""

    path: str
    format: str
    read: int = 0
    kept: int = 0
    removed_by_reason: Counter = dataclasses.field(default_factory=Counter)
    rejected_by_reason: Counter = dataclasses.field(default_factory=Counter)
    rejected_examples: list = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return {"path": self.path, "format": self.format, "read": self.read, "kept": self.kept,
                "removed": sum(self.removed_by_reason.values()), "removed_by_reason": dict(sorted(self.removed_by_reason.items())),
                "rejected": sum(self.rejected_by_reason.values()),
                "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
                "rejected_examples": self.rejected_examples}


def account_sources(specs, reports: dict, annotated: pa.Table, kept: Iterable, duplicates: Iterable,
                    duplicate_reason: str, max_examples: int = 20) -> dict[str, SourceAccount]:
    """Per-source accounts from the readers' reports (malformed rows), the annotated training rows (parse
    rejections, removals) and the grouping's kept / duplicate rows. Raises if any row is counted twice or
    not at all, so a manifest that does not add up is never written."""
    accounts = {s.name: SourceAccount(s.path, s.format) for s in specs}
    for spec in specs:
        report, account = reports[spec.name], accounts[spec.name]
        account.read = report.rows_read
        account.rejected_by_reason.update(report.malformed)
        account.rejected_examples.extend({"row": ex.row, "reason": ex.reason, "input": ex.raw}
                                         for ex in report.examples[:max_examples])
    seen: set = set()
    cols = annotated.select(["source", "row", "source_id", "smiles", "reject_reason", REMOVED]).to_pylist()
    for r in cols:
        account = accounts[r["source"]]
        if r["reject_reason"]:
            account.rejected_by_reason[r["reject_reason"]] += 1
            if len(account.rejected_examples) < max_examples:
                account.rejected_examples.append({"row": r["source_id"], "reason": r["reject_reason"],
                                                  "input": (r["smiles"] or "")[:200]})
            _once(seen, (r["source"], r["row"]))
        elif r[REMOVED]:
            account.removed_by_reason[r[REMOVED]] += 1
            _once(seen, (r["source"], r["row"]))
    for where in duplicates:
        accounts[where[0]].removed_by_reason[duplicate_reason] += 1
        _once(seen, where)
    for where in kept:
        accounts[where[0]].kept += 1
        _once(seen, where)
    for name, account in accounts.items():
        total = account.kept + sum(account.removed_by_reason.values()) + sum(account.rejected_by_reason.values())
        if total != account.read:
            raise AssertionError(f"{name}: read {account.read} rows but accounted for {total}")
    return accounts


def _once(seen: set, where: tuple) -> None:
    if where in seen:
        raise AssertionError(f"row {where} counted twice")
    seen.add(where)


def sha256_path(path: str | Path) -> str:
    """sha256 of a file; of a directory, sha256 over its files' relative paths and sha256s (sorted)."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    lines = [f"{f.relative_to(path).as_posix()}\t{_sha256_file(f)}\n"
             for f in sorted(p for p in path.rglob("*") if p.is_file())]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_stats(table: pa.Table) -> dict:
    """Molecules, pairs (texts) and how texts spread over molecules, for the manifest."""
    counts = np.array([len(t) for t in table.column("texts").to_pylist()], dtype=np.int64)
    return {"molecules": int(table.num_rows), "pairs": int(counts.sum()),
            "molecules_with_several_texts": int((counts > 1).sum()),
            "graph_only_molecules": int(table.column("smiles").null_count)}
