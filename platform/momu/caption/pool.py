"""The caption pool of the retrieval captioner: known molecules with their descriptions, minus the evaluated split.

A pool is a small directory, written once by `build_pool` (`momu caption pool --config ...`):

    pool.parquet           id, cid, smiles (canonical isomeric, RDKit), caption, source  -- one row per molecule
    fingerprints.parquet   morgan_bits: on-bit indices of the Morgan fingerprint (radius 2, 2048 bits), row-aligned
    removed.parquet        every source row left out, with why (evaluated_cid / evaluated_smiles /
                           evaluated_connectivity / duplicate_cid / duplicate_smiles / unparseable / malformed)
    graph_embeddings.npy   optional: MoMu graph-tower embeddings of the pool molecules [n, d] float32
    text_embeddings.npy    optional: MoMu text-tower embeddings of the captions [n, d] float32
    manifest.json          sources, excluded files, removal counts, fingerprint settings, embedding model (weights
                           sha256), pool sha256

Removal of the evaluated split (`remove_evaluated_molecules`) is by CID, by canonical isomeric SMILES and by
stereo-free connectivity (the first block of the standard InChIKey: formula + connectivity + hydrogens, without
stereo, isotopes or charge layer), so neither the test molecule itself nor one of its stereoisomers can be
retrieved. Pure RDKit / pyarrow / numpy: no Ray; torch only when embeddings are made.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rdkit import Chem, RDLogger

POOL_FILE = "pool.parquet"
FINGERPRINT_FILE = "fingerprints.parquet"
REMOVED_FILE = "removed.parquet"
GRAPH_EMBEDDINGS_FILE = "graph_embeddings.npy"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
# Standard Morgan fingerprint (ECFP4-like) without chirality: the usual setting for Tanimoto nearest neighbours.
MORGAN_RADIUS = 2
MORGAN_BITS = 2048

POOL_SCHEMA = pa.schema([("id", pa.string()), ("cid", pa.string()), ("smiles", pa.string()),
                         ("caption", pa.string()), ("source", pa.string())])
REMOVED_SCHEMA = pa.schema([("cid", pa.string()), ("smiles", pa.string()), ("source", pa.string()),
                            ("reason", pa.string())])

RDLogger.DisableLog("rdApp.*")  # unparseable SMILES are counted, not printed


@dataclass(frozen=True)
class MoleculeKeys:
    """What identifies a molecule for removal: CID, canonical isomeric SMILES, InChIKey connectivity block."""

    cid: Optional[str]
    canonical_smiles: Optional[str]
    connectivity: Optional[str]


def molecule_keys(cid: Optional[str], smiles: str) -> MoleculeKeys:
    """Keys of one molecule; canonical_smiles and connectivity are None when RDKit cannot read the SMILES (or
    InChI cannot be made)."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        return MoleculeKeys(cid or None, None, None)
    key = Chem.MolToInchiKey(mol) or ""
    return MoleculeKeys(cid or None, Chem.MolToSmiles(mol), key.split("-")[0] or None)


@dataclass
class RemovalReport:
    """Which candidate rows `remove_evaluated_molecules` kept, and why the others went."""

    keep: list[int]
    removed: dict[int, str]  # row -> reason
    counts: dict[str, int] = field(default_factory=dict)


EVALUATED_REASONS = ("evaluated_cid", "evaluated_smiles", "evaluated_connectivity")


def remove_evaluated_molecules(candidates: Sequence[MoleculeKeys], evaluated: Iterable[MoleculeKeys]
                               ) -> RemovalReport:
    """Drop every candidate that is an evaluated molecule by CID, by canonical SMILES or by stereo-free
    connectivity (InChIKey first block); the first matching key names the reason. Candidates RDKit cannot read
    are dropped too ("unparseable"): they could not be checked. Duplicates among the kept candidates (same CID
    or canonical SMILES as an earlier one) are dropped as duplicate_cid / duplicate_smiles, the first kept.

    Pure and order-preserving; the corpus builder (momu.data.corpus) applies the same rule to training data."""
    cids, smiles, blocks = set(), set(), set()
    for key in evaluated:
        if key.cid:
            cids.add(key.cid)
        if key.canonical_smiles:
            smiles.add(key.canonical_smiles)
        if key.connectivity:
            blocks.add(key.connectivity)
    keep, removed = [], {}
    seen_cids, seen_smiles = set(), set()
    for i, key in enumerate(candidates):
        if key.canonical_smiles is None:
            reason = "unparseable"
        elif key.cid and key.cid in cids:
            reason = "evaluated_cid"
        elif key.canonical_smiles in smiles:
            reason = "evaluated_smiles"
        elif key.connectivity and key.connectivity in blocks:
            reason = "evaluated_connectivity"
        elif key.cid and key.cid in seen_cids:
            reason = "duplicate_cid"
        elif key.canonical_smiles in seen_smiles:
            reason = "duplicate_smiles"
        else:
            keep.append(i)
            seen_cids.add(key.cid)
            seen_smiles.add(key.canonical_smiles)
            continue
        removed[i] = reason
    return RemovalReport(keep, removed, dict(Counter(removed.values())))


def morgan_generator():
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=MORGAN_BITS)


def morgan_fingerprint(mol, generator=None):
    """RDKit ExplicitBitVect of a molecule (radius 2, 2048 bits, no chirality)."""
    return (generator or morgan_generator()).GetFingerprint(mol)


def bits_to_fingerprint(bits: Sequence[int]):
    from rdkit import DataStructs

    fp = DataStructs.ExplicitBitVect(MORGAN_BITS)
    fp.SetBitsFromList([int(b) for b in bits])
    return fp


# -- reading caption sources ------------------------------------------------------------------------------------

@dataclass
class SourceRows:
    """Rows of one caption source (a ChEBI-20-style `cid<TAB>smiles<TAB>description` table with a header)."""

    name: str
    path: Path
    cids: list[str]
    smiles: list[str]
    captions: list[str]
    malformed: int


def read_caption_source(path: str | Path, name: Optional[str] = None) -> SourceRows:
    """A ChEBI-20 / PubChem324k table (tab-separated, header `CID SMILES description` in any case)."""
    from momu.data.readers import read_chebi20

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption source not found: {path}")
    result = read_chebi20(path)
    table = result.table
    return SourceRows(name or path.stem, path, table.column("id").to_pylist(), table.column("smiles").to_pylist(),
                      [t[0] for t in table.column("texts").to_pylist()], result.report.rows_malformed)


def source_keys(rows: SourceRows) -> list[MoleculeKeys]:
    """The removal keys of every row of a caption source."""
    return [molecule_keys(c, s) for c, s in zip(rows.cids, rows.smiles)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- building ---------------------------------------------------------------------------------------------------

def build_pool(sources: Sequence[tuple[str, str | Path]], exclude: Sequence[str | Path], output_dir: str | Path,
               model: Optional[str] = None, batch_size: int = 128) -> dict:
    """Write a pool directory from (name, path) caption sources minus the molecules of the `exclude` files (the
    evaluated splits, same table format). With `model` (a MoMu directory, published name or models:/ URI) the
    pool also holds graph and caption embeddings of that model. Returns the manifest."""
    started = time.perf_counter()
    out = Path(output_dir)
    if (out / MANIFEST_FILE).exists():
        raise ValueError(f"output_dir: {out} already holds a caption pool; choose a new directory")
    if not sources:
        raise ValueError("sources: give at least one caption source")
    evaluated_keys, excluded = [], []
    for path in exclude:
        rows = read_caption_source(path)
        evaluated_keys += source_keys(rows)
        excluded.append({"path": str(rows.path.resolve()), "sha256": file_sha256(rows.path), "rows": len(rows.cids)})
    keys, cids, captions, names, sources_info = [], [], [], [], []
    for name, path in sources:
        rows = read_caption_source(path, name)
        keys += source_keys(rows)
        cids += rows.cids
        captions += rows.captions
        names += [rows.name] * len(rows.cids)
        sources_info.append({"name": rows.name, "path": str(rows.path.resolve()), "sha256": file_sha256(rows.path),
                             "rows": len(rows.cids), "malformed_rows": rows.malformed})
    report = remove_evaluated_molecules(keys, evaluated_keys)
    keep = report.keep
    if not keep:
        raise ValueError("the pool is empty after removing the evaluated molecules")
    pool = pa.table({"id": [f"{names[i]}:{cids[i]}" for i in keep], "cid": [cids[i] for i in keep],
                     "smiles": [keys[i].canonical_smiles for i in keep], "caption": [captions[i] for i in keep],
                     "source": [names[i] for i in keep]}, schema=POOL_SCHEMA)
    gen = morgan_generator()
    bits = [list(morgan_fingerprint(Chem.MolFromSmiles(s), gen).GetOnBits()) for s in pool.column("smiles").to_pylist()]
    removed_rows = sorted(report.removed)
    removed = pa.table({"cid": [cids[i] for i in removed_rows], "smiles": [keys[i].canonical_smiles or ""
                                                                         for i in removed_rows],
                        "source": [names[i] for i in removed_rows],
                        "reason": [report.removed[i] for i in removed_rows]}, schema=REMOVED_SCHEMA)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pool, out / POOL_FILE)
    pq.write_table(pa.table({"morgan_bits": pa.array(bits, pa.list_(pa.int32()))}), out / FINGERPRINT_FILE)
    pq.write_table(removed, out / REMOVED_FILE)
    embeddings = None
    if model:
        embeddings = write_pool_embeddings(out, model, batch_size)
    evaluated_removed = {r: report.counts.get(r, 0) for r in EVALUATED_REASONS}
    manifest = {
        "format_version": FORMAT_VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pool_rows": pool.num_rows, "sources": sources_info, "excluded": excluded,
        "removal_rule": "a source row is removed when its CID, its canonical isomeric SMILES (RDKit) or its "
                        "stereo-free connectivity (InChIKey first block) equals that of any excluded molecule; "
                        "unparseable rows and later duplicates (same CID or canonical SMILES) are dropped too",
        "removed": {"evaluated_total": sum(evaluated_removed.values()), **evaluated_removed,
                    "duplicate_cid": report.counts.get("duplicate_cid", 0),
                    "duplicate_smiles": report.counts.get("duplicate_smiles", 0),
                    "unparseable": report.counts.get("unparseable", 0)},
        "fingerprint": {"kind": "morgan", "radius": MORGAN_RADIUS, "n_bits": MORGAN_BITS, "chirality": False},
        "embeddings": embeddings, "pool_sha256": file_sha256(out / POOL_FILE),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_pool_embeddings(pool_dir: str | Path, model: str, batch_size: int = 128) -> dict:
    """MoMu graph embeddings of the pool molecules and text embeddings of their captions, saved beside the pool;
    returns {model, weights_sha256, dim} for the manifest."""
    from momu.models.loading import load_momu, resolve_model_dir, weights_sha256

    pool_dir = Path(pool_dir)
    table = pq.read_table(pool_dir / POOL_FILE)
    local = resolve_model_dir(model)
    momu = load_momu(local).eval()
    graph = embed_pool_graphs(momu, table.column("smiles").to_pylist(), batch_size)
    text = momu.embed_texts(table.column("caption").to_pylist(), batch_size=batch_size).numpy().astype(np.float32)
    np.save(pool_dir / GRAPH_EMBEDDINGS_FILE, graph)
    np.save(pool_dir / TEXT_EMBEDDINGS_FILE, text)
    return {"model": str(model), "weights_sha256": weights_sha256(local), "dim": int(graph.shape[1])}


def embed_pool_graphs(momu, smiles: list[str], batch_size: int = 128) -> np.ndarray:
    """Graph embeddings [n, d]; a molecule the featurizer refuses (too large, exotic bond) gets a zero vector,
    so it never wins a cosine search."""
    from momu.chem.featurize import Rejection, featurize_smiles

    graphs = [featurize_smiles(s) for s in smiles]
    good = [i for i, g in enumerate(graphs) if not isinstance(g, Rejection)]
    out = np.zeros((len(smiles), momu.config.proj_dim), np.float32)
    if good:
        out[good] = momu.embed_graphs([graphs[i] for i in good], batch_size=batch_size,
                                      smiles=[smiles[i] for i in good]).numpy()
    return out
