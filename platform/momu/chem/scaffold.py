"""Dataset splits for property prediction: deterministic Bemis-Murcko scaffold split (the MoleculeNet protocol of
pretrain-gnns / chemprop / MoMu) and a seeded random split, with save/load so a run's split is reproducible.

Scaffold split: molecules are grouped by their Murcko scaffold SMILES (chirality included; acyclic molecules
share the empty scaffold); groups are ordered largest first (ties: the group whose first molecule comes later in
the file goes first, as pretrain-gnns' `sorted(..., key=(len, first index), reverse=True)`), and each whole group
goes to train while train stays within 80 % of the molecules, else to valid while train + valid stay within 90 %,
else to test. No scaffold ever appears in two parts, and the result depends only on the SMILES list.

Pure RDKit + numpy: no Ray, no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold

RDLogger.DisableLog("rdApp.*")

SPLIT_FORMAT_VERSION = 1
PARTS = ("train", "valid", "test")


def murcko_scaffold(smiles: str, include_chirality: bool = True) -> str:
    """Bemis-Murcko scaffold SMILES of a molecule ('' for acyclic molecules).

    Raises ValueError for a SMILES RDKit cannot parse (callers featurize first and pass only parsed ones)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit could not parse SMILES {smiles[:80]!r}")
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


@dataclasses.dataclass
class Split:
    """Row indices (into the list the split was made from) of the train / valid / test parts."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    method: str  # "scaffold" or "random"
    fractions: tuple[float, float, float]
    seed: Optional[int] = None  # random split only
    fingerprint: str = ""  # sha256 of the molecule list the split was made for (checked on reuse)
    num_molecules: int = 0
    scaffolds: Optional[list[str]] = None  # per-molecule scaffold (scaffold split), for inspection and tests

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def sizes(self) -> dict[str, int]:
        return {name: int(len(idx)) for name, idx in self.parts().items()}

    def subsample(self, part: str, keep: np.ndarray) -> "Split":
        """A copy with `part`'s indices restricted to `keep` (a subset of them, e.g. a capped training set)."""
        current = set(self.parts()[part].tolist())
        if not set(np.asarray(keep).tolist()) <= current:
            raise ValueError(f"subsample: indices outside the {part} part")
        return dataclasses.replace(self, **{part: np.sort(np.asarray(keep, dtype=np.int64))})

    # -- persistence --------------------------------------------------------------------------------------------
    def to_dict(self, ids: Optional[Sequence[str]] = None) -> dict:
        out = {
            "format_version": SPLIT_FORMAT_VERSION,
            "method": self.method,
            "fractions": list(self.fractions),
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "num_molecules": self.num_molecules,
            "sizes": self.sizes(),
            **{name: idx.tolist() for name, idx in self.parts().items()},
        }
        if ids is not None:  # the source ids (e.g. CSV row numbers) of each part, for use outside this code
            ids = list(ids)
            out["ids"] = {name: [ids[i] for i in idx] for name, idx in self.parts().items()}
        return out

    def save(self, path: str | Path, ids: Optional[Sequence[str]] = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(ids)) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "Split":
        try:
            parts = {name: np.asarray(data[name], dtype=np.int64) for name in PARTS}
            split = cls(**parts, method=data["method"], fractions=tuple(data["fractions"]), seed=data.get("seed"),
                        fingerprint=data.get("fingerprint", ""), num_molecules=int(data.get("num_molecules", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a saved split ({type(err).__name__}: {err})") from None
        split.check()
        return split

    @classmethod
    def load(cls, path: str | Path, smiles: Optional[Sequence[str]] = None) -> "Split":
        """Load a saved split; with `smiles`, check that it was made for exactly this molecule list."""
        path = Path(path)
        try:
            split = cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
        if smiles is not None and split.fingerprint and split.fingerprint != molecules_fingerprint(smiles):
            raise ValueError(f"{path}: split was made for a different molecule list ({split.num_molecules} "
                             f"molecules, fingerprint {split.fingerprint[:12]}); got {len(smiles)} molecules")
        return split

    def check(self) -> None:
        """Parts are disjoint and within range."""
        all_idx = np.concatenate([self.train, self.valid, self.test])
        if len(np.unique(all_idx)) != len(all_idx):
            raise ValueError("split parts overlap")
        if self.num_molecules and len(all_idx) and (all_idx.min() < 0 or all_idx.max() >= self.num_molecules):
            raise ValueError(f"split index out of range for {self.num_molecules} molecules")


def molecules_fingerprint(smiles: Iterable[str]) -> str:
    h = hashlib.sha256()
    for s in smiles:
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def scaffold_groups(scaffolds: Sequence[str]) -> list[list[int]]:
    """Indices grouped by scaffold, ordered largest group first; equal sizes: later first index first."""
    groups: dict[str, list[int]] = {}
    for i, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(i)  # indices arrive in increasing order
    return sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   include_chirality: bool = True, scaffolds: Optional[Sequence[str]] = None) -> Split:
    """Deterministic Bemis-Murcko scaffold split (see module docstring). `scaffolds` may be given precomputed."""
    frac = _check_fractions(fractions)
    if scaffolds is None:
        scaffolds = [murcko_scaffold(s, include_chirality) for s in smiles]
    if len(scaffolds) != len(smiles):
        raise ValueError(f"{len(scaffolds)} scaffolds for {len(smiles)} molecules")
    n = len(smiles)
    train_cutoff = frac[0] * n
    valid_cutoff = (frac[0] + frac[1]) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in scaffold_groups(scaffolds):
        if len(train) + len(group) <= train_cutoff:
            train.extend(group)
        elif len(train) + len(valid) + len(group) <= valid_cutoff:
            valid.extend(group)
        else:
            test.extend(group)
    return Split(np.asarray(train, np.int64), np.asarray(valid, np.int64), np.asarray(test, np.int64),
                 method="scaffold", fractions=frac, fingerprint=molecules_fingerprint(smiles), num_molecules=n,
                 scaffolds=list(scaffolds))


def random_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Seeded random split (same seed + same molecule list -> same split)."""
    frac = _check_fractions(fractions)
    n = len(smiles)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(frac[0] * n))
    n_valid = int(round(frac[1] * n))
    return Split(np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_valid]),
                 np.sort(order[n_train + n_valid:]), method="random", fractions=frac, seed=seed,
                 fingerprint=molecules_fingerprint(smiles), num_molecules=n)


def make_split(smiles: Sequence[str], method: str = "scaffold", fractions: Sequence[float] = (0.8, 0.1, 0.1),
               seed: int = 0) -> Split:
    if method == "scaffold":
        return scaffold_split(smiles, fractions)
    if method == "random":
        return random_split(smiles, fractions, seed)
    raise ValueError(f"split method must be 'scaffold' or 'random', got {method!r}")
