"""`momu finetune caption`: train the graph-conditioned caption decoder on Ray Train.

The driver builds the caption pool (training captions minus every evaluated molecule), encodes the molecules
once with the frozen MoMu GIN, fixes the vocabulary and ships it all to the workers through the object store;
`train_func` wires config -> decoder -> this worker's share of the batches -> loop (DDP when num_workers > 1).
Checkpoints hold weights + optimiser + position (epoch, batch); `--resume` or a worker-group restart continues
where the run stopped. The export is a self-contained captioner directory (see momu.caption.captioner).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from momu.caption.config import CaptionTrainConfig
from momu.job_output import ProgressLine, configure_job_output, verbose
from momu.ray_session import (init_ray_if_needed, load_train_checkpoint, make_torch_trainer,
                               resume_checkpoint_dir, storage_path_for)

CHECKPOINT_FILE = "train_state.pt"


# -- batches ----------------------------------------------------------------------------------------------------

def epoch_batches(rows: np.ndarray, lengths: np.ndarray, batch_size: int, world: int, seed: int, epoch: int
                  ) -> list[np.ndarray]:
    """The epoch's global batches (each `batch_size * world` rows, split across ranks later). Rows are shuffled,
    then sorted by caption length inside windows of 20 batches so a batch pads little, then the batches are
    shuffled again: the same for every rank and every resume."""
    rng = np.random.default_rng([seed, epoch])
    order = rows[rng.permutation(len(rows))]
    step = batch_size * world
    window = step * 20
    chunks = []
    for start in range(0, len(order), window):
        part = order[start:start + window]
        part = part[np.argsort(lengths[part], kind="stable")]
        chunks += [part[i:i + step] for i in range(0, len(part) - step + 1, step)]
    if not chunks and len(order):  # fewer rows than one global batch: one short batch
        chunks = [order[:step]]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then linear decay to 0 at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def make_inputs(data, caption_ids: list, rows, neighbours: bool):
    from momu.caption.decoder import GraphMemoryInputs, pad_ids

    nodes, pooled = data.features(rows)
    neighbour_ids = [caption_ids[data.neighbour[r]] for r in rows] if neighbours else None
    return GraphMemoryInputs.collate(nodes, pooled, neighbour_ids), pad_ids([caption_ids[r] for r in rows])


# -- worker side ------------------------------------------------------------------------------------------------

def train_func(loop_config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch

    from momu.caption.decoder import CaptionDecoder
    from momu.tracking import MetricsLogger

    cfg = CaptionTrainConfig.model_validate(loop_config["config"])
    configure_job_output(verbose())
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    shared = ray.get(loop_config["data_ref"])
    data, caption_ids = shared["data"], shared["caption_ids"]
    decoder_config = cfg.decoder.model_copy(update={"vocab_size": len(shared["vocab_tokens"]),
                                                    "graph_dim": int(data.pooled.shape[1])})
    torch.manual_seed(cfg.seed)
    model = CaptionDecoder(decoder_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "restored_from_step": 0}
    best = {"value": None, "step": -1, "model": None}
    saved = load_train_checkpoint(loop_config, CHECKPOINT_FILE)
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["state"], restored_from_step=saved["state"]["step"])
        best.update(saved.get("best") or {}, model=saved.get("best_model"))
    ddp = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    train_rows = np.flatnonzero(~data.is_val)
    lengths = np.array([len(ids) for ids in caption_ids])
    steps_per_epoch = len(epoch_batches(train_rows, lengths, cfg.batch_size, world, cfg.seed, 0))
    total = min(cfg.max_steps or 10 ** 12, cfg.epochs * steps_per_epoch)
    logger = MetricsLogger(loop_config.get("mlflow_run_id"), loop_config.get("mlflow_tracking_uri")) \
        if rank == 0 else None
    progress = ProgressLine("caption step", total) if rank == 0 else None
    neighbours = decoder_config.neighbour_memory

    def report(metrics: dict) -> None:
        metrics = {**metrics, "step": state["step"], "epoch": state["epoch"],
                   "restored_from_step": state["restored_from_step"]}
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": dict(state),
                       "best": {"value": best["value"], "step": best["step"]}, "best_model": best["model"]}
            torch.save(payload, Path(tmp) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def validate() -> dict:
        val = validation_metrics(model, data, caption_ids, shared["vocab_tokens"], shared["vocab_file"], cfg,
                                 device, with_samples=rank == 0)
        samples = val.pop("samples", None)
        if rank == 0 and cfg.select_best != "last":
            value = val["loss"] if cfg.select_best == "loss" else val.get(cfg.select_best)
            better = value is not None and (best["value"] is None or (value < best["value"] if cfg.select_best ==
                                                                      "loss" else value > best["value"]))
            if better:
                best.update(value=value, step=state["step"],
                            model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        if logger and samples:
            logger.text("\n\n".join(samples), f"samples/step_{state['step']:06d}.txt")
        return val

    finished = state["step"] >= total
    started = time.perf_counter()
    tokens_seen = 0
    for epoch in range(state["epoch"], cfg.epochs):
        if finished:
            break
        ddp.train()
        batches = epoch_batches(train_rows, lengths, cfg.batch_size, world, cfg.seed, epoch)
        skip = state["batch_in_epoch"] if epoch == state["epoch"] else 0
        state["epoch"] = epoch
        for b_idx in range(skip, len(batches)):
            rows = batches[b_idx][rank::world]
            inputs, ids = make_inputs(data, caption_ids, rows, neighbours)
            torch.manual_seed(int(np.random.SeedSequence([cfg.seed, rank, epoch, b_idx]).generate_state(1)[0]))
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(state["step"], cfg.warmup_steps, total)
            logits = ddp(inputs.to(device), ids.to(device))
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     ids[:, 1:].reshape(-1).to(device), ignore_index=0,
                                                     label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            state["step"] += 1
            state["batch_in_epoch"] = b_idx + 1
            tokens_seen += int((ids[:, 1:] != 0).sum()) * world
            if logger:
                logger.log({"train_loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"]}, state["step"])
            if progress:
                progress.update(state["step"], epoch=epoch, loss=round(float(loss.detach()), 3),
                                captions_per_s=round(state["step"] * cfg.batch_size * world /
                                                     max(time.perf_counter() - started, 1e-9), 1))
            if state["step"] % cfg.checkpoint_every == 0:
                report({"train_loss": float(loss.detach())})
            if state["step"] >= total:
                finished = True
                break
        if not finished:
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        val = validate()
        seconds = time.perf_counter() - started
        throughput = {"tokens_per_s": tokens_seen / seconds if seconds else 0.0}
        if logger:
            logger.log({**{f"val_{k}": v for k, v in val.items()}, **throughput}, state["step"])
            logger.flush()
        report({"train_loss": float(loss.detach()), **{f"val_{k}": v for k, v in val.items()}, **throughput,
                "best_step": best["step"]})


@torch.no_grad()
def validation_metrics(model, data, caption_ids, vocab_tokens, vocab_file, cfg: CaptionTrainConfig, device,
                       with_samples: bool = True) -> dict:
    """Held-out token loss (no label smoothing) and, on the first eval_samples held-out molecules, beam-search
    captions scored with MolT5's metrics (rank 0 only)."""
    from momu.caption.decoder import CaptionVocab
    from momu.caption.metrics import load_tokenizer, score_captions
    from momu.caption.wordnet import wordnet_available

    model.eval()
    rows = np.flatnonzero(data.is_val)
    losses, tokens = 0.0, 0
    for start in range(0, len(rows), 64):
        inputs, ids = make_inputs(data, caption_ids, rows[start:start + 64], model.config.neighbour_memory)
        logits = model(inputs.to(device), ids.to(device))
        target = ids[:, 1:].to(device)
        losses += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                          ignore_index=0, reduction="sum"))
        tokens += int((target != 0).sum())
    out = {"loss": losses / max(tokens, 1)}
    if with_samples and cfg.eval_samples:
        vocab = CaptionVocab(load_tokenizer(vocab_file), vocab_tokens)
        chosen = rows[:cfg.eval_samples]
        predictions = []
        for start in range(0, len(chosen), 32):
            inputs, _ = make_inputs(data, caption_ids, chosen[start:start + 32], model.config.neighbour_memory)
            predictions += [vocab.decode(ids) for ids in model.generate(
                inputs.to(device), beams=cfg.beams, length_penalty=cfg.length_penalty,
                no_repeat_ngram=cfg.no_repeat_ngram)]
        references = [data.captions[r] for r in chosen]
        scores = score_captions(references, predictions, with_meteor=wordnet_available()).as_dict()
        out.update({k: v for k, v in scores.items() if k in ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor")
                    and v is not None})
        out["samples"] = [f"{data.ids[r]}\nreference: {ref}\ngenerated: {pred}"
                          for r, ref, pred in zip(chosen[:8], references, predictions)]
    model.train()
    return out


# -- driver side ------------------------------------------------------------------------------------------------

def run_caption_training(cfg: CaptionTrainConfig, log_to_mlflow: bool = True, log=print) -> dict:
    """Build the data, train on Ray Train, export the captioner; returns a summary (paths, metrics, data)."""
    import ray

    from momu.caption import pool as P
    from momu.caption.decoder import CaptionVocab
    from momu.caption.decoder_data import GraphFeatureEncoder, build_caption_data, check_no_evaluated_molecules
    from momu.caption.metrics import load_tokenizer, resolve_vocab
    from momu.caption.retrieval import CaptionPool
    from momu.models.loading import load_momu, resolve_model_dir

    resume_from = resume_checkpoint_dir(cfg.resume, CHECKPOINT_FILE)
    run_name = cfg.run_name or f"caption-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = storage_path_for(cfg.storage_path)
    run_dir = Path(storage) / run_name
    export_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir / "captioner"
    if (export_dir / "captioner.json").exists():
        raise ValueError(f"output_dir: {export_dir} already holds a captioner; choose a new one")
    encoder_dir = resolve_model_dir(cfg.encoder).resolve()
    pool_dir = run_dir / "pool"
    if not (pool_dir / P.MANIFEST_FILE).exists():
        P.build_pool([(s.name, s.path) for s in cfg.sources], cfg.exclude, pool_dir)
    pool = CaptionPool(pool_dir)
    encoder = GraphFeatureEncoder(load_momu(encoder_dir))
    data = build_caption_data(pool, encoder, cfg.val_fraction, log=log)
    check_no_evaluated_molecules(data, cfg.exclude)
    vocab_file = str(resolve_vocab(None).resolve())
    vocab = CaptionVocab.from_captions(load_tokenizer(vocab_file),
                                       [c for c, v in zip(data.captions, data.is_val) if not v], cfg.vocab_min_count)
    caption_ids = vocab.encode(data.captions, cfg.decoder.max_length)
    summary = {**data.summary, "vocab_size": len(vocab)}
    log(f"vocabulary {len(vocab)} WordPiece tokens; pool {len(pool)} molecules "
        f"(evaluated molecules removed: {pool.manifest['removed']['evaluated_total']})")
    init_ray_if_needed()
    data_ref = ray.put({"data": data, "caption_ids": caption_ids, "vocab_tokens": vocab.tokens,
                        "vocab_file": vocab_file})
    from momu.tracking import optional_mlflow_run

    with optional_mlflow_run(cfg, log_to_mlflow, cfg.mlflow_experiment, cfg.mlflow_tracking_uri, run_name,
                             summary) as (run_id, tracking_uri):
        trainer = make_torch_trainer(
            train_func, {"config": cfg.model_dump(mode="json"), "data_ref": data_ref, "resume_from": resume_from,
                         "mlflow_run_id": run_id, "mlflow_tracking_uri": tracking_uri},
            cfg.scaling, run_name, storage, cfg.max_failures, cfg.checkpoints_to_keep)
        result = trainer.fit()
        metrics = dict(result.metrics or {})
        if result.checkpoint is None:
            raise RuntimeError("training ended without a checkpoint")
        from momu.caption.captioner import export_captioner

        saved = torch.load(Path(result.checkpoint.path) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        use_best = cfg.select_best != "last" and saved.get("best_model") is not None
        weights = saved["best_model"] if use_best else saved["model"]
        selected_step = saved["best"]["step"] if use_best else saved["state"]["step"]
        decoder_config = cfg.decoder.model_copy(update={"vocab_size": len(vocab),
                                                        "graph_dim": int(data.pooled.shape[1])})
        export_captioner(export_dir, decoder_config, weights, vocab, vocab_file, encoder_dir, pool_dir,
                         generation={"beams": cfg.beams, "length_penalty": cfg.length_penalty,
                                     "no_repeat_ngram": cfg.no_repeat_ngram},
                         training={"run_name": run_name, "steps": saved["state"]["step"],
                                   "selected_step": selected_step, "select_best": cfg.select_best,
                                   "data": summary, "final_metrics": _plain(metrics)})
        model_uri = None
        if run_id:
            import mlflow

            mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            model_uri = _log_captioner(export_dir, cfg.register_model_name)
    return {"run_name": run_name, "captioner": str(export_dir), "checkpoint": result.checkpoint.path,
            "metrics": _plain(metrics), "data": summary, "selected_step": selected_step,
            "mlflow_run_id": run_id, "model_uri": model_uri}


def _plain(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def _log_captioner(export_dir: Path, register_name: Optional[str]) -> str:
    """Log the captioner directory as an MLflow pyfunc (models-from-code) and register it when asked."""
    import importlib.util

    import mlflow

    flavour_file = importlib.util.find_spec("momu.caption.mlflow_captioner").origin
    info = mlflow.pyfunc.log_model(name="captioner", python_model=flavour_file,
                                   artifacts={"captioner": str(export_dir)},
                                   pip_requirements=["momu", "torch", "torch-geometric", "transformers", "rdkit"])
    if not register_name:
        return info.model_uri
    version = mlflow.register_model(info.model_uri, register_name)
    return f"models:/{register_name}/{version.version}"
