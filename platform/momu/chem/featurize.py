"""SMILES / RDKit Mol -> MoMu graph arrays, exactly as MoMu and pretrain-gnns define them.

Per atom: element index (atomic number - 1, vocabulary 0..118) and chirality tag (0 unspecified, 1 CW, 2 CCW).
Per bond: bond type (0 single, 1 double, 2 triple, 3 aromatic) and *both* second columns: OGB bond stereo
(what MoMu pretraining used) and pretrain-gnns bond direction (what MoleculeNet finetuning used). Edges are
stored in both directions, (i, j) then (j, i) for each bond in RDKit bond order, like pretrain-gnns.

Bad input never raises: featurize_* return a `Rejection` with a machine-readable reason instead, so one
malformed molecule cannot kill a batch of a million.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Iterable, Sequence, Union

import numpy as np
from rdkit import Chem, RDLogger

# RDKit prints every parse failure to stderr; failures are reported as Rejections instead.
RDLogger.DisableLog("rdApp.*")

NUM_ATOM_TYPES = 120  # atomic numbers 1..118 -> 0..117, 118 = OGB "misc", 119 = mask token
MASK_ATOM_INDEX = 119
NUM_CHIRALITY_TAGS = 3  # unspecified, tetrahedral CW, tetrahedral CCW
NUM_BOND_TYPES = 6  # single, double, triple, aromatic, 4 = pretrain-gnns self-loop, 5 = mask
SELF_LOOP_BOND_TYPE_PRETRAIN_GNNS = 4
NUM_BOND_SECOND = 6  # bond stereo has 6 values (OGB order); bond direction uses the first 3
BOND_FEATURES = ("stereo", "direction")  # which second bond column a model consumes

DEFAULT_MAX_ATOMS = 512

# RDKit enum value -> MoMu index. Values outside the tables are handled explicitly below.
_BOND_TYPE_TO_INDEX = {
    int(Chem.BondType.SINGLE): 0,
    int(Chem.BondType.DOUBLE): 1,
    int(Chem.BondType.TRIPLE): 2,
    int(Chem.BondType.AROMATIC): 3,
}
# OGB order: STEREONONE, STEREOZ, STEREOE, STEREOCIS, STEREOTRANS, STEREOANY. Atropisomer tags (newer RDKit)
# have no OGB index; they map to "none" like any stereo the vocabulary cannot express.
_STEREO_TO_INDEX = np.zeros(16, dtype=np.uint8)
for _name, _idx in [("STEREONONE", 0), ("STEREOZ", 1), ("STEREOE", 2), ("STEREOCIS", 3),
                    ("STEREOTRANS", 4), ("STEREOANY", 5)]:
    _STEREO_TO_INDEX[int(getattr(Chem.BondStereo, _name))] = _idx
# pretrain-gnns order: NONE, ENDUPRIGHT, ENDDOWNRIGHT. Wedge/dash directions come only from molfiles and carry
# no double-bond stereo; pretrain-gnns had no index for them, so they map to NONE.
_DIR_TO_INDEX = np.zeros(16, dtype=np.uint8)
_DIR_TO_INDEX[int(Chem.BondDir.ENDUPRIGHT)] = 1
_DIR_TO_INDEX[int(Chem.BondDir.ENDDOWNRIGHT)] = 2
# Chirality beyond tetrahedral CW/CCW (CHI_OTHER, allene, square planar, ...) has no index in MoMu's 3-entry
# embedding (pretrain-gnns would crash on it); it is featurized as unspecified.
_CHIRAL_TO_INDEX = np.zeros(16, dtype=np.uint8)
_CHIRAL_TO_INDEX[int(Chem.ChiralType.CHI_TETRAHEDRAL_CW)] = 1
_CHIRAL_TO_INDEX[int(Chem.ChiralType.CHI_TETRAHEDRAL_CCW)] = 2


class RejectReason:
    """Why a molecule could not be featurized (string constants, stable across versions)."""

    MISSING = "missing"  # None / NaN
    NOT_A_STRING = "not_a_string"
    EMPTY = "empty"
    UNPARSEABLE = "unparseable"
    NO_ATOMS = "no_atoms"
    TOO_MANY_ATOMS = "too_many_atoms"
    UNSUPPORTED_ELEMENT = "unsupported_element"
    UNSUPPORTED_BOND = "unsupported_bond"


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A structured refusal: `reason` is one of RejectReason, `detail` is for humans."""

    reason: str
    detail: str = ""

    def __bool__(self) -> bool:  # lets callers write `if not result: ...`
        return False


@dataclasses.dataclass(frozen=True, eq=False)
class MolGraph:
    """One molecule's graph as compact numpy arrays (the unit everything else converts from)."""

    atom_type: np.ndarray  # uint8 [N]
    chirality: np.ndarray  # uint8 [N]
    edge_index: np.ndarray  # int32 [2, E], both directions
    bond_type: np.ndarray  # uint8 [E]
    bond_stereo: np.ndarray  # uint8 [E]
    bond_dir: np.ndarray  # uint8 [E]

    @property
    def num_nodes(self) -> int:
        return int(self.atom_type.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def node_features(self) -> np.ndarray:
        """[N, 2] int64: (atom type, chirality) — the GIN's input columns."""
        return np.stack([self.atom_type, self.chirality], axis=1).astype(np.int64)

    def edge_features(self, bond_feature: str = "stereo") -> np.ndarray:
        """[E, 2] int64: (bond type, stereo or direction)."""
        return np.stack([self.bond_type, second_bond_column(self, bond_feature)], axis=1).astype(np.int64)

    def to_pyg(self, bond_feature: str = "stereo"):
        """A torch_geometric `Data` with x [N,2], edge_index [2,E], edge_attr [E,2] (all int64)."""
        import torch
        from torch_geometric.data import Data

        return Data(
            x=torch.from_numpy(self.node_features()),
            edge_index=torch.from_numpy(self.edge_index.astype(np.int64)),
            edge_attr=torch.from_numpy(self.edge_features(bond_feature)),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MolGraph):
            return NotImplemented
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))


def second_bond_column(graph: MolGraph, bond_feature: str) -> np.ndarray:
    if bond_feature == "stereo":
        return graph.bond_stereo
    if bond_feature == "direction":
        return graph.bond_dir
    raise ValueError(f"bond_feature must be one of {BOND_FEATURES}, got {bond_feature!r}")


FeaturizeResult = Union[MolGraph, Rejection]


def parse_smiles(smiles: object) -> "Chem.Mol | Rejection":
    """RDKit-parse a SMILES string, or say why not."""
    if smiles is None or (isinstance(smiles, float) and np.isnan(smiles)):
        return Rejection(RejectReason.MISSING, "no SMILES given")
    if not isinstance(smiles, str):
        return Rejection(RejectReason.NOT_A_STRING, f"expected a SMILES string, got {type(smiles).__name__}")
    text = smiles.strip()
    if not text:
        return Rejection(RejectReason.EMPTY, "empty SMILES")
    mol = Chem.MolFromSmiles(text)
    if mol is None:
        return Rejection(RejectReason.UNPARSEABLE, f"RDKit could not parse {text[:80]!r}")
    return mol


def featurize_smiles(smiles: object, max_atoms: int = DEFAULT_MAX_ATOMS) -> FeaturizeResult:
    """SMILES -> MolGraph, or a Rejection (never raises on bad input)."""
    mol = parse_smiles(smiles)
    if isinstance(mol, Rejection):
        return mol
    return featurize_mol(mol, max_atoms=max_atoms)


def featurize_mol(mol: "Chem.Mol | None", max_atoms: int = DEFAULT_MAX_ATOMS) -> FeaturizeResult:
    """RDKit Mol -> MolGraph, or a Rejection."""
    if mol is None:
        return Rejection(RejectReason.MISSING, "no molecule given")
    n = mol.GetNumAtoms()
    if n == 0:
        return Rejection(RejectReason.NO_ATOMS, "molecule has no atoms")
    if n > max_atoms:
        return Rejection(RejectReason.TOO_MANY_ATOMS, f"{n} atoms > max_atoms={max_atoms}")

    atoms = mol.GetAtoms()
    atomic_num = np.fromiter((a.GetAtomicNum() for a in atoms), dtype=np.int16, count=n)
    if atomic_num.min() < 1:  # dummy atoms ('*', R-groups) have atomic number 0
        return Rejection(RejectReason.UNSUPPORTED_ELEMENT, "dummy atom '*' (atomic number 0) has no element index")
    chirality = _CHIRAL_TO_INDEX[np.fromiter((a.GetChiralTag() for a in atoms), dtype=np.int8, count=n)]

    m = mol.GetNumBonds()
    ends = np.empty((m, 2), dtype=np.int32)
    bt = np.empty(m, dtype=np.int16)
    stereo = np.empty(m, dtype=np.int8)
    direction = np.empty(m, dtype=np.int8)
    for k, bond in enumerate(mol.GetBonds()):
        ends[k, 0] = bond.GetBeginAtomIdx()
        ends[k, 1] = bond.GetEndAtomIdx()
        bt[k] = bond.GetBondType()
        stereo[k] = bond.GetStereo()
        direction[k] = bond.GetBondDir()
    bond_type = np.empty(m, dtype=np.uint8)
    for value in np.unique(bt):
        index = _BOND_TYPE_TO_INDEX.get(int(value))
        if index is None:
            name = Chem.BondType.values.get(int(value), value)
            return Rejection(RejectReason.UNSUPPORTED_BOND, f"bond type {name} is not single/double/triple/aromatic")
        bond_type[bt == value] = index

    # (i, j) then (j, i) for each bond, as pretrain-gnns builds edge_index.
    edge_index = np.empty((2, 2 * m), dtype=np.int32)
    edge_index[0, 0::2], edge_index[1, 0::2] = ends[:, 0], ends[:, 1]
    edge_index[0, 1::2], edge_index[1, 1::2] = ends[:, 1], ends[:, 0]
    return MolGraph(
        atom_type=(atomic_num - 1).astype(np.uint8),
        chirality=chirality,
        edge_index=edge_index,
        bond_type=np.repeat(bond_type, 2),
        bond_stereo=np.repeat(_STEREO_TO_INDEX[stereo], 2),
        bond_dir=np.repeat(_DIR_TO_INDEX[direction], 2),
    )


@dataclasses.dataclass
class FeaturizedBatch:
    """Results of featurizing many inputs: graphs for the good ones, rejections with their input positions."""

    graphs: list[MolGraph]
    indices: list[int]  # input position of each graph
    rejected: list[tuple[int, Rejection]]

    @property
    def reject_counts(self) -> Counter:
        return Counter(r.reason for _, r in self.rejected)


def featurize_many(smiles: Iterable[object], max_atoms: int = DEFAULT_MAX_ATOMS) -> FeaturizedBatch:
    """Featurize a sequence of SMILES, splitting successes from rejections (input order kept)."""
    out = FeaturizedBatch([], [], [])
    for i, s in enumerate(smiles):
        result = featurize_smiles(s, max_atoms=max_atoms)
        if isinstance(result, Rejection):
            out.rejected.append((i, result))
        else:
            out.graphs.append(result)
            out.indices.append(i)
    return out


def canonical_smiles(smiles: str) -> str | None:
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def graphs_to_pyg_batch(graphs: Sequence[MolGraph], bond_feature: str = "stereo", pyg: bool = True):
    """Collate MolGraphs into one PyG `Batch` (vectorised; no per-graph Data objects); pyg=False: a
    `momu.chem.columns.GraphBatch` with the same tensors, without importing PyG (inference)."""
    from momu.chem.columns import graphs_to_columns, columns_to_pyg_batch

    return columns_to_pyg_batch(graphs_to_columns(graphs), bond_feature=bond_feature, pyg=pyg)
