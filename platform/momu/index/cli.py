"""`momu index build` and `momu index search`."""

from __future__ import annotations

import argparse
import json

from momu.cli import add_job_arguments, config_from_args


def register(sub, groups) -> None:
    from momu.index.config import IndexBuildConfig

    p = groups["index"].add_parser(
        "build", help="embedding shards -> vector index (exact, FAISS IVF-PQ or HNSW) + recall@k vs exact",
        description="Build a searchable index over the shards of `momu embed` (or any Parquet files with id + "
                    "embedding columns): exact inner product for small sets, FAISS IVF-PQ / HNSW for millions "
                    "(kind auto: exact up to params.exact_max_rows rows). Stores the id/SMILES mapping and the "
                    "model's name/version with it, and reports approximate recall@k against exact search.",
        epilog="example: momu index build --shards runs/embeddings/moleculenet --output runs/index/moleculenet "
               "--kind ivf_pq --params.nprobe 64")
    add_job_arguments(p, IndexBuildConfig, _cmd_index_build)

    p = groups["index"].add_parser(
        "search", help='search an index by text: momu index search "text query" --k 10',
        description="Embed the query with the model recorded in the index (or --model, which must have the same "
                    "weights) and print the top-k rows as a table. A text query uses the text tower; with "
                    "--smiles the query is a SMILES and uses the graph tower (e.g. against an index of "
                    "descriptions).")
    p.add_argument("query", help="text query (or a SMILES with --smiles)")
    p.add_argument("--index", default="runs/index/default", help="index directory (default: runs/index/default)")
    p.add_argument("--k", type=int, default=10, help="results to show (default 10)")
    p.add_argument("--model", default=None, help="model dir or models:/ URI (default: the one recorded in the index)")
    p.add_argument("--smiles", action="store_true", help="the query is a SMILES: embed it with the graph tower")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=_cmd_index_search)



def _cmd_index_build(args: argparse.Namespace) -> int:
    from momu.index.config import IndexBuildConfig
    from momu.index.build import build_index

    config = config_from_args(IndexBuildConfig, args)
    result = build_index(config, log_to_mlflow=not args.no_mlflow, progress=not args.quiet)
    r = result.report
    info = r["model_info"]
    print(f"index: {r['kind']} over {r['rows']:,} rows x {r['dim']} in {r['build_seconds']:.1f} s "
          f"(model {info.get('model_name')} version {info.get('model_version')})")
    if "recall" in r:
        rec = r["recall"]
        name = next(k for k in rec if k.startswith("recall_at_"))
        print(f"{name.replace('_at_', '@')} vs exact: {rec[name]:.3f} over {rec['queries']} queries "
              f"({rec['index_ms_per_query']:.2f} ms/query vs exact {rec['exact_ms_per_query']:.2f} ms/query)")
    print(f"saved: {result.path.resolve()}")
    if result.mlflow_run_id:
        print(f"MLflow run: {result.mlflow_run_id}")
    return 0


def _cmd_index_search(args: argparse.Namespace) -> int:
    from momu.index import RetrievalIndex
    from momu.models.loading import load_momu, resolve_model_dir, weights_sha256

    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if not args.query.strip():
        raise ValueError("the query is empty")
    index = RetrievalIndex.load(args.index)
    source = args.model or index.model_info.get("model_source")
    if not source:
        raise ValueError(f"{args.index} records no model; pass --model (the model that made its embeddings)")
    model_dir = resolve_model_dir(source)
    expected = index.model_info.get("weights_sha256")
    if expected and weights_sha256(model_dir) != expected:
        raise ValueError(f"model {source} is not the model the index was built with (weights differ); its "
                         "embeddings would not be comparable. Use the index's model or rebuild the index")
    model = load_momu(model_dir).eval()
    if args.smiles:
        from momu.chem.featurize import Rejection, featurize_smiles

        graph = featurize_smiles(args.query)
        if isinstance(graph, Rejection):
            raise ValueError(f"query SMILES {args.query!r}: {graph.reason} ({graph.detail})")
        query = model.embed_graphs([graph], smiles=[args.query]) if getattr(model, "uses_fingerprints", False) \
            else model.embed_graphs([graph])
    else:
        query = model.embed_texts([args.query])
    results = index.search_rows(query.numpy(), args.k)[0]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    fields = [c for c in index.columns if c != "id"]
    print(f"top {len(results)} of {len(index):,} ({index.kind} index, model {index.model_info.get('model_name')} "
          f"version {index.model_info.get('model_version')}) for {args.query!r}:")
    print(f"{'rank':>4}  {'score':>7}  {'id':<16}  " + "  ".join(fields))
    for r in results:
        extra = "  ".join(str(r.get(f, ""))[:90] for f in fields)
        print(f"{r['rank']:>4}  {r['score']:7.4f}  {str(r['id'])[:16]:<16}  {extra}")
    return 0
