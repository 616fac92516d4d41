"""What a job prints: by default one progress line every few seconds (or Ray's own bars on a terminal), the warnings
that matter and the summary; `--verbose` (MOMU_VERBOSE=1) keeps Ray's own logging as it is.

Ray Data logs a many-line status block every 10 s when stdout is not a terminal, and Ray announces itself in
several INFO lines; a non-TTY `make demo` log used to hold thousands of such lines around a seven-line summary.
Imports Ray only inside functions, so pure callers stay light.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Optional

VERBOSE_ENV = "MOMU_VERBOSE"
# Ray messages that say nothing to a user of a local, loopback-only cluster.
_NOISE = ("Token authentication is enabled for this Ray cluster",
          "Progress will be logged because stdout is a non-interactive terminal",
          "Progress bars disabled. To enable",
          # our pyfunc models take a DataFrame with one of several columns: there is no signature to infer
          "Failed to infer model signature: Type hint <input: <class 'pandas")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


class _RayDataProgressOneLine(logging.Filter):
    """Ray Data's non-TTY status block -> its 'Total Progress: a/b' line alone, as 'Ray Data: a/b rows'."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Total Progress:"):
            done = message[len("Total Progress:"):].strip()
            if done.startswith("0/"):  # nothing done yet (short datasets print only this): says nothing
                return False
            record.msg, record.args = f"Ray Data: {done} rows", ()
            return True
        return False


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(n) for n in _NOISE)


def configure_job_output(is_verbose: bool = False) -> None:
    """Call once, before Ray starts. Quiet: Ray's INFO chatter off, Ray Data's progress one line every 15 s when
    not on a terminal (its bars on a terminal); verbose: Ray untouched. Sets MOMU_VERBOSE for Ray's workers."""
    os.environ[VERBOSE_ENV] = "1" if is_verbose else "0"
    if is_verbose:
        return
    # Read when Ray Data's logging progress module is imported: set it first.
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", "15")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # transformers draws a "Loading weights" bar per model load (read when it is imported: set it first)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "mlflow.pyfunc"):
        logging.getLogger(name).addFilter(_DropNoise())
    # Execution plans, "Starting execution", "Dataset execution finished": one line each per dataset, many
    # datasets per job. The progress lines below say the same in fewer words.
    for name in ("ray.data._internal.execution.streaming_executor", "ray.data._internal.execution.util",
                 "ray.data.dataset", "ray.data._internal.execution.operators", "ray.data._internal.datasource",
                 "ray._private.worker", "ray.train", "ray.tune", "ray.air",
                 # a fresh MLflow SQLite store announces its schema migrations
                 "mlflow.store.db.utils", "mlflow.store", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # Ray Train v2 logs "Reporting training result N: TrainingReport(...)" under its file's path, not a name
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    progress = logging.getLogger("ray.data._internal.progress.logging_progress")
    progress.addFilter(_RayDataProgressOneLine())
    logging.getLogger("ray.data._internal.progress").addFilter(_DropNoise())
    # Says a local, loopback-only cluster uses a token: true, and nothing for the user to do.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


# Ray Train's detached PlacementGroupCleaner asks the state API every second whether the controller lives. A local
# Ray here starts without the dashboard, which serves that API, so the cleaner warns "Failed to query Ray Train
# Controller actor state" once a second for the whole run (7,200 lines in a 2-hour job). On a local Ray nothing is
# left to clean when the driver ends: the cluster ends with it.
_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
QUIET_WORKER_HOOK = "momu.job_output.quiet_ray_worker"


def quiet_ray_worker() -> None:
    """Ray's worker_process_setup_hook for a local Ray (every worker runs it at start): silences the placement
    group cleaner's state-API warning unless MOMU_VERBOSE is set. Stdlib only: every worker pays its import."""
    if not verbose():
        logging.getLogger(_CLEANER_LOGGER).setLevel(logging.ERROR)


def install_noise_filter_on_ray_handlers() -> None:
    """Ray attaches its own handlers when it starts; filter the noise there too (records of child loggers reach
    a handler without passing the parent logger's filters)."""
    if verbose():
        return
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())


class ProgressLine:
    """A one-line progress report every `every_s` seconds: for loops whose output goes to a log, not a terminal
    (Ray Train workers, batch jobs). `update` is cheap to call every step."""

    def __init__(self, label: str, total: Optional[int] = None, every_s: float = 15.0, stream=None):
        self.label, self.total, self.every_s = label, total, every_s
        self.stream = stream or sys.stdout
        self.started = self._last = time.monotonic()

    def update(self, done: int, force: bool = False, **fields) -> bool:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return False
        self._last = now
        of = f"/{self.total}" if self.total else ""
        extra = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        # write, not print: Ray Train may patch print() into its logger (and then the line shows twice)
        self.stream.write(f"{self.label}: {done}{of}" + (f", {extra}" if extra else "")
                          + f" ({now - self.started:.0f} s)\n")
        self.stream.flush()
        return True


class LineBar:
    """The part of tqdm's interface our loops use (iterate, update, set_postfix, close, `with`), reported as a
    ProgressLine: one line every `every_s` seconds and, for a loop that ran that long, one when it ends (a short
    loop prints nothing), instead of carriage-return updates that pile up into one unreadable line in a log."""

    def __init__(self, iterable=None, desc: str = "", total: Optional[int] = None, every_s: float = 15.0,
                 stream=None):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.n, self.postfix, self.closed, self.reported = iterable, 0, {}, False, False
        self.line = ProgressLine(desc, total, every_s, stream=stream)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.reported |= self.line.update(self.n, **self.postfix)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **fields) -> None:
        self.postfix = {**(ordered_dict or {}), **fields}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.reported:
                self.line.update(self.n, force=True, **self.postfix)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(iterable=None, *, desc: str = "", total: Optional[int] = None, disable: bool = False,
                 stream=None, **tqdm_kwargs):
    """A progress bar for a loop in a job: tqdm's bar on a terminal (or with --verbose), a LineBar when the
    output goes to a file or pipe, nothing when `disable`."""
    from tqdm.auto import tqdm

    out = stream or sys.stderr
    if disable or verbose() or (hasattr(out, "isatty") and out.isatty()):
        return tqdm(iterable, desc=desc, total=total, disable=disable, file=stream, **tqdm_kwargs)
    return LineBar(iterable, desc, total, stream=stream)
