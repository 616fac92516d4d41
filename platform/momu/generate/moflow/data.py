"""MoFlow's molecule representation and ZINC250k.

Encoding follows MoFlow's preprocessing (chainer-chemistry's GGNNPreprocessor with kekulize=True and
transform_zinc250k): canonical SMILES without stereo, re-parsed and kekulized; atoms in that order, padded with
virtual atoms to N = 38, one-hot over [C N O F P S Cl Br I virtual]; bonds one-hot over [single, double, triple,
no-bond] for every pair (the diagonal and padding pairs are no-bond). Formal charges and stereo are not
represented, as in MoFlow. Molecules are stored compactly (type index per atom, (i, j, channel) per bond) and made
dense per batch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch
from rdkit import Chem, RDLogger

from momu.generate.moflow.config import ZINC250K_ATOMIC_NUMBERS

RDLogger.DisableLog("rdApp.*")

BOND_CHANNELS = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)  # channel 3: no bond
NO_BOND = 3
# Valences MoFlow's construct_mol assumes when it repairs an over-valent N, O or S with a +1 charge.
ATOM_VALENCY = {6: 4, 7: 3, 8: 2, 9: 1, 15: 3, 16: 2, 17: 1, 35: 1, 53: 1}


@dataclasses.dataclass(frozen=True)
class EncodedMolecule:
    smiles: str  # canonical, no stereo: the molecule MoFlow sees
    atom_types: np.ndarray  # uint8 [n]: index into atomic_numbers
    bonds: np.ndarray  # uint8 [k, 3]: (i, j, channel) with i < j, channel 0..2


def encode_smiles(smiles: str, atomic_numbers: Sequence[int] = ZINC250K_ATOMIC_NUMBERS,
                  max_atoms: int = 38) -> Union[EncodedMolecule, str]:
    """SMILES -> EncodedMolecule, or the reason it cannot be represented (a string)."""
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
    if mol is None:
        return "unparseable"
    canonical = Chem.MolToSmiles(mol, isomericSmiles=False, canonical=True)
    mol = Chem.MolFromSmiles(canonical)
    if mol is None or mol.GetNumAtoms() == 0:
        return "unparseable"
    if mol.GetNumAtoms() > max_atoms:
        return "too_many_atoms"
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # RDKit raises KekulizeException (a ValueError subclass in some releases)
        return "kekulize_failed"
    index = {z: i for i, z in enumerate(atomic_numbers[:-1])}
    types = []
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() not in index:
            return "unsupported_element"
        types.append(index[atom.GetAtomicNum()])
    bonds = []
    for bond in mol.GetBonds():
        if bond.GetBondType() not in BOND_CHANNELS:
            return "unsupported_bond"
        i, j = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        bonds.append((i, j, BOND_CHANNELS.index(bond.GetBondType())))
    return EncodedMolecule(canonical, np.array(types, dtype=np.uint8),
                           np.array(bonds, dtype=np.uint8).reshape(-1, 3))


def to_dense(atom_types: Sequence[np.ndarray], bonds: Sequence[np.ndarray], max_atoms: int = 38,
             num_atom_types: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Compact molecules -> (atoms [B, N, T], bonds [B, 4, N, N]) float32 one-hot, MoFlow's input."""
    b = len(atom_types)
    type_index = np.full((b, max_atoms), num_atom_types - 1, dtype=np.int64)  # virtual
    bond_index = np.full((b, max_atoms, max_atoms), NO_BOND, dtype=np.int64)
    for k, (types, pairs) in enumerate(zip(atom_types, bonds)):
        types = np.asarray(types, dtype=np.int64)
        type_index[k, :len(types)] = types
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        bond_index[k, pairs[:, 0], pairs[:, 1]] = pairs[:, 2]
        bond_index[k, pairs[:, 1], pairs[:, 0]] = pairs[:, 2]
    atoms = torch.nn.functional.one_hot(torch.from_numpy(type_index), num_atom_types).float()
    adj = torch.nn.functional.one_hot(torch.from_numpy(bond_index), 4).permute(0, 3, 1, 2).float()
    return atoms, adj


def encode_dense(smiles: Sequence[str], atomic_numbers: Sequence[int] = ZINC250K_ATOMIC_NUMBERS,
                 max_atoms: int = 38) -> tuple[torch.Tensor, torch.Tensor, list[EncodedMolecule]]:
    """SMILES that MoFlow can represent -> dense (atoms, bonds) and their encodings (others are skipped)."""
    encoded = [e for e in (encode_smiles(s, atomic_numbers, max_atoms) for s in smiles)
               if isinstance(e, EncodedMolecule)]
    atoms, bonds = to_dense([e.atom_types for e in encoded], [e.bonds for e in encoded], max_atoms,
                            len(atomic_numbers))
    return atoms, bonds, encoded


def construct_mol(atoms: np.ndarray, bonds: np.ndarray,
                  atomic_numbers: Sequence[int] = ZINC250K_ATOMIC_NUMBERS) -> Chem.RWMol:
    """MoFlow's construct_mol: atoms [N, T] and bonds [4, N, N] (any real values; argmax decides) -> RWMol without
    the virtual atoms. Bonds are added row by row; when a bond makes N, O or S exceed its valence by exactly one,
    that atom gets a +1 charge (MoFlow's only charge repair). The result need not be valid."""
    from momu.generate.moflow.correction import check_valency

    atoms, bonds = np.asarray(atoms), np.asarray(bonds)
    types = np.argmax(atoms, axis=1)
    exists = types != len(atomic_numbers) - 1
    mol = Chem.RWMol()
    for t in types[exists]:
        mol.AddAtom(Chem.Atom(int(atomic_numbers[t])))
    channel = np.argmax(bonds, axis=0)[exists][:, exists]
    order = np.where(channel == NO_BOND, 0, channel + 1)
    for start, end in zip(*np.nonzero(order)):
        if start <= end:
            continue
        mol.AddBond(int(start), int(end), BOND_CHANNELS[order[start, end] - 1])
        ok, problem = check_valency(mol)
        if not ok and problem is not None:
            idx, valence = problem
            z = mol.GetAtomWithIdx(idx).GetAtomicNum()
            if z in (7, 8, 16) and valence - ATOM_VALENCY[z] == 1:
                mol.GetAtomWithIdx(idx).SetFormalCharge(1)
    return mol


# -- ZINC250k ---------------------------------------------------------------------------------------------------

def read_zinc250k(path: str, split: Literal["moflow", "ddvae", "random", "none"] = "moflow",
                  valid_idx_path: Optional[str] = None, max_molecules: Optional[int] = None,
                  max_heldout: Optional[int] = None, heldout_fraction: float = 0.1,
                  seed: int = 0) -> tuple[list[str], list[str]]:
    """(train SMILES, held-out SMILES) from a ZINC250k CSV (columns smiles[, ddvae_split]) or a one-SMILES-per-line
    file. split: moflow = MoFlow's valid_idx_zinc.json (1-based indices into MoFlow's 249,455-row csv; the shared
    copy has one extra row at an unknown position, so a few indices may be off by one); ddvae = the file's
    ddvae_split column (valid + test held out); random = a seeded heldout_fraction; none = nothing held out.
    Caps keep the first rows (file order)."""
    import pandas as pd

    p = Path(path)
    if p.suffix in (".smi", ".smiles", ".txt"):
        smiles = [line.split()[0] for line in p.read_text().splitlines() if line.strip()]
        frame = pd.DataFrame({"smiles": smiles})
    else:
        frame = pd.read_csv(p)
    frame["smiles"] = frame["smiles"].astype(str).str.strip()
    if split == "moflow":
        if not valid_idx_path:
            raise ValueError("data.valid_idx_path: the moflow split needs MoFlow's valid_idx_zinc.json")
        held = {int(i) - 1 for i in json.loads(Path(valid_idx_path).read_text())}
        is_held = np.array([i in held for i in range(len(frame))])
    elif split == "ddvae":
        if "ddvae_split" not in frame.columns:
            raise ValueError(f"data.split ddvae: {path} has no ddvae_split column")
        is_held = (frame["ddvae_split"] != "train").to_numpy()
    elif split == "random":
        rng = np.random.default_rng(seed)
        is_held = np.zeros(len(frame), dtype=bool)
        is_held[rng.permutation(len(frame))[:int(round(heldout_fraction * len(frame)))]] = True
    else:
        is_held = np.zeros(len(frame), dtype=bool)
    train = frame["smiles"][~is_held].tolist()
    heldout = frame["smiles"][is_held].tolist()
    return train[:max_molecules] if max_molecules else train, heldout[:max_heldout] if max_heldout else heldout
