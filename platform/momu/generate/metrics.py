"""Text -> molecule generation metrics: MolT5's recipe (Edwards et al. 2022, blender-nlp/MolT5
`evaluation/mol_translation_metrics.py`, `fingerprint_metrics.py`, `fcd_metric.py`) plus FCD with one fixed
padding policy.

Every metric compares row i's predicted SMILES with row i's ground-truth SMILES:

- ``validity``: fraction of predictions RDKit parses into a molecule with at least one atom;
- ``bleu``: nltk ``corpus_bleu`` over SMILES *characters* (references ``[[list(gt)]]``, hypotheses
  ``list(out)``, default uniform 4-gram weights, no smoothing), over all rows;
- ``exact_match``: fraction of all rows whose prediction has the ground truth's InChI (an unparseable
  prediction is no match);
- ``levenshtein``: mean edit distance between the raw strings (``Levenshtein.distance``), over all rows,
  invalid predictions included, as MolT5 does;
- ``maccs_fts`` / ``rdk_fts`` / ``morgan_fts``: mean Tanimoto similarity of MACCS keys, RDKit path fingerprints
  (``Chem.RDKFingerprint`` defaults) and unhashed Morgan *count* fingerprints of radius 2 (what MolT5's
  ``AllChem.GetMorganFingerprint(m, 2)`` returns; here through ``rdFingerprintGenerator``, which gives
  identical values and is not deprecated), over the rows where both molecules parse (``n_fingerprint_pairs``);
- ``fcd``: Frechet ChemNet Distance between the canonical ground-truth set and the canonical valid-prediction set
  (see :func:`fcd_common_pad` for the padding policy).

One deliberate difference from MolT5's scripts: there, an empty output string counts as valid (RDKit parses ""
into a molecule with no atoms) and scores 0 on every fingerprint; here it is invalid. MolT5's released
prediction files contain no empty output, so their scores are unchanged.

Golden values (MolT5-base caption2smiles on the ChEBI-20 test split, RDKit 2026.09.1, nltk 3.10): BLEU 0.783,
exact 0.0818, Levenshtein 24.85, MACCS 0.788, RDK 0.660, Morgan 0.602, validity 0.786 (tests/
test_generation_metrics.py), equal to MolT5's scripts run on the same RDKit. Residual differences from other
recomputations (BLEU 0.78, exact 0.082, Levenshtein 24.8-25.2, MACCS 0.788, RDK 0.660-0.662, Morgan 0.602,
validity 0.786-0.787):
- Levenshtein 25.19 is what one gets when the references carry ChEBI-20's doubled backslashes (``\\\\`` in
  ChEBI-20's own files) instead of the prediction file's single ones (measured: 24.846 -> 25.188). The
  quote handling of the reader does not matter for these files (csv QUOTE_NONE, quote-aware csv and pandas all
  give 24.846), nor does it come from dropping invalid rows (that gives 17.04).
- RDK 0.662 and validity 0.787 (2,597 instead of 2,595 valid outputs) are not reproduced on this RDKit; they
  most likely come from an older RDKit release (path-fingerprint bit assignment and the SMILES parser's
  valence/ring checks changed between releases). Not verified: only one RDKit is installed here.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Optional, Sequence

import numpy as np

# Padding policy of fcd_common_pad, recorded in every result so that FCD numbers stay comparable.
FCD_POLICY = "common-pad"
# fcd's own default pad length (GuacaMol's convention); the common pad never goes below it.
FCD_MIN_PAD = 350


def _check_pairs(references: Sequence[str], predictions: Sequence[str]) -> None:
    if len(references) != len(predictions):
        raise ValueError(f"references and predictions differ in length ({len(references)} vs {len(predictions)})")
    if not references:
        raise ValueError("no (reference, prediction) pairs to score")
    for name, values in (("reference", references), ("prediction", predictions)):
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise ValueError(f"{name} {i} is {type(value).__name__}, expected a SMILES string")


@contextmanager
def _rdkit_quiet():
    """Invalid generations are expected: one RDKit log line each would flood the output."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def _parse(smiles: str):
    """RDKit molecule, or None when the SMILES does not parse or holds no atom."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def _inchi(mol) -> Optional[str]:
    from rdkit import Chem

    try:
        inchi = Chem.MolToInchi(mol)
    except Exception:  # InChI generation failures surface as exceptions in some RDKit builds
        return None
    return inchi or None


def molecule_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict:
    """MolT5's string and fingerprint metrics for paired (ground truth, prediction) SMILES (see module doc)."""
    from Levenshtein import distance as levenshtein
    from nltk.translate.bleu_score import corpus_bleu
    from rdkit import DataStructs
    from rdkit.Chem import MACCSkeys, RDKFingerprint, rdFingerprintGenerator

    _check_pairs(references, predictions)
    with _rdkit_quiet():
        morgan = rdFingerprintGenerator.GetMorganGenerator(radius=2)
        n_valid = n_exact = 0
        maccs, rdk, morgan_sims = [], [], []
        for gt, out in zip(references, predictions):
            out_mol = _parse(out)
            if out_mol is None:
                continue
            n_valid += 1
            gt_mol = _parse(gt)
            if gt_mol is None:  # an unusable reference: the row counts for validity only
                continue
            gt_inchi = _inchi(gt_mol)
            if gt_inchi is not None and gt_inchi == _inchi(out_mol):
                n_exact += 1
            maccs.append(DataStructs.TanimotoSimilarity(MACCSkeys.GenMACCSKeys(gt_mol), MACCSkeys.GenMACCSKeys(out_mol)))
            rdk.append(DataStructs.TanimotoSimilarity(RDKFingerprint(gt_mol), RDKFingerprint(out_mol)))
            morgan_sims.append(DataStructs.TanimotoSimilarity(morgan.GetSparseCountFingerprint(gt_mol),
                                                              morgan.GetSparseCountFingerprint(out_mol)))

    n = len(references)
    bleu = corpus_bleu([[list(gt)] for gt in references], [list(out) for out in predictions])

    def mean(values: list) -> float:
        return float(np.mean(values)) if values else math.nan

    return {
        "n": n,
        "n_valid": n_valid,
        "validity": n_valid / n,
        "bleu": float(bleu),
        "exact_match": n_exact / n,
        "levenshtein": float(np.mean([levenshtein(out, gt) for gt, out in zip(references, predictions)])),
        "maccs_fts": mean(maccs),
        "rdk_fts": mean(rdk),
        "morgan_fts": mean(morgan_sims),
        "n_fingerprint_pairs": len(maccs),
    }


def _canonical(smiles: Sequence[str]) -> list[str]:
    """Canonical RDKit SMILES of the ones that parse (as fcd.canonical_smiles, without its process pool)."""
    from rdkit import Chem

    with _rdkit_quiet():
        return [Chem.MolToSmiles(mol) for mol in map(_parse, smiles) if mol is not None]


def _chemnet_activations(model, smiles: list[str], pad_len: int, batch_size: int, device: str) -> np.ndarray:
    # fcd.get_predictions without its pad choice: the same dataset, model call and scaling, padded to pad_len.
    import torch
    from fcd.utils import SmilesDataset
    from torch.utils.data import DataLoader

    with warnings.catch_warnings():
        # fcd 1.2.2 warns about any pad other than 350 even with warn=False; the pad here is deliberate.
        warnings.filterwarnings("ignore", message="Padding lengths differing", category=UserWarning)
        dataset = SmilesDataset(smiles, pad_len=pad_len, warn=False)
    loader = DataLoader(dataset, batch_size=batch_size)
    model = model.to(device)
    try:
        with torch.no_grad():
            return np.vstack([model(batch.transpose(1, 2).float().to(device)).cpu().numpy().astype(np.float32)
                              for batch in loader])
    finally:
        model.to("cpu")


def fcd_common_pad(references: Sequence[str], predictions: Sequence[str], *, batch_size: int = 128,
                   device: Optional[str] = None) -> dict:
    """Frechet ChemNet Distance between the reference set and the valid predictions, policy ``common-pad``.

    Sets: the canonical SMILES of every reference that parses and of every prediction that parses (MolT5's
    ``fcd_metric.py``; invalid predictions are dropped, the reference set is not paired down to them).
    Policy: ChemNet's activations depend on how far the one-hot input is zero-padded, and ``fcd.get_fcd`` pads
    each set separately to max(350, its own longest SMILES + 1), so two sets with different longest SMILES are
    read at different pad lengths and FCD is inflated (MolT5-base: 8.1). Here both sets are padded to ONE
    length, ``max(350, longest SMILES over both sets + 1)``, which equals fcd's default whenever all SMILES are
    shorter than 350 characters. Uses the fcd package (ChemNet weights, SmilesDataset, Frechet distance)
    unmodified. Returns fcd, fcd_policy, fcd_pad_len and the two set sizes.

    Measured on MolT5-base caption2smiles (fcd 1.2.2): stock ``get_fcd`` (pads 1123 vs 543) 8.14; common-pad
    (1123), all 3,300 references vs the 2,595 valid outputs, 1.263 (this function); common-pad with the
    references paired down to the rows whose output is valid 0.873, so the ~1.26 figure uses the unpaired sets.
    Cost: ChemNet at pad ~1100 takes ~46 ms CPU per molecule (~5 CPU-minutes for 3,300 + 2,600 molecules on
    CPU); a GPU makes it seconds.
    """
    import torch
    from fcd import calculate_frechet_distance, load_ref_model

    _check_pairs(references, predictions)
    ref_set, out_set = _canonical(references), _canonical(predictions)
    if len(ref_set) < 2 or len(out_set) < 2:
        raise ValueError(f"FCD needs at least 2 valid molecules in each set (references {len(ref_set)}, "
                         f"valid predictions {len(out_set)})")
    pad_len = max(FCD_MIN_PAD, max(len(s) for s in ref_set + out_set) + 1)  # + 1: fcd appends an end token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_ref_model()
    act_ref = _chemnet_activations(model, ref_set, pad_len, batch_size, device)
    act_out = _chemnet_activations(model, out_set, pad_len, batch_size, device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)  # fcd calls scipy sqrtm
        fcd = calculate_frechet_distance(mu1=act_ref.mean(axis=0), sigma1=np.cov(act_ref.T),
                                         mu2=act_out.mean(axis=0), sigma2=np.cov(act_out.T))
    return {"fcd": float(fcd), "fcd_policy": FCD_POLICY, "fcd_pad_len": pad_len,
            "fcd_n_reference": len(ref_set), "fcd_n_prediction": len(out_set)}


def generation_metrics(references: Sequence[str], predictions: Sequence[str], *, with_fcd: bool = True,
                       fcd_device: Optional[str] = None) -> dict:
    """All text -> molecule metrics in one flat dict (``molecule_metrics`` + ``fcd_common_pad``)."""
    result = molecule_metrics(references, predictions)
    if with_fcd:
        result.update(fcd_common_pad(references, predictions, device=fcd_device))
    return result


def text_molecule_cosine(model, descriptions: Sequence[str], references: Sequence[str],
                         predictions: Sequence[str], batch_size: int = 256) -> dict:
    """MoMu's cosine(text, molecule) in place of Text2Mol (not computable offline): the mean over the outputs the
    GIN can read (an unreadable output has no embedding; `cosine_n` says how many counted) and, as the ceiling
    the metric allows, the mean over the ground-truth molecules."""
    import torch

    from momu.generate.fitness import embed_smiles

    def mean_cosine(smiles: Sequence[str]) -> tuple[Optional[float], int]:
        graph_emb, rows = embed_smiles(model, smiles, batch_size)
        if not rows:
            return None, 0
        with torch.no_grad():
            text_emb = model.embed_texts([descriptions[i] for i in rows]).float()
        return float((graph_emb * text_emb).sum(dim=1).mean()), len(rows)

    _check_pairs(references, predictions)
    if len(descriptions) != len(predictions):
        raise ValueError(f"{len(descriptions)} descriptions for {len(predictions)} predictions")
    with _rdkit_quiet():
        out, n_out = mean_cosine(predictions)
        ref, n_ref = mean_cosine(references)
    return {"momu_cosine": out, "momu_cosine_n": n_out, "momu_cosine_ground_truth": ref,
            "momu_cosine_ground_truth_n": n_ref}
