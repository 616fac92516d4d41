"""Seeds x datasets x initialisations of property finetuning as parallel Ray Tune trials, and the summary table.

`run_property_sweep` (the `momu finetune property-sweep` job):
1. featurizes and splits every dataset once, as parallel Ray tasks, into the on-disk property cache;
2. opens one MLflow parent run and runs one Ray Tune trial per (dataset, init, seed) - each trial is
   `momu.property.train.finetune_property` logging its own MLflow child run and reporting every epoch to Tune;
   trials are started longest first so the slowest ones do not trail at the end;
3. writes the table - mean +- std over seeds of the test metric at the best-validation epoch, per dataset and init,
   plus the average over classification datasets - to stdout, to `summary.md` / `summary.csv` / `trials.csv` in
   `output_dir`, and to the parent run (artifacts + metrics).

`summarize_trials` / `format_markdown` are pure (no Ray) so the table logic is tested without a cluster.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from momu.property.config import PropertyDataSection, PropertyFinetuneConfig, PropertySweepConfig

# MoMu's published MoleculeNet test ROC-AUC (x100; scaffold split; mean over seeds) - MOMU_REFERENCE.md.
PUBLISHED_DATASETS = ("bbbp", "tox21", "toxcast", "sider", "clintox", "muv", "hiv", "bace")
PUBLISHED_ROC_AUC = {
    "MoMu-K (published)": dict(zip(PUBLISHED_DATASETS, (71.3, 76.1, 63.4, 61.4, 79.8, 70.2, 76.4, 77.1)), average=72.0),
    "MoMu-S (published)": dict(zip(PUBLISHED_DATASETS, (71.2, 75.5, 64.0, 60.7, 80.3, 69.7, 74.2, 77.9)), average=71.7),
}


# -- the table (pure) -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrialRow:
    dataset: str
    init: str
    seed: int
    metric: str  # "roc_auc" | "rmse"
    test: float  # test metric at the best-validation epoch (nan when the trial failed)
    valid: float
    best_epoch: int
    seconds: float
    error: str = ""


@dataclasses.dataclass
class SweepSummary:
    rows: list[TrialRow]
    inits: list[str]
    datasets: list[str]
    cells: dict  # (init, dataset) -> {"mean", "std", "n", "metric"}
    averages: dict  # init -> {"mean", "std", "n_seeds", "datasets"} over classification datasets

    @property
    def failed(self) -> list[TrialRow]:
        return [r for r in self.rows if r.error]


def summarize_trials(rows: Sequence[TrialRow], inits: Sequence[str], datasets: Sequence[str]) -> SweepSummary:
    """Mean +- sample std over seeds per (init, dataset); the per-init average over classification datasets is
    the mean of the per-dataset means, and its +- is the std over seeds of each seed's across-dataset average
    (seeds that finished every classification dataset)."""
    ok = [r for r in rows if not r.error and math.isfinite(r.test)]
    cells = {}
    for init in inits:
        for ds in datasets:
            values = [r.test for r in ok if r.init == init and r.dataset == ds]
            metric = next((r.metric for r in rows if r.dataset == ds and r.metric), "roc_auc")
            cells[(init, ds)] = {"mean": float(np.mean(values)) if values else float("nan"),
                                 "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                                 "n": len(values), "metric": metric}
    averages = {}
    cls_datasets = [ds for ds in datasets if cells[(inits[0], ds)]["metric"] == "roc_auc"] if inits else []
    for init in inits:
        means = [cells[(init, ds)]["mean"] for ds in cls_datasets]
        seeds = sorted({r.seed for r in ok if r.init == init})
        per_seed = []
        for seed in seeds:
            vals = {r.dataset: r.test for r in ok if r.init == init and r.seed == seed}
            if cls_datasets and all(ds in vals for ds in cls_datasets):
                per_seed.append(float(np.mean([vals[ds] for ds in cls_datasets])))
        complete = bool(cls_datasets) and all(math.isfinite(m) for m in means)
        averages[init] = {"mean": float(np.mean(means)) if complete else float("nan"),
                          "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan"),
                          "n_seeds": len(per_seed), "datasets": cls_datasets}
    return SweepSummary(list(rows), list(inits), list(datasets), cells, averages)


def _fmt(mean: float, std: float, scale: float) -> str:
    if not math.isfinite(mean):
        return "-"
    text = f"{mean * scale:.1f}" if scale != 1 else f"{mean:.3f}"
    if math.isfinite(std):
        text += f" ± {std * scale:.1f}" if scale != 1 else f" ± {std:.3f}"
    return text


def format_markdown(summary: SweepSummary, reference_rows: bool = True, caption: str = "") -> str:
    """Classification table (test ROC-AUC x100, mean ± std over seeds) and, if any, a regression table (RMSE)."""
    out = []
    cls = [ds for ds in summary.datasets if summary.cells[(summary.inits[0], ds)]["metric"] == "roc_auc"]
    reg = [ds for ds in summary.datasets if ds not in cls]
    if cls:
        header = ["init"] + cls + ["average"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for init in summary.inits:
            cells = [_fmt(summary.cells[(init, ds)]["mean"], summary.cells[(init, ds)]["std"], 100) for ds in cls]
            avg = summary.averages[init]
            out.append("| " + " | ".join([init] + cells + [_fmt(avg["mean"], avg["std"], 100)]) + " |")
        names = [ds.lower() for ds in cls]
        if reference_rows and any(n in PUBLISHED_DATASETS for n in names):
            full = sorted(names) == sorted(PUBLISHED_DATASETS)
            for label, values in PUBLISHED_ROC_AUC.items():
                cells = [f"{values[n]:.1f}" if n in values else "-" for n in names]
                out.append("| " + " | ".join([label] + cells + [f"{values['average']:.1f}" if full else "-"]) + " |")
        n_seeds = sorted({summary.cells[k]["n"] for k in summary.cells if k[1] in cls})
        out.append("")
        out.append(f"Test ROC-AUC x 100 at the best-validation epoch, mean ± std over seeds (n = "
                   f"{'/'.join(map(str, n_seeds))} per cell); average = mean over the {len(cls)} classification "
                   f"datasets, ± = std over seeds of each seed's average." + (f" {caption}" if caption else ""))
    if reg:
        out.append("")
        header = ["init"] + reg
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for init in summary.inits:
            cells = [_fmt(summary.cells[(init, ds)]["mean"], summary.cells[(init, ds)]["std"], 1) for ds in reg]
            out.append("| " + " | ".join([init] + cells) + " |")
        out.append("")
        out.append("Test RMSE (label units) at the best-validation epoch, mean ± std over seeds.")
    if summary.failed:
        out.append("")
        out.append(f"{len(summary.failed)} trial(s) failed: " +
                   "; ".join(f"{r.dataset}/{r.init}/seed {r.seed}: {r.error[:200]}" for r in summary.failed))
    return "\n".join(out) + "\n"


def summary_csv(summary: SweepSummary) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["init", "dataset", "metric", "mean", "std", "n"])
    for (init, ds), cell in summary.cells.items():
        writer.writerow([init, ds, cell["metric"], cell["mean"], cell["std"], cell["n"]])
    for init, avg in summary.averages.items():
        writer.writerow([init, "average", "roc_auc", avg["mean"], avg["std"], avg["n_seeds"]])
    return buf.getvalue()


def trials_csv(rows: Sequence[TrialRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    fields = [f.name for f in dataclasses.fields(TrialRow)]
    writer.writerow(fields)
    for r in rows:
        writer.writerow([getattr(r, f) for f in fields])
    return buf.getvalue()


# -- trial specs (pure) -----------------------------------------------------------------------------------------

def _abs(path: Optional[str]) -> Optional[str]:
    return None if path is None else str(Path(path).expanduser().resolve())


def _resolve_init(source: str) -> str:
    if source == "random" or "://" in source or source.startswith(("models:/", "runs:/")):
        return source
    from momu.models.published import published_names, resolve_published

    path = resolve_published(source).expanduser().resolve()  # a shipped checkpoint's name or a directory
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"inits: {source} is not a saved MoMu model directory (no config.json) or a shipped "
                                f"checkpoint ({', '.join(published_names())})")
    return str(path)


def resolve_sweep_paths(cfg: PropertySweepConfig) -> PropertySweepConfig:
    """Absolute data / cache / init / output paths, checked before any work (trials may run elsewhere)."""
    datasets = []
    for d in cfg.datasets:
        if not Path(d.path).is_file():
            raise FileNotFoundError(f"datasets: no such file {d.path}")
        datasets.append(d.model_copy(update={"path": _abs(d.path), "cache_dir": _abs(d.cache_dir),
                                             "split_file": _abs(d.split_file), "name": d.display_name()}))
    inits = {name: _resolve_init(src) for name, src in cfg.inits.items()}
    return cfg.model_copy(update={"datasets": datasets, "inits": inits, "output_dir": _abs(cfg.output_dir),
                                  "storage_path": cfg.storage_path if "://" in cfg.storage_path
                                  else _abs(cfg.storage_path)})


def trial_configs(cfg: PropertySweepConfig, tracking_uri: Optional[str]) -> list[dict]:
    """One spec per (dataset, init, seed): a full PropertyFinetuneConfig (as JSON) + names for tags."""
    threads = max(1, int(cfg.cpus_per_trial))
    specs = []
    for data in cfg.datasets:
        for init_name, source in cfg.inits.items():
            for seed in cfg.seeds:
                name = data.display_name()
                ft = PropertyFinetuneConfig(
                    data=data,
                    model=cfg.model.model_copy(update={"init": source}),
                    train=cfg.train if cfg.train.num_threads else cfg.train.model_copy(update={"num_threads": threads}),
                    seed=seed,
                    output_dir=str(Path(cfg.output_dir) / "trials" / name / init_name / f"seed{seed}"),
                    save_model=cfg.save_models,
                    mlflow_tracking_uri=tracking_uri,
                    mlflow_experiment=cfg.mlflow_experiment,
                )
                specs.append({"dataset": name, "init": init_name, "seed": seed,
                              "finetune": ft.model_dump(mode="json")})
    return specs


# -- Ray edges --------------------------------------------------------------------------------------------------

def _prepare_dataset(section_json: dict) -> dict:
    """Featurize + split one dataset into the cache; returns its summary (runs as a Ray task)."""
    from momu.property.train import load_property_data

    section = PropertyDataSection.model_validate(section_json)
    data = load_property_data(section, progress=False)
    return {"name": data.name, "summary": data.summary(), "sizes": data.split.sizes(), "tasks": data.num_tasks,
            "task_type": data.task_type, "rejected": data.report["rejected"]}


def _trial(config: dict) -> None:
    """Ray Tune function trainable: one finetuning run, reporting every epoch to Tune."""
    import os

    from ray import tune

    # oneDNN keeps one primitive per input shape (every batch has its own node count): bound that cache so
    # reused trial actors do not grow without limit (read when oneDNN first runs, i.e. in the first trial).
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
    from momu.property.train import finetune_property

    spec = config["spec"]
    ft = PropertyFinetuneConfig.model_validate(spec["finetune"])
    final: list[dict] = []

    def report(metrics: dict) -> None:
        metrics = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
        if metrics.get("done"):
            final.append(metrics)  # sent last, once the MLflow run is closed and memory released
        else:
            tune.report(metrics)

    try:
        finetune_property(ft, progress=False, log_to_mlflow=config["log_to_mlflow"],
                          parent_run_id=config.get("parent_run_id"),
                          run_name=f"{spec['dataset']}/{spec['init']}/seed{spec['seed']}",
                          tags={"init_name": spec["init"], "sweep": config.get("sweep_name", "")},
                          report_fn=report)
    finally:
        _release_memory()
    # The final report is the function's last act: Tune reuses this actor for the next trial only once the
    # function has returned, and a report followed by more work made that reuse fail now and then.
    tune.report(final[-1])


def _release_memory() -> None:
    """Trial actors are reused: hand freed heap back to the OS between trials (glibc keeps it otherwise, and a
    long sweep's actors grew to several GB each before this)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def sweep_params(cfg: PropertySweepConfig) -> dict:
    """MLflow params of a sweep: the config's flattened fields, each dataset's under `datasets.<name>.`."""
    from momu.config import flatten_config

    params = {k: v for k, v in flatten_config(cfg).items() if k != "datasets"}
    for d in cfg.datasets:
        params.update(flatten_config(d, f"datasets.{d.display_name()}."))
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.items() if v is not None}


def _parent_run(cfg: PropertySweepConfig, tracking_uri: str, run_name: str, resume_run_id: Optional[str] = None):
    """The sweep's MLflow parent run (like momu.tracking.mlflow_run, with per-dataset params); with
    `resume_run_id`, that earlier parent run is reopened."""
    import contextlib

    import mlflow

    @contextlib.contextmanager
    def ctx():
        mlflow.set_tracking_uri(tracking_uri)
        if tracking_uri.startswith("sqlite:") and mlflow.get_experiment_by_name(cfg.mlflow_experiment) is None:
            location = Path(cfg.output_dir).parent / "mlartifacts" / cfg.mlflow_experiment
            mlflow.create_experiment(cfg.mlflow_experiment, artifact_location=location.resolve().as_uri())
        mlflow.set_experiment(cfg.mlflow_experiment)
        if resume_run_id:
            with mlflow.start_run(run_id=resume_run_id) as run:
                yield run
            return
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.log_params(sweep_params(cfg))
            mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
            yield run

    return ctx()


def trial_progress_callback(total: int, stream=None):
    """Quiet output for the sweep: a Tune callback printing 'property-sweep trials: done/total' every 15 s and at
    the end, instead of Tune's status tables and per-trial configuration boxes (thousands of lines a sweep)."""
    from ray.tune import Callback

    from momu.job_output import ProgressLine

    class TrialProgress(Callback):
        def __init__(self):
            self.done, self.failed = 0, 0
            self.line = ProgressLine("property-sweep trials", total, stream=stream)

        def _count(self, trial, failed: bool) -> None:
            self.done += 1
            self.failed += failed
            self.line.update(self.done, force=self.done >= total, failed=self.failed, last=str(trial))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._count(trial, False)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._count(trial, True)

    return TrialProgress()


def _trial_name(trial) -> str:
    spec = trial.config["spec"]
    return f"{spec['dataset']}-{spec['init']}-seed{spec['seed']}-{trial.trial_id}"


@dataclasses.dataclass
class SweepResult:
    summary: SweepSummary
    markdown: str
    output_dir: Path
    parent_run_id: Optional[str]
    data: list[dict]
    seconds: float


def _estimated_cost(spec: dict, sizes: dict) -> float:
    s = sizes[spec["dataset"]]
    epochs = spec["finetune"]["train"]["epochs"]
    return epochs * (s["train"] + 0.3 * (s["valid"] + 0.3 * s["test"]))


def run_property_sweep(cfg: PropertySweepConfig, progress: bool = True, log_to_mlflow: bool = True,
                       caption: str = "") -> SweepResult:
    import ray
    from ray import tune

    from momu.ray_session import init_ray_if_needed

    started = time.perf_counter()
    cfg = resolve_sweep_paths(cfg)
    init_ray_if_needed()
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_name = cfg.run_name or f"property-sweep-{time.strftime('%Y%m%d-%H%M%S')}"

    # 1. featurize + split every dataset once, in parallel.
    prepare = ray.remote(num_cpus=1)(_prepare_dataset)
    refs = {prepare.remote(d.model_dump(mode="json")): d.display_name() for d in cfg.datasets}
    data_info: dict[str, dict] = {}
    pending = list(refs)
    from tqdm.auto import tqdm  # tqdm.write: a line that does not break a terminal's bar

    from momu.job_output import progress_bar, verbose

    with progress_bar(total=len(pending), desc="featurizing + splitting datasets", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            info = ray.get(done[0])
            data_info[info["name"]] = info
            bar.update(1)
            if progress:
                tqdm.write(f"  {info['summary']}")
    sizes = {name: info["sizes"] for name, info in data_info.items()}

    # 2. one MLflow parent run, one Tune trial (= one child run) per (dataset, init, seed).
    from momu.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(cfg.mlflow_tracking_uri, Path(cfg.output_dir).parent) if log_to_mlflow \
        else None
    specs = sorted(trial_configs(cfg, tracking_uri), key=lambda s: -_estimated_cost(s, sizes))
    if progress:
        print(f"{len(specs)} trials: {len(cfg.datasets)} datasets x {len(cfg.inits)} inits x {len(cfg.seeds)} seeds, "
              f"{cfg.cpus_per_trial:g} CPU each" + (f", max {cfg.max_concurrent_trials} at a time"
                                                     if cfg.max_concurrent_trials else ""))
    import contextlib

    state_path = output_dir / "sweep_state.json"
    experiment_path = f"{cfg.storage_path.rstrip('/')}/{run_name}"
    resume_parent = None
    if cfg.resume:
        if not state_path.is_file() or not tune.Tuner.can_restore(experiment_path):
            raise FileNotFoundError(f"resume: no earlier sweep named {run_name!r} (looked for {state_path} and the "
                                    f"Tune state in {experiment_path})")
        state = json.loads(state_path.read_text())
        if state.get("run_name") != run_name:
            raise ValueError(f"resume: {state_path} belongs to sweep {state.get('run_name')!r}, not {run_name!r}")
        resume_parent = state.get("parent_run_id")
        if progress:
            print(f"resuming sweep {run_name}: finished trials are kept, unfinished and failed ones run again")
    parent_ctx = _parent_run(cfg, tracking_uri, run_name, resume_parent) if log_to_mlflow \
        else contextlib.nullcontext(None)
    with parent_ctx as parent:
        parent_id = parent.info.run_id if parent is not None else None
        state_path.write_text(json.dumps({"run_name": run_name, "parent_run_id": parent_id,
                                          "tracking_uri": tracking_uri, "experiment_path": experiment_path}) + "\n")
        if parent is not None:
            import mlflow

            mlflow.set_tags({"kind": "property-sweep", "datasets": ",".join(sizes), "inits": ",".join(cfg.inits)})
            mlflow.log_dict(data_info, "data_summary.json")
        resources = {"cpu": cfg.cpus_per_trial, **({"gpu": cfg.gpus_per_trial} if cfg.gpus_per_trial else {})}
        trainable = tune.with_resources(_trial, resources)
        if cfg.resume:
            tuner = tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True, restart_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"spec": tune.grid_search(specs), "parent_run_id": parent_id,
                             "log_to_mlflow": log_to_mlflow, "sweep_name": run_name},
                tune_config=tune.TuneConfig(max_concurrent_trials=cfg.max_concurrent_trials, reuse_actors=True,
                                            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(name=run_name, storage_path=cfg.storage_path,
                                          failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                                          verbose=1 if progress and verbose() else 0,
                                          callbacks=[trial_progress_callback(len(specs))]
                                          if progress and not verbose() else None),
            )
        grid = tuner.fit()

        # 3. the table.
        rows = []
        for result in grid:
            spec = result.config["spec"]
            m = result.metrics or {}
            metric = m.get("metric", "roc_auc")
            error = "" if result.error is None else f"{type(result.error).__name__}: {result.error}".splitlines()[0]
            if not error and not m.get("done"):
                error = "trial ended without a final report"
            rows.append(TrialRow(spec["dataset"], spec["init"], int(spec["seed"]), metric,
                                 float(m.get(f"test_{metric}", float("nan"))),
                                 float(m.get(f"valid_{metric}", float("nan"))), int(m.get("best_epoch", 0) or 0),
                                 float(m.get("seconds", float("nan"))), error))
        order = {(d.display_name(), i, s): k for k, (d, i, s) in
                 enumerate((d, i, s) for d in cfg.datasets for i in cfg.inits for s in cfg.seeds)}
        rows.sort(key=lambda r: order.get((r.dataset, r.init, r.seed), 0))
        summary = summarize_trials(rows, list(cfg.inits), [d.display_name() for d in cfg.datasets])
        markdown = format_markdown(summary, cfg.reference_rows, caption)
        (output_dir / "summary.md").write_text(markdown)
        (output_dir / "summary.csv").write_text(summary_csv(summary))
        (output_dir / "trials.csv").write_text(trials_csv(rows))
        (output_dir / "data_summary.json").write_text(json.dumps(data_info, indent=2) + "\n")
        if parent is not None:
            import mlflow

            for name in ("summary.md", "summary.csv", "trials.csv"):
                mlflow.log_artifact(str(output_dir / name))
            values = {}
            for (init, ds), cell in summary.cells.items():
                if math.isfinite(cell["mean"]):
                    values[f"{init}.{ds}.test_{cell['metric']}_mean"] = cell["mean"]
                if math.isfinite(cell["std"]):
                    values[f"{init}.{ds}.test_{cell['metric']}_std"] = cell["std"]
            for init, avg in summary.averages.items():
                if math.isfinite(avg["mean"]):
                    values[f"{init}.average.test_roc_auc_mean"] = avg["mean"]
            values["trials_failed"] = len(summary.failed)
            values["trials"] = len(rows)
            values["sweep_seconds"] = time.perf_counter() - started
            mlflow.log_metrics(values)
    return SweepResult(summary, markdown, output_dir, parent_id, list(data_info.values()),
                       time.perf_counter() - started)
