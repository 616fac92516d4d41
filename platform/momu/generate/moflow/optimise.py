"""MoMu's zero-shot text -> molecule generation: optimise MoFlow latents against MoMu (Su et al. 2022, released
MoleculeGeneration/Graph_generate.py; see docs/MOMU_REFERENCE.md).

Per prompt, `seeds` latents z ~ N(0, (0.85 sigma)^2) are decoded by MoFlow's differentiable reverse pass, embedded by
MoMu's GIN + projection head, and updated by Adam (lr 0.1, StepLR 400 / 0.1) on loss = -cos(g, t) / 0.1 for 500
steps; each final z is decoded with MoFlow's valency correction. The seeds run as one batch: the loss is a sum of
per-seed terms, both models are in eval mode and Adam is elementwise, so this equals independent runs.

The GIN runs densely on the decoded matrices: node i's embedding is sum_t p_it * E_atom[Z_t - 1] + E_chirality[0]
(p: softmax over the 9 real atom types of the decoded atom row), and a GIN layer aggregates
x_i + loop + sum_j w_ij x_j + sum_{c<3} sum_j P_c[i,j] E_bond[c] + (sum_j w_ij) E_second[0], with w_ij = sum_c P_c[i,j],
which is MoMu's sparse GINConv when P is one-hot. Atoms whose argmax is the virtual type are absent.
- momu-exact: P is the decoded one-hot (kekulized) bond skeleton, as the released code rebuilt the graph with RDKit
  from the argmax: no aromatic bonds reach the GIN, and only the atom part of z receives gradient;
- soft-bond: P are MoFlow's bond probabilities (softmax of the reversed bond tensor) for single/double/triple;
  the no-bond channel only lowers w_ij (it is never fed to MoMu's bond row 3, which means aromatic).
Our reading of the unpublished patched reverse: atom probabilities are a softmax over the real types of the
decoded atom matrix; the released script's exact atom-feature mapping is not public.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Optional

import torch
from torch.nn import functional as F

from momu.generate.moflow.config import MoFlowOptimiseConfig
from momu.generate.moflow.model import MoFlow


# -- MoMu's GIN on dense, possibly soft graphs ------------------------------------------------------------------

def dense_graph_embedding(momu, atom_probs: torch.Tensor, node_mask: torch.Tensor, bond_probs: torch.Tensor,
                          atomic_numbers: list[int]) -> torch.Tensor:
    """MoMu's normalised graph embedding [B, proj] of dense graphs: atom_probs [B, N, T-1] over the real atom types,
    node_mask [B, N] (bool), bond_probs [B, 3, N, N] (single, double, triple; symmetric). Mean pool over present
    atoms (an empty graph gives NaN)."""
    gin = momu.graph_encoder.gin
    mask = node_mask.to(atom_probs.dtype)
    rows = torch.tensor([z - 1 for z in atomic_numbers[:-1]], device=atom_probs.device)
    h = atom_probs @ gin.x_embedding1.weight[rows] + gin.x_embedding2.weight[0]
    pair = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(mask.shape[1], device=mask.device))
    p = bond_probs * pair[:, None]
    weight = p.sum(1)  # w_ij: probability that i and j are bonded
    degree = weight.sum(2, keepdim=True)  # [B, N, 1]
    layers = []
    for i, (conv, bn) in enumerate(zip(gin.gnns, gin.batch_norms)):
        e1, e2 = conv.edge_embedding1.weight, conv.edge_embedding2.weight
        loop = e1[conv.self_loop_bond_type] + e2[0]
        bond_terms = torch.einsum("bcij,cd->bid", p, e1[:3])
        aggregated = h + loop + weight @ h + bond_terms + degree * e2[0]
        out = conv.mlp(aggregated)
        out = bn(out.reshape(-1, out.shape[-1])).reshape(out.shape)
        if i < gin.num_layers - 1:
            out = torch.relu(out)
        h = F.dropout(out, gin.dropout, training=gin.training)
        layers.append(h)
    if gin.jk == "last":
        h = layers[-1]
    elif gin.jk == "concat":
        h = torch.cat(layers, -1)
    else:
        stacked = torch.stack(layers)
        h = stacked.sum(0) if gin.jk == "sum" else stacked.max(0).values
    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return F.normalize(momu.graph_proj(pooled), dim=-1)


def decoded_graph(flow: MoFlow, z: torch.Tensor, mode: str, bonds: Optional[torch.Tensor] = None):
    """MoFlow's differentiable reverse -> (atom_probs [B, N, T-1], node_mask [B, N], bond_probs [B, 3, N, N]).
    `bonds`: a fixed decoded one-hot bond tensor (momu-exact, where it cannot change)."""
    probs = None
    if bonds is None:
        bonds, atoms, probs = flow.reverse(z, return_bond_probs=True)
    else:
        _, atoms = flow.reverse(z, bonds=bonds)
    node_mask = atoms.argmax(-1) != flow.config.num_atom_types - 1
    atom_probs = atoms[..., :-1].softmax(-1)
    bond_probs = bonds[:, :3] if mode == "momu-exact" else probs[:, :3]
    return atom_probs, node_mask, bond_probs


# -- the optimisation -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SeedResult:
    seed: int
    smiles: Optional[str]  # corrected (or plain) decoded molecule; None if invalid
    valid_without_correction: bool
    cosine: Optional[float]  # MoMu cosine of `smiles` featurized as usual (RDKit, aromatic): the reported number
    optimised_cosine: float  # the last cosine the GIN saw during optimisation (decoded graph, this mode)
    steps: int
    stopped_by: str  # "steps", "nan", "empty graph"


def initial_latents(flow: MoFlow, config: MoFlowOptimiseConfig, seeds: list[int]) -> torch.Tensor:
    """One z per seed, each from its own generator keyed by (config.seed, seed): batching changes no seed's start."""
    import numpy as np

    return torch.cat([flow.sample_z(1, config.temperature, generator=torch.Generator().manual_seed(
        int(np.random.SeedSequence([config.seed, s]).generate_state(1)[0]))) for s in seeds])


def optimise_latents(flow: MoFlow, momu, text_embedding: torch.Tensor, config: MoFlowOptimiseConfig,
                     seeds: Optional[list[int]] = None, history: Optional[list] = None):
    """Optimise one latent per seed (batched). Returns (final z [S, latent], per-seed steps taken, stop reasons,
    cosines at the final z). `history`, if given, receives the mean cosine of the active seeds at each step."""
    seeds = list(range(config.seeds)) if seeds is None else seeds
    with _frozen(flow, momu):
        return _optimise(flow, momu, text_embedding, config, initial_latents(flow, config, seeds), history)


@contextlib.contextmanager
def _frozen(*modules):
    """Eval mode and no parameter gradients for the duration; restored afterwards (the models may be shared)."""
    saved = [(m, m.training, [(p, p.requires_grad) for p in m.parameters()]) for m in modules]
    for m in modules:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    try:
        yield
    finally:
        for m, training, flags in saved:
            m.train(training)
            for p, flag in flags:
                p.requires_grad_(flag)


def _optimise(flow, momu, text_embedding, config, start: torch.Tensor, history, anchor: Optional[torch.Tensor] = None,
              weights: Optional[torch.Tensor] = None):
    """Adam on each row of `start`: loss = -(cos - w * d(z, anchor)) / loss_temperature, d = mean squared distance
    per dimension in units of the prior variance (editing's penalty; none without an anchor)."""
    device = flow.ln_var.device
    text = F.normalize(text_embedding.reshape(1, -1).float().to(device), dim=-1)
    z = start.detach().clone().to(device).requires_grad_(True)
    if anchor is not None:
        anchor, weights = anchor.detach().to(device), weights.to(device, z.dtype)
        prior_var = float(torch.exp(flow.ln_var.detach()).item())
    fixed_bonds = None
    if config.mode == "momu-exact":  # the bond part gets no gradient: decode its skeleton once
        with torch.no_grad():
            fixed_bonds = flow.reverse(z)[0]
    optimizer = torch.optim.Adam([z], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    n = len(start)
    active = torch.ones(n, dtype=torch.bool, device=device)
    steps = torch.zeros(n, dtype=torch.long)
    reasons = ["steps"] * n
    last_cos = torch.full((n,), float("nan"))
    kept = z.detach().clone()
    for step in range(config.steps + 1):  # the last pass only measures the final z
        atom_probs, node_mask, bond_probs = decoded_graph(flow, z, config.mode, fixed_bonds)
        empty = node_mask.sum(1) == 0
        g = dense_graph_embedding(momu, atom_probs, node_mask.masked_fill(empty[:, None], True), bond_probs,
                                  flow.config.atomic_numbers)
        cos = (g @ text.T).squeeze(1)
        bad = (~torch.isfinite(cos)) | empty
        for i in torch.nonzero(bad & active).flatten().tolist():  # stop this seed, keep its last good z
            active[i] = False
            reasons[i] = "empty graph" if empty[i] else "nan"
        if not active.any():
            break
        on = active.cpu()
        last_cos[on] = cos.detach().cpu()[on]
        if history is not None:
            history.append(float(cos.detach()[active].mean()))
        if step == config.steps:
            break
        objective = cos
        if anchor is not None:
            objective = cos - weights * ((z - anchor) ** 2).mean(1) / prior_var
        loss = -(objective[active] / config.loss_temperature).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        kept[active] = z.detach()[active]
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # stopped seeds stay where they stopped (Adam's momentum would move them)
            z[~active] = kept[~active]
        steps[on] += 1
    return z.detach(), steps.tolist(), reasons, last_cos.tolist()


def generate_from_text(flow: MoFlow, momu, text: str, config: MoFlowOptimiseConfig,
                       seeds: Optional[list[int]] = None) -> list[SeedResult]:
    """The whole procedure for one prompt: optimise, decode each seed's final z (with MoFlow's correction unless
    config.correct is off) and score the decoded molecule with MoMu as an ordinary molecule."""
    seeds = list(range(config.seeds)) if seeds is None else seeds
    text_emb = momu.embed_texts([text])[0]
    z, steps, reasons, last_cos = optimise_latents(flow, momu, text_emb, config, seeds)
    return [SeedResult(seed, smiles, plain_valid, score, cos if math.isfinite(cos) else float("nan"), n_steps, reason)
            for seed, (smiles, plain_valid, score), n_steps, reason, cos
            in zip(seeds, decode_scored(flow, momu, z, text_emb, config.correct), steps, reasons, last_cos)]


def decode_scored(flow: MoFlow, momu, z: torch.Tensor, text_embedding: Optional[torch.Tensor], correct: bool = True
                  ) -> list[tuple[Optional[str], bool, Optional[float]]]:
    """Per latent: (SMILES decoded with MoFlow's correction, or without it when `correct` is off; None if invalid,
    whether it was valid without correction, MoMu cosine of that molecule featurized as usual with the text)."""
    from rdkit import Chem

    from momu.chem.featurize import MolGraph, featurize_smiles
    from momu.generate.moflow.correction import corrected, valid_without_correction
    from momu.generate.moflow.sample import canonical_smiles, decode

    out = []
    for mol in decode(flow, z):
        plain = valid_without_correction(Chem.RWMol(mol))
        smiles = canonical_smiles(corrected(Chem.RWMol(mol)) if correct else plain)
        score = None
        graph = featurize_smiles(smiles) if smiles and text_embedding is not None else None
        if isinstance(graph, MolGraph):
            score = float(momu.embed_graphs([graph])[0].float() @ text_embedding.float().to(momu.device))
        out.append((smiles, plain is not None, score))
    return out


def summarise(results: list[SeedResult], train_smiles: Optional[set] = None) -> dict:
    """One prompt's outcome over its seeds: validity (as decoded: with correction unless it was off), validity
    without correction, uniqueness, novelty (with train_smiles), final MoMu cosine (mean, best) and stop reasons."""
    n = len(results)
    valid = [r for r in results if r.smiles]
    unique = {r.smiles for r in valid}
    cosines = [r.cosine for r in valid if r.cosine is not None]
    out = {"seeds": n, "validity": len(valid) / n,
           "validity_without_correction": sum(r.valid_without_correction for r in results) / n,
           "uniqueness": len(unique) / len(valid) if valid else 0.0,
           "mean_cosine": sum(cosines) / len(cosines) if cosines else None,
           "best_cosine": max(cosines) if cosines else None,
           "best_smiles": max(valid, key=lambda r: r.cosine if r.cosine is not None else -2).smiles if valid else None,
           "stopped_by": {k: sum(r.stopped_by == k for r in results) for k in {r.stopped_by for r in results}}}
    if train_smiles is not None:
        out["novelty"] = len(unique - set(train_smiles)) / len(unique) if unique else 0.0
    return out


def generate_ranked(flow: MoFlow, momu, text: str, config) -> dict:
    """`momu generate --method moflow`: the procedure for one prompt, its distinct valid molecules ranked by MoMu
    cosine (the n best), in the result layout of the GA's `generate` (total = cosine: no priors are optimised),
    plus the prompt's MoFlow summary (validity with and without correction, uniqueness). `config` is a
    GenerateConfig; its moflow.optimise section sets the optimisation, its seed the latents."""
    import time

    from rdkit import Chem
    from rdkit.Chem import QED

    from momu.generate.fitness import SA_METHOD, sa_score

    started = time.perf_counter()
    opt = config.moflow.optimise.model_copy(update={"seed": config.seed})
    results = generate_from_text(flow, momu, text, opt)
    best: dict[str, SeedResult] = {}
    for r in results:
        if r.smiles and r.cosine is not None and (r.smiles not in best or r.cosine > best[r.smiles].cosine):
            best[r.smiles] = r
    ranked = sorted(best.values(), key=lambda r: (-r.cosine, r.smiles))[:config.n]
    rows = []
    for i, r in enumerate(ranked, start=1):
        mol = Chem.MolFromSmiles(r.smiles)
        rows.append({"rank": i, "smiles": r.smiles, "total": r.cosine, "cosine": r.cosine, "qed": float(QED.qed(mol)),
                     "sa": sa_score(mol), "heavy_atoms": mol.GetNumHeavyAtoms(), "from_pool": False,
                     "seed": r.seed})
    return {"mode": "generate", "method": "moflow", "text": text, "model": config.model,
            "moflow_model": config.moflow.model, "results": rows, "evaluations": opt.seeds * opt.steps,
            "generations": opt.steps, "stopped_by": ",".join(sorted({r.stopped_by for r in results})),
            "seconds": round(time.perf_counter() - started, 3), "seed": config.seed,
            "weights": {"cosine": 1.0, "qed": 0.0, "sa": 0.0, "size": 0.0}, "sa_method": SA_METHOD,
            "heavy_atom_window": [config.min_heavy_atoms, config.max_heavy_atoms],
            "allowed_elements": config.allowed_elements, "optimise": opt.model_dump(),
            "summary": summarise(results)}


# -- editing ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def encode_latent(flow: MoFlow, smiles: str) -> torch.Tensor:
    """A molecule's MoFlow latent [1, latent]: the flow's forward pass on its kekulized one-hot graph without
    dequantisation noise (MoFlow's own encoding for optimisation); reversing it gives the molecule back."""
    from momu.generate.moflow.data import encode_smiles, to_dense

    c = flow.config
    encoded = encode_smiles(smiles, c.atomic_numbers, c.max_atoms)
    if isinstance(encoded, str):
        raise ValueError(f"MoFlow cannot represent {smiles!r} ({encoded.replace('_', ' ')}; at most "
                         f"{c.max_atoms} atoms of its {c.num_atom_types - 1} elements)")
    atoms, bonds = to_dense([encoded.atom_types], [encoded.bonds], c.max_atoms, c.num_atom_types)
    device, was_training = flow.ln_var.device, flow.training
    flow.eval()
    try:
        z, _, _ = flow(atoms.to(device), bonds.to(device), dequantize=False)
    finally:
        flow.train(was_training)
    return z


def _edit_rows(flow, momu, smiles: str, z: torch.Tensor, text_emb, correct: bool, lambdas: list[float],
               extra: list[dict]) -> tuple[str, list[dict]]:
    """Decode one latent per lambda into the GA's edit-result layout (Tanimoto to the input, is_input); the input
    is compared without stereo, as MoFlow sees molecules."""
    from rdkit import Chem
    from rdkit.Chem import QED

    from momu.generate.fitness import morgan_fp, sa_score, tanimoto

    source = Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=False)
    reference = morgan_fp(Chem.MolFromSmiles(source))
    rows = []
    decoded = decode_scored(flow, momu, z, text_emb, correct)
    for lam, (out, plain_valid, cosine), facts in zip(lambdas, decoded, extra):
        mol = Chem.MolFromSmiles(out) if out else None
        row = {"lambda": lam, "smiles": out, "total": cosine, "cosine": cosine, "valid_without_correction": plain_valid,
               "tanimoto": tanimoto(reference, morgan_fp(mol)) if mol is not None else None,
               "is_input": out == source, "from_pool": False}
        if mol is not None:
            row.update(qed=float(QED.qed(mol)), sa=sa_score(mol), heavy_atoms=mol.GetNumHeavyAtoms())
        rows.append({**row, **facts})
    return source, rows


def edit_ranked(flow: MoFlow, momu, text: str, smiles: str, config) -> dict:
    """`momu generate --method moflow --edit SMILES`: MoFlow latent editing. The input's latent z0 starts one
    latent per lambda of `config.edit_lambdas`, each optimised (batched; `config.moflow.optimise`: steps, lr, mode)
    for cos(MoMu(decoded z), text) - lambda * d(z, z0), d = mean squared distance per dimension in prior-variance
    units (MoleculeSTM's latent editing keeps z near z0 the same way; lambda plays the GA's Tanimoto weight's role:
    cos and lambda * d share one scale). One decoded candidate per lambda, in the GA's edit-result layout."""
    import time

    started = time.perf_counter()
    opt = config.moflow.optimise
    z0 = encode_latent(flow, smiles)
    lambdas = list(config.edit_lambdas)
    text_emb = momu.embed_texts([text])[0]
    start = z0.repeat(len(lambdas), 1)
    with _frozen(flow, momu):
        z, steps, reasons, _ = _optimise(flow, momu, text_emb, opt, start, None, anchor=start,
                                         weights=torch.tensor(lambdas))
    source, rows = _edit_rows(flow, momu, smiles, z, text_emb, opt.correct, lambdas,
                              [{"steps": s, "stopped_by": r} for s, r in zip(steps, reasons)])
    return {"mode": "edit", "method": "moflow", "text": text, "input": source, "model": config.model,
            "moflow_model": config.moflow.model, "results": rows, "evaluations": len(lambdas) * opt.steps,
            "generations": opt.steps, "stopped_by": ",".join(sorted(set(reasons))),
            "seconds": round(time.perf_counter() - started, 3), "seed": config.seed,
            "optimise": opt.model_dump(), "edit_lambdas": lambdas}


def perturb_latent(flow: MoFlow, smiles: str, scales: list[float], seed: int, temperature: float = 0.85,
                   correct: bool = True) -> list[Optional[str]]:
    """Benchmark A's MoFlow control: z0 + scale * temperature * prior std * N(0, I), one draw per scale, decoded
    (with MoFlow's correction): what moving in latent space does without reading any text."""
    z0 = encode_latent(flow, smiles)
    noise = torch.randn(len(scales), z0.shape[1], generator=torch.Generator().manual_seed(seed)).to(z0.device)
    z = z0 + torch.tensor(scales, dtype=z0.dtype, device=z0.device)[:, None] * temperature * flow.prior_std() * noise
    return [s for s, _, _ in decode_scored(flow, None, z, None, correct)]
