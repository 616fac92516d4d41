"""MoFlow's validity correction (its `correct_mol` + `valid_mol_can_with_seg`) and the uncorrected check.

Correction: while some atom exceeds its allowed valence, take that atom's bond of highest order and lower it by
one (a single bond is removed); then keep the largest connected fragment (by SMILES length, as MoFlow).
Without correction a molecule is valid when RDKit round-trips it and it is one connected fragment.
"""

from __future__ import annotations

from typing import Optional

from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")

_ORDER_TO_TYPE = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def check_valency(mol: Chem.Mol) -> tuple[bool, Optional[tuple[int, int]]]:
    """(True, None) when no atom exceeds its valence, else (False, (atom index, its explicit valence)).
    MoFlow parses both numbers from RDKit's error text; the exception's atom index is used here instead."""
    try:
        Chem.SanitizeMol(mol, sanitizeOps=Chem.SanitizeFlags.SANITIZE_PROPERTIES)
        return True, None
    except Chem.AtomValenceException as err:
        idx = err.GetAtomIdx() if hasattr(err, "GetAtomIdx") else _atom_from_message(str(err))
        atom = mol.GetAtomWithIdx(idx)
        valence = int(round(sum(b.GetBondTypeAsDouble() for b in atom.GetBonds()))) + atom.GetNumExplicitHs()
        return False, (idx, valence)
    except Chem.MolSanitizeException:  # not a valence problem: nothing the correction can act on
        return False, None


def _atom_from_message(message: str) -> int:
    # "Explicit valence for atom # 3 N, 4, is greater than permitted"
    import re

    return int(re.findall(r"\d+", message[message.find("#"):])[0])


def correct_mol(mol: Chem.Mol) -> Chem.RWMol:
    """Lower the highest-order bond of an over-valent atom until every valence is allowed (MoFlow's correct_mol)."""
    mol = Chem.RWMol(mol)
    while True:
        ok, problem = check_valency(mol)
        if ok:
            return mol
        if problem is None:
            return mol
        idx, _ = problem
        bonds = [(int(b.GetBondTypeAsDouble()), b.GetBeginAtomIdx(), b.GetEndAtomIdx())
                 for b in mol.GetAtomWithIdx(idx).GetBonds()]
        if not bonds:  # an over-valent atom without bonds (a charge problem): nothing to lower
            return mol
        bonds.sort(key=lambda b: b[0], reverse=True)  # stable: ties keep RDKit's bond order, as MoFlow
        order, start, end = bonds[0]
        mol.RemoveBond(start, end)
        if order - 1 >= 1:
            mol.AddBond(start, end, _ORDER_TO_TYPE[order - 1])


def largest_fragment(mol: Optional[Chem.Mol]) -> Optional[Chem.Mol]:
    """MoFlow's valid_mol_can_with_seg: RDKit round trip, then the fragment with the longest SMILES."""
    if mol is None:
        return None
    smiles = Chem.MolToSmiles(mol, isomericSmiles=True)
    if "." in smiles:
        smiles = max(smiles.split("."), key=len)  # max keeps the first of equal lengths, as MoFlow's stable sort
    return Chem.MolFromSmiles(smiles)


def valid_without_correction(mol: Optional[Chem.Mol]) -> Optional[Chem.Mol]:
    """MoFlow's valid_mol: the molecule after an RDKit round trip, or None if it fails or is disconnected."""
    if mol is None:
        return None
    try:
        parsed = Chem.MolFromSmiles(Chem.MolToSmiles(mol, isomericSmiles=True))
    except Exception:  # an unsanitisable molecule can fail already in MolToSmiles
        return None
    if parsed is None or "." in Chem.MolToSmiles(parsed, isomericSmiles=True):
        return None
    return parsed


def corrected(mol: Chem.Mol, largest_connected_component: bool = True) -> Optional[Chem.Mol]:
    """correct_mol then (by default) the largest fragment: MoFlow's check_validity with correct_validity."""
    fixed = correct_mol(mol)
    if largest_connected_component:
        return largest_fragment(fixed)
    return Chem.MolFromSmiles(Chem.MolToSmiles(fixed, isomericSmiles=True))
