"""The single-process reference contrastive loop (`momu train-local`): MoMu's recipe on one machine.

Per step: sample a batch of molecules, make two augmented graph views and two text views, and minimise the mean
of MoMu's four symmetric InfoNCE losses. With text_mode "locked" the text tower's features for every text are
computed once (eval mode) and only the graph tower and both heads train; the text dropout still applies to the
cached features, as it would to live ones. With "partial" the hidden states entering the top text_train_layers
layers are computed once and those layers train too. The forward pass and objective are the Ray Train job's own
(`ContrastiveModule`, `contrastive_objective`); only data handling differs (in-memory lists here).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from momu.job_output import progress_bar

from momu.chem.augment import augment_pyg_batch
from momu.chem.featurize import graphs_to_pyg_batch
from momu.pretrain.config import TrainConfig
from momu.data.pairs import PairDataset, heldout_mask, load_pair_dataset
from momu.retrieval.metrics import inbatch_accuracy
from momu.losses import info_nce
from momu.models.momu import MoMu, build_model
from momu.pretrain.contrastive import ContrastiveInputs, ContrastiveModule, contrastive_objective


class TextFeatureCache:
    """Locked-text mode: pooled text-tower features for every distinct text, computed once without grad."""

    def __init__(self, model: MoMu, texts: list[str], batch_size: int = 64, progress: bool = True):
        self.index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        unique = list(self.index)
        encoder = model.text_encoder
        was_training = encoder.training
        encoder.eval()
        chunks = []
        with torch.no_grad():
            for start in progress_bar(range(0, len(unique), batch_size), desc="caching text features",
                                      disable=not progress):
                tokens = encoder.tokenize(unique[start:start + batch_size], model.device)
                chunks.append(encoder(**tokens))
        encoder.train(was_training)
        self.features = torch.cat(chunks) if chunks else torch.zeros(0, encoder.out_dim)

    def lookup(self, texts: list[str]) -> torch.Tensor:
        return self.features[[self.index[t] for t in texts]]


class HiddenStateCache:
    """Partial-text mode: for every distinct text, the hidden states (real tokens only) entering the text
    tower's top `train_layers` layers, computed once without grad; `lookup` pads them like the Ray collator."""

    def __init__(self, model: MoMu, texts: list[str], train_layers: int, batch_size: int = 64,
                 progress: bool = True):
        self.index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        unique = list(self.index)
        encoder = model.text_encoder
        was_training = encoder.training
        encoder.eval()
        self.hidden: list[torch.Tensor] = []
        with torch.no_grad():
            for start in progress_bar(range(0, len(unique), batch_size), desc="caching text hidden states",
                                      disable=not progress):
                tokens = encoder.tokenize(unique[start:start + batch_size], model.device)
                states = encoder.lower_hidden(**tokens, train_layers=train_layers)
                self.hidden += [h[m.bool()].cpu() for h, m in zip(states, tokens["attention_mask"])]
        encoder.train(was_training)

    def lookup(self, texts: list[str]) -> dict:
        chosen = [self.hidden[self.index[t]] for t in texts]
        hidden = torch.nn.utils.rnn.pad_sequence(chosen, batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(h), dtype=torch.long) for h in chosen],
                                               batch_first=True)
        return {"hidden": hidden, "attention_mask": mask}


def sample_text_views(texts: list[list[str]], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Two text views per molecule: two different random paragraphs when there are several, else the one twice."""
    first, second = [], []
    for options in texts:
        if len(options) >= 2:
            a, b = rng.choice(len(options), size=2, replace=False)
            first.append(options[a])
            second.append(options[b])
        else:
            first.append(options[0])
            second.append(options[0])
    return first, second


@dataclasses.dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    metrics: dict
    history: list[dict]
    mlflow_run_id: Optional[str] = None


class ContrastiveTrainer:
    """Holds the model, optimiser, data and RNG of one reference run."""

    def __init__(self, config: TrainConfig, train: PairDataset, heldout: PairDataset, model: Optional[MoMu] = None,
                 progress: bool = True):
        self.config, self.train_set, self.heldout, self.progress = config, train, heldout, progress
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.model = model if model is not None else build_model(config.model)
        self.module = ContrastiveModule(self.model, "momu", config.text_mode, config.text_train_layers)
        self.text_cache: Optional[TextFeatureCache | HiddenStateCache] = None
        all_texts = [t for options in train.texts + heldout.texts for t in options]
        if config.text_mode == "locked":
            self.text_cache = TextFeatureCache(self.model, all_texts, progress=progress)
        elif config.text_mode == "partial":
            self.text_cache = HiddenStateCache(self.model, all_texts, config.text_train_layers, progress=progress)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.step = 0
        self._order = np.zeros(0, dtype=np.int64)
        self._cursor = 0

    # -- data -------------------------------------------------------------------------------------------------
    def next_batch_indices(self) -> np.ndarray:
        """Batches from a fresh permutation each epoch; the last, incomplete part of an epoch is skipped."""
        bs = self.config.batch_size
        if self._cursor + bs > len(self._order):
            self._order = self.rng.permutation(len(self.train_set))
            self._cursor = 0
        idx = self._order[self._cursor:self._cursor + bs]
        self._cursor += bs
        return idx

    def text_input(self, texts: list[str]):
        """Cached pooled features (locked), cached hidden states (partial) or token ids (frozen / finetune)."""
        if self.text_cache is not None:
            return self.text_cache.lookup(texts)
        return self.model.text_encoder.tokenize(texts, self.model.device)

    # -- one step ---------------------------------------------------------------------------------------------
    def train_step(self) -> float:
        cfg = self.config
        self.module.train()
        idx = self.next_batch_indices()
        batch = graphs_to_pyg_batch([self.train_set.graphs[i] for i in idx], cfg.model.graph.bond_feature)
        view1 = augment_pyg_batch(batch, cfg.augment1, self.rng, ratio=self._ratio(cfg.augment1))
        view2 = augment_pyg_batch(batch, cfg.augment2, self.rng, ratio=self._ratio(cfg.augment2))
        text1, text2 = sample_text_views([self.train_set.texts[i] for i in idx], self.rng)
        inputs = ContrastiveInputs(view1, view2, self.text_input(text1), self.text_input(text2)).to(self.model.device)
        loss = contrastive_objective(self.module(inputs), "momu", cfg.model.temperature, cfg.losses)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _ratio(self, kind: str) -> Optional[float]:
        return {"drop_nodes": self.config.drop_ratio, "subgraph": self.config.subgraph_ratio}.get(kind)

    # -- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset: PairDataset) -> dict[str, float]:
        """Held-out metrics without augmentation, first text of each molecule, consecutive batches in file order:
        1-of-`eval_batch_size` accuracy both ways and the mean symmetric InfoNCE over the same batches."""
        self.model.eval()
        bs = self.config.eval_batch_size
        graph_emb = self.model.embed_graphs(dataset.graphs, batch_size=256)
        first_texts = [options[0] for options in dataset.texts]
        text_emb = torch.cat([self.module.embed_text(self.text_input(first_texts[s:s + bs]))
                              for s in range(0, len(first_texts), bs)])
        losses = [float(info_nce(graph_emb[s:s + bs], text_emb[s:s + bs], self.config.model.temperature))
                  for s in range(0, len(dataset), bs)]
        metrics = inbatch_accuracy(graph_emb, text_emb, batch_size=bs)
        metrics["loss"] = float(np.mean(losses))
        return metrics


def train_local(config: TrainConfig, progress: bool = True, log_to_mlflow: bool = True) -> TrainResult:
    """Run the reference loop end to end: data -> model -> steps -> held-out metrics -> saved model + metrics."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    dataset, report = load_pair_dataset(config.data_path, config.data_format, config.max_atoms)
    mask = heldout_mask(dataset.ids, config.heldout_fraction)
    train_set = dataset.subset(np.flatnonzero(~mask))
    heldout = dataset.subset(np.flatnonzero(mask))
    if len(train_set) < config.batch_size or len(heldout) < 2:
        raise ValueError(f"too little data in {config.data_path}: {len(train_set)} training pairs "
                         f"(batch_size {config.batch_size}) and {len(heldout)} held-out pairs")
    data_summary = {"rows_read": report.rows_read, "rows_malformed": report.rows_malformed,
                    "featurize_rejected": dict(dataset.rejected), "train_pairs": len(train_set),
                    "heldout_pairs": len(heldout)}
    if progress:
        print(f"data: {report.summary()}\n      {len(train_set)} training / {len(heldout)} held-out pairs; "
              f"rejected at featurization: {dict(dataset.rejected) or 'none'}")

    trainer = ContrastiveTrainer(config, train_set, heldout, progress=progress)
    run_ctx = _maybe_mlflow(config, log_to_mlflow)
    history: list[dict] = []
    with run_ctx as run:
        before = trainer.evaluate(heldout)
        _log_metrics({f"heldout_{k}": v for k, v in before.items()}, step=0, enabled=run is not None)
        losses: list[float] = []
        start = time.perf_counter()
        bar = progress_bar(range(config.steps), desc="train-local", disable=not progress)
        for _ in bar:
            loss = trainer.train_step()
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {trainer.step}; lower lr?")
            losses.append(loss)
            bar.set_postfix(loss=f"{loss:.3f}")
            record = {"step": trainer.step, "train_loss": loss}
            if trainer.step % config.eval_every == 0 or trainer.step == config.steps:
                heldout_metrics = trainer.evaluate(heldout)
                record.update({f"heldout_{k}": v for k, v in heldout_metrics.items()})
                _log_metrics({k: v for k, v in record.items() if k != "step"}, trainer.step, run is not None)
            elif run is not None:
                _log_metrics({"train_loss": loss}, trainer.step, True)
            history.append(record)
        elapsed = time.perf_counter() - start
        after = trainer.evaluate(heldout)
        window = max(1, min(20, len(losses) // 5))
        metrics = {
            "train_loss_first": float(np.mean(losses[:window])),
            "train_loss_last": float(np.mean(losses[-window:])),
            "heldout_before": before,
            "heldout_after": after,
            "steps": config.steps,
            "seconds": elapsed,
            "pairs_per_second": config.steps * config.batch_size / elapsed,
            "data": data_summary,
        }
        model_dir = trainer.model.save_pretrained(output_dir / "model")
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (output_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        run_id = None
        if run is not None:
            import mlflow

            mlflow.log_artifact(str(output_dir / "metrics.json"))
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
            run_id = run.info.run_id
    return TrainResult(output_dir, model_dir, metrics, history, run_id)


def _maybe_mlflow(config: TrainConfig, enabled: bool):
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None)
    from momu.tracking import mlflow_run

    return mlflow_run(config, config.mlflow_experiment, config.mlflow_tracking_uri, run_name="train-local",
                      store_dir=Path(config.output_dir).parent)


def _log_metrics(metrics: dict, step: int, enabled: bool) -> None:
    if enabled:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
