"""Fitness of a candidate molecule for a text prompt: MoMu cosine plus chemistry priors (QED, synthetic
accessibility, heavy-atom window, allowed elements), scored in batches through the GIN. Pure torch/RDKit."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Optional, Sequence

from rdkit import Chem, DataStructs, RDConfig, RDLogger
from rdkit.Chem import QED, rdMolDescriptors
from rdkit.Chem import rdFingerprintGenerator

from momu.chem.featurize import MolGraph, featurize_mol, featurize_smiles
from momu.generate.config import GenerateConfig

RDLogger.DisableLog("rdApp.*")


def _load_sascorer():
    """RDKit's Contrib SA_Score (Ertl & Schuffenhauer 2009), shipped with RDKit wheels but not importable as a
    package; None when absent."""
    directory = os.path.join(RDConfig.RDContribDir, "SA_Score")
    if not os.path.isfile(os.path.join(directory, "sascorer.py")):
        return None
    if directory not in sys.path:
        sys.path.append(directory)
    try:
        import sascorer  # type: ignore[import-not-found]
    except Exception:  # a broken Contrib install: use the proxy
        return None
    return sascorer


_SASCORER = _load_sascorer()
SA_METHOD = "rdkit-contrib-sascorer" if _SASCORER is not None else "complexity-proxy"


def sa_score(mol: Chem.Mol) -> float:
    """Synthetic accessibility, 1 (easy) .. 10 (hard). Without RDKit's Contrib sascorer: a proxy made of
    sascorer's complexity terms only (size, stereo centres, spiro/bridgehead atoms, macrocycles; no fragment
    frequencies), clipped to the same 1..10 range."""
    if _SASCORER is not None:
        return float(_SASCORER.calculateScore(mol))
    return sa_proxy(mol)


def sa_proxy(mol: Chem.Mol) -> float:
    n = mol.GetNumAtoms()
    stereo = len(Chem.FindMolChiralCenters(mol, includeUnassigned=True))
    spiro = rdMolDescriptors.CalcNumSpiroAtoms(mol)
    bridge = rdMolDescriptors.CalcNumBridgeheadAtoms(mol)
    macro = sum(1 for ring in mol.GetRingInfo().AtomRings() if len(ring) > 8)
    complexity = (n ** 1.005 - n) + math.log10(stereo + 1) + math.log10(spiro + 1) + math.log10(bridge + 1) \
        + (math.log10(2) if macro else 0.0)
    return float(min(10.0, max(1.0, 1.0 + 2.0 * complexity)))


_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def morgan_fp(mol: Chem.Mol):
    return _MORGAN.GetFingerprint(mol)


def tanimoto(fp_a, fp_b) -> float:
    return float(DataStructs.TanimotoSimilarity(fp_a, fp_b))


@dataclasses.dataclass
class Scored:
    """One candidate's score and its parts (cosine/qed/sa None when the molecule could not be scored)."""

    smiles: str
    total: float
    cosine: Optional[float] = None
    qed: Optional[float] = None
    sa: Optional[float] = None
    heavy_atoms: Optional[int] = None
    reason: Optional[str] = None  # why total is -inf

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Fitness:
    """Scores SMILES against one text embedding. Every molecule actually embedded by the GIN counts as one
    evaluation (`evaluations`); results are cached by SMILES, so a repeat costs nothing. `seconds` is the time
    spent scoring new molecules (the GA's deadline uses the rate it gives)."""

    def __init__(self, model, text_embedding, config: GenerateConfig):
        self.model = model
        self.text = text_embedding.reshape(-1).float()
        self.config = config
        self.allowed = set(config.allowed_elements)
        self.cache: dict[str, Scored] = {}
        self.evaluations = 0
        self.seconds = 0.0

    def seconds_per_evaluation(self) -> float:
        """Mean scoring time of one new molecule so far (0.0 before the first)."""
        return self.seconds / self.evaluations if self.evaluations else 0.0

    def prior(self, mol: Chem.Mol) -> tuple[float, float, float, int]:
        """(prior term of the total, QED, SA, heavy atoms) for a sanitised molecule."""
        w, c = self.config.weights, self.config
        qed = float(QED.qed(mol))
        sa = sa_score(mol)
        heavy = mol.GetNumHeavyAtoms()
        outside = max(0, c.min_heavy_atoms - heavy) + max(0, heavy - c.max_heavy_atoms)
        return w.qed * qed - w.sa * (sa - 1.0) / 9.0 - w.size * outside, qed, sa, heavy

    def score(self, smiles: Sequence[str]) -> list[Scored]:
        """Scores in input order; new molecules are embedded in one batched pass (sorted, so a molecule's
        embedding does not depend on the order candidates arrive in)."""
        started = time.perf_counter()
        new = sorted({s for s in smiles if s not in self.cache})
        graphs: list[MolGraph] = []
        pending: list[tuple[str, float, float, float, int]] = []
        for s in new:
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
            if mol is None:
                self.cache[s] = Scored(s, -math.inf, reason="unparseable SMILES")
                continue
            bad = sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() > 1} - self.allowed)
            if bad:
                self.cache[s] = Scored(s, -math.inf, reason=f"disallowed element {', '.join(bad)}")
                continue
            graph = featurize_mol(mol)
            if not isinstance(graph, MolGraph):
                self.cache[s] = Scored(s, -math.inf, reason=f"not featurizable: {graph.detail}")
                continue
            graphs.append(graph)
            pending.append((s, *self.prior(mol)))
        if graphs:
            emb = self.model.embed_graphs(graphs, batch_size=self.config.batch_size,
                                          smiles=[p[0] for p in pending] if self.model.uses_fingerprints else None)
            cosines = (emb.float() @ self.text.to(emb.device)).tolist()
            self.evaluations += len(graphs)
            for (s, prior, qed, sa, heavy), cos in zip(pending, cosines):
                total = self.config.weights.cosine * cos + prior
                self.cache[s] = Scored(s, total, cosine=cos, qed=qed, sa=sa, heavy_atoms=heavy)
        if new:
            self.seconds += time.perf_counter() - started
        return [self.cache[s] for s in smiles]


def edit_input_problem(smiles: object, allowed_elements: Sequence[str]) -> Optional[str]:
    """Why the editing mode cannot start from `smiles` (None: it can): not a SMILES string, unparseable, no
    atoms, an element outside `allowed_elements`, or not featurizable. The checks of `Fitness.score`, said first."""
    if not isinstance(smiles, str) or not smiles.strip():
        return "no SMILES given"
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return f"{smiles!r} is not a valid SMILES (RDKit cannot parse it)"
    if mol.GetNumAtoms() == 0:
        return f"{smiles!r} has no atoms"
    bad = sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() > 1} - set(allowed_elements))
    if bad:
        return f"{smiles!r} contains {', '.join(bad)}, not among the allowed elements ({', '.join(allowed_elements)})"
    graph = featurize_mol(mol)
    if not isinstance(graph, MolGraph):
        return f"{smiles!r} cannot be featurized ({graph.reason}: {graph.detail})"
    return None


def text_embedding(model, text: str):
    """The prompt's normalised MoMu text embedding [proj_dim]."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text: the prompt is empty")
    return model.embed_texts([text.strip()])[0]


def embed_smiles(model, smiles: Sequence[str], batch_size: int = 256):
    """Graph embeddings [k, proj_dim] of the SMILES the GIN can read, and their indices into `smiles` (an empty,
    unparseable or unfeaturizable SMILES is left out)."""
    import torch

    kept, graphs = [], []
    for i, s in enumerate(smiles):
        graph = featurize_smiles(s) if isinstance(s, str) and s.strip() else None
        if isinstance(graph, MolGraph):
            kept.append(i)
            graphs.append(graph)
    if not graphs:
        return torch.zeros(0, 0), kept
    with torch.no_grad():
        emb = model.embed_graphs(graphs, batch_size=batch_size,
                                 smiles=[smiles[i] for i in kept] if model.uses_fingerprints else None)
    return emb.float(), kept
