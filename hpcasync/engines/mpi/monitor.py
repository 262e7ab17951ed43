"""The monitor rank: evaluates the average model while the workers run, never making one wait.

With ``mpi.monitor = true`` and n + 1 ranks, rank n runs :func:`monitor_loop`.
Every ``eval.interval`` seconds of wall time it reads each worker's published
model one-sidedly (seqlock, :meth:`Board.read_model`: the workers' windows
are only read), forms the average model x̄, and appends to run.h5 what the
simulator records at its evaluations: the training loss and test
accuracy/loss of x̄, the consensus distance (1/n)·Σ‖x_i − x̄‖², and the
gradients computed so far (the workers' update counters). Workers publish
their model into their own window at most every ``publish_interval`` seconds
(a local copy), so an evaluation sees models at most that old.

With a monitor it also reports the live status (:mod:`.status`) after each
evaluation. The loop ends when the workers reach the end-of-run barrier; after their
final publication (a second barrier) the monitor makes the final evaluation.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable

import numpy as np
from mpi4py import MPI

from hpcasync import algorithms
from hpcasync.engines.evaluation import evaluate_average, pairwise_staleness_row
from hpcasync.engines.mpi import checkpoint as mpi_checkpoint
from hpcasync.engines.mpi import progress as progress_mod
from hpcasync.engines.mpi.board import Board
from hpcasync.engines.mpi.rank_setup import RankResult, RunSetup, abort, check_stop, mark_interrupted
from hpcasync.engines.mpi.status import mean_staleness, reporter_for
from hpcasync.engines.mpi.summary import print_summary, write_summary
from hpcasync.engines.mpi.world import World
from hpcasync.kernels import warmup
from hpcasync.problems.base import Problem
from hpcasync.results.writer import RunWriter

# Above this many elements (n·d) the monitor does not stack all models but sums them one at a time.
STACK_LIMIT = 25_000_000


def publish_interval(eval_interval: float, dim: int) -> float:
    """How often a worker refreshes the model the monitor reads (seconds).

    A tenth of the evaluation interval, at most 0.1 s, so an evaluation sees
    models at most that old; at least 50 local copies' worth of time
    (≈ 1 GB/s assumed), so the copies cost a worker < 2 % at any model size.
    """
    copy_s = dim * 8 / 1e9
    return max(min(eval_interval / 10.0, 0.1), 50.0 * copy_s)


class AverageModelEvaluator:
    """Reads the n workers' models through ``board`` and evaluates their average."""

    def __init__(self, problem: Problem, board: Board, n: int, dim: int, virtual: Callable[[float], float]) -> None:
        self.problem = problem
        self.board = board
        self.n = n
        self.dim = dim
        self.virtual = virtual
        self.stacked = n * dim <= STACK_LIMIT
        dt = board.dtype  # the models' (float32 for torch)
        self.rows = np.empty((n, dim), dt) if self.stacked else np.empty((1, dim), dt)
        self.mean = np.empty(dim, dt)
        self.iterations = np.zeros(n, np.int64)
        self.clocks = np.zeros((n, board.clock_len), np.int64) if board.clock_len else None
        self.read_s = 0.0
        self.eval_s = 0.0
        self.evaluations: list[dict[str, float]] = []

    def collect(self) -> None:
        """Read every worker's newest model into ``rows`` (or straight into the mean)."""
        t0 = time.perf_counter()
        if self.stacked:
            for j in range(self.n):
                self.board.read_model(j, self.rows[j])
            self._sq = math.nan
        else:
            self.mean.fill(0.0)
            sq = 0.0
            row = self.rows[0]
            for j in range(self.n):
                self.board.read_model(j, row)
                self.mean += row
                sq += float(row @ row)
            self.mean /= self.n
            self._sq = sq
        self.board.read_iterations(range(self.n), self.iterations)
        if self.clocks is not None:
            self.board.read_clocks(range(self.n), self.clocks)
        self.read_s += time.perf_counter() - t0

    def evaluate_mean(self, wall: float, gradients: float | None = None) -> dict[str, float]:
        t0 = time.perf_counter()
        head = {"virtual_time": self.virtual(wall), "wall_time": wall,
                "gradients": float(self.iterations.sum()) if gradients is None else gradients}
        if self.stacked:
            row = evaluate_average(self.problem.evaluate, head, self.mean, self.rows)
        else:  # collect() summed the models into mean and their squared norms into _sq
            row = evaluate_average(self.problem.evaluate, head, self.mean, n=self.n, sum_sq=self._sq)
        if self.clocks is not None:
            row.update(pairwise_staleness_row(self.clocks))
        self.eval_s += time.perf_counter() - t0
        self.evaluations.append(row)
        return row

    def evaluate(self, clock: Callable[[], float]) -> dict[str, float]:
        """Read the models, then evaluate their average, stamped with the time the reads ended."""
        self.collect()
        return self.evaluate_mean(clock())


def wait_sleeping(req: MPI.Request, max_sleep: float = 1e-3,
                  between: Callable[[], None] | None = None) -> None:
    """Complete ``req`` with Test and growing sleeps (never a busy spin); ``between`` runs each turn."""
    sleep = 2e-5
    while not req.Test():
        if between is not None:
            between()
        time.sleep(sleep)
        sleep = min(2 * sleep, max_sleep)


def monitor_loop(evaluator: AverageModelEvaluator, comm: MPI.Comm, clock: Callable[[], float],
                 interval: float, record: Callable[[dict[str, float]], None], *, next_eval: float = 0.0,
                 signals_raise: bool = True) -> dict[str, float]:
    """Evaluate every ``interval`` s until the workers finish; then the final evaluation. Returns it.

    Collective with the workers' end of run: two ``Ibarrier`` over ``comm``
    (all ranks), the first when the workers stopped and their last messages
    landed, the second after their final publication.
    """
    done = comm.Ibarrier()
    while True:
        now = clock()
        if now >= next_eval:
            record(evaluator.evaluate(clock))
            next_eval += interval * max(1, math.floor((clock() - next_eval) / interval) + 1)
        if done.Test():
            break
        if signals_raise:  # else the workers stop for a checkpoint and reach the barrier
            check_stop()
        with progress_mod.computing():  # no MPI call: the progress thread may poll meanwhile
            time.sleep(max(min(next_eval - clock(), 0.01), 0.0))
    wait_sleeping(comm.Ibarrier())  # workers published their final models
    final = evaluator.evaluate(clock)
    record(final)
    return final


def run_monitor(setup: RunSetup, world: World, run_writer: RunWriter | None, result: RankResult, hosts: list[str],
                abort_on_error: bool, quiet: bool) -> None:
    """The monitor rank of a run: evaluates until the workers finish, writes run.h5 (see the module docstring)."""
    assert run_writer is not None
    comm = world.comm
    board = progress = server = None
    try:
        clock_len = world.n if algorithms.get(setup.cfg.algorithm.name).vector_clock else 0
        board = Board(comm, setup.x0.size, publishes=False, dtype=setup.x0.dtype, clock_len=clock_len)
        from hpcasync.engines.mpi.server import ServerEvaluator, open_server  # imports this module

        server = open_server(setup, comm)  # a parameter server's x is evaluated instead of an average
        progress = progress_mod.start(setup.cfg.mpi.progress, comm)
        evaluator = (AverageModelEvaluator(setup.problem, board, world.n, setup.x0.size, setup.virtual)
                     if server is None else
                     ServerEvaluator(setup.problem, board, server, world.n, setup.x0.size, setup.virtual))
        warmup(setup.x0.dtype)  # numba's cached kernels and the problem's evaluation, before the clock starts
        setup.problem.evaluate(setup.x0)
        checkpoints = mpi_checkpoint.refusal(algorithms.get(setup.cfg.algorithm.name)) is None
        elapsed0 = 0.0 if setup.resume_state is None else float(setup.resume_state["wall"])
        comm.Barrier()
        t0 = time.perf_counter() - elapsed0

        def clock() -> float:
            return time.perf_counter() - t0

        status = reporter_for(setup.cfg, quiet)
        stale = np.full(world.n, np.nan)

        def record(row: dict[str, float]) -> None:
            run_writer.append_eval(**row)
            if status is not None:
                board.read_staleness(range(world.n), stale)
                status.update(row["wall_time"], row["gradients"], row.get("test_accuracy"), mean_staleness(stale))

        interval = setup.cfg.eval.interval
        try:
            final = monitor_loop(evaluator, comm, clock, interval, record, signals_raise=not checkpoints,
                                 next_eval=0.0 if not elapsed0 else elapsed0 + interval)
        finally:
            if status is not None:
                status.close()
        stopped = comm.allreduce(0, op=MPI.MAX)  # the workers stopped for a checkpoint?
        if stopped:
            signame = signal.Signals(stopped).name
            result.interrupted = signame
            run_writer.set_final_attrs(interrupted=signame)
            mpi_checkpoint.save_monitor(setup.cfg_out, setup.cfg, world.rank, comm.Get_size(),
                                        final["wall_time"], run_writer.rows, signame)
            progress_mod.stop(progress)
            run_writer.close(complete=False)
            board.free()
            if server is not None:  # collective with the workers' frees, on this path too
                server.free()
            return
        # the workers' final wall time is their own; the monitor's clock is within a barrier of it
        wall = final["wall_time"]
        totals = int(final["gradients"])
        result.evaluations = evaluator.evaluations
        result.final = final
        result.gradients = totals
        result.wall_s = wall
        result.timings = {"read_s": evaluator.read_s, "eval_s": evaluator.eval_s,
                          "read_retries": float(board.retries)}
        write_summary(setup, run_writer, totals, wall, monitor=True)
        run_writer.set_summary(monitor_host=hosts[world.rank], monitor_read_s=evaluator.read_s,
                               monitor_eval_s=evaluator.eval_s)
        if not quiet:
            print_summary(setup, result, wall, totals)
    except BaseException as exc:
        progress_mod.stop(progress)
        mark_interrupted(exc, run_writer)
        run_writer.close(complete=False)
        if abort_on_error:
            abort(comm, world.rank, exc)
        raise
    progress_mod.stop(progress)
    run_writer.close(complete=True)
    if setup.resume_state is not None:
        mpi_checkpoint.remove(setup.cfg_out, world.rank)
    board.free()
    if server is not None:
        server.free()
