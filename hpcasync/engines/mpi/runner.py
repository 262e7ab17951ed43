"""One MPI rank of a run: setup, the per-rank loop driving the algorithm generator, the end of run.

Workers (ranks 0..n-1) drive their algorithm's generator (``algorithms/``) and
perform each blocking op at once:

* ``Compute(x)``: ``oracle.gradient(x)``; with a delay model the computation
  then lasts max(real, one sample of ``delays.compute(rank)`` × ``time_unit``):
  the rank sleeps out the rest, waking to land outgoing transmissions when
  they are due (``outbox.py``) — never a busy spin;
* ``AllreduceMean``: ``Iallreduce`` on the worker communicator;
* ``NeighborExchange``: ``Ineighbor_allgather`` on a distributed-graph
  communicator;
* ``Barrier``: ``Ibarrier``;
* ``PairAverage`` (AD-PSGD): :meth:`MpiTransport.perform_pair_average`,
  take the peer's LOCK word (compare-and-swap), get, average, put (``pairs.py``);
  with a delay model the active agent first reserves the peer (other agents
  wait while it is busy), waits a round trip, ``delays.comm(rank)`` + one
  sample of the peer's distribution (``delays.comm_from``), × ``time_unit``,
  then averages with the peer's model of that moment, as in
  the simulator. The agent's ``x`` is bound to its window of live models; a
  passive agent runs each of its steps under the lock on its own window,
  computes its gradient at a snapshot, and keeps MPI progressing while it
  pads (every ``PAIR_POLL_S``) so that peers' locks are served.

Collectives are waited for with ``Test`` and growing sleeps. With a delay
model a round also lasts until the slowest contribution has "travelled"
(its post time + one communication delay), as in the simulator.

Stopping. Asynchronous algorithms: every rank stops at the wall-time budget
measured from a common start (a barrier, then each rank's own clock), or
when the job-wide gradient counter (``Fetch_and_op`` on rank 0, batched per
millisecond) reaches the gradient budget. Synchronous algorithms must all
stop after the same round or a collective would hang: the stop round rides
along each round's collective (AllReduce: agreed by every rank in the
round; DSGD: proposed as "this round + the graph diameter" and spread by
min over the neighbour exchange, which reaches every rank in time).

End of run: the outbox is flushed at once (remaining injected delay
ignored), every rank passes a barrier (all RMA completed), the algorithm's
``finish`` runs (Alg. 3 takes in its last deltas), the final models are
published to the monitor, a second barrier, the monitor's final evaluation;
files are closed ``complete = True`` and windows freed (collectively).

Errors: during setup every rank catches its own error and :func:`world.agree`
makes every rank raise the same :class:`SetupError` (no hang, no traceback).
An error inside the loop closes this rank's files with ``complete = False``,
prints ``hpcasync run: error: rank K: …`` and calls ``MPI_Abort``, so
nobody waits forever for the failed rank.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hpcasync.config import Config
from hpcasync.engines.mpi import checkpoint as mpi_checkpoint
from hpcasync.engines.mpi import progress as progress_mod
from hpcasync.engines.mpi.board import Board
from hpcasync.engines.mpi.groups import open_groups
from hpcasync.engines.mpi.monitor import run_monitor
from hpcasync.engines.mpi.rank_setup import (
    RankResult,
    RunSetup,
    TerminatedError,
    abort,
    install_stop_handlers,
    mark_interrupted,
    prepare,
    wait_request,
)
from hpcasync.engines.mpi.server import open_server
from hpcasync.engines.mpi.status import reporter_for
from hpcasync.engines.mpi.summary import final_without_monitor
from hpcasync.engines.mpi.transport import MpiTransport
from hpcasync.engines.mpi.worker import Worker
from hpcasync.engines.mpi.world import SetupError, World, make_world, needed_ranks_message
from hpcasync.kernels import warmup
from hpcasync.results.writer import AgentWriter, RunWriter, close_writers
from hpcasync.threads import node_cpus

#: Alg. 3 keeps s_i in its accumulator window (snapshot reads) instead of draining into a local s_i
DELTA_IN_WINDOW = True


def run_rank(cfg: Config, out_dir: str | Path, comm: MPI.Comm | None = None, *, source: str = "config",
             threads: int = 1, abort_on_error: bool = True, quiet: bool = True, resume: bool = False) -> RankResult:
    """Run this rank's part of ``cfg``; collective over ``comm`` (default ``COMM_WORLD``).

    Raises :class:`SetupError` on every rank for a rank-count mismatch or a
    setup error on any rank. Errors after setup abort the job
    (``abort_on_error``) or propagate (tests that know every rank fails alike).
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    out = Path(out_dir)
    n, size = cfg.topology.n, comm.Get_size()
    message = needed_ranks_message(source, n, size, cfg.mpi.monitor)
    if message is not None:
        raise SetupError(message, [])
    previous = install_stop_handlers()  # from here on: a signal stops this rank cleanly
    try:
        world = make_world(comm, n)
        try:
            return _run(cfg, out, world, threads, abort_on_error, quiet, resume)
        finally:
            world.free()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(cfg: Config, out: Path, world: World, threads: int, abort_on_error: bool, quiet: bool,
         resume: bool) -> RankResult:
    setup, hosts, writer, run_writer = prepare(cfg, world, out, threads, resume)
    result = RankResult(rank=world.rank, role="monitor" if world.is_monitor else "worker", n=world.n, out_dir=out)
    if world.is_monitor:
        run_monitor(setup, world, run_writer, result, hosts, abort_on_error, quiet)
    else:
        _worker(setup, world, writer, run_writer, result, hosts, threads, abort_on_error, quiet)
    return result


def _worker(setup: RunSetup, world: World, writer: AgentWriter | None, run_writer: RunWriter | None,
            result: RankResult, hosts: list[str], threads: int, abort_on_error: bool, quiet: bool) -> None:
    agent = setup.agent
    assert agent is not None and writer is not None and world.workers is not None
    comm, rank = world.comm, world.rank
    nbrs, out_nbrs = setup.topology.in_neighbors(rank), setup.topology.out_neighbors(rank)
    comm_delay = None
    if setup.delays_on:
        def comm_delay() -> float:
            return setup.delays.comm(rank) * setup.time_unit
    delta_target = agent.delta_target if agent.payload == "delta" and DELTA_IN_WINDOW else None
    # pairwise averaging (AD-PSGD) binds the agent's model to a window of live models
    pair_model = agent.x if "pair_average" in type(agent).requires else None

    transport = board = progress = None
    complete = False
    w: Worker | None = None
    try:
        transport = MpiTransport(world.workers, in_neighbors=nbrs, out_neighbors=out_nbrs, x0=setup.x0,
                                 payload=agent.payload, synchronous=type(agent).synchronous,
                                 iteration=lambda: agent.iteration, comm_delay=comm_delay,
                                 delta_target=delta_target, message0=agent.initial_message(),
                                 pair_model=pair_model, pair_active=agent.setup.active,
                                 yield_before_read=_oversubscribed(hosts, rank),
                                 flood="flood" in type(agent).requires,
                                 shared_memory=setup.cfg.mpi.shared_memory)
        if transport.pairs is not None:
            agent.x = transport.pairs.x  # the agent's model is its window of live models (pairs.py)
        clock = agent.clock if type(agent).vector_clock else None  # DASGD: for S_avg / S_max
        board = Board(comm, setup.x0.size, publishes=world.has_monitor, x0=setup.x0,
                      clock_len=0 if clock is None else world.n)
        transport.server = open_server(setup, comm)  # async-sgd, hogwild: x on rank 0 (server.py)
        transport.groups = open_groups(world.workers, type(agent), setup.x0, setup.cfg.algorithm)  # prague
        progress = progress_mod.start(setup.cfg.mpi.progress, comm)  # stopped before any window is freed
        w = Worker(setup, world, writer, transport, board)
        if run_writer is not None:  # rank 0 of a job without a monitor reports the live status
            w.status = reporter_for(setup.cfg, quiet)
        transport.outbox.on_transmission = w.trace.add_comm  # measured link times, for replay
        w.checkpoints = mpi_checkpoint.refusal(type(agent)) is None
        resumed = setup.resume_state
        if resumed is not None:
            w.trace.compute.extend(resumed["trace"]["compute"].tolist())
            w.trace.comm.extend(resumed["trace"]["comm"].tolist())
            mpi_checkpoint.restore_windows(transport, resumed)
            mpi_checkpoint.restore_worker(w, resumed)
            if w.budget_gradients:
                w._total = board.add_total(w.gradients)  # the job-wide counter starts where it was
        _warmup(setup)
        if run_writer is not None and resumed is None:  # rank 0 without a monitor: x0 at time 0 like the sim
            row = {"virtual_time": setup.virtual(0.0), "wall_time": 0.0, "gradients": 0.0,
                   "consensus_distance": 0.0, **setup.problem.evaluate(setup.x0)}
            if clock is not None:  # every clock still 0
                row.update(staleness_avg=0.0, staleness_max=0.0)
            run_writer.append_eval(**row)
            result.evaluations.append(row)
        comm.Barrier()
        w.t0 = time.perf_counter() - w.elapsed0
        w.loop()
        # -- end of run ---------------------------------------------------------------------
        transport.outbox.flush()
        transport.complete_pushes()
        if transport.groups is not None:
            transport.groups.leave(agent.x)  # no member of a group left waiting for this rank
        wall = w.now()
        if w.status is not None:
            w.status.close()
        _wait_all(comm.Ibarrier())  # everyone stopped; every RMA op has completed at its target
        agent.finish(transport)
        board.set_iteration(agent.iteration)
        if clock is not None:
            board.set_clock(clock)
        board.publish(agent.model)
        _wait_all(comm.Ibarrier())  # final models published for the monitor
        stopped = comm.allreduce(w.stop_signal, op=MPI.MAX)  # with the monitor: stopped for a checkpoint?
        result.agent, result.transport = agent, transport
        if stopped:
            result.interrupted = _checkpoint(w, stopped, wall, writer, run_writer)
            result.checkpoint_s = w.checkpoint_s
            result.wall_s = wall
            complete = False
            raise _CheckpointedError
        result.timings = w.timings(wall)
        result.wall_s = wall
        writer.write_timings(**result.timings)
        writer.write_final_model(agent.model)
        if transport.server is not None:
            writer.write_server_steps(transport.server.rows())
        totals = world.workers.allreduce(w.gradients)
        if run_writer is not None:  # rank 0 of a job without a monitor
            final_without_monitor(setup, world, run_writer, result, agent.model, clock, totals, wall, quiet)
        elif not world.has_monitor:  # the other workers send rank 0 their final models (and clocks)
            world.workers.gather(np.asarray(agent.model), root=0)
            if clock is not None:
                world.workers.gather(clock, root=0)
        result.gradients = totals
        complete = True
    except _CheckpointedError:
        pass
    except BaseException as exc:
        progress_mod.stop(progress)
        if w is not None and w.status is not None:
            w.status.close()
        mark_interrupted(exc, writer, run_writer)
        close_writers((writer, run_writer), complete=False)
        if abort_on_error:
            abort(comm, rank, exc)
        raise
    close_writers((writer, run_writer), complete=complete)
    assert w is not None
    w.trace.write(writer.path)
    if complete and setup.resume_state is not None:
        mpi_checkpoint.remove(setup.cfg_out, world.rank)
    # collective frees, only on the success path (a failed rank aborts the job instead)
    progress_mod.stop(progress)
    board.free()
    if transport.server is not None:
        transport.server.free()
    if transport.groups is not None:
        transport.groups.free()
    transport.free()
    if transport.pairs is not None:
        agent.x = transport.pairs.x  # a private copy of the final model once the window is freed


class _CheckpointedError(Exception):
    """The run stopped on a signal and wrote its checkpoint: the files are closed, the windows freed."""


def _checkpoint(w: Worker, signum: int, wall: float, writer: AgentWriter, run_writer: RunWriter | None) -> str:
    """Write this worker's checkpoint and close its files as interrupted; returns the signal's name."""
    signame = signal.Signals(signum).name
    for f in (writer, run_writer):
        if f is not None:
            f.set_final_attrs(interrupted=signame)
    w.checkpoint_s = mpi_checkpoint.save_worker(w.setup.cfg_out, w, wall, signame,
                                                None if run_writer is None else run_writer.rows)
    close_writers((writer, run_writer), complete=False)
    return signame


def _oversubscribed(hosts: list[str], rank: int) -> bool:
    """More ranks of this job on this rank's node than the node has cores."""
    return hosts.count(hosts[rank]) > node_cpus()


def _warmup(setup: RunSetup) -> None:
    """Load numba's cached kernels before the clock starts, without touching the real oracle's stream."""
    warmup(setup.x0.dtype)
    spare = setup.problem.oracle(setup.world.rank, setup.cfg.run.seed + 7919)
    spare.gradient(setup.x0)


def _wait_all(req: MPI.Request) -> None:
    wait_request(req)


__all__ = ["RankResult", "SetupError", "TerminatedError", "run_rank"]
