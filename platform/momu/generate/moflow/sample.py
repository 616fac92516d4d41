"""Sampling from MoFlow's prior and MoFlow's quality metrics (its check_validity / check_novelty), plus FCD.

- validity_without_correction: decoded graph -> RDKit round trip works and is one fragment;
- validity: after MoFlow's valency correction and keeping the largest fragment;
- uniqueness: distinct canonical SMILES (no stereo) among the corrected valid molecules / valid molecules;
- novelty: distinct valid molecules not in the training set / distinct valid molecules (abs_*: / all samples);
- fcd: Frechet ChemNet Distance between the distinct valid molecules and held-out molecules
  (momu.generate.metrics.fcd_common_pad, policy common-pad).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from rdkit import Chem, RDLogger

from momu.generate.moflow.correction import corrected, valid_without_correction
from momu.generate.moflow.data import construct_mol
from momu.generate.moflow.model import MoFlow

RDLogger.DisableLog("rdApp.*")


@torch.no_grad()
def decode(model: MoFlow, z: torch.Tensor) -> list[Chem.RWMol]:
    """Latents [B, latent] -> RDKit molecules as MoFlow builds them (argmax atoms and bonds, +1 charge repair);
    neither corrected nor checked."""
    bonds, atoms = model.reverse(z)
    atoms, bonds = atoms.float().cpu().numpy(), bonds.float().cpu().numpy()
    return [construct_mol(a, b, model.config.atomic_numbers) for a, b in zip(atoms, bonds)]


@torch.no_grad()
def sample(model: MoFlow, n: int, temperature: float = 0.85, seed: int = 0,
           batch_size: int = 256) -> list[Chem.RWMol]:
    """n molecules decoded from z ~ N(0, (temperature * prior std)^2) (model in eval mode)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = model.ln_var.device
    mols: list[Chem.RWMol] = []
    try:
        for start in range(0, n, batch_size):
            z = model.sample_z(min(batch_size, n - start), temperature, generator=generator, device=device)
            mols.extend(decode(model, z))
    finally:
        model.train(was_training)
    return mols


def canonical_smiles(mol: Optional[Chem.Mol]) -> Optional[str]:
    """Canonical SMILES without stereo (MoFlow compares molecules this way), or None."""
    if mol is None:
        return None
    try:
        return Chem.MolToSmiles(mol, isomericSmiles=False)
    except Exception:  # unsanitisable
        return None


def quality(raw: Sequence[Chem.Mol], train_smiles: Optional[Iterable[str]] = None,
            reference_smiles: Optional[Sequence[str]] = None, fcd: bool = False,
            fcd_device: Optional[str] = None) -> dict:
    """MoFlow's generation metrics for decoded molecules `raw` (see the module doc). train_smiles must be canonical
    SMILES without stereo (as `EncodedMolecule.smiles`); reference_smiles: the FCD reference set."""
    n = len(raw)
    if n == 0:
        raise ValueError("no molecules to score")
    plain = [valid_without_correction(Chem.RWMol(m)) for m in raw]
    fixed = [corrected(Chem.RWMol(m)) for m in raw]
    valid = [s for s in (canonical_smiles(m) for m in fixed) if s]
    unique = sorted(set(valid))
    result = {
        "n": n,
        "validity_without_correction": sum(m is not None for m in plain) / n,
        "validity": len(valid) / n,
        "uniqueness": len(unique) / len(valid) if valid else 0.0,
        "abs_uniqueness": len(unique) / n,
        "n_valid": len(valid), "n_unique": len(unique),
    }
    if train_smiles is not None:
        train = train_smiles if isinstance(train_smiles, (set, frozenset)) else set(train_smiles)
        novel = [s for s in unique if s not in train]
        result.update(novelty=len(novel) / len(unique) if unique else 0.0, abs_novelty=len(novel) / n)
    if fcd and reference_smiles:
        from momu.generate.metrics import fcd_common_pad

        # fcd_common_pad scores two sets given as equal-length lists; empty strings pad the shorter one and are
        # dropped as invalid there.
        refs, gens = list(reference_smiles), list(unique)
        width = max(len(refs), len(gens))
        try:
            scored = fcd_common_pad(refs + [""] * (width - len(refs)), gens + [""] * (width - len(gens)),
                                    device=fcd_device)
        except ValueError as err:  # fewer than 2 valid molecules in a set
            result.update(fcd=None, fcd_error=str(err))
        else:
            result.update({k: scored[k] for k in ("fcd", "fcd_policy", "fcd_n_reference", "fcd_n_prediction")})
        finally:  # fcd_common_pad turns RDKit's log back on; decoded molecules would flood it
            RDLogger.DisableLog("rdApp.*")
    return result


def sample_smiles(raw: Sequence[Chem.Mol]) -> list[Optional[str]]:
    """The corrected SMILES of each decoded molecule (None when even correction fails)."""
    return [canonical_smiles(corrected(Chem.RWMol(m))) for m in raw]
