"""Sources of the corpus builders, read into one normalised table, and the molecule keys computed per row.

Normalised columns (one row per source row the reader accepted):
    source     string        the source's config name
    row        int64         position in that source (reader order)
    source_id  string        the reader's id (CID, PCdes idx, corpus index, library id)
    cid        string|null   PubChem CID where the source has one
    smiles     string|null   as written in the source; null for MoMu-corpus graphs
    texts      list<string>  descriptions / paragraphs (empty for molecule libraries)
    graph columns (GRAPH_SCHEMA, null for SMILES rows) where a source stores graphs only

Molecule keys (annotate_batch), all pure RDKit:
    canonical   canonical isomeric SMILES (RDKit), the molecule identity
    stereo_key  non-isomeric canonical SMILES, or the InChIKey connectivity block: equal for stereoisomers
    graph_key   canonical SMILES of the heavy-atom skeleton (element + bond type; no charge, H or stereo): the
                only key a SMILES-less MoMu-corpus graph has, so it is also computed for evaluation molecules
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rdkit import Chem

from momu.chem.columns import GRAPH_COLUMNS, GRAPH_SCHEMA, columns_to_graphs
from momu.chem.featurize import MolGraph, Rejection, featurize_mol, parse_smiles
from momu.data.corpus_config import SourceSpec
from momu.data.readers import (
    _decoded_lines, _existing_file, read_chebi20, read_molecule_library, read_momu_corpus, read_records_parquet,
)
from momu.data.records import MalformedReason as R, ReadReport

NORMALISED_SCHEMA = pa.schema([
    ("source", pa.string()), ("row", pa.int64()), ("source_id", pa.string()), ("cid", pa.string()),
    ("smiles", pa.string()), ("texts", pa.list_(pa.string())),
])
KEY_COLUMNS = ("canonical", "stereo_key", "graph_key", "reject_reason")
_CID = re.compile(r"(\d+)(?:\.0*)?")
PCDES_HEADER = ("idx", "cid", "smiles", "description")
# The graph key cannot tell bond orders apart beyond these four (MolGraph's vocabulary).
_BOND_TYPES = {0: Chem.BondType.SINGLE, 1: Chem.BondType.DOUBLE, 2: Chem.BondType.TRIPLE, 3: Chem.BondType.AROMATIC}


# -- reading ---------------------------------------------------------------------------------------------------

def read_source(spec: SourceSpec) -> tuple[pa.Table, ReadReport]:
    """One source -> (normalised table, the reader's report: rows_read = rows_ok + malformed by reason)."""
    fmt = spec.format
    if fmt in ("chebi20", "pubchem324k"):
        table, report = read_chebi20(spec.path)
        return _normalise(spec, table, cids=table.column("id")), report
    if fmt == "pcdes":
        return read_pcdes(spec)
    if fmt == "parquet":
        return read_pair_parquet(spec)
    if fmt == "momu_corpus":
        path = Path(spec.path)
        table, report = read_momu_corpus(path) if path.is_dir() else read_records_parquet(path)
        if not all(c in table.column_names for c in GRAPH_COLUMNS):
            raise ValueError(f"{spec.name}: {spec.path} has no graph columns; convert MoMu's corpus with "
                             "`momu convert-corpus` or give its text/ + graph/ directory")
        return _normalise(spec, table, graphs=table.select(list(GRAPH_COLUMNS))), report
    if fmt == "library":
        table, report = read_molecule_library(spec.path, spec.smiles_column, spec.id_column)
        return _normalise(spec, table, cids=table.column("id") if spec.id_is_cid else None), report
    raise ValueError(f"{spec.name}: unknown format {fmt!r}")


def _normalise(spec: SourceSpec, records: pa.Table, cids=None, graphs: Optional[pa.Table] = None) -> pa.Table:
    n = records.num_rows
    columns = {
        "source": pa.array([spec.name] * n, pa.string()),
        "row": pa.array(np.arange(n, dtype=np.int64)),
        "source_id": records.column("id").cast(pa.string()),
        "cid": pa.array([normalise_cid(c) for c in cids.cast(pa.string()).to_pylist()], pa.string())
        if cids is not None else pa.nulls(n, pa.string()),
        "smiles": records.column("smiles").cast(pa.string()),
        "texts": records.column("texts").cast(pa.list_(pa.string())),
    }
    table = pa.table(columns, schema=NORMALISED_SCHEMA)
    for field in GRAPH_SCHEMA if graphs is not None else ():
        table = table.append_column(field, graphs.column(field.name).cast(field.type))
    return table


def normalise_cid(value: Optional[str]) -> Optional[str]:
    """'000123', ' 123 ' and '123.0' (a CID column read as float) are CID '123'; blanks are null; anything
    else is kept as written (it can only match an identical evaluation value)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    match = _CID.fullmatch(text)
    return str(int(match.group(1))) if match else text


def read_pcdes(spec: SourceSpec) -> tuple[pa.Table, ReadReport]:
    """PCdes `idx cid smiles description` TSV (header) -> normalised rows; malformed rows counted by reason."""
    path = _existing_file(spec.path)
    report = ReadReport(str(path))
    ids, cids, smiles, texts = [], [], [], []
    header_seen = False
    for lineno, line, decoded in _decoded_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if not header_seen:
            if tuple(f.lower() for f in fields) != PCDES_HEADER:
                raise ValueError(f"{path}: expected the PCdes header 'idx<TAB>cid<TAB>smiles<TAB>description' "
                                 f"on line {lineno}, found {line[:120]!r}")
            header_seen = True
        elif not decoded:
            report.add_malformed(lineno, R.BAD_ENCODING, line)
        elif len(fields) != 4:
            report.add_malformed(lineno, R.WRONG_FIELD_COUNT, line)
        elif not fields[0]:
            report.add_malformed(lineno, R.EMPTY_ID, line)
        elif not fields[2]:
            report.add_malformed(lineno, R.EMPTY_SMILES, line)
        elif not fields[3]:
            report.add_malformed(lineno, R.EMPTY_DESCRIPTION, line)
        else:
            ids.append(fields[0])
            cids.append(fields[1] or None)
            smiles.append(fields[2])
            texts.append([fields[3]])
            report.add_ok()
    if not header_seen:
        raise ValueError(f"{path}: empty file (no PCdes header)")
    records = pa.table({"id": pa.array(ids, pa.string()), "smiles": pa.array(smiles, pa.string()),
                        "texts": pa.array(texts, pa.list_(pa.string()))})
    return _normalise(spec, records, cids=pa.array(cids, pa.string())), report


def read_pair_parquet(spec: SourceSpec) -> tuple[pa.Table, ReadReport]:
    """Parquet with a SMILES column, a text column (string or list of strings) and optionally a CID column."""
    path = _existing_file(spec.path)
    table = pq.read_table(path)
    smiles_col = spec.smiles_column or "smiles"
    wanted = {"smiles_column": smiles_col, "text_column": spec.text_column}
    if spec.cid_column:
        wanted["cid_column"] = spec.cid_column
    for field, name in wanted.items():
        if name not in table.column_names:
            raise ValueError(f"{spec.name}: {path} has no {field} {name!r}; columns are {table.column_names}")
    text = table.column(spec.text_column)
    is_list = pa.types.is_list(text.type) or pa.types.is_large_list(text.type)
    values = (text if is_list else text.cast(pa.string())).to_pylist()
    rows = values if is_list else [[v] if v is not None else [] for v in values]
    report = ReadReport(str(path))
    keep = []
    smiles = table.column(smiles_col).cast(pa.string()).to_pylist()
    texts = [[str(t).strip() for t in (row or []) if t and str(t).strip()] for row in rows]
    for i, (smi, row_texts) in enumerate(zip(smiles, texts)):
        if not smi or not smi.strip():
            report.add_malformed(i, R.MISSING_SMILES, f"row {i}")
        elif not row_texts:
            report.add_malformed(i, R.EMPTY_DESCRIPTION, f"row {i}: {smi[:80]}")
        else:
            keep.append(i)
            report.add_ok()
    idx = pa.array(keep, pa.int64())
    cids = table.column(spec.cid_column).cast(pa.string()).take(idx) if spec.cid_column else None
    records = pa.table({"id": pa.array([str(i) for i in keep], pa.string()),
                        "smiles": pa.array([smiles[i].strip() for i in keep], pa.string()),
                        "texts": pa.array([texts[i] for i in keep], pa.list_(pa.string()))})
    return _normalise(spec, records, cids=cids), report


# -- molecule keys ---------------------------------------------------------------------------------------------

def stereo_free_key(mol: Chem.Mol, kind: str) -> Optional[str]:
    """Equal for molecules that differ only in stereo (and, for 'inchikey', tautomer / protonation state)."""
    if kind == "smiles":
        return Chem.MolToSmiles(mol, isomericSmiles=False)
    if kind == "inchikey":
        key = Chem.MolToInchiKey(mol)
        return key.split("-")[0] if key else None
    if kind == "none":
        return None
    raise ValueError(f"stereo_free must be 'smiles', 'inchikey' or 'none', got {kind!r}")


def graph_key(graph: MolGraph) -> str:
    """Canonical SMILES of the graph's heavy-atom skeleton: elements and bond types only. MoMu-corpus graphs
    keep no charges or hydrogens and their chirality tags depend on atom order, so nothing finer is comparable."""
    mol = Chem.RWMol()
    for atom_type in graph.atom_type.tolist():
        atom = Chem.Atom(atom_type + 1 if atom_type < 118 else 0)  # 118 = OGB "misc" -> dummy
        atom.SetNoImplicit(True)  # no hydrogens are invented: both sides of a comparison get none
        mol.AddAtom(atom)
    src, dst = graph.edge_index
    for k in range(0, graph.num_edges, 2):  # (i, j) then (j, i) per bond
        i, j, bond_type = int(src[k]), int(dst[k]), int(graph.bond_type[k])
        mol.AddBond(i, j, _BOND_TYPES[bond_type])
        if bond_type == 3:
            mol.GetBondBetweenAtoms(i, j).SetIsAromatic(True)
            mol.GetAtomWithIdx(i).SetIsAromatic(True)
            mol.GetAtomWithIdx(j).SetIsAromatic(True)
    mol.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(mol)
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def annotate_batch(batch: pa.Table, stereo_free: str = "smiles", graph_keys_for_smiles: bool = False) -> pa.Table:
    """Add KEY_COLUMNS to normalised rows. A SMILES that does not parse gets reject_reason (the featurizer's
    reason: unparseable, empty, ...) and null keys; good rows get reject_reason ''. Graph rows get graph_key
    only; SMILES rows get one too when `graph_keys_for_smiles` (evaluation molecules, matched against graphs)."""
    smiles = batch.column("smiles").to_pylist()
    graph_rows = {}
    if "atom_type" in batch.column_names:
        present = np.flatnonzero(batch.column("atom_type").is_valid().to_numpy(zero_copy_only=False))
        if len(present):
            subset = batch.take(pa.array(present)).select(list(GRAPH_COLUMNS))
            graph_rows = dict(zip(present.tolist(), columns_to_graphs(subset)))
    canonical, stereo, graph, reasons = [], [], [], []
    for i, smi in enumerate(smiles):
        if i in graph_rows:
            canonical.append(None), stereo.append(None), reasons.append("")
            graph.append(graph_key(graph_rows[i]))
            continue
        mol = parse_smiles(smi)
        if isinstance(mol, Rejection):
            canonical.append(None), stereo.append(None), graph.append(None), reasons.append(mol.reason)
            continue
        canonical.append(Chem.MolToSmiles(mol))
        stereo.append(stereo_free_key(mol, stereo_free))
        reasons.append("")
        key = None
        if graph_keys_for_smiles:
            featurized = featurize_mol(mol, max_atoms=1 << 30)
            key = None if isinstance(featurized, Rejection) else graph_key(featurized)
        graph.append(key)
    out = batch
    for name, values in zip(KEY_COLUMNS, (canonical, stereo, graph, reasons)):
        out = out.append_column(name, pa.array(values, pa.string()))
    return out
