"""Caption commands: `momu evaluate caption` (score a predictions file with MolT5's metrics), `momu caption`
(batch captioning with the retrieval captioner on Ray Data), `momu caption pool` (build its caption pool) and
`momu evaluate caption-retrieval` (caption an evaluated split and score it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRIC_LABELS = (("bleu2", "BLEU-2"), ("bleu4", "BLEU-4"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"),
                 ("rougeL", "ROUGE-L"), ("meteor", "METEOR"))


def register(sub, groups) -> None:
    """`momu evaluate caption`, `momu evaluate caption-retrieval`, `momu caption` and `momu caption pool`."""
    from momu.caption.config import CaptionMetricsConfig
    from momu.cli import add_config_arguments

    _register_caption_job(sub)
    _register_split_evaluation(groups)
    _register_training(groups)
    _register_selection(groups)

    p = groups["evaluate"].add_parser(
        "caption", help="score predicted captions with MolT5's metrics (BLEU-2/4, ROUGE-1/2/L, METEOR)",
        description="Score predicted molecule captions against their ground truth exactly as MolT5 does: BLEU "
                    "and METEOR over SciBERT WordPiece tokens (nltk, no smoothing), ROUGE F-measure (rouge_score, "
                    "no stemmer) on the raw text, all x100. FILE is MolT5's released TSV (SMILES, ground truth, "
                    "output) or a TSV/Parquet file with ground_truth and caption columns.",
        epilog="example: momu evaluate caption --predictions ../shared/data/molt5_predictions/"
               "molt5-small-smiles2caption.txt --output runs/caption/metrics.json")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", metavar="FILE",
                        help="TSV (.txt/.tsv, header line) or .parquet with ground truth and predicted captions")
    source.add_argument("--model", metavar="CAPTIONER",
                        help="caption --split with this decoder captioner (a `momu finetune caption` export) and "
                             "score it; the predictions are written beside --output")
    p.add_argument("--split", default="../shared/data/chebi20/test.txt", metavar="FILE",
                   help="with --model: the evaluated split, ChEBI-20 table format (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="with --model: only the first N rows")
    p.add_argument("--shuffle-graphs", action="store_true",
                   help="with --model: give each molecule another molecule's graph (the ablation)")
    p.add_argument("--rerank", type=int, default=None, metavar="K",
                   help="with --model: instead of generating, return the pool caption the decoder finds most likely "
                        "among the K nearest by Tanimoto (retrieve-and-rerank)")
    p.add_argument("--prior", default=None, metavar="CAPTIONER",
                   help="with --rerank: a no-graph decoder; rank by what the graph adds (mean PMI)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--output", metavar="metrics.json", help="also write the metrics as JSON to this file")
    add_config_arguments(p, CaptionMetricsConfig)
    p.set_defaults(func=cmd_evaluate_caption)


def format_table(metrics: dict) -> str:
    """The metrics as a two-column text table."""
    lines = [f"caption metrics (MolT5 recipe, x100): {metrics['rows']} rows of {metrics['predictions']}"]
    for key, label in METRIC_LABELS:
        value = metrics[key]
        lines.append(f"  {label:<8} {'not computed' if value is None else f'{value:6.2f}'}")
    return "\n".join(lines)


def cmd_evaluate_caption(args: argparse.Namespace) -> int:
    from momu.caption.config import CaptionMetricsConfig
    from momu.caption.metrics import score_captions
    from momu.caption.predictions import read_predictions
    from momu.cli import config_from_args

    config = config_from_args(CaptionMetricsConfig, args)
    if args.model:
        return _evaluate_captioner(args, config)
    data = read_predictions(args.predictions)
    scores = score_captions(data.references, data.predictions, vocab_file=config.vocab_file,
                            max_length=config.max_length, with_meteor=config.meteor)
    metrics = {"predictions": str(data.path), **scores.as_dict(), "config": config.model_dump()}
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2) if args.json else format_table(metrics))
    if args.output and not args.json:
        print(f"metrics: {Path(args.output).resolve()}")
    return 0


def _register_caption_job(sub) -> None:
    from momu.caption.config import CaptionJobConfig, CaptionPoolConfig, CaptionRankerConfig
    from momu.cli import add_config_arguments

    p = sub.add_parser(
        "caption", help="caption molecule libraries with the retrieval captioner (Ray Data); `caption pool` "
                        "builds its pool",
        description="Caption every molecule of a library (.smi, CSV/TSV, Parquet, SDF/.sdf.gz, ChEBI-20 .txt, "
                    "directories, globs) with the retrieval captioner: the caption is the description of the most "
                    "similar molecule of a caption pool (Morgan Tanimoto, MoMu graph cosine, or their fusion), "
                    "labelled as such, with that neighbour's id, SMILES and similarity. Output: Parquet files "
                    "under OUTPUT_DIR/captions, rejects.parquet (every row not captioned, with its reason) and "
                    "manifest.json; read = captioned + rejected. Build the pool first with `momu caption pool`. "
                    "--captioner may also be a decoder captioner (a `momu finetune caption` export): its captions "
                    "are generated, and labelled so.",
        epilog="examples:\n  momu caption pool --config configs/caption_pool_chebi20.yaml\n"
               "  momu caption --inputs molecules.smi --captioner runs/caption/chebi20_pool --output_dir runs/caption/x\n"
               "  momu caption --inputs lib.sdf.gz --captioner runs/caption/chebi20_pool --kind fusion --model momu-cpu\n"
               "  momu caption --inputs molecules.smi --captioner runs/train/<run>/captioner --output_dir runs/caption/y",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, CaptionJobConfig)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verbose", action="store_true", help="Ray's own logging and progress bars")
    p.set_defaults(func=_cmd_caption)
    # `momu caption pool ...`: optional, so `momu caption --inputs ...` needs no subcommand.
    actions = p.add_subparsers(dest="caption_action", metavar="ACTION", required=False)
    _add_action(
        actions, "pool", CaptionPoolConfig, _cmd_pool,
        help="build a caption pool: sources minus the evaluated split's molecules",
        description="Build the retrieval captioner's pool directory: the caption sources' molecules (canonical "
                    "SMILES, Morgan fingerprints, optionally MoMu embeddings with the model's weights sha256) minus "
                    "every molecule of the `exclude` files, matched by CID, canonical isomeric SMILES and "
                    "stereo-free connectivity (InChIKey first block). manifest.json and removed.parquet say what "
                    "was removed and why.",
        epilog="example: momu caption pool --config configs/caption_pool_chebi20.yaml --model momu-cpu")
    _add_action(
        actions, "train-ranker", CaptionRankerConfig, _cmd_train_ranker,
        help="train the pool's learned caption ranker (kind ranked)",
        description="Train the learned caption ranker of a pool built with a MoMu model: for each pool molecule, "
                    "captioned from the pool without itself, it learns which of the k Tanimoto-nearest captions "
                    "shares most n-grams with the molecule's own caption, from fingerprint similarities, MoMu "
                    "graph and graph<->caption cosines and the captions' agreement with each other. The held-out "
                    "molecules (val_fraction, by id hash) never train it; the command prints it next to "
                    "nearest-neighbour copying on them. Saves ranker.safetensors and ranker.json into the pool.",
        epilog="example: momu caption train-ranker --pool runs/caption/chebi20_pool")


def _add_action(actions, name: str, config_cls, func, **texts) -> None:
    """One `momu caption ACTION` subcommand: its config's fields as flags, run locally (no Ray)."""
    from momu.cli import add_config_arguments

    action = actions.add_parser(name, **texts)
    add_config_arguments(action, config_cls)
    action.add_argument("--verbose", action="store_true", help="(no Ray here; accepted for symmetry)")
    action.set_defaults(func=func)


def _cmd_caption(args: argparse.Namespace) -> int:
    from momu.caption.config import CaptionJobConfig
    from momu.caption.job import format_summary, run_caption_job
    from momu.cli import config_from_args

    config = config_from_args(CaptionJobConfig, args)
    summary = run_caption_job(config)
    print(json.dumps(summary, indent=2) if args.json else "\n" + format_summary(summary))
    return 0


def _cmd_pool(args: argparse.Namespace) -> int:
    from momu.caption.config import CaptionPoolConfig
    from momu.caption.pool import build_pool
    from momu.cli import config_from_args

    config = config_from_args(CaptionPoolConfig, args)
    manifest = build_pool([(s.name, s.path) for s in config.sources], config.exclude, config.output_dir,
                          config.model, config.batch_size)
    removed = manifest["removed"]
    print(f"pool: {manifest['pool_rows']:,} molecules with captions in {Path(config.output_dir).resolve()}")
    print(f"removed as evaluated molecules: {removed['evaluated_total']:,} (by CID {removed['evaluated_cid']:,}, "
          f"canonical SMILES {removed['evaluated_smiles']:,}, connectivity {removed['evaluated_connectivity']:,}); "
          f"duplicates {removed['duplicate_cid'] + removed['duplicate_smiles']:,}; unparseable "
          f"{removed['unparseable']:,}")
    if manifest["embeddings"]:
        print(f"embeddings: {manifest['embeddings']['model']} (weights sha256 "
              f"{manifest['embeddings']['weights_sha256'][:12]})")
        if config.ranker:
            from momu.caption.config import CaptionRankerConfig
            from momu.caption.ranker import train_ranker

            meta = train_ranker(CaptionRankerConfig(pool=config.output_dir))
            _print_ranker(meta, config.output_dir)
    return 0


def _print_ranker(meta: dict, pool: str) -> None:
    from momu.caption.ranker import RANKER_META

    table = meta["held_out"]
    print(f"ranker: {Path(pool).resolve() / RANKER_META} ({meta['training']['seconds']:.0f} s); held-out mean of the "
          f"six metrics {table['ranker']['mean']:.2f} vs {table['nearest neighbour (Tanimoto)']['mean']:.2f} for "
          "nearest-neighbour copying")


def _cmd_train_ranker(args: argparse.Namespace) -> int:
    from momu.caption.config import CaptionRankerConfig
    from momu.caption.ranker import train_ranker
    from momu.cli import config_from_args

    config = config_from_args(CaptionRankerConfig, args)
    meta = train_ranker(config)
    _print_ranker(meta, config.pool)
    return 0


def _register_split_evaluation(groups) -> None:
    from momu.caption.config import CaptionRetrievalEvalConfig
    from momu.cli import add_config_arguments

    p = groups["evaluate"].add_parser(
        "caption-retrieval", help="caption an evaluated split with retrieval captioners and score them",
        description="Caption every molecule of an evaluated split (default ChEBI-20 test) with the random-pool "
                    "floor and the retrieval captioners (tanimoto, momu, fusion), write one MolT5-format "
                    "predictions file per captioner (SMILES, ground truth, output) and score each with MolT5's "
                    "metrics. The pool must have been built with the split in `exclude`.",
        epilog="example: momu evaluate caption-retrieval --captioner runs/caption/chebi20_pool "
               "--kinds [random,tanimoto,momu,fusion] --model momu-cpu")
    add_config_arguments(p, CaptionRetrievalEvalConfig)
    p.set_defaults(func=_cmd_evaluate_split)


def _cmd_evaluate_split(args: argparse.Namespace) -> int:
    from momu.caption.config import CaptionRetrievalEvalConfig
    from momu.caption.split_eval import evaluate_split, markdown_table
    from momu.cli import config_from_args

    config = config_from_args(CaptionRetrievalEvalConfig, args)
    results = evaluate_split(config)
    print(f"\n{results['rows']} molecules of {results['split']}; pool {results['pool_rows']:,} molecules "
          f"(evaluated molecules removed: {results['pool_removed']['evaluated_total']:,})")
    print(markdown_table(results))
    print(f"metrics: {Path(config.output_dir).resolve() / 'metrics.json'}")
    return 0


def _evaluate_captioner(args: argparse.Namespace, config) -> int:
    from momu.caption.split_eval import caption_split_with_decoder

    output = Path(args.output) if args.output else Path("runs/caption") / f"{Path(args.model).name}_eval" / \
        "metrics.json"
    metrics = caption_split_with_decoder(args.model, args.split, output, limit=args.limit,
                                         shuffle_graphs=args.shuffle_graphs, with_meteor=config.meteor,
                                         rerank_k=args.rerank, prior_dir=args.prior)
    print(json.dumps(metrics, indent=2) if args.json else format_table(metrics))
    print(f"predictions: {metrics['predictions']}\nmetrics: {output.resolve()}")
    return 0


def _register_training(groups) -> None:
    from momu.caption.config import CaptionTrainConfig
    from momu.cli import add_config_arguments

    p = groups["finetune"].add_parser(
        "caption", help="train the graph-conditioned caption decoder (Ray Train)",
        description="Train a Transformer decoder that writes a molecule's caption while cross-attending to the "
                    "frozen MoMu GIN's node embeddings and MoMu's pooled graph token (graph_memory), optionally "
                    "also to the nearest pool molecule's caption (decoder.neighbour_memory: retrieve-and-edit). "
                    "The training captions are `sources` minus every molecule of `exclude` (by CID, canonical "
                    "SMILES and InChIKey connectivity); a hashed share is held out for validation and model "
                    "selection. Checkpoints every epoch; --resume continues a stopped run. Exports a "
                    "self-contained captioner directory (decoder, vocab, encoder, pool) and logs params, curves, "
                    "sample captions and the registered model to MLflow.",
        epilog="examples: momu finetune caption --config configs/caption_tiny.yaml\n"
               "          momu finetune caption --config configs/caption_cpu.yaml --decoder.graph_memory none "
               "--run_name caption-no-graph\n"
               "          momu evaluate caption --model runs/train/<run>/captioner --output runs/caption/eval.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, CaptionTrainConfig)
    p.set_defaults(func=_cmd_finetune_caption)


def _cmd_finetune_caption(args: argparse.Namespace) -> int:
    from momu.caption.config import CaptionTrainConfig
    from momu.caption.train import run_caption_training
    from momu.cli import config_from_args

    config = config_from_args(CaptionTrainConfig, args)
    result = run_caption_training(config)
    metrics = result["metrics"]
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_") and isinstance(v, float)}
    print(f"trained {metrics.get('step')} steps ({result['data']['train']} training captions); selected step "
          f"{result['selected_step']}; validation {shown}")
    print(f"captioner: {Path(result['captioner']).resolve()}")
    if result.get("model_uri"):
        print(f"mlflow model: {result['model_uri']}")
    return 0


def _register_selection(groups) -> None:
    p = groups["evaluate"].add_parser(
        "caption-selection", help="choose the captioner on held-out pool molecules (never the test split)",
        description="Caption the decoder's held-out pool molecules (leave-one-out: each without itself in the pool) "
                    "with nearest-neighbour copying (tanimoto), the fusion grid (k x weight), the decoder's rerank "
                    "over k neighbours, and the decoder's own captions; score them with MolT5's metrics and name "
                    "the best by the mean of the six.",
        epilog="example: momu evaluate caption-selection --captioner runs/train/<run>/captioner --model momu-cpu")
    p.add_argument("--captioner", required=True, help="a `momu finetune caption` export")
    p.add_argument("--model", default="momu-cpu", help="MoMu model of the fusion captioners (default: momu-cpu)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N held-out molecules")
    p.add_argument("--no-generate", action="store_true", help="skip the decoder's own (slow) beam-search captions")
    p.add_argument("--prior", default=None, metavar="CAPTIONER", help="a no-graph decoder trained on the same "
                   "captions: adds the rerank-pmi rows (graph likelihood minus this prior's)")
    p.add_argument("--meteor", default="true", choices=["true", "false"], help="compute METEOR (needs WordNet)")
    p.add_argument("--output", default=None, metavar="JSON", help="where the table goes (default: beside the "
                                                                  "captioner, selection.json)")
    p.set_defaults(func=_cmd_selection)


def _cmd_selection(args: argparse.Namespace) -> int:
    from momu.caption.selection import select_captioner

    output = Path(args.output) if args.output else Path(args.captioner) / "selection.json"
    result = select_captioner(args.captioner, args.model, output, limit=args.limit, generate=not args.no_generate,
                              with_meteor=args.meteor == "true", prior_dir=args.prior)
    print(f"best on {result['held_out_rows']} held-out molecules: {result['best']}\ntable: {output.resolve()}")
    return 0
