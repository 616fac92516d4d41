"""Batch-embedding throughput of `momu embed` on real molecules (MoleculeNet MUV + HIV, ChEBI-20), in one run.

Prints, for a GIN 5x300 MoMu model (random init unless --model; speed does not depend on the weights):
  ceiling    featurize-only molecules/s per core (the pipeline's own featurize stage, one process) and model-only
             molecules/s per core (pre-featurized batches, one torch thread), combined for C cores into the
             featurize+encode ceiling  C / (1/featurize + 1/model)
  pipeline   `momu embed` end to end on Ray Data with C CPUs (read -> featurize -> model actors -> Parquet):
             molecules/s including Ray/actor start-up, and after the first written rows (steady state);
             both as a fraction of the ceiling (goal >= 0.85); plus molecules per CPU-second spent by all
             processes against the ceiling's (a view that does not depend on other load on the machine)
  baseline   research-code style, single process: per-molecule featurization into PyG Data objects
             (pretrain-gnns' featurizer) + PyG DataLoader + model; ratio pipeline / baseline (goal >= 5x)
  memory     peak memory (USS summed over the driver and every Ray process) during the pipeline, and the
             baseline process's peak RSS
  projection nodes needed to embed 120M compounds in one hour, from the measured per-core featurization rate
             (and, for comparison, the CPU cores the measured CPU model rate would need)

Bounded: --limit molecules of MUV + HIV (an even sample) plus all 6,601 ChEBI-20 molecules go through the
pipeline; the ceiling and baseline use --probe molecules. Defaults take a few minutes on 2 cores.

Usage: python benchmarks/embed_throughput.py [--limit 60000] [--probe 3000] [--cores N] [--model DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MOLECULENET = [SHARED / "moleculenet" / "muv.csv.gz", SHARED / "moleculenet" / "hiv.csv.gz"]
CHEBI20 = [SHARED / "chebi20" / "validation.txt", SHARED / "chebi20" / "test.txt"]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def moleculenet_smiles() -> list[str]:
    out = []
    for path in MOLECULENET:
        with gzip.open(path, "rt") as handle:
            next(handle)
            out += [line.split(",", 1)[0] for line in handle if line.strip()]
    return out


def chebi_smiles() -> list[str]:
    out = []
    for path in CHEBI20:
        out += [line.split("\t")[1] for line in path.read_text().splitlines()[1:] if line.count("\t") >= 2]
    return out


def even_sample(items: list, n: int) -> list:
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


class ProcessTreeMonitor:
    """Samples this process and all its descendants (the local Ray cluster): peak summed USS every few seconds,
    and every second the CPU seconds they used (last seen per process, minus what they had used at the start;
    the sampler's own CPU is left out)."""

    def __init__(self):
        import psutil

        self.psutil, self.peak, self._stop = psutil, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self.memory_every = 5  # seconds between memory samples; CPU times are sampled every second
        self.own_cpu_seconds = 0.0

    def _tree(self):
        me = self.psutil.Process()
        return [me, *me.children(recursive=True)]

    @staticmethod
    def _cpu(p) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def _run(self):
        for p in self._tree():
            try:
                self._cpu_start[p.pid] = self._cpu(p)
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                pass
        tick = 0
        while not self._stop.is_set():
            # USS costs ~10 ms of CPU per process (it walks the page maps) against ~0.05 ms for CPU times: at one
            # sample a second over ~20 processes it took ~8 % of a 2-core machine from the pipeline it measures.
            with_memory, total = tick % self.memory_every == 0, 0
            tick += 1
            for p in self._tree():
                try:
                    if with_memory:
                        total += p.memory_full_info().uss
                    self._cpu_last[p.pid] = self._cpu(p)
                    # A worker is retitled when it starts a task or becomes an actor: keep its last non-idle name.
                    if self._names.get(p.pid, "ray::IDLE") in ("ray::IDLE", "default_worker.py", "setup_worker.py"):
                        cmd = p.cmdline()
                        title = cmd[0] if cmd else p.name()
                        self._names[p.pid] = ("driver" if p.pid == os.getpid() else
                                              title[:60] if title.startswith("ray::") else
                                              Path(cmd[1]).name if len(cmd) > 1 and "python" in title else
                                              Path(title).name)
                except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            self.own_cpu_seconds = time.thread_time()  # this sampler's CPU, left out of the totals
            self._stop.wait(1.0)

    def cpu_by_process(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, v in self._cpu_last.items():
            name = self._names.get(pid, "?")
            out[name] = out.get(name, 0.0) + v - self._cpu_start.get(pid, 0.0)
        out["driver"] = out.get("driver", 0.0) - self.own_cpu_seconds
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    @property
    def cpu_seconds(self) -> float:
        return sum(v - self._cpu_start.get(pid, 0.0) for pid, v in self._cpu_last.items()) - self.own_cpu_seconds

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def featurize_rate(smiles: list[str]) -> float:
    """The pipeline's featurize stage (SMILES -> graph columns + canonical SMILES), one process."""
    import pyarrow as pa

    from momu.embed.stages import featurize_rows

    table = pa.table({"input": smiles, "reject_reason": [""] * len(smiles), "reject_detail": [""] * len(smiles),
                      "reject_stage": [""] * len(smiles)})
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for i in range(0, len(smiles), 1024):
            featurize_rows(table.slice(i, 1024), max_atoms=512)
        best = min(best, time.perf_counter() - start)
    return len(smiles) / best


def model_rate(model_dir: str, smiles: list[str], batch_size: int) -> float:
    """Model-only: pre-featurized batches through the model stage, one torch thread."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import torch

    from momu.embed.stages import EmbedRows, featurize_rows

    torch.set_num_threads(1)
    table = pa.table({"input": smiles, "reject_reason": [""] * len(smiles), "reject_detail": [""] * len(smiles),
                      "reject_stage": [""] * len(smiles)})
    feats = featurize_rows(table, max_atoms=512)
    feats = feats.filter(pc.equal(feats.column("reject_reason"), ""))
    stage = EmbedRows(model_dir, "molecules", batch_size, "float32", torch_threads=1)
    stage.embed(feats.slice(0, batch_size))  # warm-up
    start = time.perf_counter()
    stage.embed(feats)
    return feats.num_rows / (time.perf_counter() - start)


def baseline_rate(model_dir: str, smiles: list[str]) -> tuple[float, float]:
    """Research-code style: per-molecule PyG Data objects + PyG DataLoader + model, single process with
    torch's default threads. Returns (molecules/s, peak RSS in GB of this process so far)."""
    import torch
    from torch_geometric.loader import DataLoader

    from featurize_throughput import baseline_featurize
    from momu.models.loading import load_momu

    model = load_momu(model_dir).eval()
    start = time.perf_counter()
    data = [d for d in (baseline_featurize(s) for s in smiles) if d is not None]
    out = []
    with torch.no_grad():
        for batch in DataLoader(data, batch_size=32, shuffle=False):
            out.append(model.encode_graph(batch))
    rate = len(smiles) / (time.perf_counter() - start)
    return rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=60_000, help="MUV + HIV molecules through the pipeline "
                        "(even sample; all ~134k with --limit 0)")
    parser.add_argument("--probe", type=int, default=3_000, help="molecules for the ceiling and baseline probes")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="CPUs given to Ray (default: all)")
    parser.add_argument("--model", default=None, help="saved MoMu dir or models:/ URI (default: random-init GIN "
                        "5x300 + bundled MiniLM in a temp dir)")
    parser.add_argument("--batch-size", type=int, default=256, help="model batch size")
    parser.add_argument("--part-rows", type=int, default=2048)
    parser.add_argument("--fuse", choices=["auto", "yes", "no"], default="auto",
                        help="featurize inside the model actors (Ray Data fuses equal-resource stages) or as "
                             "separate tasks; auto: fused on CPU-only machines")
    parser.add_argument("--nodes-cores", type=int, default=16, help="cores per node for the 120M/hour projection")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not MOLECULENET[0].exists():
        sys.exit(f"shared data not found at {SHARED}")

    import torch

    default_threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    model_dir = args.model
    if model_dir is None:
        from momu.config import MoMuConfig
        from momu.models.momu import build_model

        torch.manual_seed(0)
        model_dir = str(build_model(MoMuConfig()).save_pretrained(tmp / "gin5x300"))

    mnet, chebi = moleculenet_smiles(), chebi_smiles()
    sample = even_sample(mnet, args.limit) if args.limit else mnet
    probe = even_sample(mnet + chebi, args.probe)
    print(f"data: MUV + HIV {len(mnet):,} molecules (pipeline sample {len(sample):,}), ChEBI-20 {len(chebi):,}; "
          f"probe {len(probe):,}; cores {args.cores} (os.cpu_count {os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.1f}); model {'random-init GIN 5x300' if args.model is None else args.model}")

    # -- ceiling: per-core rates, one process each -------------------------------------------------------------
    f_rate = featurize_rate(probe)
    m_rate = model_rate(model_dir, probe, args.batch_size)
    ceiling = args.cores / (1 / f_rate + 1 / m_rate)
    print(f"ceiling   featurize-only {f_rate:8,.0f} mol/s/core   model-only {m_rate:8,.0f} mol/s/core "
          f"(batch {args.batch_size}, 1 thread)\n"
          f"          featurize+encode ceiling on {args.cores} cores: {ceiling:,.0f} mol/s")

    # -- pipeline ----------------------------------------------------------------------------------------------
    lib = tmp / "library"
    lib.mkdir()
    (lib / "muv_hiv_sample.csv").write_text("smiles,cid\n" + "".join(f"{s},mnet{i}\n" for i, s in enumerate(sample)))
    for path in CHEBI20:
        (lib / path.name).write_bytes(path.read_bytes())
    import ray

    from momu.ray_session import start_local_ray

    start_local_ray(args.cores, log_to_driver=False, configure_logging=False)
    from momu.embed.config import EmbedConfig
    from momu.embed.job import format_summary, run_embedding

    actors = args.cores
    fused = args.fuse != "no"
    # Logical CPUs: model actors take most; reading and writing get small slices. Equal featurize/actor CPUs
    # let Ray Data fuse featurization into the actors (one hop less); otherwise featurization runs as tasks.
    per_actor = max(0.25, (args.cores - 0.5) / actors)
    config = EmbedConfig(inputs=[str(lib)], model=model_dir, output_dir=str(tmp / "out"),
                         part_rows=args.part_rows, batch_size=args.batch_size, shard_rows=args.batch_size * 2,
                         featurize_batch_rows=args.batch_size, model_actors=actors, cpus_per_actor=per_actor,
                         torch_threads=1, featurize_cpus=per_actor if fused else 0.25, read_cpus=0.25,
                         progress=False, check_duplicate_ids=True)
    with ProcessTreeMonitor() as mem:
        result = run_embedding(config, log_to_mlflow=False)
        time.sleep(1.5)  # one more sample of every Ray process's CPU time before shutting down
    ray.shutdown()
    s = result.summary
    run = s["this_run"]
    rate = run["rows"] / run["seconds"]
    steady = run.get("rows_per_s_after_first_output")
    print(format_summary(s).replace("\n", "\n          ").join(["pipeline  ", ""]))
    print(f"pipeline  {rate:8,.0f} mol/s end to end incl. start-up ({run['seconds']:.1f} s, {actors} model actors, "
          f"featurize {'fused into the actors' if fused else 'as separate tasks'}) = {rate / ceiling:.2f} of ceiling")
    if steady:
        print(f"          {steady:8,.0f} mol/s after the first written rows = "
              f"{steady / ceiling:.2f} of ceiling (goal >= 0.85); start-up {run['first_output_s']:.1f} s")
    # Load-independent view: molecules per CPU-second actually spent by the driver and all Ray processes
    # (start-up included) against the ceiling's 1 / (1/featurize + 1/model) molecules per CPU-second.
    per_cpu_s = run["rows"] / mem.cpu_seconds if mem.cpu_seconds else float("nan")
    per_cpu_ceiling = 1 / (1 / f_rate + 1 / m_rate)
    print(f"          {per_cpu_s:8,.0f} mol per CPU-second ({mem.cpu_seconds:.0f} CPU-s over all processes, start-up "
          f"included) = {per_cpu_s / per_cpu_ceiling:.2f} of the ceiling's {per_cpu_ceiling:,.0f} mol per CPU-second")

    top = ", ".join(f"{name} {sec:.0f}" for name, sec in list(mem.cpu_by_process().items())[:6])
    print(f"          CPU-seconds by process: {top}")
    # The machine may be shared: re-measure the per-core rates now and report the fraction against both.
    f_after, m_after = featurize_rate(probe[:1000]), model_rate(model_dir, probe[:1000], args.batch_size)
    ceiling_after = args.cores / (1 / f_after + 1 / m_after)
    print(f"ceiling   re-measured after the pipeline: featurize {f_after:,.0f}, model {m_after:,.0f} mol/s/core -> "
          f"{ceiling_after:,.0f} mol/s; pipeline = {rate / ceiling_after:.2f} of it end to end"
          + (f", {steady / ceiling_after:.2f} after the first written rows" if steady else ""))
    # This machine's speed drifts by up to ~20 % within minutes: the ceiling of the whole run lies between the two
    # probes more often than at either end.
    ceiling_mean = (ceiling + ceiling_after) / 2
    print(f"ceiling   mean of before and after {ceiling_mean:,.0f} mol/s; pipeline = {rate / ceiling_mean:.2f} of it "
          "end to end")

    # -- baseline ----------------------------------------------------------------------------------------------
    torch.set_num_threads(default_threads)  # research code runs with torch's default threads
    b_rate, b_rss = baseline_rate(model_dir, probe)
    print(f"baseline  {b_rate:8,.0f} mol/s (per-molecule PyG Data + DataLoader + model, 1 process, "
          f"{torch.get_num_threads()} torch threads)")
    print(f"ratio     pipeline / baseline: {rate / b_rate:.1f}x end to end, "
          + (f"{steady / b_rate:.1f}x steady state (goal >= 5x)" if steady else ""))
    print(f"memory    pipeline peak {mem.peak / 2 ** 30:.2f} GB (USS, driver + all Ray processes); baseline process "
          f"peak RSS {b_rss:.2f} GB")

    # -- projection ----------------------------------------------------------------------------------------------
    need = 120e6 / 3600
    f_cores, m_cores = need / f_rate, need / m_rate
    print(f"120M compounds in 1 hour = {need:,.0f} mol/s: featurization needs {f_cores:,.1f} cores at "
          f"{f_rate:,.0f} mol/s/core = {int(-(-f_cores // args.nodes_cores))} node(s) of {args.nodes_cores} cores "
          f"(+ GPUs for the model: at the measured CPU rate the model alone would need {m_cores:,.0f} cores = "
          f"{int(-(-m_cores // args.nodes_cores))} nodes, so encode on GPUs)")
    print(json.dumps({"featurize_per_core": round(f_rate), "model_per_core": round(m_rate), "ceiling": round(ceiling),
                      "pipeline": round(rate), "pipeline_steady": round(steady) if steady else None,
                      "fraction_of_ceiling": round(rate / ceiling, 3),
                      "fraction_of_ceiling_steady": round(steady / ceiling, 3) if steady else None,
                      "baseline": round(b_rate), "ratio_vs_baseline": round(rate / b_rate, 2),
                      "cpu_efficiency": round(per_cpu_s / per_cpu_ceiling, 3), "ceiling_after": round(ceiling_after),
                      "fraction_of_mean_ceiling": round(rate / ceiling_mean, 3),
                      "peak_memory_gb": round(mem.peak / 2 ** 30, 2), "featurize_cores_for_120M_per_hour":
                          round(f_cores, 1), "rows": run["rows"], "cores": args.cores}))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
