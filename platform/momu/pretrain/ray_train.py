"""Distributed contrastive pretraining on Ray Train (`momu pretrain`, jobs/pretrain.py).

The driver reads and featurizes with Ray Data, opens the MLflow run, and starts a TorchTrainer; `train_func`
wires config -> model -> this worker's data split -> loop. Checkpoints hold model + optimiser + step + data
position (epoch, batch in epoch); a restarted worker group (FailureConfig) or `--resume` continues from there,
redrawing exactly the batches and views an uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from momu.pretrain.config import PretrainConfig
from momu.job_output import ProgressLine, configure_job_output, verbose
from momu.ray_session import (init_ray_if_needed, load_train_checkpoint, make_torch_trainer,
                               resume_checkpoint_dir, storage_path_for)
from momu.tracking import MetricsLogger

CHECKPOINT_FILE = "train_state.pt"


# -- worker side ------------------------------------------------------------------------------------------------

def _step_seed(seed: int, rank: int, step: int) -> int:
    # Dropout randomness keyed by (seed, rank, step): a resumed run draws what the uninterrupted one drew.
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def _trainable_state(model, text_mode: str, objective: str, text_train_layers: Optional[int] = None) -> dict:
    """Model state to checkpoint: everything except the text tower's parts that cannot change (all of it when
    frozen/locked/graphcl; all but the trained top layers when partial)."""
    if objective == "graphcl" or text_mode in ("frozen", "locked"):
        keep_text: tuple = ()
    elif text_mode == "partial":
        keep_text = tuple(f"text_encoder.{p}" for p in model.text_encoder.top_state_prefixes(text_train_layers))
    else:
        keep_text = ("text_encoder.",)
    return {k: v for k, v in model.state_dict().items()
            if not k.startswith("text_encoder.") or k.startswith(keep_text)}


def load_graph_init(model, source: str) -> None:
    """Initialise the GIN (graph_encoder.*) from a saved MoMu model (dir or models:/ URI)."""
    from momu.models.loading import load_momu

    donor = load_momu(source)
    if donor.config.graph != model.config.graph:
        raise ValueError(f"graph_init: {source} has graph config {donor.config.graph}, this run has "
                         f"{model.config.graph}")
    model.graph_encoder.load_state_dict(donor.graph_encoder.state_dict())


def load_full_init(model, source: str) -> None:
    """Initialise every weight from a saved MoMu model (dir or models:/ URI) with the same config."""
    from momu.models.loading import load_momu

    donor = load_momu(source)
    if donor.config != model.config:
        raise ValueError(f"init_from: {source} has model config {donor.config}, this run has {model.config}")
    model.load_state_dict(donor.state_dict())


def planned_steps(cfg: PretrainConfig, rows_per_worker: int) -> int:
    """Optimiser steps the run will take (what the lr schedule spans)."""
    per_epoch = max(1, rows_per_worker // cfg.batch_size // cfg.grad_accum)
    return max(1, min(cfg.max_steps or 10 ** 12, cfg.epochs * per_epoch))


def lr_factor(cfg: PretrainConfig, step: int, total: int) -> float:
    """Multiplier of cfg.lr for optimiser step `step` (0-based). warmup_linear follows BERT's warmup_linear
    (MoMu's retrieval finetuning): rises linearly over warmup_fraction of `total`, then decays linearly to 0."""
    if cfg.lr_schedule == "constant":
        return 1.0
    x, warm = (step + 1) / total, cfg.warmup_fraction
    if x < warm:
        return x / warm
    return max(0.0, (1.0 - x) / (1.0 - warm)) if warm < 1.0 else 0.0


def _selection_value(val: dict, metric: str) -> float:
    if metric == "acc_mean":
        return (val["acc_g2t"] + val["acc_t2g"]) / 2
    return val[metric]


def train_func(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    from momu.models.momu import build_model
    from momu.pretrain.contrastive import (ContrastiveCollator, ContrastiveModule, PrefetchedBatches,
                                        contrastive_objective)

    import ray.data

    cfg = PretrainConfig.model_validate(loop_config["config"])
    text_mode = loop_config["text_mode"]
    # Workers iterate materialized splits; per-iteration progress bars would only flood the job log.
    ray.data.DataContext.get_current().enable_progress_bars = False
    configure_job_output(verbose())  # this worker's Ray loggers, as the driver's (MOMU_VERBOSE is inherited)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg.model)
    if cfg.init_from:
        load_full_init(model, loop_config.get("init_from_dir") or cfg.init_from)
    if cfg.graph_init:
        load_graph_init(model, cfg.graph_init)
    module = ContrastiveModule(model, cfg.objective, text_mode, cfg.text_train_layers)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "restored_from_step": 0}
    # select_best: the best validation so far and its weights (kept in every checkpoint, so resuming keeps it).
    best = {"value": float("-inf"), "step": -1, "model": None}
    saved = load_train_checkpoint(loop_config, CHECKPOINT_FILE)
    if saved:
        missing, unexpected = model.load_state_dict(saved["model"], strict=False)
        if unexpected or any(not k.startswith("text_encoder.") for k in missing):
            raise RuntimeError(f"checkpoint does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["state"])
        state["restored_from_step"] = state["step"]
        if "best" in saved:
            best.update(saved["best"], model=saved.get("best_model"))
    device = ray.train.torch.get_device()
    ddp = ray.train.torch.prepare_model(module)  # to device; DistributedDataParallel when world > 1
    collator = ContrastiveCollator.for_config(cfg, rank, text_mode,
                                              pad_token_id=int(model.text_encoder.tokenizer.pad_token_id or 0))
    shard = ray.train.get_dataset_shard(f"train_{rank}")
    logger = MetricsLogger(loop_config.get("mlflow_run_id"), loop_config.get("mlflow_tracking_uri")) if rank == 0 \
        else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    max_steps = cfg.max_steps or 10 ** 12
    total_steps = planned_steps(cfg, int(loop_config.get("train_rows_per_worker") or cfg.batch_size))
    # One line every 15 s from rank 0 (forwarded to the driver's log), instead of Ray's per-iteration output.
    progress = ProgressLine(f"{cfg.objective} step", min(total_steps, max_steps)) if rank == 0 else None
    # Loop time: every step, and the steady state after this run's first WARMUP_STEPS optimiser steps (first
    # all-reduce, allocator and iterator start-up), which is what a plain-torch ceiling measures too.
    timing = {"data": 0.0, "compute": 0.0, "samples": 0, "steady_s": 0.0, "steady_samples": 0}
    warm_after = state["step"] + WARMUP_STEPS

    def save_and_report(metrics: dict) -> None:
        metrics = {**metrics, "step": state["step"], "epoch": state["epoch"],
                   "restored_from_step": state["restored_from_step"]}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                payload = {"model": _trainable_state(model, text_mode, cfg.objective, cfg.text_train_layers),
                           "optimizer": optimizer.state_dict(), "state": dict(state)}
                if cfg.select_best and best["model"] is not None:
                    payload["best"] = {"value": best["value"], "step": best["step"]}
                    payload["best_model"] = best["model"]
                torch.save(payload, Path(tmp) / CHECKPOINT_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)

    def consider_best(val: dict) -> dict:
        """select_best: keep a copy of the weights when this validation is the best so far (rank 0)."""
        if not cfg.select_best or not val:
            return {}
        value = _selection_value(val, cfg.select_best)
        if value > best["value"]:
            best.update(value=value, step=state["step"],
                        model={k: v.detach().cpu().clone()
                               for k, v in _trainable_state(model, text_mode, cfg.objective,
                                                            cfg.text_train_layers).items()})
        return {f"best_val_{cfg.select_best}": best["value"], "best_step": best["step"]}

    if cfg.select_best and state["step"] == 0 and rank == 0:
        # The starting weights are a candidate too (MoMu's finetuning validated before its first epoch).
        val = _validate(module, cfg, text_mode, collator, device)
        selected = consider_best(val)
        if logger:
            logger.log({**{f"val_{k}": v for k, v in val.items()}, **selected}, 0)
            logger.flush()

    last_loss = float("nan")
    finished = state["step"] >= max_steps
    # One background thread fetches and collates every epoch's batches in order (see PrefetchedBatches).
    prefetch = PrefetchedBatches(
        ((epoch, shard.iter_batches(batch_size=cfg.batch_size, batch_format="pyarrow", drop_last=True,
                                    local_shuffle_buffer_size=cfg.shuffle_buffer or None,
                                    local_shuffle_seed=cfg.seed * 100_003 + epoch * 101 + rank))
         for epoch in range(state["epoch"], cfg.epochs)),
        collator, skip=state["batch_in_epoch"])
    for epoch in range(state["epoch"], cfg.epochs):
        if finished:
            break
        ddp.train()
        state["epoch"], state["batch_in_epoch"] = epoch, 0
        batches = prefetch.next_epoch()
        accumulated, micro = 0.0, 0
        while True:
            t0 = time.perf_counter()
            item = next(batches, None)
            if item is None:
                break
            b_idx, inputs = item
            state["batch_in_epoch"] = b_idx + 1
            inputs = inputs.to(device)
            t1 = time.perf_counter()
            torch.manual_seed(_step_seed(cfg.seed, rank, b_idx + epoch * 1_000_003))
            sync = micro + 1 == cfg.grad_accum
            with (ddp.no_sync() if (world > 1 and not sync) else _nullcontext()), autocast:
                embeddings = ddp(inputs)
                loss = contrastive_objective(embeddings, cfg.objective, cfg.model.temperature, cfg.losses,
                                             cfg.gather_negatives, margin=cfg.margin)
                (loss / cfg.grad_accum).backward()
            accumulated += float(loss.detach()) / cfg.grad_accum
            micro += 1
            if sync:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg, state["step"], total_steps)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                last_loss, accumulated, micro = accumulated, 0.0, 0
            t2 = time.perf_counter()
            timing["data"] += t1 - t0
            timing["compute"] += t2 - t1
            timing["samples"] += inputs.batch_size * world
            if state["step"] > warm_after:
                timing["steady_s"] += t2 - t0
                timing["steady_samples"] += inputs.batch_size * world
            if not sync:
                continue
            if logger:
                logger.log({"train_loss": last_loss, "lr": optimizer.param_groups[0]["lr"],
                            "samples_per_s": inputs.batch_size * world / max(t2 - t0, 1e-9)}, state["step"])
                if state["step"] % cfg.log_every == 0:
                    logger.flush()
            if progress:
                progress.update(state["step"], epoch=epoch, loss=last_loss,
                                samples_per_s=round(inputs.batch_size * world / max(t2 - t0, 1e-9), 1))
            if state["step"] % cfg.checkpoint_every == 0:
                save_and_report({"train_loss": last_loss, **_throughput(timing)})
            if state["step"] >= max_steps:
                finished = True
                break
        if not finished:
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        val = _validate(module, cfg, text_mode, collator, device) if rank == 0 else {}
        selected = consider_best(val)
        if logger:
            logger.log({**{f"val_{k}": v for k, v in val.items()}, **selected}, state["step"])
            logger.flush()
        save_and_report({"train_loss": last_loss, **{f"val_{k}": v for k, v in val.items()}, **selected,
                         **_throughput(timing)})
    prefetch.close()
    if rank == 0 and cfg.embedding_plot and logger and logger.client:
        _log_embedding_plot(module, cfg, text_mode, collator, device, logger)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


WARMUP_STEPS = 3


def _throughput(timing: dict) -> dict:
    total = timing["data"] + timing["compute"]
    steady = timing["steady_s"]
    return {"samples_per_s_overall": timing["samples"] / total if total else 0.0,
            "samples_per_s_steady": timing["steady_samples"] / steady if steady else 0.0,
            "data_wait_fraction": timing["data"] / total if total else 0.0}


@torch.no_grad()
def _val_embeddings(module, cfg: PretrainConfig, text_mode: str, collator, device, limit: Optional[int] = None):
    """Validation graphs (no augmentation) and their first paragraph, in file order."""
    import ray.train

    from momu.pretrain.contrastive import _list_of_lists, graph_batch_from_columns, text_column

    module.eval()
    graphs, texts, tables = [], [], []
    seen = 0
    for batch in ray.train.get_dataset_shard("val").iter_batches(batch_size=cfg.eval_batch_size,
                                                                  batch_format="pyarrow"):
        graph_batch = graph_batch_from_columns(batch, cfg.model.graph.bond_feature, collator.fingerprint_bits)
        graphs.append(module.model.encode_graph(graph_batch.to(device)))
        if cfg.objective != "graphcl":
            offsets, paragraphs = _list_of_lists(batch.column(text_column(text_mode)))
            texts.append(module.embed_text(_to(collator.text_view(paragraphs, offsets[:-1]), device)))
        tables.append(batch)
        seen += batch.num_rows
        if limit and seen >= limit:
            break
    module.train()
    graph_emb = torch.cat(graphs).float().cpu()
    text_emb = torch.cat(texts).float().cpu() if texts else None
    return graph_emb, text_emb, tables


def _to(x, device):
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)


def _validate(module, cfg: PretrainConfig, text_mode: str, collator, device) -> dict:
    """momu: held-out graph<->first-paragraph in-batch accuracy and InfoNCE. graphcl: the same between two
    augmented views of each held-out molecule (views fixed across epochs, so numbers are comparable)."""
    if cfg.objective == "graphcl":
        return _validate_graph_views(module, cfg, collator, device)
    graph_emb, text_emb, _ = _val_embeddings(module, cfg, text_mode, collator, device)
    return _inbatch_metrics(graph_emb, text_emb, cfg)


def _inbatch_metrics(a: torch.Tensor, b: torch.Tensor, cfg: PretrainConfig) -> dict:
    from momu.retrieval.metrics import inbatch_accuracy
    from momu.losses import info_nce

    bs = cfg.eval_batch_size
    metrics = inbatch_accuracy(a, b, bs)
    metrics["loss"] = float(np.mean([float(info_nce(a[s:s + bs], b[s:s + bs], cfg.model.temperature))
                                     for s in range(0, len(a), bs)]))
    return metrics


@torch.no_grad()
def _validate_graph_views(module, cfg: PretrainConfig, collator, device) -> dict:
    import ray.train

    module.eval()
    first, second = [], []
    batches = ray.train.get_dataset_shard("val").iter_batches(batch_size=cfg.eval_batch_size, batch_format="pyarrow")
    for index, batch in enumerate(batches):
        inputs = collator(batch, epoch=-1, batch_index=index).to(device)
        first.append(module.model.encode_graph(inputs.view1))
        second.append(module.model.encode_graph(inputs.view2))
    module.train()
    return _inbatch_metrics(torch.cat(first).float().cpu(), torch.cat(second).float().cpu(), cfg)


def _log_embedding_plot(module, cfg: PretrainConfig, text_mode: str, collator, device, logger,
                        limit: int = 2000) -> None:
    """t-SNE of validation graph embeddings, coloured by a simple chemistry label (aromatic ring or not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    graph_emb, _, tables = _val_embeddings(module, cfg, text_mode, collator, device, limit=limit)
    graph_emb = graph_emb[:limit].numpy()
    if len(graph_emb) < 5:
        return
    aromatic = np.array([3 in row for t in tables for row in t.column("bond_type").to_pylist()])[:len(graph_emb)]
    points = TSNE(n_components=2, perplexity=min(30.0, (len(graph_emb) - 1) / 3), init="pca",
                  random_state=cfg.seed).fit_transform(graph_emb)
    fig, ax = plt.subplots(figsize=(6, 5))
    for value, colour, label in ((True, "tab:orange", "aromatic"), (False, "tab:blue", "no aromatic ring")):
        sel = aromatic == value
        ax.scatter(points[sel, 0], points[sel, 1], s=6, c=colour, label=f"{label} ({sel.sum()})", alpha=0.7)
    ax.set_title(f"t-SNE of {len(graph_emb)} validation graph embeddings")
    ax.legend(loc="best", fontsize=8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "val_graph_embeddings_tsne.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        logger.artifact(str(path), "plots")


# -- driver side ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PretrainResult:
    run_name: str
    checkpoint_path: Optional[str]
    model_dir: Optional[Path]
    metrics: dict
    data_summary: dict
    mlflow_run_id: Optional[str] = None
    model_uri: Optional[str] = None


def run_pretrain(cfg: PretrainConfig, output_dir: Optional[str] = None, log_to_mlflow: bool = True,
                 progress: bool = True) -> PretrainResult:

    resume_from = resume_checkpoint_dir(cfg.resume, CHECKPOINT_FILE)  # a bad path fails before any work
    init_ray_if_needed()
    text_mode = cfg.resolved_text_mode()
    n = cfg.scaling.num_workers
    init_dir = None
    if cfg.graph_init:
        # Resolve here, once: workers run in their own working directory and have no MLflow store path.
        from momu.models.loading import resolve_model_dir

        cfg = cfg.model_copy(update={"graph_init": str(resolve_model_dir(cfg.graph_init).resolve())})
    if cfg.init_from:
        cfg, init_dir = resolve_init_from(cfg, text_mode, progress)
    if text_mode == "partial" and cfg.objective != "graphcl":
        from momu.models.text import check_train_layers

        check_train_layers(cfg.model.text, cfg.text_train_layers)  # here, not inside a Ray Data actor
    from momu.pretrain.data import build_pretrain_data

    data = build_pretrain_data(cfg, n, text_mode)
    if progress:
        print(f"data: {json.dumps(data.summary)}")
    run_name = cfg.run_name or f"{cfg.objective}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = storage_path_for(cfg.storage_path)

    mlflow_ctx, run_id, tracking_uri = _start_mlflow(cfg, run_name, data.summary, text_mode) if log_to_mlflow \
        else (_nullcontext(), None, None)
    # Each dataset carries the context it was made with; the workers iterate the materialized splits every epoch,
    # and bars (or "execution finished" lines) per iteration would flood the job log.
    for ds in [*data.train_splits, data.val]:
        ds.context.enable_progress_bars = verbose()
        ds.context.print_on_execution_start = verbose()
    with mlflow_ctx:
        trainer = make_torch_trainer(
            train_func, {"config": cfg.model_dump(mode="json"), "text_mode": text_mode,
                         "mlflow_run_id": run_id, "mlflow_tracking_uri": tracking_uri,
                         "resume_from": resume_from,
                         "train_rows_per_worker": data.summary["train_rows_per_worker"],
                         "init_from_dir": str(init_dir) if init_dir else None},
            cfg.scaling, run_name, storage, cfg.max_failures, cfg.checkpoints_to_keep,
            datasets={**{f"train_{i}": split for i, split in enumerate(data.train_splits)}, "val": data.val})
        result = trainer.fit()
        metrics = dict(result.metrics or {})
        checkpoint_path = result.checkpoint.path if result.checkpoint else None
        model_dir = model_uri = None
        if checkpoint_path:
            model_dir = export_model(cfg, text_mode, checkpoint_path,
                                     Path(output_dir) if output_dir else Path(storage) / run_name / "model",
                                     init_dir=init_dir)
            if run_id:
                model_uri = _log_model(cfg, model_dir, metrics)
    return PretrainResult(run_name, checkpoint_path, model_dir, metrics, data.summary, run_id, model_uri)


def export_model(cfg: PretrainConfig, text_mode: str, checkpoint_path: str, directory: Path,
                 init_dir: Optional[Path] = None) -> Path:
    """A Ray Train checkpoint -> a saved MoMu model directory (safetensors + config). With select_best, the
    best validation's weights rather than the last ones. Weights a checkpoint leaves out (an untrained text
    tower) come from `init_dir` (init_from) or else from the text encoder's own pretrained weights."""
    from momu.models.momu import MoMu, build_model

    model = MoMu.from_pretrained(init_dir) if init_dir else build_model(cfg.model)
    saved = torch.load(Path(checkpoint_path) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    weights = saved["best_model"] if cfg.select_best and saved.get("best_model") is not None else saved["model"]
    model.load_state_dict(weights, strict=False)
    return model.save_pretrained(directory)


def resolve_init_from(cfg: PretrainConfig, text_mode: str, progress: bool = True) -> tuple[PretrainConfig, Path]:
    """Download/locate the init_from model once; its config becomes the run's `model`. In locked mode the text
    features are computed from the text encoder's pretrained weights, so the init model's text tower must
    still be exactly those weights (a finetuned one needs text_mode frozen or finetune); in partial mode the
    same holds below the trained top layers."""
    from momu.config import MoMuConfig
    from momu.models.loading import resolve_model_dir
    from momu.models.momu import CONFIG_FILE, MoMu
    from momu.models.text import TextEncoder

    init_dir = resolve_model_dir(cfg.init_from).resolve()  # workers run in another directory
    saved = MoMuConfig.model_validate(json.loads((init_dir / CONFIG_FILE).read_text())["config"])
    if saved != cfg.model and progress:
        print(f"init_from: using the model config of {cfg.init_from} (graph_encoder {saved.graph_encoder})")
    cfg = cfg.model_copy(update={"model": saved})
    if text_mode in ("locked", "partial") and cfg.objective != "graphcl":
        tuned = MoMu.from_pretrained(init_dir).text_encoder.state_dict()
        stock_encoder = TextEncoder(saved.text)
        top = stock_encoder.top_state_prefixes(cfg.text_train_layers) if text_mode == "partial" else ()
        changed = [k for k, v in stock_encoder.state_dict().items()
                   if not k.startswith(top) and not torch.equal(v, tuned[k])]
        if changed:
            raise ValueError(f"init_from: {cfg.init_from} has a finetuned text tower ({len(changed)} tensors differ "
                             f"from {saved.text.name_or_path}, e.g. {changed[0]}); text_mode {text_mode} would use "
                             "the wrong cached text inputs: use text_mode frozen or finetune")
    return cfg, init_dir


def _start_mlflow(cfg: PretrainConfig, run_name: str, data_summary: dict, text_mode: str):
    import mlflow

    from momu.tracking import mlflow_run, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.mlflow_tracking_uri)
    ctx = mlflow_run(cfg, cfg.mlflow_experiment, uri, run_name=run_name)
    run = ctx.__enter__()
    mlflow.log_dict(data_summary, "data_summary.json")
    mlflow.set_tags({"text_mode_resolved": text_mode, "objective": cfg.objective})

    class _Close:
        def __enter__(self):
            return run

        def __exit__(self, *exc):
            return ctx.__exit__(*exc)

    return _Close(), run.info.run_id, uri


def _log_model(cfg: PretrainConfig, model_dir: Path, metrics: dict) -> Optional[str]:
    import mlflow

    from momu.tracking import log_momu_model

    # Summary of the last report under its own names, so per-step histories keep one point per step.
    mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    return log_momu_model(model_dir, cfg.register_model_name)
