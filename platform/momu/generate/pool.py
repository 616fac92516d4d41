"""Start-molecule pools for the GA: read a SMILES file, canonicalise, and drop every molecule of the exclude
files (ChEBI-20 test by default) by stereo-insensitive canonical SMILES."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import random
from pathlib import Path
from typing import Optional

from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")


def _open_text(path: Path):
    return io.TextIOWrapper(gzip.open(path), encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_smiles_column(path: str | Path) -> list[str]:
    """The SMILES column (header SMILES/smiles) of a .tsv/.txt (tab) or .csv[.gz] file, in file order. ChEBI-20's
    files write backslashes doubled (`\\\\`); they are undone here."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"molecule file not found: {path}")
    delimiter = "," if ".csv" in path.suffixes else "\t"
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE)
        header = next(reader, None) or []
        lowered = [h.strip().lower() for h in header]
        if "smiles" not in lowered:
            raise ValueError(f"{path}: no SMILES column in header {header[:6]}")
        col = lowered.index("smiles")
        return [row[col].replace("\\\\", "\\") for row in reader if len(row) > col and row[col].strip()]


@functools.lru_cache(maxsize=16)
def _file_rows(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    return tuple(read_smiles_column(path))


@functools.lru_cache(maxsize=16)
def _banned(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    return frozenset(c for c in (canonical(s, isomeric=False) for s in _file_rows(path, mtime_ns, size)) if c)


def _key(path: str | Path) -> tuple[str, int, int]:
    """A file's cache key: a changed file (time or size) is read again."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"molecule file not found: {path}")
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def canonical(smiles: str, isomeric: bool = True) -> str | None:
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=isomeric)


def load_pool(path: str | Path, exclude: list[str] | tuple[str, ...] = (), sample: Optional[int] = None,
              rng: Optional[random.Random] = None) -> list[str]:
    """Unique canonical SMILES of the pool minus every molecule of the exclude files (compared without stereo,
    so a stereoisomer of an excluded molecule is removed too). With `sample`: that many, drawn with `rng` (only
    the drawn rows are parsed, so a 250k-row pool costs little); else all, in file order. The files are read
    once per process (cached by path, size and modification time), so a worker running many prompts pays once."""
    banned: set[str] = set()
    for ex in exclude:
        banned.update(_banned(*_key(ex)))
    seen: set[str] = set()
    out: list[str] = []
    rows = list(_file_rows(*_key(path)))
    if sample is not None:
        (rng or random.Random(0)).shuffle(rows)
    for s in rows:
        if sample is not None and len(out) >= sample:
            break
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            continue
        iso = Chem.MolToSmiles(mol)
        if iso in seen or Chem.MolToSmiles(mol, isomericSmiles=False) in banned:
            continue
        seen.add(iso)
        out.append(iso)
    if not out:
        raise ValueError(f"pool.path: {path} holds no usable molecule (after exclusions)")
    return out
