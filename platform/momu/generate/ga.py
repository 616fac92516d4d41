"""MoMu-guided graph genetic algorithm: mol-ga's Graph GA operators (Jensen 2019; crossover + mutation) search
molecule space for the candidates whose MoMu graph embedding is closest to a prompt's text embedding, under
chemistry priors (see `momu.generate.fitness`). Budgeted by fitness evaluations and seconds, deterministic given
a seed. Editing mode (`edit`) starts from one molecule and adds lambda * Tanimoto(candidate, input) for each
lambda of a sweep, as MoleculeSTM does."""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from typing import Callable, Optional

from mol_ga.cached_function import CachedBatchFunction
from mol_ga.general_ga import run_ga_maximization
from mol_ga.graph_ga.gen_candidates import graph_ga_blended_generation, mutate
from mol_ga.sample_population import uniform_quantile_sampling
from rdkit import Chem

from momu.generate.config import GenerateConfig
from momu.generate.fitness import SA_METHOD, Fitness, Scored, morgan_fp, tanimoto, text_embedding
from momu.generate.pool import load_pool

# mol-ga's quantile sampling needs finite scores: inside the GA an unscorable molecule (-inf) gets this floor.
_FLOOR = -1e9
_STALL_GENERATIONS = 5  # generations in a row without one new molecule -> the search is stuck
# Pool molecules scored per call while picking the start population (the time budget is checked between calls):
# a first small chunk measures the scoring rate, the next ones fit the time left, at most _START_CHUNK.
_FIRST_CHUNK = 8
_START_CHUNK = 64
_QUIET = logging.getLogger("momu.generate.ga.mol_ga")
_QUIET.setLevel(logging.WARNING)


def _evolve(fitness: Fitness, objective: Callable[[list[str]], list[float]], start: list[str],
            config: GenerateConfig, rng: random.Random, eval_budget: int, deadline: float) -> tuple[int, str]:
    """Run mol-ga one generation at a time (its scoring cache carries over, so the population is never
    re-embedded) until `eval_budget` new GIN evaluations or `deadline` is reached. Returns (generations, why).

    Near the deadline a generation is cut to the new molecules the time left can score, from the measured scoring
    time per molecule and the generations' own time (operators, selection); when not even one more molecule fits,
    the search ends there. So it ends about when the deadline falls instead of up to a whole generation after it.
    While time is plentiful the cut never binds and the run is the same as with the evaluation budget alone."""
    base = fitness.evaluations
    cached = CachedBatchFunction(lambda smiles: [t if t > -math.inf else _FLOOR for t in objective(smiles)])
    population = set(start)
    generations, stalls = 0, 0
    overhead = 0.0  # wall time of the generations run here, less their scoring time
    while True:
        remaining = eval_budget - (fitness.evaluations - base)
        now = time.perf_counter()
        if remaining <= 0:
            return generations, "evaluations"
        if now >= deadline:
            return generations, "seconds"
        if generations >= config.max_generations:
            return generations, "max_generations"
        if stalls >= _STALL_GENERATIONS:
            return generations, "stalled"
        per_molecule = fitness.seconds_per_evaluation()
        if per_molecule > 0:
            per_generation = overhead / generations if generations else 0.0
            affordable = int((deadline - now - per_generation) / per_molecule)
            if affordable < 1:
                return generations, "seconds"
            remaining = min(remaining, affordable)

        def offspring(samples, n, gen_rng, parallel, remaining=remaining):
            kids = graph_ga_blended_generation(samples, n, gen_rng, parallel)
            # Keep only as many never-scored molecules as the budgets have left (a seeded choice).
            fresh = sorted(k for k in kids if k not in fitness.cache)
            gen_rng.shuffle(fresh)
            return (kids - set(fresh)) | set(fresh[:remaining])

        before, scoring = fitness.evaluations, fitness.seconds
        result = run_ga_maximization(
            scoring_func=cached, starting_population_smiles=population, sampling_func=uniform_quantile_sampling,
            offspring_gen_func=offspring, selection_func=heapq.nlargest, max_generations=1,
            population_size=config.population_size, offspring_size=config.offspring_size, rng=rng, logger=_QUIET)
        population = {s for _, s in result.population}
        generations += 1
        stalls = stalls + 1 if fitness.evaluations == before else 0
        overhead += (time.perf_counter() - now) - (fitness.seconds - scoring)


def _summary(mode: str, text: str, config: GenerateConfig, fitness: Fitness, started: float, generations: int,
             stopped_by: str, results: list[dict], **extra) -> dict:
    return {"mode": mode, "text": text, "model": config.model, "results": results,
            "evaluations": fitness.evaluations, "generations": generations, "stopped_by": stopped_by,
            "seconds": round(time.perf_counter() - started, 3), "seed": config.seed,
            "weights": config.weights.model_dump(), "sa_method": SA_METHOD,
            "heavy_atom_window": [config.min_heavy_atoms, config.max_heavy_atoms],
            "allowed_elements": config.allowed_elements,
            "budget": {"evaluations": config.budget_evaluations, "seconds": config.budget_seconds}, **extra}


def generate(model, text: str, config: GenerateConfig, pool: Optional[list[str]] = None) -> dict:
    """Text -> the `config.n` best molecules found (ranked by total score, with cosine/QED/SA parts).

    Start population: `config.pool.sample` molecules drawn from the pool (never ChEBI-20 test molecules by
    default), scored (these count as evaluations; in chunks that stop at the time budget), and the
    `population_size` nearest to the text by cosine (`pool.retrieval`) or best by total. `pool` overrides reading
    `config.pool.path`."""
    started = time.perf_counter()
    rng = random.Random(config.seed)
    fitness = Fitness(model, text_embedding(model, text), config)
    sample = min(config.pool.sample, config.budget_evaluations)
    if pool is None:
        drawn = load_pool(config.pool.path, config.pool.exclude, sample=sample, rng=rng)
    else:
        drawn = sorted(set(pool))
        rng.shuffle(drawn)
        drawn = drawn[:sample]
    # Scored in chunks sized to the time left at the measured rate (the first, small, measures it): when the time
    # budget runs out here (a slow machine, a large pool.sample), the search starts from, and ends with, what was
    # scored so far.
    deadline = started + config.budget_seconds
    scored, seen, size = [], 0, _FIRST_CHUNK
    while seen < len(drawn):
        chunk = drawn[seen:seen + size]
        scored += [s for s in fitness.score(chunk) if s.total > -math.inf]
        seen += len(chunk)
        left, per_molecule = deadline - time.perf_counter(), fitness.seconds_per_evaluation()
        if left <= 0:
            break
        size = max(1, min(_START_CHUNK, int(left / per_molecule))) if per_molecule > 0 else _START_CHUNK
    if not scored:
        raise ValueError(f"pool.path: none of the {seen} drawn molecules scored passes the priors (elements, "
                         "featurization)")
    key = (lambda s: s.cosine) if config.pool.retrieval else (lambda s: s.total)
    start = [s.smiles for s in sorted(scored, key=lambda s: (-key(s), s.smiles))[:config.population_size]]
    generations, stopped_by = _evolve(fitness, lambda smiles: [r.total for r in fitness.score(smiles)], start,
                                      config, rng, config.budget_evaluations - fitness.evaluations, deadline)
    in_pool = set(drawn)
    ranked = sorted((r for r in fitness.cache.values() if r.total > -math.inf), key=lambda r: (-r.total, r.smiles))
    results = [{"rank": i + 1, **r.as_dict(), "from_pool": r.smiles in in_pool}
               for i, r in enumerate(ranked[:config.n])]
    return _summary("generate", text, config, fitness, started, generations, stopped_by, results,
                    pool_drawn=len(drawn), pool_scored=seen, start_population=len(start))


def _mutations(source: str, count: int, rng: random.Random) -> list[str]:
    """Up to `count` distinct single Graph GA mutations of `source` (seeded; a few tries per slot)."""
    out: list[str] = []
    for _ in range(4 * count):
        if len(out) >= count:
            break
        child = mutate(source, rng)
        if child and child != source and child not in out:
            out.append(child)
    return out


def edit(model, text: str, smiles: str, config: GenerateConfig) -> dict:
    """Edit `smiles` towards `text`: for each lambda of `config.edit_lambdas`, a GA maximising total +
    lambda * Tanimoto(candidate, input) (Morgan r=2, 2048 bits) from the input and its mutations, each with
    1/len(lambdas) of the budget. The result per lambda is the best candidate for that objective among all
    molecules scored in the sweep, so a larger lambda never gives a result less similar to the input. The input
    itself is not a result (an edit changes the molecule; at a large lambda it would win every time) unless
    `config.edit_keep_input` or nothing else could be scored."""
    started = time.perf_counter()
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
    if mol is None or mol.GetNumAtoms() == 0:
        raise ValueError(f"edit: invalid SMILES {smiles!r}")
    source = Chem.MolToSmiles(mol)
    rng = random.Random(config.seed)
    fitness = Fitness(model, text_embedding(model, text), config)
    reference = morgan_fp(mol)
    similarity: dict[str, float] = {}

    def sim(candidate: str) -> float:
        if candidate not in similarity:
            similarity[candidate] = tanimoto(reference, morgan_fp(Chem.MolFromSmiles(candidate)))
        return similarity[candidate]

    seeds = ([source] + _mutations(source, config.edit_seeds, rng))[:config.budget_evaluations]
    if fitness.score([source])[0].total == -math.inf:
        raise ValueError(f"edit: the input cannot be scored ({fitness.cache[source].reason})")
    fitness.score(seeds)
    lambdas = config.edit_lambdas
    per_lambda = (config.budget_evaluations - fitness.evaluations) // len(lambdas)
    generations, stopped_by = 0, []
    for i, lam in enumerate(lambdas):
        def objective(batch, lam=lam):
            return [r.total + lam * sim(r.smiles) if r.total > -math.inf else -math.inf
                    for r in fitness.score(batch)]

        deadline = started + config.budget_seconds * (i + 1) / len(lambdas)
        g, why = _evolve(fitness, objective, seeds, config, random.Random(f"{config.seed}:{i}"), per_lambda, deadline)
        generations += g
        stopped_by.append(why)
    candidates = [r for r in fitness.cache.values() if r.total > -math.inf]
    if not config.edit_keep_input and any(r.smiles != source for r in candidates):
        candidates = [r for r in candidates if r.smiles != source]
    results = []
    for lam in lambdas:
        best: Scored = max(candidates, key=lambda r: (r.total + lam * sim(r.smiles), sim(r.smiles), r.smiles))
        results.append({"lambda": lam, "objective": best.total + lam * sim(best.smiles),
                        "tanimoto": sim(best.smiles), **best.as_dict(), "is_input": best.smiles == source})
    return _summary("edit", text, config, fitness, started, generations, ",".join(stopped_by), results,
                    input=source, candidates=len(candidates))
