"""`momu train-local` and `momu pretrain`, and the closing summary every Ray Train job prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from momu.cli import add_config_arguments, add_job_arguments, config_from_args
from momu.pretrain.config import PretrainConfig, TrainConfig


def register(sub, groups) -> None:
    p = sub.add_parser("train-local", help="single-process reference contrastive training (CPU-friendly)",
                       description="MoMu contrastive training in one process: read pairs, featurize, train the graph "
                                   "tower (+ the text tower with --text_mode finetune) with MoMu's four InfoNCE losses, "
                                   "report held-out in-batch retrieval accuracy, save the model, log to MLflow.")
    add_job_arguments(p, TrainConfig, _cmd_train_local)

    p = sub.add_parser("pretrain", help="distributed contrastive pretraining on Ray (Ray Data + Ray Train + MLflow)",
                       description="MoMu pretraining on a Ray cluster (local by default; inside `ray job submit` it "
                                   "joins the job's cluster). Objective momu (graph<->text) or graphcl (graph-only "
                                   "initialisation). Checkpoints every --checkpoint_every steps; a failed worker "
                                   "group restarts from the last one; --resume continues an earlier run.")
    add_config_arguments(p, PretrainConfig)
    p.add_argument("--output-dir", default=None, help="where to save the final model (default: in the run's storage)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_cmd_pretrain)


def _cmd_train_local(args: argparse.Namespace) -> int:
    from momu.pretrain.local import train_local

    config = config_from_args(TrainConfig, args)
    result = train_local(config, progress=not args.quiet, log_to_mlflow=not args.no_mlflow)
    m = result.metrics
    before, after = m["heldout_before"], m["heldout_after"]
    print(
        f"\ntrain loss {m['train_loss_first']:.3f} -> {m['train_loss_last']:.3f} over {m['steps']} steps "
        f"({m['pairs_per_second']:.0f} pairs/s)\n"
        f"held-out ({m['data']['heldout_pairs']} pairs, 1-of-{config.eval_batch_size} in-batch accuracy, "
        f"chance {after['chance']:.3f}):\n"
        f"  graph->text {before['acc_g2t']:.3f} -> {after['acc_g2t']:.3f}\n"
        f"  text->graph {before['acc_t2g']:.3f} -> {after['acc_t2g']:.3f}\n"
        f"  loss        {before['loss']:.3f} -> {after['loss']:.3f}\n"
        f"results:  {result.output_dir.resolve()}/metrics.json\n"
        f"model:    {result.model_dir.resolve()}"
    )
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(config.mlflow_tracking_uri, Path(config.output_dir).parent)
        print(f"MLflow:   run {result.mlflow_run_id} in {uri}\n          (browse: mlflow ui --backend-store-uri {uri})")
    return 0


def print_training_result(result, config) -> None:
    """The closing summary of a Ray Train job (pretraining or retrieval finetuning)."""
    m = result.metrics
    print(f"\nrun {result.run_name}: {m.get('step', 0)} steps, epoch {m.get('epoch')}, "
          f"train loss {m.get('train_loss', float('nan')):.3f}")
    if "val_acc_g2t" in m:
        print(f"{'last ' if config.select_best else ''}validation 1-of-{config.eval_batch_size} in-batch accuracy: "
              f"graph->text {m['val_acc_g2t']:.3f}, text->graph {m['val_acc_t2g']:.3f} (chance {m['val_chance']:.3f})")
    key = f"best_val_{config.select_best}"
    if config.select_best and key in m:
        print(f"selected: step {m['best_step']} with held-out {config.select_best} {m[key]:.3f}")
    print(f"throughput {m.get('samples_per_s_overall', 0):.1f} samples/s, data wait "
          f"{100 * m.get('data_wait_fraction', 0):.1f}% of step time")
    print(f"checkpoint: {result.checkpoint_path}\nmodel:      {result.model_dir}")
    if result.mlflow_run_id:
        from momu.tracking import resolve_tracking_uri

        uri = resolve_tracking_uri(config.mlflow_tracking_uri)
        print(f"MLflow run: {result.mlflow_run_id} in {uri}" + (f"\nregistered: {result.model_uri}" if result.model_uri else ""))
        print(f"browse:     mlflow ui --backend-store-uri {uri}")


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from momu.pretrain.ray_train import run_pretrain

    config = config_from_args(PretrainConfig, args)
    print_training_result(run_pretrain(config, output_dir=args.output_dir, log_to_mlflow=not args.no_mlflow), config)
    return 0
