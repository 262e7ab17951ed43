"""Sweeps: a grid of settings expanded into runs, run several at a time, finished runs skipped.

A sweep file is TOML::

    # the config every run starts from: a path (relative to this file) and/or inline sections
    [base]
    config = "../digits-grid/case1-adsgd.toml"
    [base.data]
    partition = "heterogeneity"

    # axes: "section.field" = list of values; runs are the cartesian product
    [sweep]
    "algorithm.name" = ["adsgd", "dsgd"]
    delays.case = [1, 2, 3, 4, 5]          # unquoted dotted keys work too

    # seeds are an axis like any other: run.seed sets the initial model, the data partition,
    # the sampling and every delay. Put {run.seed} in the name (names must be unique).
    "run.seed" = [0, 7, 13]

    # optional: fields that vary together (one axis, equal-length lists)
    [[sweep.zip]]
    "topology.n" = [4, 9]
    "topology.shape" = [[2, 2], [3, 3]]

    # optional: drop the combinations that match every key (a value or a list of values)
    [[sweep.exclude]]
    "algorithm.name" = "adpsgd"
    "topology.n" = [1, 3]

    [sweep.options]
    name = "{algorithm.name}-case{delays.case}-seed{run.seed}"   # run directory name; {key} or {key:spec}
    out = "runs/zhou-pu-2025/grid"                     # parent of the run directories (relative to cwd)
    jobs = 2                                      # runs at a time
    engine = "sim"                                # sim (in-process) | mpi (`hpcasync launch`, a subprocess)
    # command = "hpcasync launch {config} --out {out}"   # run each as this subprocess instead
    # timeout = 3600                              # seconds per subprocess run

    # optional: after the runs, `hpcasync report` on them (same meaning as its options)
    [report]
    out = "runs/zhou-pu-2025/grid/report"              # default: OUT/report (OUT as given by --out)
    target = 0.9                                  # default: the runs' eval.target_accuracy
    smooth = 5                                    # time to target on a 5-evaluation moving average
    xmax = 20000                                  # cut the curves' time axis
    time = "virtual"                              # virtual | wall
    loss_target = 0.6                             # scaling: also time to training loss <= 0.6

Seeds. Runs that differ only in ``run.seed`` (every other setting equal) are
replicates of one setting: the report aggregates them (mean ± standard
deviation in the tables, a ± std band around the mean curve, time to target
as mean ± std with "k/m reached"; :mod:`hpcasync.results.replicates`). There
is no separate ``seeds`` option on purpose: an axis already says it, combines
with ``zip`` / ``exclude`` / ``--only`` like the others, and keeps one seed per
run directory.

Every expanded config is validated (fields and graph) before any run starts,
so a typo fails at once. A run whose ``run.h5`` says ``complete = True`` and
whose stored config equals the expanded one is skipped; a partial run, or one
whose config changed, is run again. One run's failure is reported in one line
and does not stop the others. The expanded config of every run is written to
``OUT/_configs/NAME.toml`` (``hpcasync simulate`` runs it alone).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
import traceback
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcasync import config as config_mod
from hpcasync.errors import UserError
from hpcasync.sweep_spec import (
    CONFIGS_DIR,
    DEFAULT_COMMANDS,
    ENGINES,
    OPTION_KEYS,
    REPORT_KEYS,
    RESERVED,
    SWEEPABLE,
    RunSpec,
    Sweep,
    load_sweep,
    render_name,
)
from hpcasync.sweep_state import DONE, NEW, PARTIAL, STALE, clear_run_dir, run_status

__all__ = [
    "CONFIGS_DIR", "DEFAULT_COMMANDS", "DONE", "ENGINES", "NEW", "OPTION_KEYS", "PARTIAL", "REPORT_KEYS", "RESERVED",
    "STALE", "SWEEPABLE", "Outcome", "RunFailedError", "RunSpec", "Sweep", "SweepResult", "execute_command",
    "execute_sim", "job_for", "load_sweep", "render_name", "report_sweep", "run_status", "run_sweep",
    "write_configs",
]


class RunFailedError(Exception):
    """A run's subprocess failed; the message says how (reported as is, without a traceback)."""


@dataclass
class Outcome:
    name: str
    ok: bool
    message: str
    seconds: float = 0.0


@dataclass
class SweepResult:
    done: list[Outcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def report_sweep(sweep: Sweep, echo: Callable[[str], None] = print) -> Path | None:
    """``[report]`` of the sweep file on its finished runs (skipped without [report] or finished runs)."""
    if sweep.report is None:
        return None
    from hpcasync.results.report import make_report

    dirs = [spec.out_dir for spec in sweep.runs if (spec.out_dir / "run.h5").is_file()]
    if not dirs:
        echo(f"report: no finished runs under {sweep.out}; nothing to report")
        return None
    opts = sweep.report
    result = make_report(dirs, opts["out"], target=opts["target"], time_key=opts["time_key"], echo=False,
                         smooth=opts["smooth"], xmax=opts["xmax"], loss_target=opts["loss_target"])
    echo(f"report: {len(dirs)} runs -> {opts['out']} ({len(result['files'])} files)")
    return opts["out"]


def _limit_threads() -> None:
    """One BLAS/numba thread per worker: the workers are the parallelism (docs/design.md §5)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return
    threadpool_limits(1)


def _summary(evaluations: list[dict[str, float]], target: float) -> str:
    from hpcasync.results.analysis import time_to_target

    if not evaluations:
        return "no evaluations"
    last = evaluations[-1]
    ttt = time_to_target([e["virtual_time"] for e in evaluations],
                         [e.get("test_accuracy", float("nan")) for e in evaluations], target)
    reached = f"{ttt:g}" if ttt is not None else "not reached"
    return (f"t={last['virtual_time']:.0f} loss={last.get('train_loss', float('nan')):.4f} "
            f"acc={last.get('test_accuracy', float('nan')):.4f} t_{target:g}={reached}")


def execute_sim(config_toml: str, out_dir: str) -> str:
    """Run one simulated config (in this process); return a one-line summary."""
    from hpcasync.engines.sim.runner import simulate

    cfg = config_mod.from_dict(tomllib.loads(config_toml), source=f"run {out_dir}")
    sim = simulate(cfg, Path(out_dir), progress=_stop_if_interrupted)
    return _summary(sim.evaluations, cfg.eval.target_accuracy)


def execute_command(command: list[str], timeout: float | None) -> str:
    """Run one subprocess; on failure, RunFailedError with its exit status and last stderr line."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise RunFailedError(f"cannot start {command[0]!r}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise RunFailedError(f"timed out after {timeout:g} s: {shlex.join(command)}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else "no output"
        raise RunFailedError(f"exit status {proc.returncode}: {why}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "ok"


#: a pool worker received Ctrl-C (see _worker_sigint)
_interrupted = False


#: after Ctrl-C, how long the sweep waits for the runs in flight to close their files before it ends
#: its workers
STOP_GRACE_S = 10.0


def _worker_sigint(signum: int, frame: object) -> None:
    """Ctrl-C in a pool worker is only noted: a simulated run stops at its next evaluation
    (:func:`_stop_if_interrupted`: KeyboardInterrupt there closes its files, marked interrupted), an MPI
    run's launcher has the Ctrl-C itself. Raised here it could land in a GC callback (Python prints and
    drops it) or in an idle worker (multiprocessing prints a traceback; dying inside the task queue's
    lock hangs the pool): the interrupted sweep ends its workers itself."""
    global _interrupted
    _interrupted = True


def _stop_if_interrupted(now: float) -> None:
    if _interrupted:
        raise KeyboardInterrupt


def _worker_init() -> None:
    signal.signal(signal.SIGINT, _worker_sigint)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # forked with it blocked (_run_pool)


def _execute(job: dict[str, Any]) -> Outcome:
    """Worker entry point: never raises, so one run's failure cannot stop the others."""
    start = time.perf_counter()
    try:
        _limit_threads()
        clear_run_dir(Path(job["out_dir"]))
        if job["command"] is None:
            message = execute_sim(job["config_toml"], job["out_dir"])
        else:
            message = execute_command(job["command"], job["timeout"])
        return Outcome(job["name"], True, message, time.perf_counter() - start)
    except (UserError, RunFailedError) as exc:
        return Outcome(job["name"], False, str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - reported, never re-raised: the sweep goes on
        where = traceback.extract_tb(exc.__traceback__)
        at = f" (at {Path(where[-1].filename).name}:{where[-1].lineno})" if where else ""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return Outcome(job["name"], False, f"{type(exc).__name__}: {text}{at}", time.perf_counter() - start)


def job_for(sweep: Sweep, spec: RunSpec) -> dict[str, Any]:
    """The picklable description of one run handed to a worker."""
    command = None
    if sweep.command is not None:
        command = [c.replace("{config}", str(spec.config_file)).replace("{out}", str(spec.out_dir))
                   .replace("{name}", spec.name) for c in sweep.command]
    return {"name": spec.name, "out_dir": str(spec.out_dir), "config_toml": spec.config.to_toml(),
            "command": command, "timeout": sweep.timeout}


def write_configs(sweep: Sweep, specs: Iterable[RunSpec]) -> None:
    for spec in specs:
        spec.config_file.parent.mkdir(parents=True, exist_ok=True)
        spec.config_file.write_text(f"# generated by `hpcasync sweep {sweep.path}`; run {spec.name}\n"
                                    + spec.config.to_toml())


# --------------------------------------------------------------------------- the sweep


def run_sweep(sweep: Sweep, *, force: bool = False, echo: Callable[[str], None] = print,
              progress: bool = True) -> SweepResult:
    """Run every run of ``sweep`` that is not finished yet, ``sweep.jobs`` at a time."""
    from tqdm import tqdm

    result = SweepResult()
    todo: list[RunSpec] = []
    for spec in sweep.runs:
        status = NEW if force else run_status(spec)
        if status == DONE:
            result.skipped.append(spec.name)
        else:
            if status in (STALE, PARTIAL):
                echo(f"rerun {spec.name}: {'its config changed' if status == STALE else 'it did not finish'}")
            todo.append(spec)
    if sweep.runs:
        write_configs(sweep, sweep.runs)
    echo(f"sweep {sweep.path}: {len(sweep.runs)} runs, {len(result.skipped)} already done, "
         f"{len(todo)} to run, {min(sweep.jobs, len(todo))} at a time -> {sweep.out}")
    if not todo:
        return result
    jobs = [job_for(sweep, spec) for spec in todo]
    start = time.perf_counter()
    show = progress and sys.stderr.isatty()
    with tqdm(total=len(jobs), unit="run", desc="sweep", disable=not show, dynamic_ncols=True) as bar:
        def record(outcome: Outcome) -> None:
            k = len(result.done) + len(result.failed) + 1
            where = f"[{k}/{len(jobs)}]"
            if outcome.ok:
                result.done.append(outcome)
                bar.write(f"{where} done   {outcome.name} ({outcome.seconds:.1f} s): {outcome.message}")
            else:
                result.failed.append(outcome)
                bar.write(f"{where} FAILED {outcome.name} ({outcome.seconds:.1f} s): {outcome.message}")
            bar.update(1)

        if sweep.jobs == 1:
            for job in jobs:
                record(_execute(job))
        else:
            _run_pool(jobs, sweep.jobs, record)
    if result.failed:
        echo(f"{len(result.failed)} of {len(jobs)} runs failed:")
        for o in result.failed:
            echo(f"  {o.name}: {o.message}")
    echo(f"sweep {sweep.path}: {len(result.done)} done, {len(result.skipped)} skipped, {len(result.failed)} failed "
         f"in {time.perf_counter() - start:.0f} s")
    return result


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block ends, then raises KeyboardInterrupt. Workers are forked inside
    ``submit``: interrupted half-way, the pool would not know a worker it forked (an orphan). Another
    thread (tqdm's monitor) may receive the signal, so Python's handler is replaced too, not only the
    main thread's mask; the mask is what a forked worker inherits until :func:`_worker_init`."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    got: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)
    if got:
        raise KeyboardInterrupt


def _run_pool(jobs: list[dict[str, Any]], workers: int, record: Callable[[Outcome], None]) -> None:
    """At most ``workers`` runs in flight. A worker that dies (killed, segfault) breaks the pool: the runs
    in flight at that moment are reported failed, a new pool takes the rest (a re-run retries them)."""
    queue = list(jobs)
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)
    inflight: dict[Future[Outcome], dict[str, Any]] = {}
    try:
        while queue or inflight:
            with _sigint_deferred():
                while queue and len(inflight) < workers:
                    job = queue.pop(0)
                    inflight[pool.submit(_execute, job)] = job
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in finished:
                job = inflight.pop(fut)
                try:
                    record(fut.result())
                except BrokenProcessPool:
                    broken = True
                    record(Outcome(job["name"], False, "its worker process died (killed or crashed)"))
            if broken:
                for job in inflight.values():
                    record(Outcome(job["name"], False, "its worker process died (killed or crashed)"))
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)
    except BaseException:
        for fut in inflight:
            fut.cancel()
        # the runs in flight had the same Ctrl-C (one process group): they close their files and return
        wait(inflight, timeout=STOP_GRACE_S)
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class _CallableModule(types.ModuleType):
    """This module, callable: ``hpcasync.sweep(path, ...)`` runs a sweep (:func:`hpcasync.api.sweep`).
    The package attribute ``hpcasync.sweep`` is this module once it is imported, so the Python API's
    function lives on the module's class rather than beside it."""

    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        from hpcasync.api import sweep

        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

