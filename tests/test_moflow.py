"""MoFlow in torch: invertibility, log-det against a numerical Jacobian, the ZINC250k encoding round trip and
MoFlow's validity correction."""

import pytest
import torch
from conftest import shared_path
from rdkit import Chem

from momu.generate.moflow.config import MoFlowConfig
from momu.generate.moflow.correction import check_valency, correct_mol, corrected, valid_without_correction
from momu.generate.moflow.data import construct_mol, encode_dense, encode_smiles, read_zinc250k, to_dense
from momu.generate.moflow.model import MoFlow, rescale_adj

SMILES = ["CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1", "C[C@@H]1CC(Nc2cncc(-c3nncn3C)c2)C[C@@H](C)C1",
          "N#Cc1ccc(-c2ccc(O[C@@H](C(=O)N3CCCC3)c3ccccc3)cc2)cc1", "CCO", "O=C(O)c1ccccc1Br", "CSc1ncc(Cl)s1"]


def tiny_config(**over) -> MoFlowConfig:
    base = dict(squeeze_fold=2, bond_flows=3, bond_hidden=[16, 16], atom_flows=5, atom_gnn_hidden=[16],
                atom_linear_hidden=[16, 8])
    base.update(over)
    return MoFlowConfig(**base)


def initialised(config: MoFlowConfig, atoms, bonds, seed: int = 0) -> MoFlow:
    """A model whose ActNorms were initialised on a training batch (then in eval mode)."""
    torch.manual_seed(seed)
    model = MoFlow(config)
    model.train()
    model(atoms, bonds)
    return model.eval()


def canonical(mol) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(Chem.MolToSmiles(mol)))


@pytest.mark.parametrize("mixing", ["swap", "lu", "plain"])
def test_forward_then_reverse_returns_the_input(mixing):
    config = tiny_config(bond_mixing=mixing)
    atoms, bonds, _ = encode_dense(SMILES)
    model = initialised(config, atoms, bonds)
    with torch.no_grad():
        # real molecules: the whole model, bonds decoded by argmax, atoms decoded given them
        z, _, _ = model(atoms, bonds)
        assert z.shape == (len(SMILES), config.latent_size) and config.latent_size == 6156
        dec_bonds, dec_atoms = model.reverse(z)
        assert torch.equal(dec_bonds, bonds)
        assert torch.allclose(dec_atoms, atoms, atol=1e-4)
        # random real-valued inputs through each flow (what dequantised training data looks like)
        x_bonds = bonds + 0.6 * torch.rand_like(bonds)
        h, _ = model.bond_flow[0](x_bonds)
        assert torch.allclose(model.bond_flow[0].reverse(h), x_bonds, atol=1e-4)
        x_atoms = torch.randn(4, 38, 10)
        adj = rescale_adj(bonds[:4])
        h, _ = model.atom_flow(adj, x_atoms)
        assert torch.allclose(model.atom_flow.reverse(adj, h), x_atoms, atol=1e-4)


def test_molecules_decode_to_themselves_and_sampling_shapes():
    config = tiny_config()
    atoms, bonds, encoded = encode_dense(SMILES)
    model = initialised(config, atoms, bonds)
    with torch.no_grad():
        dec_bonds, dec_atoms = model.reverse(model(atoms, bonds)[0])
        for i, e in enumerate(encoded):
            assert canonical(construct_mol(dec_atoms[i].numpy(), dec_bonds[i].numpy())) == canonical(
                Chem.MolFromSmiles(e.smiles))
        z = model.sample_z(3, temperature=0.85, generator=torch.Generator().manual_seed(0))
        assert z.shape == (3, 6156) and model.reverse(z)[1].shape == (3, 38, 10)


@pytest.mark.parametrize("mixing", ["lu", "plain", "swap"])
def test_log_det_matches_numerical_jacobian(mixing):
    """On a tiny molecule space (4 atoms, 3 types) the flow's log-det equals log|det J| of the map in float64."""
    config = MoFlowConfig(max_atoms=4, atomic_numbers=[6, 8, 0], squeeze_fold=2, bond_flows=2, bond_hidden=[8],
                          bond_mixing=mixing, atom_flows=3, atom_gnn_hidden=[8], atom_linear_hidden=[8])
    torch.manual_seed(1)
    atoms = torch.nn.functional.one_hot(torch.randint(0, 3, (6, 4)), 3).double()
    bonds = torch.nn.functional.one_hot(torch.randint(0, 4, (6, 4, 4)), 4).permute(0, 3, 1, 2).double()
    model = MoFlow(config).double()
    model.train()
    model(atoms, bonds)  # ActNorm initialisation
    model.eval()
    with torch.no_grad():  # non-trivial coupling networks
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x_a = atoms[:1] + 0.3 * torch.rand(1, 4, 3, dtype=torch.float64)
    x_b = bonds[:1] + 0.3 * torch.rand(1, 4, 4, 4, dtype=torch.float64)
    adj = rescale_adj(bonds[:1])
    _, logdet_a = model.atom_flow(adj, x_a)
    jac = torch.autograd.functional.jacobian(lambda v: model.atom_flow(adj, v.view(1, 4, 3))[0].flatten(),
                                             x_a.flatten())
    assert logdet_a.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-6)
    _, logdet_b = model.bond_flow[0](x_b)
    jac = torch.autograd.functional.jacobian(lambda v: model.bond_flow[0](v.view(1, 4, 4, 4))[0].flatten(),
                                             x_b.flatten())
    assert logdet_b.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-6)
    # MoFlow's released atom log-det also counts the rows a coupling leaves unchanged: larger in magnitude
    moflow = MoFlow(config.model_copy(update={"atom_logdet": "moflow"})).double()
    moflow.load_state_dict(model.state_dict())
    moflow.eval()
    assert moflow.atom_flow(adj, x_a)[1].item() < logdet_a.item() - 1e-3


def test_nll_is_finite_and_trains():
    atoms, bonds, _ = encode_dense(SMILES)
    model = initialised(tiny_config(), atoms, bonds)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        z, la, lb = model(atoms, bonds)
        nll_a, nll_b = model.nll(z, la, lb)
        loss = nll_a + nll_b
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert model.ln_var.grad is not None  # the prior variance is learned


def test_encoding_follows_moflow():
    e = encode_smiles("c1ccccc1O")
    assert e.smiles == "Oc1ccccc1" and e.atom_types.tolist() == [2, 0, 0, 0, 0, 0, 0]
    assert sorted(e.bonds[:, 2].tolist()) == [0, 0, 0, 0, 1, 1, 1]  # kekulized: 4 single, 3 double
    atoms, bonds = to_dense([e.atom_types], [e.bonds])
    assert atoms[0, 7:, 9].eq(1).all() and bonds[0].sum(0).eq(1).all()  # virtual padding; one channel per pair
    assert bonds[0, 3].diagonal().eq(1).all()
    assert encode_smiles("[Na+].[Cl-]") == "unsupported_element"
    assert encode_smiles("C" * 39) == "too_many_atoms"
    assert encode_smiles("not a smiles") == "unparseable"


def test_correction_makes_an_overvalent_molecule_valid():
    mol = Chem.RWMol()
    for z in (6, 6, 6, 7):
        mol.AddAtom(Chem.Atom(z))
    mol.AddBond(0, 1, Chem.BondType.DOUBLE)
    mol.AddBond(1, 2, Chem.BondType.TRIPLE)
    mol.AddBond(0, 3, Chem.BondType.TRIPLE)  # C#C=C#N: two carbons with valence 5
    assert not check_valency(Chem.RWMol(mol))[0]
    assert valid_without_correction(mol) is None
    fixed = correct_mol(mol)
    assert check_valency(fixed)[0] and Chem.MolToSmiles(fixed) == "C=C=C=N"  # MoFlow's own example
    # the largest fragment is kept
    two = Chem.RWMol(Chem.MolFromSmiles("CCCC.C"))
    assert Chem.MolToSmiles(corrected(two)) == "CCCC" and valid_without_correction(two) is None


def test_construct_mol_charges_overvalent_nitrogen_like_moflow():
    # N with four single bonds: MoFlow's construct_mol makes it [N+]
    atoms, bonds, _ = encode_dense(["C[N+](C)(C)C"])
    mol = construct_mol(atoms[0].numpy(), bonds[0].numpy())
    assert Chem.MolToSmiles(mol) == "C[N+](C)(C)C"


def test_zinc250k_encode_decode_round_trips():
    path = shared_path("zinc250k", "zinc250k.csv.gz")
    train, heldout = read_zinc250k(str(path), split="moflow",
                                   valid_idx_path=str(shared_path("zinc250k", "valid_idx_zinc.json")),
                                   max_molecules=300, max_heldout=10)
    assert len(train) == 300 and len(heldout) == 10
    atoms, bonds, encoded = encode_dense(train)
    assert len(encoded) == 300  # every ZINC250k molecule fits MoFlow's representation
    neutral = same = 0
    for i, e in enumerate(encoded):
        if any(a.GetFormalCharge() for a in Chem.MolFromSmiles(e.smiles).GetAtoms()):
            continue  # MoFlow drops formal charges
        neutral += 1
        same += canonical(construct_mol(atoms[i].numpy(), bonds[i].numpy())) == canonical(
            Chem.MolFromSmiles(e.smiles))
    assert neutral > 150 and same == neutral


def test_quality_counts_validity_with_and_without_correction_uniqueness_and_novelty():
    from momu.generate.moflow.sample import quality

    def rw(smiles):
        return Chem.RWMol(Chem.MolFromSmiles(smiles))

    over = Chem.RWMol()
    for z in (6, 6, 6, 7):
        over.AddAtom(Chem.Atom(z))
    over.AddBond(0, 1, Chem.BondType.DOUBLE)
    over.AddBond(1, 2, Chem.BondType.TRIPLE)
    over.AddBond(0, 3, Chem.BondType.TRIPLE)
    raw = [rw("CCO"), rw("CCO"), rw("c1ccccc1"), rw("CCCC.C"), over]
    q = quality(raw, train_smiles={"CCO"})
    assert q["validity_without_correction"] == pytest.approx(3 / 5)  # the fragments and C#C=C#N fail
    assert q["validity"] == 1.0 and q["n_valid"] == 5
    assert q["n_unique"] == 4 and q["uniqueness"] == pytest.approx(4 / 5)  # CCO, c1ccccc1, CCCC, C=C=C=N
    assert q["novelty"] == pytest.approx(3 / 4) and q["abs_novelty"] == pytest.approx(3 / 5)


def test_sample_decodes_prior_draws_and_fcd_is_reported():
    from momu.generate.moflow.sample import quality, sample

    atoms, bonds, encoded = encode_dense(SMILES)
    model = initialised(tiny_config(), atoms, bonds)
    raw = sample(model, 12, temperature=0.85, seed=3)
    again = sample(model, 12, temperature=0.85, seed=3)
    assert len(raw) == 12 and [Chem.MolToSmiles(m) for m in raw] == [Chem.MolToSmiles(m) for m in again]
    q = quality(raw, {e.smiles for e in encoded}, reference_smiles=SMILES * 2, fcd=True)
    assert q["validity"] > 0.5 and (q["fcd"] is None or q["fcd"] >= 0)


# -- latent optimisation against MoMu ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def momu_cpu():
    """The shipped MoMu (a trained GIN: a random one barely tells atom types apart)."""
    from momu.models.momu import MoMu

    return MoMu.from_pretrained("momu-cpu").eval()


def test_dense_gin_equals_momu_on_decoded_molecules(momu_cpu):
    from momu.chem.featurize import featurize_mol
    from momu.generate.moflow.optimise import dense_graph_embedding

    atoms, bonds, _ = encode_dense(SMILES)
    node_mask = atoms.argmax(-1) != 9
    with torch.no_grad():
        dense = dense_graph_embedding(momu_cpu, atoms[..., :-1], node_mask, bonds[:, :3],
                                      MoFlowConfig().atomic_numbers)
    # MoMu's own featurization of the molecule rebuilt from the matrices (kekulized, as the released code did)
    graphs = [featurize_mol(construct_mol(a.numpy(), b.numpy())) for a, b in zip(atoms, bonds)]
    sparse = momu_cpu.embed_graphs(graphs)
    assert torch.allclose(dense, sparse, atol=1e-5)


@pytest.mark.parametrize("mode", ["momu-exact", "soft-bond"])
def test_latent_optimisation_raises_the_cosine_and_batches_seeds(momu_cpu, mode):
    from momu.generate.moflow.config import MoFlowOptimiseConfig
    from momu.generate.moflow.optimise import generate_from_text, initial_latents, optimise_latents, summarise

    atoms, bonds, _ = encode_dense(SMILES)
    flow = initialised(tiny_config(), atoms, bonds)
    text = momu_cpu.embed_texts(["The molecule is an aromatic carboxylic acid."])[0]
    config = MoFlowOptimiseConfig(mode=mode, seeds=3, steps=25, lr=0.1, lr_step=20)
    history = []
    z, steps, reasons, cos = optimise_latents(flow, momu_cpu, text, config, history=history)
    assert history[-1] > history[0] + 0.02, history  # the mean cosine of the seeds improves
    assert steps == [25, 25, 25] and reasons == ["steps"] * 3
    start = initial_latents(flow, config, [0, 1, 2])
    a = flow.config.atom_size
    assert not torch.allclose(z[:, :a], start[:, :a])
    # momu-exact: only the atom part of z receives gradient; soft-bond moves the bond part too
    assert torch.equal(z[:, a:], start[:, a:]) == (mode == "momu-exact")
    # seeds are batched: seed 1 alone ends where it ends in the batch. Gradients agree to float rounding (~1%
    # relative on the smallest ones), but in soft-bond mode many bond coordinates have gradients near Adam's eps
    # (1e-8), where lr * g / (|g| + eps) turns that rounding into ~1e-3 differences of z.
    short = config.model_copy(update={"steps": 5})
    batched, _, _, _ = optimise_latents(flow, momu_cpu, text, short)
    alone, _, _, _ = optimise_latents(flow, momu_cpu, text, short, seeds=[1])
    diff = (alone[0] - batched[1]).abs()
    assert diff.max() < 1e-4 if mode == "momu-exact" else diff.mean() < 1e-3, (diff.max(), diff.mean())
    assert flow.training is False and all(p.requires_grad for p in momu_cpu.parameters())  # restored
    results = generate_from_text(flow, momu_cpu, "The molecule is an aromatic carboxylic acid.",
                                 config.model_copy(update={"steps": 3}))
    assert [r.seed for r in results] == [0, 1, 2] and all(r.smiles for r in results)  # corrected: all valid
    assert all(r.cosine is not None and -1 <= r.cosine <= 1 for r in results)
    summary = summarise(results, train_smiles={"CCO"})
    assert summary["seeds"] == 3 and summary["validity"] == 1.0 and summary["stopped_by"] == {"steps": 3}
    assert summary["best_cosine"] == max(r.cosine for r in results) and 0 < summary["novelty"] <= 1


def test_generate_method_moflow_ranks_distinct_molecules_and_edits(tmp_path, capsys):
    import json

    from momu.cli import main
    from momu.generate.moflow.model import save_moflow

    atoms, bonds, _ = encode_dense(SMILES)
    model_dir = save_moflow(initialised(tiny_config(), atoms, bonds), tmp_path / "moflow")
    flags = ["generate", "--text", "The molecule is an aromatic carboxylic acid.", "--method", "moflow",
             "--moflow.model", str(model_dir), "--moflow.optimise.seeds", "4", "--moflow.optimise.steps", "2",
             "--n", "3"]
    assert main([*flags, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "moflow" and result["summary"]["seeds"] == 4 and 1 <= len(result["results"]) <= 3
    cosines = [r["cosine"] for r in result["results"]]
    assert cosines == sorted(cosines, reverse=True) and len({r["smiles"] for r in result["results"]}) == len(cosines)
    assert all(Chem.MolFromSmiles(r["smiles"]) is not None for r in result["results"])
    assert main(flags) == 0
    assert "MoFlow latent optimisation (momu-exact): 4 seeds x 2 steps" in capsys.readouterr().out
    # editing: one row per lambda, from the input's latent
    assert main([*flags, "--edit", "OC(=O)c1ccccc1", "--edit_lambdas", "[0.0, 1000.0]", "--json"]) == 0
    edited = json.loads(capsys.readouterr().out)
    assert edited["mode"] == "edit" and [r["lambda"] for r in edited["results"]] == [0.0, 1000.0]
    assert edited["results"][1]["is_input"] and edited["input"] == "O=C(O)c1ccccc1"
    assert main([*flags, "--edit", "OC(=O)c1ccccc1"]) == 0
    assert "MoFlow latent editing (momu-exact)" in capsys.readouterr().out
    # one clear line each: an input MoFlow cannot represent, a missing MoFlow model, no model given
    assert main([*flags, "--edit", "C[Si](C)(C)C"]) == 2
    assert main([*flags[:6], str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--edit: MoFlow cannot represent" in err[0] and "moflow.model" in err[1] and len(err) == 2
    assert main(["generate", "--text", "x", "--method", "moflow"]) == 2
    assert "moflow.model" in capsys.readouterr().err


def test_moflow_editing_starts_at_the_input_and_the_penalty_holds_it(momu_cpu):
    from momu.generate.moflow.config import MoFlowOptimiseConfig
    from momu.generate.moflow.optimise import _frozen, _optimise, encode_latent, perturb_latent
    from momu.generate.moflow.sample import decode

    atoms, bonds, _ = encode_dense(SMILES)
    flow = initialised(tiny_config(), atoms, bonds)
    source = "OC(=O)c1ccccc1Br"
    z0 = encode_latent(flow, source)
    assert canonical(decode(flow, z0)[0]) == canonical(Chem.MolFromSmiles(source))  # the encoding inverts
    text = momu_cpu.embed_texts(["The molecule is an aromatic alcohol."])[0]
    config = MoFlowOptimiseConfig(mode="soft-bond", steps=20, lr=0.1, lr_step=15)
    start = z0.repeat(2, 1)
    with _frozen(flow, momu_cpu):
        z, steps, _, _ = _optimise(flow, momu_cpu, text, config, start, None, anchor=start,
                                   weights=torch.tensor([0.0, 1e6]))
    moved = ((z - start) ** 2).mean(1)
    # the penalty holds lambda 1e6 near z0 (Adam's steps keep it oscillating at ~lr^2), lambda 0 moves freely
    assert steps == [20, 20] and moved[0] > 100 * moved[1]
    with pytest.raises(ValueError, match="cannot represent"):
        encode_latent(flow, "C[Si](C)(C)C")  # Si is not one of MoFlow's ZINC elements
    same, *others = perturb_latent(flow, source, [0.0, 0.5, 1.0], seed=3)
    assert same == Chem.MolToSmiles(Chem.MolFromSmiles(source), isomericSmiles=False)
    assert all(Chem.MolFromSmiles(s) is not None for s in others)  # corrected decoding: valid
    assert perturb_latent(flow, source, [0.0, 0.5, 1.0], seed=3) == [same, *others]  # seeded


def test_editing_benchmark_runs_the_moflow_rows(momu_cpu, tmp_path):
    from conftest import SAMPLE

    from momu.generate.editing import EditingBenchmarkConfig, run_editing_benchmark
    from momu.generate.moflow.model import save_moflow

    atoms, bonds, _ = encode_dense(SMILES)
    model_dir = save_moflow(initialised(tiny_config(), atoms, bonds), tmp_path / "moflow")
    data = tmp_path / "editing"
    data.mkdir()
    (data / "tasks.tsv").write_text((SAMPLE / "moleculestm_editing" / "tasks.tsv").read_text())
    (data / "input_smiles.txt").write_text("OC(=O)c1ccccc1Br\nC[Si](C)(C)C\n")  # the second: not MoFlow's
    with pytest.raises(ValueError, match="need moflow_model"):
        EditingBenchmarkConfig(methods=["moflow"])
    config = EditingBenchmarkConfig(data_dir=str(data), tasks=[101], methods=["moflow", "moflow-random"],
                                    moflow_model=str(model_dir), moflow_steps=3, correlation_sample=0)
    rows = []
    result = run_editing_benchmark(config, model=momu_cpu, progress=False, on_row=rows.append)
    assert result["accounting_ok"] and len(rows) == 4
    by = {(r["input_index"], r["method"]): r for r in rows}
    assert len(by[(0, "moflow")]["candidates"]) == 5 and len(by[(0, "moflow-random")]["candidates"]) == 5
    assert "cannot represent" in by[(1, "moflow")]["failed"] and "cannot represent" in by[(1, "moflow-random")]["failed"]
    assert result["tasks"][0]["moflow"]["failed"] == 1


def test_moflow_modules_import_without_ray():
    import subprocess
    import sys

    from test_layout import BLOCK_RAY

    modules = [f"momu.generate.moflow.{m}" for m in ("config", "data", "model", "correction", "sample", "optimise")]
    out = subprocess.run([sys.executable, "-c", BLOCK_RAY, *modules], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]


def test_step_budget_stops_by_steps_or_by_time_agreed_across_ranks():
    from momu.generate.moflow.train import StepBudget

    now = [0.0]
    by_steps = StepBudget(max_steps=3, max_seconds=None, clock=lambda: now[0])
    assert [by_steps.exhausted(s) for s in (0, 2, 3)] == [False, False, True] and not by_steps.out_of_time
    asked = []

    def other_rank_late(flag):  # another rank's clock has passed the limit before this one's
        asked.append(flag)
        return flag or now[0] >= 9.0

    by_time = StepBudget(max_steps=None, max_seconds=10.0, clock=lambda: now[0], any_rank=other_rank_late)
    assert not by_time.exhausted(1)
    now[0] = 9.5
    assert by_time.exhausted(2) and by_time.out_of_time and asked == [False, False]
    now[0] = 10.0
    assert StepBudget(None, 10.0, clock=lambda: now[0]).exhausted(0) is False  # the clock starts at creation
