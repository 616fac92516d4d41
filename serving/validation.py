"""Input checks against the deployment's limits (pure Python + RDKit: no Ray, no web framework).

Every check raises `InputError(field, reason)`; the ingress turns it into a 422 JSON error naming the field.
"""

from dataclasses import dataclass
from typing import Sequence

from momu.chem.featurize import MolGraph, Rejection, featurize_mol, parse_smiles
from momu.serve.config import ServeLimits
from rdkit import Chem


class InputError(ValueError):
    """A request value the server refuses: which field, and why."""

    def __init__(self, field: str, reason: str, status: int = 422):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


def field_name(loc: Sequence) -> str:
    """A pydantic/FastAPI error location -> 'pairs[2].text' (the leading 'body' dropped)."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def check_k(k: int, limits: ServeLimits, field: str = "k") -> int:
    if k < 1 or k > limits.max_k:
        raise InputError(field, f"must be between 1 and {limits.max_k} (limits.max_k), got {k}")
    return k


def check_text(text: str, field: str, limits: ServeLimits) -> str:
    if len(text) > limits.max_text_chars:
        raise InputError(field, f"is {len(text)} characters long; the limit is {limits.max_text_chars} "
                                "(limits.max_text_chars)")
    stripped = text.strip()
    if not stripped:
        raise InputError(field, "must not be empty")
    return stripped


def check_items(items: Sequence, field: str, limits: ServeLimits) -> None:
    if len(items) == 0:
        raise InputError(field, "must not be empty")
    if len(items) > limits.max_items:
        raise InputError(field, f"has {len(items)} items; the limit is {limits.max_items} per request "
                                "(limits.max_items)")


@dataclass(frozen=True)
class CheckedMolecule:
    graph: MolGraph
    canonical_smiles: str


def check_smiles(smiles: str, field: str, limits: ServeLimits) -> CheckedMolecule:
    """Parse and featurize a SMILES within the limits, or raise InputError with RDKit's / the featurizer's
    reason (unparseable, too_many_atoms, unsupported_element, ...)."""
    if len(smiles) > limits.max_smiles_chars:
        raise InputError(field, f"is {len(smiles)} characters long; the limit is {limits.max_smiles_chars} "
                                "(limits.max_smiles_chars)")
    mol = parse_smiles(smiles)
    if isinstance(mol, Rejection):
        raise InputError(field, f"invalid SMILES ({mol.reason}): {mol.detail}")
    graph = featurize_mol(mol, max_atoms=limits.max_atoms)
    if isinstance(graph, Rejection):
        detail = graph.detail
        if graph.reason == "too_many_atoms":
            detail += " (limits.max_atoms)"
        raise InputError(field, f"molecule not accepted ({graph.reason}): {detail}")
    return CheckedMolecule(graph, Chem.MolToSmiles(mol))
