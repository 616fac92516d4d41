"""Cross-modal retrieval evaluation job (`momu evaluate retrieval`, jobs/evaluate_retrieval.py).

read pairs -> clean (a pair whose text or molecule is unusable leaves both sides, counted by reason) -> for each
model: embed molecules and texts (paragraph = first `paragraph_chars` characters; sentences), optionally a
Text2Mol molecule pool -> metrics (momu.retrieval.metrics) -> table on stdout, results.json, MLflow run.

Embedding runs in-process in fixed, length-sorted batches, or - above `ray_threshold` items - in Ray Data
model actors over the same batches; either way identical inputs give identical numbers. Text-tower features
are shared between models whose text towers are identical (e.g. every locked-text model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from momu.job_output import progress_bar
from momu.retrieval.config import RetrievalEvalConfig
from momu.retrieval.metrics import (
    chance_direction_metrics,
    chance_rank_metrics,
    direction_metrics,
    flatten_metrics,
    pool_metrics,
    sentence_level_scores,
    sentences_with_fallback,
)

NO_SMILES = "no_smiles_for_fingerprint"
EMPTY_TEXT = "empty_description"


# -- data -------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class EvalPairs:
    """Aligned, cleaned pairs in file order: every list has one entry per usable pair."""

    ids: list[str]
    smiles: list[Optional[str]]
    graphs: list  # MolGraph
    texts: list[str]  # the first paragraph of each molecule's text, whole
    source: str
    rows_read: int
    excluded: Counter  # reason -> rows (reader and featurization), each row counted once

    def __len__(self) -> int:
        return len(self.ids)

    def summary(self) -> dict:
        return {"source": self.source, "rows_read": self.rows_read, "pairs": len(self),
                "excluded": dict(sorted(self.excluded.items())), "excluded_total": sum(self.excluded.values())}


def read_eval_table(cfg: RetrievalEvalConfig):
    from momu.data.readers import PAIR_FORMATS, read_aligned_pairs, read_pairs

    if cfg.data_format == "pcdes" or (cfg.data_format == "auto" and cfg.text_path):
        return read_aligned_pairs(cfg.data_path, cfg.text_path)
    return read_pairs(cfg.data_path, format=cfg.data_format if cfg.data_format in PAIR_FORMATS else "auto")


def load_eval_pairs(cfg: RetrievalEvalConfig, need_smiles: bool = False) -> EvalPairs:
    """Read `data_path` (+ `text_path`), keep the pairs whose text and molecule are both usable. Malformed rows
    (reader), molecules that fail featurization and, when a model needs SMILES (fingerprint baseline), rows
    without SMILES are excluded from both sides together and counted by reason."""
    from momu.chem.columns import GRAPH_COLUMNS, columns_to_graphs
    from momu.chem.featurize import Rejection, featurize_smiles

    result = read_eval_table(cfg)
    table, report = result.table, result.report
    excluded = Counter(report.malformed)
    rows = table.to_pydict()
    has_graphs = all(c in table.column_names for c in GRAPH_COLUMNS)
    corpus_graphs = columns_to_graphs(table.select(list(GRAPH_COLUMNS))) if has_graphs else None
    ids, smiles, graphs, texts = [], [], [], []
    for i, mol_id in enumerate(rows["id"]):
        paragraphs = [t.strip() for t in (rows["texts"][i] or []) if t and t.strip()]
        if not paragraphs:
            excluded[EMPTY_TEXT] += 1
            continue
        smi = rows["smiles"][i]
        if need_smiles and not smi:
            excluded[NO_SMILES] += 1
            continue
        graph = corpus_graphs[i] if corpus_graphs is not None and corpus_graphs[i] is not None else None
        if graph is None:
            graph = featurize_smiles(smi, max_atoms=cfg.max_atoms)
        elif graph.num_nodes > cfg.max_atoms:
            graph = Rejection("too_many_atoms", f"{graph.num_nodes} atoms")
        if isinstance(graph, Rejection):
            excluded[graph.reason] += 1
            continue
        ids.append(str(mol_id))
        smiles.append(smi)
        graphs.append(graph)
        texts.append(paragraphs[0])  # MoMu's retrieval uses each molecule's first paragraph
    pairs = EvalPairs(ids, smiles, graphs, texts, report.path, report.rows_read, excluded)
    if cfg.limit and len(pairs) > cfg.limit:
        keep = slice(0, cfg.limit)
        pairs = dataclasses.replace(pairs, ids=ids[keep], smiles=smiles[keep], graphs=graphs[keep], texts=texts[keep])
    if len(pairs) < 2:
        raise ValueError(f"data_path: {len(pairs)} usable pairs in {report.path} (excluded: {dict(excluded)}); "
                         "retrieval needs at least 2")
    return pairs


@dataclasses.dataclass
class MoleculePool:
    """Text2Mol pool: distinct molecules (by canonical SMILES); targets[j] = pool row of pair j's molecule."""

    smiles: list[str]
    graphs: list
    targets: torch.Tensor
    sources: list[str]
    excluded: Counter
    duplicates: int

    def summary(self) -> dict:
        return {"pool_size": len(self.smiles), "sources": self.sources, "excluded": dict(sorted(self.excluded.items())),
                "duplicates_merged": self.duplicates}


def build_pool(cfg: RetrievalEvalConfig, pairs: EvalPairs) -> Optional[MoleculePool]:
    """The evaluated molecules plus every usable molecule of `pool_paths`, deduplicated by canonical SMILES."""
    if not cfg.pool_paths:
        return None
    from momu.chem.featurize import Rejection, featurize_mol, parse_smiles
    from rdkit import Chem

    if any(s is None for s in pairs.smiles):
        raise ValueError("pool_paths: pool ranking matches molecules by SMILES, and some evaluated pairs have none")
    key_to_row: dict[str, int] = {}
    smiles, graphs, excluded, duplicates = [], [], Counter(), 0

    def add(smi: str, graph=None) -> Optional[int]:
        nonlocal duplicates
        mol = parse_smiles(smi)
        if isinstance(mol, Rejection):
            excluded[mol.reason] += 1
            return None
        key = Chem.MolToSmiles(mol)
        if key in key_to_row:
            duplicates += 1
            return key_to_row[key]
        if graph is None:
            graph = featurize_mol(mol, max_atoms=cfg.max_atoms)
            if isinstance(graph, Rejection):
                excluded[graph.reason] += 1
                return None
        key_to_row[key] = len(smiles)
        smiles.append(smi)
        graphs.append(graph)
        return key_to_row[key]

    targets = []
    for smi, graph in zip(pairs.smiles, pairs.graphs):
        row = add(smi, graph)
        if row is None:  # featurized before, so it parses; kept for safety
            raise ValueError(f"pool: evaluated molecule {smi!r} could not be added")
        targets.append(row)
    for path in cfg.pool_paths:
        for smi in progress_bar(_pool_file_smiles(path), desc=f"pool {Path(path).name}", leave=False):
            if smi:
                add(smi)
            else:
                excluded["missing_smiles"] += 1
    return MoleculePool(smiles, graphs, torch.tensor(targets), list(cfg.pool_paths), excluded, duplicates)


def _pool_file_smiles(path: str) -> list[Optional[str]]:
    from momu.data.readers import _detect_pair_format, read_molecule_library, read_pairs

    try:
        fmt = _detect_pair_format(Path(path))
    except ValueError:
        fmt = "library"
    result = read_molecule_library(path) if fmt == "library" else read_pairs(path, format=fmt)
    return result.table.column("smiles").to_pylist()


# -- embedding --------------------------------------------------------------------------------------------------

def _length_order(texts: Sequence[str]) -> list[int]:
    return sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))


def text_tower_key(model) -> str:
    """Identity of a text tower: its config and the bytes of its weights."""
    digest = hashlib.sha256(json.dumps(model.config.text.model_dump(mode="json"), sort_keys=True).encode())
    for name, tensor in sorted(model.text_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


@torch.no_grad()
def pooled_text_features(encoder, texts: Sequence[str], batch_size: int, device: str = "cpu",
                         progress: bool = True, desc: str = "texts") -> torch.Tensor:
    """The text tower's pooled features (eval mode) for `texts`, in length-sorted fixed batches."""
    order = _length_order(texts)
    out = torch.zeros(len(texts), encoder.out_dim)
    encoder.eval()
    for start in progress_bar(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[start:start + batch_size]
        tokens = encoder.tokenize([texts[i] for i in idx], device)
        out[idx] = encoder.pool(**tokens).float().cpu()
    return out


class TextFeatureStore:
    """Pooled text features per (text tower, text list), so models sharing a text tower embed texts once."""

    def __init__(self):
        self._store: dict[tuple[str, str], torch.Tensor] = {}

    def get(self, model, texts: Sequence[str], compute) -> torch.Tensor:
        key = (text_tower_key(model), hashlib.sha256("\x1e".join(texts).encode()).hexdigest())
        if key not in self._store:
            self._store[key] = compute()
        return self._store[key]


def _project_texts(model, features: torch.Tensor, device: str, chunk: int = 4096) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.project_text(features[s:s + chunk].to(device)).float().cpu()
                          for s in range(0, len(features), chunk)]) if len(features) else \
            torch.zeros(0, model.config.proj_dim)


@torch.no_grad()
def graph_embeddings(model, graphs: Sequence, smiles: Sequence[Optional[str]], batch_size: int,
                     device: str = "cpu", progress: bool = True, desc: str = "molecules") -> torch.Tensor:
    model.eval()
    out = []
    for start in progress_bar(range(0, len(graphs), batch_size), desc=desc, disable=not progress, leave=False):
        batch = model.graph_batch(graphs[start:start + batch_size],
                                  smiles[start:start + batch_size] if model.uses_fingerprints else None)
        out.append(model.encode_graph(batch.to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.proj_dim)


# Ray Data stages (used above `ray_threshold`): the same fixed batches, run in model actors.

class RayTextFeatures:
    """Ray Data actor: `text` column -> `features` (the text tower's pooled features)."""

    def __init__(self, model_dir: str, num_threads: Optional[int] = None):
        from momu.models.momu import MoMu

        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = MoMu.from_pretrained(model_dir).text_encoder.to(self.device).eval()

    def __call__(self, batch):
        import pyarrow as pa

        texts = batch.column("text").to_pylist()
        with torch.no_grad():
            feats = self.encoder.pool(**self.encoder.tokenize(texts, self.device)).float().cpu().numpy()
        return batch.append_column("features", pa.array(list(feats), pa.list_(pa.float32())))


class RayGraphEmbeddings:
    """Ray Data actor: graph columns (+ `smiles` for the fingerprint baseline) -> `embedding`."""

    def __init__(self, model_dir: str, num_threads: Optional[int] = None):
        from momu.models.momu import MoMu

        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = MoMu.from_pretrained(model_dir).to(self.device).eval()

    def __call__(self, batch):
        import pyarrow as pa

        from momu.chem.columns import columns_to_graphs

        graphs = columns_to_graphs(batch)
        smiles = batch.column("smiles").to_pylist()
        emb = graph_embeddings(self.model, graphs, smiles, len(graphs), self.device, progress=False).numpy()
        return batch.select(["row"]).append_column("embedding", pa.array(list(emb), pa.list_(pa.float32())))


def _ray_blocks(table, batch_size: int) -> list:
    # Blocks of whole batches, so Ray Data's batches are exactly the in-process path's batches.
    return [table.slice(s, batch_size) for s in range(0, max(1, table.num_rows), batch_size)]


def _ray_embed_rows(table, udf, output_column: str, model_dir: str, cfg: RetrievalEvalConfig) -> torch.Tensor:
    """Run `udf` model actors over `table` (with a `row` column) and scatter `output_column` back into row order."""
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds = ray.data.from_arrow(_ray_blocks(table, cfg.embed_batch_size)).map_batches(
        udf, fn_constructor_kwargs={"model_dir": model_dir, "num_threads": cfg.num_threads},
        batch_size=cfg.embed_batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.ray_actors), num_gpus=1 if torch.cuda.is_available() else 0)
    out = None
    for batch in ds.iter_batches(batch_size=4096, batch_format="pyarrow"):
        rows = batch.column("row").to_numpy()
        values = np.stack(batch.column(output_column).to_numpy(zero_copy_only=False))
        if out is None:
            out = torch.zeros(table.num_rows, values.shape[1])
        out[rows] = torch.from_numpy(values.astype(np.float32))
    return out


def ray_text_features(model_dir: str, texts: Sequence[str], cfg: RetrievalEvalConfig) -> torch.Tensor:
    import pyarrow as pa

    order = _length_order(texts)
    table = pa.table({"row": pa.array(order, pa.int64()), "text": pa.array([texts[i] for i in order], pa.string())})
    return _ray_embed_rows(table, RayTextFeatures, "features", model_dir, cfg)


def ray_graph_embeddings(model_dir: str, graphs: Sequence, smiles: Sequence[Optional[str]],
                         cfg: RetrievalEvalConfig) -> torch.Tensor:
    import pyarrow as pa

    from momu.chem.columns import graphs_to_table

    table = graphs_to_table(graphs).append_column("smiles", pa.array(list(smiles), pa.string())) \
        .append_column("row", pa.array(np.arange(len(graphs)), pa.int64()))
    return _ray_embed_rows(table, RayGraphEmbeddings, "embedding", model_dir, cfg)


# -- evaluation -------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Embedder:
    """Embeds texts and molecules for one model, in-process or with Ray Data."""

    model: object
    model_dir: str
    cfg: RetrievalEvalConfig
    use_ray: bool
    store: TextFeatureStore
    device: str = "cpu"
    progress: bool = True

    def texts(self, texts: Sequence[str], desc: str) -> torch.Tensor:
        def compute():
            if self.use_ray:
                return ray_text_features(self.model_dir, texts, self.cfg)
            return pooled_text_features(self.model.text_encoder, texts, self.cfg.embed_batch_size, self.device,
                                        self.progress, desc)

        return torch.nn.functional.normalize(_project_texts(self.model, self.store.get(self.model, texts, compute),
                                                            self.device), dim=-1)

    def graphs(self, graphs: Sequence, smiles: Sequence[Optional[str]], desc: str) -> torch.Tensor:
        if self.use_ray:
            emb = ray_graph_embeddings(self.model_dir, graphs, smiles, self.cfg)
        else:
            emb = graph_embeddings(self.model, graphs, smiles, self.cfg.embed_batch_size, self.device, self.progress,
                                   desc)
        return torch.nn.functional.normalize(emb, dim=-1)


def evaluate_embeddings(graph_emb: torch.Tensor, text_emb: torch.Tensor, cfg: RetrievalEvalConfig,
                        sentence_emb: Optional[torch.Tensor] = None, sentence_offsets: Optional[list[int]] = None,
                        pool_emb: Optional[torch.Tensor] = None, pool_targets: Optional[torch.Tensor] = None) -> dict:
    """Every configured metric from embeddings (pure torch; what the job computes per model)."""
    kw = dict(batch_size=cfg.batch_size, recall_k=cfg.recall_k, ks=cfg.ks, ties=cfg.ties)
    out = {"paragraph": direction_metrics(graph_emb @ text_emb.t(), **kw)}
    if sentence_emb is not None:
        out["sentence"] = direction_metrics(sentence_level_scores(graph_emb, sentence_emb, sentence_offsets), **kw)
    if pool_emb is not None:
        out["pool"] = pool_metrics(text_emb, pool_emb, pool_targets, ks=cfg.ks, ties=cfg.ties)
    return out


def chance_results(n: int, cfg: RetrievalEvalConfig, pool_size: Optional[int] = None) -> dict:
    per_level = chance_direction_metrics(n, cfg.batch_size, cfg.recall_k, cfg.ks)
    out = {"paragraph": per_level}
    if cfg.sentence_level:
        out["sentence"] = chance_direction_metrics(n, cfg.batch_size, cfg.recall_k, cfg.ks)
    if pool_size:
        out["pool"] = {**chance_rank_metrics(pool_size, cfg.ks), "pool_size": float(pool_size)}
    return out


@dataclasses.dataclass
class RetrievalEvalResult:
    results: dict  # row name -> metrics (models, then "chance")
    table: str
    data: dict
    output_dir: Path
    mlflow_run_id: Optional[str] = None


def _metric_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def run_retrieval_eval(cfg: RetrievalEvalConfig, progress: bool = True, log_to_mlflow: bool = True) -> RetrievalEvalResult:
    from momu.models.loading import resolve_model_dir
    from momu.models.momu import MoMu

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_dirs = {name: resolve_model_dir(source) for name, source in cfg.models.items()}
    configs = {name: json.loads((d / "config.json").read_text())["config"] for name, d in model_dirs.items()}
    need_smiles = any(c.get("graph_encoder") == "fingerprint" for c in configs.values())
    pairs = load_eval_pairs(cfg, need_smiles=need_smiles)
    pool = build_pool(cfg, pairs)
    n = len(pairs)
    paragraphs = [t[:cfg.paragraph_chars] if cfg.paragraph_chars else t for t in pairs.texts]
    sentences, offsets, fallbacks = sentences_with_fallback(pairs.texts, cfg.min_sentence_words) \
        if cfg.sentence_level else ([], [], 0)
    data = {**pairs.summary(), "sentences": len(sentences), "sentence_fallbacks": fallbacks,
            **({"pool": pool.summary()} if pool else {})}
    to_embed = n + len(paragraphs) + len(sentences) + (len(pool.smiles) if pool else 0)
    use_ray = to_embed > cfg.ray_threshold
    if use_ray:
        from momu.ray_session import init_ray_if_needed

        init_ray_if_needed()
    if progress:
        print(f"data: {n} pairs from {pairs.source} (read {pairs.rows_read} rows; excluded "
              f"{dict(pairs.excluded) or 'none'}); {len(sentences)} sentences"
              + (f"; pool of {len(pool.smiles)} molecules" if pool else "")
              + (" [Ray Data]" if use_ray else ""))

    store = TextFeatureStore()
    results: dict[str, dict] = {}
    for name, model_dir in model_dirs.items():
        model = MoMu.from_pretrained(model_dir).to(device).eval()
        embed = Embedder(model, str(model_dir), cfg, use_ray, store, device, progress)
        graph_emb = embed.graphs(pairs.graphs, pairs.smiles, f"{name}: molecules")
        text_emb = embed.texts(paragraphs, f"{name}: texts")
        sentence_emb = embed.texts(sentences, f"{name}: sentences") if cfg.sentence_level else None
        pool_emb = embed.graphs(pool.graphs, pool.smiles, f"{name}: pool") if pool else None
        results[name] = evaluate_embeddings(graph_emb, text_emb, cfg, sentence_emb, offsets if cfg.sentence_level
                                            else None, pool_emb, pool.targets if pool else None)
        del model
    results["chance"] = chance_results(n, cfg, len(pool.smiles) if pool else None)
    levels = ("paragraph", "sentence") if cfg.sentence_level else ("paragraph",)
    from momu.retrieval.report import retrieval_tables

    table = retrieval_tables(results, n=n, batch_size=cfg.batch_size, recall_k=cfg.recall_k, ks=cfg.ks,
                             pool_size=len(pool.smiles) if pool else None, levels=levels)
    seconds = time.perf_counter() - start
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {"config": cfg.model_dump(mode="json"), "models": {k: str(v) for k, v in model_dirs.items()},
               "data": data, "results": results, "seconds": seconds}
    (output_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (output_dir / "retrieval_table.md").write_text(table + "\n")
    run_id = _log_mlflow(cfg, results, data, output_dir) if log_to_mlflow else None
    return RetrievalEvalResult(results, table, data, output_dir, run_id)


def _log_mlflow(cfg: RetrievalEvalConfig, results: dict, data: dict, output_dir: Path) -> str:
    import mlflow

    from momu.tracking import mlflow_run

    with mlflow_run(cfg, cfg.mlflow_experiment, cfg.mlflow_tracking_uri, run_name="evaluate-retrieval") as run:
        metrics = {}
        for name, result in results.items():
            metrics.update(flatten_metrics(result, _metric_safe(name)))
        metrics.update({"data/pairs": float(data["pairs"]), "data/excluded_total": float(data["excluded_total"]),
                        "data/sentences": float(data["sentences"])})
        metrics.update({f"data/excluded/{_metric_safe(k)}": float(v) for k, v in data["excluded"].items()})
        items = list(metrics.items())
        for s in range(0, len(items), 500):
            mlflow.log_metrics(dict(items[s:s + 500]))
        mlflow.log_artifact(str(output_dir / "results.json"))
        mlflow.log_artifact(str(output_dir / "retrieval_table.md"))
        mlflow.set_tags({f"model.{_metric_safe(k)}": v for k, v in cfg.models.items()})
        return run.info.run_id
