import math

import numpy as np
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Batch

from momu.chem.columns import (GRAPH_SCHEMA, columns_to_graphs, columns_to_pyg_batch, graphs_to_columns,
                               graphs_to_table)
from momu.chem.featurize import (MolGraph, RejectReason, Rejection, featurize_many, featurize_mol, featurize_smiles,
                                 graphs_to_pyg_batch)

from conftest import REPO, chebi_slice_smiles


def feat(smiles, **kw) -> MolGraph:
    g = featurize_smiles(smiles, **kw)
    assert isinstance(g, MolGraph), g
    return g


def test_ethanol_by_hand():
    g = feat("CCO")
    assert g.atom_type.tolist() == [5, 5, 7]  # C = 6 - 1, O = 8 - 1
    assert g.chirality.tolist() == [0, 0, 0]
    assert g.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]  # (i,j),(j,i) per bond, bond order
    assert g.bond_type.tolist() == [0, 0, 0, 0]
    assert g.bond_stereo.tolist() == [0] * 4 and g.bond_dir.tolist() == [0] * 4


def test_bond_types_aromatic_double_triple():
    benzene = feat("c1ccccc1")
    assert benzene.num_nodes == 6 and benzene.num_edges == 12
    assert set(benzene.bond_type.tolist()) == {3}
    assert feat("CC(=O)O").bond_type.tolist() == [0, 0, 1, 1, 0, 0]
    assert feat("CC#N").bond_type.tolist() == [0, 0, 2, 2]
    # Kekulé input is aromatised by RDKit sanitisation, as in MoMu/pretrain-gnns.
    assert set(feat("C1=CC=CC=C1").bond_type.tolist()) == {3}


def test_chirality_tags():
    # RDKit: '@@' -> CHI_TETRAHEDRAL_CW (index 1), '@' -> CCW (index 2)
    assert feat("C[C@@H](C(=O)O)N").chirality.tolist() == [0, 1, 0, 0, 0, 0]
    assert feat("C[C@H](C(=O)O)N").chirality.tolist() == [0, 2, 0, 0, 0, 0]


def test_double_bond_stereo_and_direction():
    trans, cis = feat("C/C=C/C"), feat("C/C=C\\C")
    assert trans.bond_stereo.tolist() == [0, 0, 2, 2, 0, 0]  # STEREOE -> 2 (OGB order)
    assert cis.bond_stereo.tolist() == [0, 0, 1, 1, 0, 0]  # STEREOZ -> 1
    assert trans.bond_dir.tolist() == [1, 1, 0, 0, 1, 1]  # ENDUPRIGHT -> 1
    assert cis.bond_dir.tolist() == [1, 1, 0, 0, 2, 2]  # ENDDOWNRIGHT -> 2
    assert trans.edge_features("stereo")[:, 1].tolist() == trans.bond_stereo.tolist()
    assert trans.edge_features("direction")[:, 1].tolist() == trans.bond_dir.tolist()
    with pytest.raises(ValueError, match="bond_feature"):
        trans.edge_features("charge")


def test_charged_atoms_and_salts():
    quat = feat("C[N+](C)(C)C")
    assert quat.num_nodes == 5 and quat.atom_type[1] == 6  # charge is not a MoMu feature
    salt = feat("[Na+].[Cl-]")
    assert salt.atom_type.tolist() == [10, 16] and salt.num_edges == 0
    assert salt.edge_index.shape == (2, 0)
    mixture = feat("CCO.O")
    assert mixture.num_nodes == 4 and mixture.num_edges == 4


def test_explicit_hydrogens():
    assert feat("[H]C([H])([H])[H]").num_nodes == 1  # RDKit removes ordinary explicit H, as MoMu's parsing did
    h2 = feat("[H][H]")
    assert h2.atom_type.tolist() == [0, 0] and h2.num_edges == 2
    assert feat("[2H]C").atom_type.tolist() == [0, 5]  # isotope-labelled H stays an atom


@pytest.mark.parametrize("bad, reason", [
    (None, RejectReason.MISSING),
    (float("nan"), RejectReason.MISSING),
    ("", RejectReason.EMPTY),
    ("   ", RejectReason.EMPTY),
    (42, RejectReason.NOT_A_STRING),
    ("C1CC", RejectReason.UNPARSEABLE),
    ("not a molecule", RejectReason.UNPARSEABLE),
    ("C(C)(C)(C)(C)C", RejectReason.UNPARSEABLE),  # pentavalent carbon fails sanitisation
    ("*CC", RejectReason.UNSUPPORTED_ELEMENT),
    ("C[NH2]->[Pt]", RejectReason.UNSUPPORTED_BOND),
])
def test_bad_input_returns_reason(bad, reason):
    result = featurize_smiles(bad)
    assert isinstance(result, Rejection)
    assert result.reason == reason and result.detail
    assert not result


def test_atom_limit_is_configurable():
    assert featurize_smiles("CCCC", max_atoms=3).reason == RejectReason.TOO_MANY_ATOMS
    assert isinstance(featurize_smiles("CCC", max_atoms=3), MolGraph)


def test_featurize_mol_and_none():
    mol = Chem.MolFromMolBlock(Chem.MolToMolBlock(Chem.MolFromSmiles("c1ccncc1")))
    assert featurize_mol(mol) == feat("c1ccncc1")
    assert featurize_mol(None).reason == RejectReason.MISSING


def test_featurize_many_keeps_positions_and_counts():
    out = featurize_many(["CCO", None, "C1CC", "c1ccccc1", ""])
    assert out.indices == [0, 3]
    assert [i for i, _ in out.rejected] == [1, 2, 4]
    assert out.reject_counts == {"missing": 1, "unparseable": 1, "empty": 1}


# -- equivalence with the original featurizers, on real ChEBI-20 molecules -----------------------------------------

PRETRAIN_GNNS_CHIRALITY = [Chem.ChiralType.CHI_UNSPECIFIED, Chem.ChiralType.CHI_TETRAHEDRAL_CW,
                           Chem.ChiralType.CHI_TETRAHEDRAL_CCW, Chem.ChiralType.CHI_OTHER]
PRETRAIN_GNNS_BONDS = [Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC]
PRETRAIN_GNNS_DIRS = [Chem.BondDir.NONE, Chem.BondDir.ENDUPRIGHT, Chem.BondDir.ENDDOWNRIGHT]
OGB_STEREO = ["STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"]


def reference_featurize(mol):
    """pretrain-gnns' mol_to_graph_data_obj_simple plus OGB's bond stereo column, written as they wrote them."""
    x = [[a.GetAtomicNum() - 1, PRETRAIN_GNNS_CHIRALITY.index(a.GetChiralTag())] for a in mol.GetAtoms()]
    edges, types, dirs, stereo = [], [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        t = PRETRAIN_GNNS_BONDS.index(b.GetBondType())
        d = PRETRAIN_GNNS_DIRS.index(b.GetBondDir()) if b.GetBondDir() in PRETRAIN_GNNS_DIRS else 0
        s = OGB_STEREO.index(str(b.GetStereo()))
        edges += [(i, j), (j, i)]
        types += [t, t]
        dirs += [d, d]
        stereo += [s, s]
    return np.array(x), np.array(edges).T.reshape(2, -1), types, dirs, stereo


def test_matches_pretrain_gnns_and_ogb_on_chebi():
    smiles = chebi_slice_smiles()[:400]
    checked = 0
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        g = featurize_mol(mol, max_atoms=10_000)
        if any(a.GetChiralTag() == Chem.ChiralType.CHI_OTHER for a in mol.GetAtoms()):
            continue  # no index in MoMu's 3-entry chirality embedding; we map it to 0 (tested separately)
        x, ei, types, dirs, stereo = reference_featurize(mol)
        assert g.node_features().tolist() == x.tolist(), s
        assert g.edge_index.tolist() == ei.tolist(), s
        assert g.bond_type.tolist() == types and g.bond_dir.tolist() == dirs and g.bond_stereo.tolist() == stereo, s
        checked += 1
    assert checked > 380


def test_stereo_present_in_real_data():
    graphs = [featurize_smiles(s) for s in chebi_slice_smiles()[:400]]
    graphs = [g for g in graphs if isinstance(g, MolGraph)]
    assert any(g.chirality.any() for g in graphs) and any(g.bond_stereo.any() for g in graphs)


# -- Arrow columns and collation --------------------------------------------------------------------------------

def test_columns_roundtrip_and_collate_equals_pyg():
    smiles = ["CCO", "c1ccccc1O", "[Na+].[Cl-]", "C/C=C/C", "C"] + chebi_slice_smiles()[:20]
    graphs = [feat(s) for s in smiles]
    table = graphs_to_table(graphs)
    assert table.schema == GRAPH_SCHEMA and table.num_rows == len(graphs)
    assert columns_to_graphs(table) == graphs
    for bond_feature in ("stereo", "direction"):
        ours = columns_to_pyg_batch(table, bond_feature)
        ref = Batch.from_data_list([g.to_pyg(bond_feature) for g in graphs])
        for key in ("x", "edge_index", "edge_attr", "batch", "ptr"):
            assert torch.equal(getattr(ours, key), getattr(ref, key)), key
        assert ours.num_graphs == len(graphs)


def test_collate_from_sliced_arrow_and_numpy_batches():
    graphs = [feat(s) for s in chebi_slice_smiles()[:12]]
    table = graphs_to_table(graphs)
    sliced = table.slice(4, 5)  # Arrow slices keep offsets into the parent buffers
    assert columns_to_graphs(sliced) == graphs[4:9]
    numpy_batch = {name: (table.column(name).to_numpy() if name == "num_nodes" else
                          np.array([np.asarray(v) for v in table.column(name).to_pylist()] + [None], dtype=object)[:-1])
                   for name in table.column_names}  # Ray Data's numpy format: object arrays of per-row arrays
    assert torch.equal(columns_to_pyg_batch(numpy_batch).edge_index, graphs_to_pyg_batch(graphs).edge_index)


def test_empty_and_edgeless_batches():
    table = graphs_to_table([feat("[Na+].[Cl-]"), feat("C")])
    batch = columns_to_pyg_batch(table)
    assert batch.edge_index.shape == (2, 0) and batch.num_graphs == 2 and batch.x.shape == (3, 2)
    assert graphs_to_table([]).num_rows == 0
    assert set(graphs_to_columns([feat("C")])) == set(GRAPH_SCHEMA.names)
