"""What every rank of an MPI run builds before its windows, and how a rank fails.

:class:`RunSetup` is the topology, problem, initial model, delay model and
(on a worker) the agent and its oracle; :func:`prepare` builds it on every
rank and agrees on errors (:func:`world.agree`), so that a setup error on
one rank raises the same :class:`SetupError` on all, then does the same
for the output files. After setup an error aborts the job
(:func:`abort`).

Signals. SIGTERM, SIGINT (Ctrl-C to mpiexec, which passes it to every rank)
and SIGUSR1 (SLURM's ``--signal``) are noted by the handler and raise
:class:`TerminatedError` at the next safe point of the rank's loop (each
step, and every few milliseconds of its sleeps and waits): the rank closes
its files with ``complete = False`` and ``interrupted = "SIGINT"`` (etc.),
waits up to ``STOP_GRACE_S`` in a barrier for the other
ranks to close theirs (mpiexec kills the remaining ranks as soon as one
exits with a non-zero status) and exits with 128 + the signal number, with
one line from rank 0 and no traceback. Further signals are ignored meanwhile.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpi4py import MPI

from hpcasync import algorithms, problems
from hpcasync import delays as delay_models
from hpcasync.algorithms.base import Algorithm
from hpcasync.config import Config, dump_toml
from hpcasync.engines.build import build_agent, build_topology, check_supported
from hpcasync.engines.mpi import checkpoint as mpi_checkpoint
from hpcasync.engines.mpi import world as world_mod
from hpcasync.engines.mpi.transport import MpiTransport
from hpcasync.engines.mpi.world import SetupError, World, agree, describe
from hpcasync.errors import UserError
from hpcasync.results.schema import agent_filename
from hpcasync.results.writer import (
    AgentWriter,
    RunWriter,
    close_writers,
    ensure_output_dir,
    open_run_writer,
    software_versions,
)

#: signals that end a run cleanly: the launcher/scheduler (SIGTERM, SIGUSR1 of SLURM's --signal), Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
#: after closing its files, how long a stopped rank waits for the others before it exits: a rank that
#: exits early with a non-zero status makes mpiexec kill the ranks still closing theirs
STOP_GRACE_S = 10.0


class TerminatedError(BaseException):
    """A STOP_SIGNALS signal arrived (launcher, scheduler or Ctrl-C). Not an ``Exception``: no
    ``except Exception`` on the way may turn it into an ordinary error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class RankResult:
    """What one rank did; returned by :func:`run_rank` on every rank."""

    rank: int
    role: str  # "worker" or "monitor"
    n: int
    agent: Algorithm | None = None
    transport: MpiTransport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    evaluations: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    gradients: int = 0  # job-wide, known on the rank that writes run.h5
    wall_s: float = 0.0
    out_dir: Path | None = None
    interrupted: str = ""  # the signal that stopped the run with a checkpoint (resume it)
    checkpoint_s: float = 0.0  # seconds this rank took to write its checkpoint


def abort(comm: MPI.Comm, rank: int, exc: BaseException) -> None:
    """Print this rank's error and end the whole job (never returns)."""
    if isinstance(exc, TerminatedError):
        # files are closed (complete = false, interrupted = signal): wait briefly for the other ranks to
        # close theirs, then leave with 128 + signal like a process the signal ended, without a traceback
        wait_request(comm.Ibarrier(), timeout=STOP_GRACE_S)
        if rank == 0:
            print(f"hpcasync run: interrupted by {exc}; files closed, marked complete = false",
                  file=sys.stderr, flush=True)
        os._exit(128 + exc.signum)
    if not isinstance(exc, UserError):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"hpcasync run: error: rank {rank}: {describe(exc)}", file=sys.stderr, flush=True)
    comm.Abort(2 if isinstance(exc, UserError) else 1)
    os._exit(2)  # pragma: no cover - Abort does not return


#: the signal that asked this rank to stop (empty until one arrives)
_stop_requested: list[int] = []


def on_stop_signal(signum: int, frame: Any) -> None:
    # Only noted here: raising from the handler would land anywhere, also inside a weakref, GC or
    # numba callback, where Python prints and drops the exception. The loops raise at a safe point.
    # Once: a second signal (mpiexec forwards to the ranks, the launcher to the group) changes nothing.
    if not _stop_requested:
        _stop_requested.append(signum)


def check_stop() -> None:
    """Raise :class:`TerminatedError` if a stop signal arrived; called at the loops' safe points
    (each step of a worker, its sleeps and waits, the monitor's loop)."""
    if _stop_requested:
        raise TerminatedError(_stop_requested[0])


def stop_signal() -> int:
    """The stop signal noted so far (0: none); a run that checkpoints stops on it at an agreed point."""
    return _stop_requested[0] if _stop_requested else 0


def install_stop_handlers() -> dict[int, Any]:
    """:func:`on_stop_signal` for every STOP_SIGNALS signal (main thread only); returns the previous handlers."""
    _stop_requested.clear()
    return {sig: signal.signal(sig, on_stop_signal) for sig in STOP_SIGNALS} if main_thread() else {}


def mark_interrupted(exc: BaseException, *writers: AgentWriter | RunWriter | None) -> None:
    """Record the signal in the files of a rank a signal stopped (written when they are closed)."""
    if isinstance(exc, TerminatedError):
        for w in writers:
            if w is not None:
                w.set_final_attrs(interrupted=str(exc))


def wait_request(req: MPI.Request, timeout: float = math.inf) -> bool:
    """Complete ``req`` with Test and growing sleeps; False if ``timeout`` seconds passed first."""
    sleep = 2e-5
    deadline = time.monotonic() + timeout
    while not req.Test():
        if time.monotonic() >= deadline:
            return False
        time.sleep(sleep)
        sleep = min(2 * sleep, 1e-3)
    return True


class RunSetup:
    """Everything built before the windows: shared by workers and the monitor."""

    def __init__(self, cfg: Config, world: World) -> None:
        self.cfg = cfg
        self.world = world
        self.cfg_out = Path()  # the run directory (prepare sets it)
        self.topology = build_topology(cfg)
        self.problem = problems.build(cfg, self.topology.n)
        self.x0 = self.problem.init_params(cfg.run.seed)
        self.delays = delay_models.build(cfg.delays, self.topology.n, cfg.run.seed)
        self.time_unit = float(cfg.mpi.time_unit)
        self.delays_on = bool(self.delays.enabled)
        self.agent: Algorithm | None = None
        self.oracle = None
        self.resume_state: dict[str, Any] | None = None  # this rank's checkpoint, when resuming
        if not world.is_monitor:
            self.agent = build_agent(cfg, self.topology, world.rank, self.x0)
            self.oracle = self.problem.oracle(world.rank, cfg.run.seed)
        if cfg.delays.drop > 0:
            raise UserError(f"config field delays.drop = {cfg.delays.drop}: message loss exists only in the "
                            "simulator (the MPI transports lose nothing); set it to 0 for `hpcasync run`")
        check_supported(algorithms.get(cfg.algorithm.name), MpiTransport.features, "mpi", cfg.algorithm.name)

    def virtual(self, wall: float) -> float:
        return wall / self.time_unit if self.delays_on else math.nan


def config_for_comparison(cfg: Config) -> str:
    d = cfg.to_dict()
    d["data"] = dict(d["data"], dir="")  # node-local data directories may differ between ranks
    return dump_toml(d)


def main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def prepare(cfg: Config, world: World, out: Path, threads: int, resume: bool = False
            ) -> tuple[RunSetup, list[str], AgentWriter | None, RunWriter | None]:
    """Build :class:`RunSetup` and open this rank's output files, agreeing on errors at each step. Collective.

    Returns the setup, every rank's host name, this worker's agent file
    writer (None on the monitor) and the run.h5 writer (on the rank that
    writes it, :attr:`World.writes_run_file`).
    """
    comm, rank = world.comm, world.rank
    # -- setup: every rank reports, all agree ------------------------------------------------
    setup: RunSetup | None = None
    error = None
    try:
        setup = RunSetup(cfg, world)
        setup.cfg_out = out
        if resume:  # this rank's checkpoint, before anything is built on the agent's state
            setup.resume_state = mpi_checkpoint.load(out, cfg, rank, comm.Get_size(),
                                                     algorithms.get(cfg.algorithm.name))
            if not world.is_monitor:
                mpi_checkpoint.restore_rank(setup, setup.resume_state)
    except Exception as exc:
        if not isinstance(exc, UserError):
            traceback.print_exception(exc, file=sys.stderr)
        error = describe(exc)
    agree(comm, error)
    agree(comm, world_mod.check_same_config(comm, config_for_comparison(cfg)))
    assert setup is not None
    hosts = comm.allgather(MPI.Get_processor_name())

    writer: AgentWriter | None = None
    run_writer: RunWriter | None = None
    error = None
    try:
        ensure_output_dir(out)
        state = setup.resume_state
        if state is not None:  # go on writing the interrupted run's files after their checkpointed rows
            if world.writes_run_file:
                run_writer = RunWriter.reopen(out, setup.topology.n, rows=state["run_rows"])
            if not world.is_monitor:
                writer = AgentWriter.reopen(out / agent_filename(rank), rank, rows=state["rows"], keep_open=True)
        elif world.writes_run_file:
            run_writer = open_run_writer(out, cfg, setup.topology, "mpi", hosts=hosts[:setup.topology.n],
                                         versions=software_versions(mpi_version=MPI.Get_library_version()))
        if not world.is_monitor and state is None:
            writer = AgentWriter(out / agent_filename(rank), rank, keep_open=True, attrs={
                "algorithm": cfg.algorithm.name, "engine": "mpi", "host": hosts[rank], "pid": os.getpid(),
                "time_unit_s": setup.time_unit if setup.delays_on else math.nan, "threads": threads,
                "delays": cfg.delays.model if setup.delays_on else "none"})
    except Exception as exc:
        error = describe(exc)
    try:
        agree(comm, error)
    except SetupError:
        close_writers((writer, run_writer), complete=False)
        raise
    return setup, hosts, writer, run_writer
