"""Throughput of the MoMu-guided GA (`momu generate`) on the CPU, measured in one run.

Prints, for a GIN 5x300 MoMu (random init unless --model; speed does not depend on the weights) and one torch
thread per core given:
  ceiling   mol-ga's Graph GA operators alone (crossover + mutation, `graph_ga_blended_generation`, no scoring):
            offspring/s
  scoring   `Fitness.score` on those offspring: molecules scored/s (parse, priors QED + SA, featurize, GIN), and
            the GIN forward alone on the same featurized graphs: molecules embedded/s
  GA        `generate` end to end under an evaluation budget: offspring (new molecules scored) per second of the
            whole call (text embedding and the 100 start molecules' scoring included in the time, not the count)
  ratios    GA / operator ceiling, GA / scoring, GIN share of the scoring time

Usage: python benchmarks/ga_throughput.py [--evaluations 600] [--model DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=600, help="GA evaluation budget (and offspring probed)")
    parser.add_argument("--model", default=None, help="saved MoMu (default: random GIN 5x300 + bundled text tower)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mol_ga.graph_ga.gen_candidates import graph_ga_blended_generation

    from momu.chem.featurize import MolGraph, featurize_smiles
    from momu.config import MoMuConfig
    from momu.generate.config import GenerateConfig
    from momu.generate.fitness import Fitness, text_embedding
    from momu.generate.ga import generate
    from momu.generate.pool import load_pool
    from momu.models.loading import load_momu
    from momu.models.momu import build_model

    torch.manual_seed(0)
    model = load_momu(args.model) if args.model else build_model(MoMuConfig())
    text = "The molecule is a monocarboxylic acid that is benzoic acid substituted by a hydroxy group at position 2."
    pool = load_pool(REPO / "data" / "sample" / "chebi20" / "train_pool_slice.tsv")
    config = GenerateConfig(budget_evaluations=args.evaluations, budget_seconds=3600,
                            pool={"path": "unused", "exclude": [], "sample": 100})
    rng = random.Random(0)

    # Operator ceiling: offspring of the pool, batches of 100 as the GA makes them.
    offspring: set[str] = set()
    start = time.perf_counter()
    made = 0
    while len(offspring) < args.evaluations:
        batch = graph_ga_blended_generation(rng.choices(pool, k=200), 100, rng)
        made += len(batch)
        offspring |= batch
    operator_s = made / (time.perf_counter() - start)
    kids = sorted(offspring)[:args.evaluations]

    fitness = Fitness(model, text_embedding(model, text), config)
    start = time.perf_counter()
    fitness.score(kids)
    scoring_s = fitness.evaluations / (time.perf_counter() - start)
    graphs = [g for g in (featurize_smiles(s) for s in kids) if isinstance(g, MolGraph)]
    start = time.perf_counter()
    model.embed_graphs(graphs, batch_size=config.batch_size)
    gin_s = len(graphs) / (time.perf_counter() - start)

    result = generate(model, text, config, pool=pool)
    ga_s = (result["evaluations"] - min(100, len(pool))) / result["seconds"]
    out = {
        "operator_offspring_per_s": round(operator_s, 1),
        "scoring_molecules_per_s": round(scoring_s, 1),
        "gin_molecules_per_s": round(gin_s, 1),
        "ga_offspring_scored_per_s": round(ga_s, 1),
        "ga_evaluations": result["evaluations"], "ga_generations": result["generations"],
        "ga_seconds": result["seconds"],
        "ratio_ga_over_operators": round(ga_s / operator_s, 3),
        "ratio_ga_over_scoring": round(ga_s / scoring_s, 3),
        "gin_share_of_scoring_time": round(scoring_s / gin_s, 3),
        "threads": args.threads, "model": args.model or "random GIN 5x300",
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
