"""The learned caption ranker: which of a molecule's nearest pool captions to return.

Nearest-neighbour copying returns the caption of the Tanimoto-nearest pool molecule. The ranker looks at the `k`
Tanimoto-nearest instead and scores each candidate caption from features of the (query, candidate) pair:

    tanimoto            Morgan r2/2048 bits (the retrieval fingerprint), Morgan r2 counts, atom-pair counts,
                        topological-torsion counts, MACCS keys: each, and its gap to the best candidate
    momu                MoMu cosine(query graph, candidate graph) and cosine(query graph, candidate *caption*):
                        each, and its gap to the best candidate
    consensus           the candidate caption's n-gram agreement (F1 of clipped 1-4-gram counts) with the other
                        candidates' captions, weighted by their Tanimoto: a caption that says what the neighbours
                        agree on (Devlin et al. 2015, "Exploring nearest neighbor approaches for image captioning")
    shape               rank, caption length, heavy-atom count of the query and the candidate's difference to it

A small MLP maps the features to a score, trained listwise (softmax over one query's candidates against the softmax
of each candidate's n-gram F1 with the query's own caption) on the pool's own molecules, each captioned from the pool
without itself (leave-one-out). The held-out molecules (`is_validation` by id hash, the decoder's split) never train
it; they choose the epoch and measure it. Its output is still a retrieved description, labelled so.

Files, next to the pool they were trained on: `ranker.safetensors` (MLP weights) and `ranker.json` (feature names,
normalisation, k, training summary, the pool's sha256 and the MoMu weights' sha256). Pure torch / RDKit / numpy.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import MACCSkeys, rdFingerprintGenerator
from torch import nn

RANKER_WEIGHTS = "ranker.safetensors"
RANKER_META = "ranker.json"
FORMAT_VERSION = 1
FINGERPRINTS = ("morgan_bits", "morgan_counts", "atom_pair", "torsion", "maccs")
FEATURES = (*(f"{name}{suffix}" for name in FINGERPRINTS for suffix in ("", "_gap")),
            "graph_cosine", "graph_cosine_gap", "graph_text_cosine", "graph_text_cosine_gap",
            "consensus", "consensus_gap", "rank", "log_caption_tokens", "log_atoms_ratio", "log_query_atoms")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def caption_ngrams(caption: str, n_max: int = 4) -> list[Counter]:
    tokens = _TOKEN.findall(caption.lower())
    return [Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)) for n in range(1, n_max + 1)]


def ngram_f1(a: list[Counter], b: list[Counter]) -> float:
    """Mean over n = 1..4 of the F1 of clipped n-gram counts: how much two captions say the same thing."""
    total = 0.0
    for x, y in zip(a, b):
        size = sum(x.values()) + sum(y.values())
        if size:
            total += 2.0 * sum((x & y).values()) / size
    return total / len(a)


class CandidateFeatures:
    """Features of (query, candidate) pairs over one pool; candidate fingerprints and n-grams are cached."""

    def __init__(self, pool):
        self.pool = pool
        self._morgan_counts = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
        self._atom_pair = rdFingerprintGenerator.GetAtomPairGenerator(fpSize=2048)
        self._torsion = rdFingerprintGenerator.GetTopologicalTorsionGenerator(fpSize=2048)
        self._row_fingerprints = lru_cache(maxsize=None)(self._fingerprints_of_row)
        self._row_ngrams = lru_cache(maxsize=None)(lambda row: caption_ngrams(pool.captions[row]))

    def fingerprints(self, mol) -> tuple:
        """The count and key fingerprints besides the pool's Morgan bits, and the heavy-atom count."""
        return (self._morgan_counts.GetCountFingerprint(mol), self._atom_pair.GetCountFingerprint(mol),
                self._torsion.GetCountFingerprint(mol), MACCSkeys.GenMACCSKeys(mol), mol.GetNumHeavyAtoms())

    def _fingerprints_of_row(self, row: int) -> tuple:
        return self.fingerprints(Chem.MolFromSmiles(self.pool.smiles[row]))

    def __call__(self, mol, tanimoto: np.ndarray, candidates: np.ndarray, graph: Optional[np.ndarray],
                 graph_embeddings: Optional[np.ndarray], text_embeddings: Optional[np.ndarray]) -> np.ndarray:
        """[len(candidates), len(FEATURES)] for a query (RDKit mol, its Morgan-bit Tanimoto to every pool row and
        its normalised MoMu graph embedding) and candidate pool rows (best Tanimoto first)."""
        query = self.fingerprints(mol)
        rows = [self._row_fingerprints(int(r)) for r in candidates]
        columns = [tanimoto[candidates]]
        for j in range(4):
            columns.append(np.asarray(DataStructs.BulkTanimotoSimilarity(query[j], [r[j] for r in rows]), np.float64))
        out = []
        for column in columns:
            out += [column, column - column.max()]
        if graph is None or graph_embeddings is None:
            raise ValueError("the caption ranker needs MoMu graph embeddings of the query and the pool")
        graph_cosine = graph_embeddings[candidates] @ graph
        text_cosine = text_embeddings[candidates] @ graph
        out += [graph_cosine, graph_cosine - graph_cosine.max(), text_cosine, text_cosine - text_cosine.max()]
        consensus = self.consensus(candidates, tanimoto[candidates])
        atoms = np.array([r[4] for r in rows], np.float64)
        out += [consensus, consensus - consensus.max(), np.arange(len(candidates), dtype=np.float64),
                np.log1p([sum(self._row_ngrams(int(r))[0].values()) for r in candidates]),
                np.log1p(atoms) - math.log1p(query[4]), np.full(len(candidates), math.log1p(query[4]))]
        return np.stack(out, 1).astype(np.float32)

    def consensus(self, candidates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        grams = [self._row_ngrams(int(r)) for r in candidates]
        n = len(candidates)
        pair = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                pair[i, j] = pair[j, i] = ngram_f1(grams[i], grams[j])
        weights = np.asarray(weights, np.float64)
        return pair @ weights / np.maximum(1e-9, weights.sum() - weights)

    def target(self, candidates: np.ndarray, reference: str) -> np.ndarray:
        """What the ranker learns to prefer: each candidate caption's n-gram F1 with the query's own caption."""
        ref = caption_ngrams(reference)
        return np.array([ngram_f1(self._row_ngrams(int(r)), ref) for r in candidates], np.float32)


class RankerMLP(nn.Module):
    """Normalised features -> one score per candidate."""

    def __init__(self, n_features: int, hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std).squeeze(-1)


def listwise_loss(scores: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of the softmax over each query's candidates against the softmax of their targets."""
    return -(torch.softmax(targets / temperature, -1) * torch.log_softmax(scores, -1)).sum(-1).mean()


class CaptionRanker:
    """A trained ranker: `choose(features)` -> index of the best candidate."""

    def __init__(self, model: RankerMLP, meta: dict):
        self.model, self.meta = model.eval(), meta
        self.k = int(meta["k"])

    @classmethod
    def load(cls, directory: str | Path) -> "CaptionRanker":
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / RANKER_META).is_file():
            raise FileNotFoundError(f"{directory} holds no caption ranker ({RANKER_META}); train one with "
                                    f"`momu caption train-ranker --pool {directory}`")
        meta = json.loads((directory / RANKER_META).read_text())
        if tuple(meta["features"]) != FEATURES:
            raise ValueError(f"{directory / RANKER_META}: made for other features; retrain it with "
                             f"`momu caption train-ranker --pool {directory}`")
        model = RankerMLP(len(FEATURES), int(meta["hidden"]))
        model.load_state_dict(load_file(str(directory / RANKER_WEIGHTS)))
        return cls(model, meta)

    @torch.no_grad()
    def scores(self, features: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.asarray(features, np.float32))).numpy()


def has_ranker(directory: str | Path) -> bool:
    return (Path(directory) / RANKER_META).is_file()


def ranker_sha256(directory: str | Path) -> str:
    """The weights hash recorded when the ranker was saved (part of the captioner's version)."""
    return json.loads((Path(directory) / RANKER_META).read_text())["weights_sha256"]


def leave_one_out_candidates(pool, row: int, k: int, allowed: Optional[np.ndarray] = None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """The pool's Morgan-bit Tanimoto to `row` (itself and rows outside `allowed` at -1) and its k best rows."""
    tanimoto = np.asarray(DataStructs.BulkTanimotoSimilarity(pool.fingerprints[row], pool.fingerprints), np.float64)
    if allowed is not None:
        tanimoto[~allowed] = -1.0
    tanimoto[row] = -1.0
    return tanimoto, np.argsort(-tanimoto, kind="stable")[:k]


def pool_examples(pool, rows: Sequence[int], k: int, allowed: Optional[np.ndarray] = None,
                  featurizer: Optional[CandidateFeatures] = None, log=print) -> dict:
    """Features [len(rows), k, F], targets [len(rows), k] and candidate rows [len(rows), k] for pool molecules,
    each captioned from the pool without itself (and without the rows outside `allowed`)."""
    featurizer = featurizer or CandidateFeatures(pool)
    features, targets, candidates = [], [], []
    started = time.perf_counter()
    for i, row in enumerate(rows):
        tanimoto, best = leave_one_out_candidates(pool, row, k, allowed)
        mol = Chem.MolFromSmiles(pool.smiles[row])
        features.append(featurizer(mol, tanimoto, best, pool.graph_embeddings[row], pool.graph_embeddings,
                                   pool.text_embeddings))
        targets.append(featurizer.target(best, pool.captions[row]))
        candidates.append(best)
        if (i + 1) % 1000 == 0:
            log(f"  ranker features: {i + 1:,}/{len(rows):,} molecules ({time.perf_counter() - started:.0f} s)")
    return {"features": np.stack(features), "targets": np.stack(targets), "candidates": np.stack(candidates)}


def train_ranker(config, log=print) -> dict:
    """Train the ranker (a `CaptionRankerConfig`) on a pool built with MoMu embeddings and save it next to the
    pool. The held-out pool molecules (`val_fraction` by id hash) never train it: they compare it with
    nearest-neighbour copying."""
    from safetensors.torch import save_file

    from momu.caption.decoder_data import is_validation
    from momu.caption.metrics import score_captions
    from momu.caption.pool import file_sha256
    from momu.caption.retrieval import CaptionPool
    from momu.files import chmod_like_umask

    started = time.perf_counter()
    pool_dir, k, limit, seed = config.pool, config.k, config.limit, config.seed
    pool = CaptionPool(pool_dir)
    if pool.graph_embeddings is None:
        raise ValueError(f"pool: {pool.path} has no MoMu embeddings; build it with `momu caption pool --model ...`")
    if k < 2:
        raise ValueError(f"k: the ranker chooses among at least 2 candidates, got {k}")
    held = np.array([is_validation(i, config.val_fraction) for i in pool.ids])
    train_rows, held_rows = np.flatnonzero(~held)[:limit], np.flatnonzero(held)[:limit]
    if len(train_rows) < 2 or not len(held_rows):
        raise ValueError(f"pool: {len(train_rows)} training and {len(held_rows)} held-out molecules; too few")
    k = min(k, len(train_rows) - 1)
    featurizer = CandidateFeatures(pool)
    log(f"caption ranker: {len(train_rows):,} training molecules, {len(held_rows):,} held out, k {k}")
    train = pool_examples(pool, train_rows, k, ~held, featurizer, log)  # held-out captions are never candidates
    test = pool_examples(pool, held_rows, k, None, featurizer, log)
    feature_seconds = time.perf_counter() - started

    torch.manual_seed(seed)
    model = RankerMLP(len(FEATURES), config.hidden)
    x = torch.from_numpy(train["features"])
    y = torch.from_numpy(train["targets"])
    flat = x.reshape(-1, x.shape[-1])
    model.mean.copy_(flat.mean(0))
    model.std.copy_(flat.std(0).clamp_min(1e-6))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = listwise_loss(model(x[batch]), y[batch], config.temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        curve.append(round(total / len(x), 5))
    ranker = CaptionRanker(model, {"k": k})
    chosen = [int(c[int(np.argmax(ranker.scores(f)))]) for c, f in zip(test["candidates"], test["features"])]
    references = [pool.captions[r] for r in held_rows]
    table = {}
    for name, rows in (("nearest neighbour (Tanimoto)", test["candidates"][:, 0]), ("ranker", chosen),
                       (f"oracle of the {k} candidates", [c[int(np.argmax(t))] for c, t in
                                                          zip(test["candidates"], test["targets"])])):
        scores = score_captions(references, [pool.captions[int(r)] for r in rows], with_meteor=config.meteor).as_dict()
        values = {m: scores.get(m) for m in ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor")}
        table[name] = {**values, "mean": float(np.mean([v for v in values.values() if v is not None]))}
        log(f"  held out, {name:<30} " + " ".join(f"{m} {v:.2f}" for m, v in table[name].items() if v is not None))
    directory = Path(pool_dir)
    save_file({name: t.contiguous() for name, t in model.state_dict().items()}, str(directory / RANKER_WEIGHTS))
    chmod_like_umask(directory / RANKER_WEIGHTS)
    meta = {"format_version": FORMAT_VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "k": k,
            "hidden": config.hidden, "features": list(FEATURES), "pool_sha256": pool.manifest["pool_sha256"],
            "embeddings_sha256": pool.embeddings_sha256,
            "training": {"config": config.model_dump(), "train_molecules": len(train_rows),
                         "held_out_molecules": len(held_rows), "loss_curve": curve,
                         "feature_seconds": round(feature_seconds, 1),
                         "seconds": round(time.perf_counter() - started, 1),
                         "rule": "leave-one-out: each pool molecule is captioned from the pool without itself; "
                                 "training molecules never see held-out captions as candidates"},
            "held_out": table, "weights_sha256": file_sha256(directory / RANKER_WEIGHTS)}
    (directory / RANKER_META).write_text(json.dumps(meta, indent=1) + "\n")
    return meta
