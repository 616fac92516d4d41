"""The retrieval captioner: a molecule's caption is the description of the most similar molecule of a caption pool.

Its output is labelled for what it is (`CaptionResult.label`): the description of the nearest *known* molecule,
with that molecule's id, SMILES and similarity -- not a description generated for the query.

Similarity kinds:
  tanimoto  Tanimoto of Morgan fingerprints (radius 2, 2048 bits; RDKit BulkTanimotoSimilarity); needs no model.
  momu      cosine of MoMu graph embeddings (the model's graph tower + projection head) of query and pool molecule.
  fusion    the `fusion_k` best pool molecules by Tanimoto, re-ranked by
                fusion_weight * cos(query graph, candidate caption's text embedding) + (1 - fusion_weight) * Tanimoto
            (MoMu's graph<->text similarity of each candidate's caption to the query; fusion_weight 1 = pure
            re-ranking, 0 = Tanimoto). `similarity` is that fused score.
  ranked    the ranker's k best pool molecules by Tanimoto (so at most that many neighbours), re-ranked by the
            learned caption ranker trained on the pool (momu.caption.ranker: fingerprints, MoMu graph and graph<->caption cosines, the captions'
            agreement with each other). `similarity` is the ranker's score; `tanimoto` stays the Tanimoto.
  auto      ranked when the pool holds a ranker (`momu caption train-ranker`; the pool builder trains one when it
            embeds with a model), else tanimoto: the default of `momu caption` and `momu serve`.
Ties keep pool order (the lower row wins). Pure numpy / RDKit / torch: no Ray.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import numpy as np
import pyarrow.parquet as pq
from rdkit import Chem, DataStructs

from momu.caption import pool as P
from momu.chem.featurize import Rejection, parse_smiles

Kind = Literal["tanimoto", "momu", "fusion", "ranked", "auto"]
KINDS = ("tanimoto", "momu", "fusion", "ranked")
LABEL = "description of the nearest known molecule (retrieved, not generated)"
RANKED_LABEL = ("description of a known molecule (retrieved, not generated), chosen among the nearest by the "
                "learned caption ranker")
SIMILARITY_KINDS = {"tanimoto": "tanimoto_morgan_r2_2048", "momu": "momu_graph_cosine",
                    "fusion": "fusion_graph_text_cosine_and_tanimoto", "ranked": "caption_ranker_score"}


class CaptionPool:
    """A pool directory loaded into memory: rows, RDKit fingerprints, optional MoMu embeddings."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / P.MANIFEST_FILE
        if not manifest.is_file():
            raise FileNotFoundError(f"caption pool: {self.path} holds no {P.MANIFEST_FILE} (build one with "
                                    "`momu caption pool --config configs/caption_pool_chebi20.yaml`)")
        self.manifest = json.loads(manifest.read_text())
        table = pq.read_table(self.path / P.POOL_FILE)
        self.ids = table.column("id").to_pylist()
        self.cids = table.column("cid").to_pylist()
        self.smiles = table.column("smiles").to_pylist()
        self.captions = table.column("caption").to_pylist()
        self.sources = table.column("source").to_pylist()
        bits = pq.read_table(self.path / P.FINGERPRINT_FILE).column("morgan_bits").to_pylist()
        if len(bits) != len(self.ids):
            raise ValueError(f"caption pool {self.path}: {len(bits)} fingerprints for {len(self.ids)} rows")
        self.fingerprints = [P.bits_to_fingerprint(b) for b in bits]
        self.graph_embeddings = self.text_embeddings = None
        if (self.path / P.GRAPH_EMBEDDINGS_FILE).is_file():
            self.graph_embeddings = np.load(self.path / P.GRAPH_EMBEDDINGS_FILE)
            self.text_embeddings = np.load(self.path / P.TEXT_EMBEDDINGS_FILE)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def version(self) -> str:
        """Short id of the pool's content (sha256 of pool.parquet)."""
        return self.manifest["pool_sha256"][:12]

    @property
    def embeddings_sha256(self) -> Optional[str]:
        return (self.manifest.get("embeddings") or {}).get("weights_sha256")


@dataclass(frozen=True)
class Neighbour:
    rank: int
    row: int
    id: str
    cid: str
    smiles: str
    caption: str
    source: str
    similarity: float
    tanimoto: float


@dataclass(frozen=True)
class CaptionResult:
    """The caption of one query: its best neighbour's description, and the neighbours (best first)."""

    query_smiles: str  # canonical
    caption: str
    captioner: str  # "retrieval-<kind>"
    similarity_kind: str
    neighbours: list[Neighbour]
    label: str = LABEL

    @property
    def neighbour(self) -> Neighbour:
        return self.neighbours[0]

    def as_dict(self) -> dict:
        return asdict(self)


class RetrievalCaptioner:
    """Caption molecules with the description of their nearest pool molecule (see the module docstring)."""

    def __init__(self, pool: CaptionPool | str | Path, kind: Kind = "tanimoto", model=None, fusion_k: int = 10,
                 fusion_weight: float = 0.5):
        if kind not in (*KINDS, "auto"):
            raise ValueError(f"kind: must be one of {', '.join(KINDS)} or auto, got {kind!r}")
        if fusion_k < 1:
            raise ValueError(f"fusion_k: must be >= 1, got {fusion_k}")
        if not 0.0 <= fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight: must be between 0 and 1, got {fusion_weight}")
        self.pool = pool if isinstance(pool, CaptionPool) else CaptionPool(pool)
        kind = resolve_kind(self.pool, kind)
        self.kind, self.fusion_k, self.fusion_weight = kind, fusion_k, fusion_weight
        self.model = model
        self.model_sha256: Optional[str] = None
        self.graph_embeddings = self.text_embeddings = None
        self.embeddings_from: Optional[str] = None  # "pool" (stored, same weights hash) or "model" (computed now)
        self.ranker = self.features = None
        if kind != "tanimoto":
            self._attach_model(model)
        if kind == "ranked":
            self._attach_ranker()
        self._generator = P.morgan_generator()

    @property
    def name(self) -> str:
        return f"retrieval-{self.kind}"

    @property
    def version(self) -> str:
        """pool content id, plus the model's weights hash for the MoMu kinds (and the ranker's for ranked)."""
        return captioner_version(self.pool, self.kind, self.model_sha256, self.fusion_k, self.fusion_weight)

    @property
    def label(self) -> str:
        return RANKED_LABEL if self.kind == "ranked" else LABEL

    def _attach_ranker(self) -> None:
        from momu.caption.ranker import CandidateFeatures, CaptionRanker

        self.ranker = CaptionRanker.load(self.pool.path)
        if self.ranker.meta["pool_sha256"] != self.pool.manifest["pool_sha256"]:
            raise ValueError(f"kind 'ranked': the ranker in {self.pool.path} was trained on another pool; retrain "
                             f"it with `momu caption train-ranker --pool {self.pool.path}`")
        if self.model_sha256 and self.ranker.meta["embeddings_sha256"] != self.model_sha256:
            raise ValueError(f"kind 'ranked': the ranker in {self.pool.path} was trained on embeddings of another "
                             f"model (weights sha256 {str(self.ranker.meta['embeddings_sha256'])[:12]}); use that "
                             "model, or rebuild the pool and ranker with this one")
        self.features = CandidateFeatures(self.pool)

    def _attach_model(self, model) -> None:
        """The pool's stored embeddings when they were made by this model, else the model embeds the pool now.
        Without a model the stored embeddings are used and every call must bring the queries' graph embeddings
        (made by the model the pool names: a server's encoder)."""
        if model is None:
            if self.pool.graph_embeddings is None:
                raise ValueError(f"kind {self.kind!r} needs a MoMu model, or a pool built with one "
                                 "(momu caption pool --model ...)")
            self.graph_embeddings, self.text_embeddings = self.pool.graph_embeddings, self.pool.text_embeddings
            self.model_sha256, self.embeddings_from = self.pool.embeddings_sha256, "pool"
            return
        sha = getattr(model, "weights_sha256", None)
        if self.pool.graph_embeddings is not None and sha is not None and sha == self.pool.embeddings_sha256:
            self.graph_embeddings, self.text_embeddings = self.pool.graph_embeddings, self.pool.text_embeddings
            self.embeddings_from = "pool"
        else:
            self.graph_embeddings = P.embed_pool_graphs(model, self.pool.smiles)
            self.text_embeddings = model.embed_texts(self.pool.captions).numpy().astype(np.float32)
            self.embeddings_from = "model"
        self.model_sha256 = sha

    # -- captioning ---------------------------------------------------------------------------------------------
    def caption_smiles(self, smiles: Sequence[str], k: int = 1) -> list[Union[CaptionResult, Rejection]]:
        """Caption each SMILES (k neighbours each); an unreadable SMILES gives its Rejection instead."""
        mols = [parse_smiles(s) for s in smiles]
        good = [i for i, m in enumerate(mols) if not isinstance(m, Rejection)]
        out: list = list(mols)
        for i, result in zip(good, self.caption_mols([mols[i] for i in good], k=k)):
            out[i] = result
        return out

    def caption_mols(self, mols: Sequence, k: int = 1, graph_embeddings: Optional[np.ndarray] = None
                     ) -> list[Union[CaptionResult, Rejection]]:
        """Caption RDKit molecules. graph_embeddings [len(mols), d] (normalised; e.g. from a serving encoder)
        replaces the model's own graph embedding of the queries for the MoMu kinds."""
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        if not mols:
            return []
        queries = None
        rejected: dict[int, Rejection] = {}
        if self.kind != "tanimoto":
            queries, rejected = self._query_embeddings(mols, graph_embeddings)
        results: list = []
        for i, mol in enumerate(mols):
            if i in rejected:
                results.append(rejected[i])
                continue
            tanimoto = np.asarray(DataStructs.BulkTanimotoSimilarity(
                P.morgan_fingerprint(mol, self._generator), self.pool.fingerprints), dtype=np.float64)
            rows, scores = self._rank(tanimoto, None if queries is None else queries[i], k, mol)
            neighbours = [Neighbour(rank + 1, int(r), self.pool.ids[r], self.pool.cids[r], self.pool.smiles[r],
                                    self.pool.captions[r], self.pool.sources[r], float(s), float(tanimoto[r]))
                          for rank, (r, s) in enumerate(zip(rows, scores))]
            results.append(CaptionResult(Chem.MolToSmiles(mol), neighbours[0].caption, self.name,
                                         SIMILARITY_KINDS[self.kind], neighbours, self.label))
        return results

    def _rank(self, tanimoto: np.ndarray, query: Optional[np.ndarray], k: int, mol=None
              ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(tanimoto))
        if self.kind == "ranked":
            # The ranker orders the candidates it was trained on (its k nearest by Tanimoto); at most k of them.
            candidates = np.argsort(-tanimoto, kind="stable")[:self.ranker.k]
            ranked = self.ranker.scores(self.features(mol, tanimoto, candidates, query, self.graph_embeddings,
                                                      self.text_embeddings))
            order = np.argsort(-ranked, kind="stable")[:k]
            return candidates[order], ranked[order]
        if self.kind == "tanimoto":
            scores = tanimoto
            order = np.argsort(-scores, kind="stable")[:k]
        elif self.kind == "momu":
            scores = self.graph_embeddings @ query
            order = np.argsort(-scores, kind="stable")[:k]
        else:
            candidates = np.argsort(-tanimoto, kind="stable")[:max(self.fusion_k, k)]
            fused = (self.fusion_weight * (self.text_embeddings[candidates] @ query)
                     + (1.0 - self.fusion_weight) * tanimoto[candidates])
            scores = np.full(len(tanimoto), -np.inf)
            scores[candidates] = fused
            order = candidates[np.argsort(-fused, kind="stable")][:k]
        return order, scores[order]

    def _query_embeddings(self, mols: Sequence, given: Optional[np.ndarray]) -> tuple[np.ndarray, dict]:
        if given is not None:
            given = np.asarray(given, np.float32)
            if given.shape != (len(mols), self.graph_embeddings.shape[1]):
                raise ValueError(f"graph_embeddings: shape {given.shape}, expected "
                                 f"({len(mols)}, {self.graph_embeddings.shape[1]})")
            return given, {}
        if self.model is None:
            raise ValueError(f"kind {self.kind!r}: give graph_embeddings or a model")
        from momu.chem.featurize import featurize_mol

        graphs = [featurize_mol(m) for m in mols]
        rejected = {i: g for i, g in enumerate(graphs) if isinstance(g, Rejection)}
        good = [i for i in range(len(mols)) if i not in rejected]
        out = np.zeros((len(mols), self.graph_embeddings.shape[1]), np.float32)
        if good:
            out[good] = self.model.embed_graphs([graphs[i] for i in good],
                                                smiles=[Chem.MolToSmiles(mols[i]) for i in good]).numpy()
        return out, rejected


def resolve_kind(pool: CaptionPool, kind: str) -> str:
    """`auto` -> ranked when the pool holds a ranker (and the embeddings it reads), else tanimoto."""
    if kind != "auto":
        return kind
    from momu.caption.ranker import has_ranker

    return "ranked" if has_ranker(pool.path) and pool.graph_embeddings is not None else "tanimoto"


def captioner_version(pool: CaptionPool, kind: str, model_sha256: Optional[str], fusion_k: int,
                      fusion_weight: float) -> str:
    """`pool:<pool sha256[:12]>[;model:sha256:<weights[:12]>][;k=..;w=..][;ranker:sha256:..]`: what makes two
    captioners' outputs equal."""
    version = f"pool:{pool.version}"
    if kind != "tanimoto":
        version += f";model:sha256:{(model_sha256 or 'unknown')[:12]}"
    if kind == "fusion":
        version += f";k={fusion_k};w={fusion_weight:g}"
    if kind == "ranked":
        from momu.caption.ranker import ranker_sha256

        version += f";ranker:sha256:{ranker_sha256(pool.path)[:12]}"
    return version


def load_captioner(pool: str | Path, kind: Kind = "tanimoto", model: Optional[str] = None, fusion_k: int = 10,
                   fusion_weight: float = 0.5) -> RetrievalCaptioner:
    """A captioner from a pool directory and, for the MoMu kinds, a model source (directory, published name such
    as momu-cpu, or models:/ URI); the model's weights hash is kept so stored pool embeddings are reused only
    when they were made by this very model. `auto` resolves as `resolve_kind` says and, without a model, uses
    the one the pool's embeddings were made with."""
    pool = pool if isinstance(pool, CaptionPool) else CaptionPool(pool)
    if kind == "auto":
        kind = resolve_kind(pool, kind)
        model = model or (pool.manifest.get("embeddings") or {}).get("model") if kind != "tanimoto" else model
    momu = None
    if kind != "tanimoto":
        if not model:
            raise ValueError(f"model: kind {kind!r} needs a MoMu model (a directory, published name or models:/ URI)")
        from momu.models.loading import load_momu, resolve_model_dir, weights_sha256

        local = resolve_model_dir(model)
        momu = load_momu(local).eval()
        momu.weights_sha256 = weights_sha256(local)
    return RetrievalCaptioner(pool, kind, momu, fusion_k, fusion_weight)
