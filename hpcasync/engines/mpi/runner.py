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
  exclusive lock on the peer's live model, get, average, put (``pairs.py``);
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

import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from mpi4py import MPI

from hpcasync import delays as delay_models
from hpcasync import problems
from hpcasync.algorithms.base import Algorithm
from hpcasync.algorithms.transport import AllreduceMean, Barrier, Compute, NeighborExchange, PairAverage
from hpcasync.config import Config
from hpcasync.engines.build import build_agent, build_topology
from hpcasync.engines.mpi import world as world_mod
from hpcasync.engines.mpi.board import Board
from hpcasync.engines.mpi.monitor import AverageModelEvaluator, monitor_loop, publish_interval
from hpcasync.engines.mpi.transport import NEVER, MpiTransport
from hpcasync.engines.mpi.world import SetupError, World, agree, describe, make_world, needed_ranks_message
from hpcasync.errors import UserError
from hpcasync.results.schema import agent_filename
from hpcasync.results.writer import AgentWriter, RunWriter, ensure_output_dir, software_versions

#: how often a rank adds its gradients to the job-wide counter of a gradient budget
TOTAL_SYNC_S = 1e-3
#: longest sleep while padding a computation (budget checks, outbox landings wake it earlier)
MAX_PAD_SLEEP_S = 5e-3
#: longest sleep between two Tests of a pending collective
MAX_WAIT_SLEEP_S = 5e-4


#: Alg. 3 keeps s_i in its accumulator window (snapshot reads) instead of draining into a local s_i
DELTA_IN_WINDOW = True
#: longest sleep of a passive AD-PSGD agent while padding: peers' locks on its model wait for its progress
PAIR_POLL_S = 2e-4
#: algorithms whose blocking ops the MPI engine does not perform yet (name → reason)
UNSUPPORTED: dict[str, str] = {}


class TerminatedError(Exception):
    """SIGTERM arrived (the launcher is ending the job)."""


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


def _diameter(graph: nx.Graph, n: int) -> int:
    try:
        return max(1, int(nx.diameter(graph)))
    except (nx.NetworkXError, ValueError):
        return max(1, n - 1)


def _abort(comm: MPI.Comm, rank: int, exc: BaseException) -> None:
    """Print this rank's error and end the whole job (never returns)."""
    if isinstance(exc, TerminatedError):
        os._exit(143)
    if not isinstance(exc, UserError):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"hpcasync run: error: rank {rank}: {describe(exc)}", file=sys.stderr, flush=True)
    comm.Abort(2 if isinstance(exc, UserError) else 1)
    os._exit(2)  # pragma: no cover - Abort does not return


def _on_sigterm(signum: int, frame: Any) -> None:
    raise TerminatedError()


class _Setup:
    """Everything built before the windows: shared by workers and the monitor."""

    def __init__(self, cfg: Config, world: World) -> None:
        self.cfg = cfg
        self.world = world
        self.topology = build_topology(cfg)
        self.problem = problems.build(cfg, self.topology.n)
        self.x0 = self.problem.init_params(cfg.run.seed)
        self.delays = delay_models.build(cfg.delays, self.topology.n, cfg.run.seed)
        self.time_unit = float(cfg.mpi.time_unit)
        self.delays_on = bool(self.delays.enabled)
        self.agent: Algorithm | None = None
        self.oracle = None
        if not world.is_monitor:
            self.agent = build_agent(cfg, self.topology, world.rank, self.x0)
            self.oracle = self.problem.oracle(world.rank, cfg.run.seed)
        if cfg.delays.drop > 0:
            raise UserError(f"config field delays.drop = {cfg.delays.drop}: message loss exists only in the "
                            "simulator (the MPI transports lose nothing); set it to 0 for `hpcasync run`")
        if cfg.algorithm.name in UNSUPPORTED:
            raise UserError(f"algorithm {cfg.algorithm.name}: not available on the MPI engine yet "
                            f"({UNSUPPORTED[cfg.algorithm.name]}); run it with `hpcasync simulate`")

    def virtual(self, wall: float) -> float:
        return wall / self.time_unit if self.delays_on else math.nan


def _config_for_comparison(cfg: Config) -> str:
    d = cfg.to_dict()
    d["data"] = dict(d["data"], dir="")  # node-local data directories may differ between ranks
    from hpcasync.config import dump_toml

    return dump_toml(d)


def run_rank(cfg: Config, out_dir: str | Path, comm: MPI.Comm | None = None, *, source: str = "config",
             threads: int = 1, abort_on_error: bool = True, quiet: bool = True) -> RankResult:
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
    world = make_world(comm, n)
    try:
        return _run(cfg, out, world, threads, abort_on_error, quiet)
    finally:
        world.free()


def _run(cfg: Config, out: Path, world: World, threads: int, abort_on_error: bool, quiet: bool) -> RankResult:
    comm, rank = world.comm, world.rank
    # -- setup: every rank reports, all agree ------------------------------------------------
    setup: _Setup | None = None
    error = None
    try:
        setup = _Setup(cfg, world)
    except Exception as exc:
        if not isinstance(exc, UserError):
            traceback.print_exception(exc, file=sys.stderr)
        error = describe(exc)
    agree(comm, error)
    agree(comm, world_mod.check_same_config(comm, _config_for_comparison(cfg)))
    assert setup is not None
    hosts = comm.allgather(MPI.Get_processor_name())

    writer: AgentWriter | None = None
    run_writer: RunWriter | None = None
    error = None
    try:
        ensure_output_dir(out)
        if world.writes_run_file:
            run_writer = RunWriter(
                out, config_toml=cfg.to_toml(), engine="mpi", n_agents=setup.topology.n,
                adjacency=setup.topology.adjacency(), weights=setup.topology.W,
                versions=software_versions(mpi_version=MPI.Get_library_version()), hosts=hosts[:setup.topology.n])
        if not world.is_monitor:
            writer = AgentWriter(out / agent_filename(rank), rank, keep_open=True, attrs={
                "algorithm": cfg.algorithm.name, "engine": "mpi", "host": hosts[rank], "pid": os.getpid(),
                "time_unit_s": setup.time_unit if setup.delays_on else math.nan, "threads": threads,
                "delays": cfg.delays.model if setup.delays_on else "none"})
    except Exception as exc:
        error = describe(exc)
    try:
        agree(comm, error)
    except SetupError:
        for w in (writer, run_writer):
            if w is not None:
                w.close(complete=False)
        raise

    result = RankResult(rank=rank, role="monitor" if world.is_monitor else "worker", n=world.n, out_dir=out)
    old_handler = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        if world.is_monitor:
            _monitor(setup, world, run_writer, result, hosts, abort_on_error, quiet)
        else:
            _worker(setup, world, writer, run_writer, result, hosts, threads, abort_on_error, quiet)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    return result


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ----------------------------------------------------------------------------------------------
# workers
# ----------------------------------------------------------------------------------------------


class _Worker:
    """The per-rank loop of one agent."""

    def __init__(self, setup: _Setup, world: World, writer: AgentWriter, transport: MpiTransport,
                 board: Board) -> None:
        cfg = setup.cfg
        assert setup.agent is not None and setup.oracle is not None
        self.cfg = cfg
        self.setup = setup
        self.world = world
        self.rank = world.rank
        self.n = world.n
        self.agent = setup.agent
        self.oracle = setup.oracle
        self.writer = writer
        self.t = transport
        self.board = board
        self.unit = setup.time_unit
        self.delays_on = setup.delays_on
        self.delays = setup.delays
        self.peer_comm_rng = delay_models.peer_comm_stream(cfg.run.seed, self.rank)
        self.synchronous = type(self.agent).synchronous
        self.budget_time = cfg.budget.time if cfg.budget.time > 0 else math.inf
        self.budget_gradients = cfg.budget.gradients
        self.log_every = cfg.eval.log_every
        self.flush_interval = cfg.mpi.flush_interval
        self.publish_every = publish_interval(cfg.eval.interval, transport.dim) if world.has_monitor else math.inf
        self.diameter = _diameter(setup.topology.graph, self.n)
        self.t0 = 0.0
        # accounting (seconds unless *_units)
        self.compute_s = self.gradient_s = self.mix_s = self.idle_s = self.monitor_s = self.log_s = 0.0
        self.compute_units = 0.0
        self.gradients = 0
        self.last_loss = math.nan
        self.last_grad_norm = math.nan
        self._norm_pending: np.ndarray | None = None  # the last gradient, when its norm is not computed yet
        self.rounds = 0  # completed collective rounds
        self.stop_after = NEVER  # synchronous: the round after which everybody stops
        if self.synchronous and self.budget_gradients:
            self.stop_after = -(-self.budget_gradients // self.n) - 1
        self._pad_debt = 0.0
        self._pending_total = 0
        self._next_total_sync = 0.0
        self._total = 0
        self._next_flush = self.flush_interval
        self._next_publish = 0.0
        self._logged_iteration = 0
        self._nbr_iters = np.zeros(len(transport.in_neighbors), np.int64)
        # AD-PSGD: a passive agent's x is changed by peers; it steps under its own lock (see loop)
        pairs = transport.pairs
        self.pair_passive = pairs is not None and not pairs.active
        self.max_pad_sleep = PAIR_POLL_S if self.pair_passive else MAX_PAD_SLEEP_S

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # -- stopping -----------------------------------------------------------------------
    def _gradient_budget_spent(self, now: float, adding: int) -> bool:
        if not self.budget_gradients:
            return False
        self._pending_total += adding
        if now >= self._next_total_sync or self._total + self._pending_total >= self.budget_gradients:
            self._total = self.board.add_total(self._pending_total)
            self._pending_total = 0
            self._next_total_sync = now + TOTAL_SYNC_S
        return self._total >= self.budget_gradients

    def _async_stop(self, now: float, adding: int = 0) -> bool:
        return now >= self.budget_time or (self.budget_gradients > 0 and self._gradient_budget_spent(now, adding))

    # -- ops ----------------------------------------------------------------------------
    def _sleep_until(self, until: float, check_stop: bool) -> bool:
        """Sleep until ``until`` landing outbox transmissions on time; True if the budget ran out."""
        outbox = self.t.outbox
        while True:
            if self.pair_passive:
                self.t.progress()  # serve peers' locks on this agent's model
            now = self.now()
            if check_stop and self._async_stop(now):
                return True
            if now >= until:
                return False
            due = outbox.poll(now + self.t0) - self.t0
            wake = min(until, due, now + self.max_pad_sleep)
            if check_stop:
                wake = min(wake, self.budget_time)
            if wake > now:
                time.sleep(wake - now)

    def _compute(self, x: np.ndarray) -> np.ndarray | None:
        """The gradient at x, after the injected computation time; None if the budget ran out meanwhile."""
        start = self.now()
        comm0 = self.t.comm_s
        g, loss = self.oracle.gradient(x)
        self.gradient_s += self.now() - start
        stopped = False
        if self.delays_on:
            sample = self.delays.compute(self.rank)
            self.compute_units += sample
            # Sleeps overshoot (timer slack, other ranks on the core): what the last padding
            # overshot is taken off this one, so computations last sample × unit on average.
            target = start + sample * self.unit
            padded = target - self._pad_debt
            if padded > self.now():
                stopped = self._sleep_until(padded, check_stop=not self.synchronous)
                self._pad_debt = min(max(self.now() - padded, 0.0), sample * self.unit)
            else:
                self._pad_debt = max(self._pad_debt - max(target - self.now(), 0.0), 0.0)
        self.compute_s += self.now() - start - (self.t.comm_s - comm0)
        if stopped:
            return None
        self.gradients += 1
        self.last_loss = loss
        # ‖g‖ is only logged every log_every-th update: a pass over g (d floats) per update
        # measured ~2% of an update at d = 1e7. Every algorithm takes one gradient per update,
        # so the row logged after this step is row iteration+1.
        if (self.agent.iteration + 1) % self.log_every == 0:
            self.last_grad_norm = float(np.sqrt(np.dot(g, g)))
            self._norm_pending = None
        else:
            self._norm_pending = g  # computed in _after_step if that step is logged after all
        return g

    def _wait(self, reqs: list[MPI.Request]) -> None:
        start = self.now()
        sleep = 2e-5
        while not MPI.Request.Testall(reqs):
            time.sleep(sleep)
            sleep = min(2 * sleep, MAX_WAIT_SLEEP_S)
        self.idle_s += self.now() - start

    def _available_at(self, now: float) -> float:
        return now + self.delays.comm(self.rank) * self.unit if self.delays_on else now

    def _propose_stop(self, now: float, lag: int) -> None:
        if self.stop_after == NEVER and now >= self.budget_time:
            self.stop_after = self.rounds + lag

    def _allreduce(self, v: np.ndarray) -> np.ndarray:
        now = self.now()
        self._propose_stop(now, 0)
        reqs = self.t.start_allreduce(v, self.stop_after, self._available_at(now))
        self._wait(reqs)
        mean, self.stop_after, ready = self.t.finish_allreduce()
        self._delay_until(ready)
        self.rounds += 1
        return mean

    def _exchange(self, v: np.ndarray) -> np.ndarray:
        now = self.now()
        self._propose_stop(now, self.diameter)
        reqs = self.t.start_exchange(v, self.stop_after, self._available_at(now))
        self._wait(reqs)
        models, self.stop_after, ready = self.t.finish_exchange(self.stop_after)
        self._delay_until(ready)
        self.rounds += 1
        return models

    def _barrier(self) -> None:
        self._wait(self.t.start_barrier())

    def _pair_average(self, peer: int, v: np.ndarray) -> None:
        hold = None
        if self.delays_on:
            # As in the simulator: once the peer is free (reserved for this exchange) the pair is busy
            # for a round trip, comm(rank) + comm(peer), then averaged with the peer's model of that
            # moment. The response leg follows the peer's delay *distribution*, drawn here from this
            # rank's own peer stream (delays.comm_from), not from the peer's own random stream.
            transfer = (self.delays.comm(self.rank) + self.delays.comm_from(peer, self.peer_comm_rng)) * self.unit

            def hold() -> None:
                self._delay_until(self.now() + transfer)

        self.t.perform_pair_average(peer, v, hold)

    def _send(self, gen: Any, value: Any) -> Any:
        """Resume the algorithm; a passive AD-PSGD agent does its step under the lock on its own model."""
        if not self.pair_passive:
            return gen.send(value)
        self.t.lock_own_model()
        try:
            return gen.send(value)
        finally:
            self.t.unlock_own_model()  # snapshots x for the gradient and the monitor first

    def _delay_until(self, ready: float) -> None:
        if self.delays_on and ready > self.now():
            start = self.now()
            self._sleep_until(ready, check_stop=False)
            self.idle_s += self.now() - start

    # -- recording ----------------------------------------------------------------------
    def _after_step(self, now: float) -> None:
        it = self.agent.iteration
        if it == self._logged_iteration:
            return
        self._logged_iteration = it
        t_log = time.perf_counter()
        self.board.set_iteration(it)
        if it % self.log_every == 0:
            staleness = math.nan
            if self.synchronous:
                staleness = 0.0
            elif (self.t.slots is not None or self.t.pairs is not None) and self.t.in_neighbors:
                self.board.read_iterations(self.t.in_neighbors, self._nbr_iters)
                staleness = self.t.staleness(self._nbr_iters)
            g = self._norm_pending
            if g is not None:
                self.last_grad_norm = float(np.sqrt(np.dot(g, g)))
                self._norm_pending = None
            self.writer.append(now, self.setup.virtual(now), it, self.last_loss, self.last_grad_norm,
                               self.t.bytes_sent, self.t.messages_sent, staleness)
        if now >= self._next_flush:
            self.writer.flush()
            self._next_flush = now + self.flush_interval
        self.log_s += time.perf_counter() - t_log
        if now >= self._next_publish:
            t_pub = time.perf_counter()
            # a passive AD-PSGD agent's x may be mid-average: publish its snapshot of this step
            self.board.publish(self.t.pairs.snapshot if self.pair_passive else self.agent.model)
            self.monitor_s += time.perf_counter() - t_pub
            self._next_publish = now + self.publish_every

    # -- the loop -----------------------------------------------------------------------
    def loop(self) -> None:
        gen = self.agent.run(self.t)
        value: Any = None
        try:
            while True:
                t_step = time.perf_counter()
                comm0 = self.t.comm_s
                op = self._send(gen, value)
                self.mix_s += time.perf_counter() - t_step - (self.t.comm_s - comm0)
                now = self.now()
                self.t.outbox.poll(now + self.t0)
                self._after_step(now)
                kind = type(op)
                if kind is Compute:
                    if self.synchronous:
                        if self.rounds > self.stop_after:
                            break
                    elif self._async_stop(now, adding=1):
                        break
                    x = op.x
                    if self.pair_passive and x is self.t.pairs.x:
                        x = self.t.pairs.snapshot  # peers may average into x meanwhile
                    value = self._compute(x)
                    if value is None:
                        break
                elif kind is AllreduceMean:
                    value = self._allreduce(op.v)
                elif kind is NeighborExchange:
                    value = self._exchange(op.v)
                elif kind is Barrier:
                    self._barrier()
                    value = None
                elif kind is PairAverage:
                    self._pair_average(op.peer, op.v)
                    value = None
                else:
                    raise TypeError(f"rank {self.rank} yielded {op!r}, not an Op")
        finally:
            gen.close()

    def timings(self, wall: float) -> dict[str, float]:
        t = {
            "wall_s": wall, "compute_s": self.compute_s, "gradient_s": self.gradient_s, "mix_s": self.mix_s,
            "communicate_s": self.t.comm_s, "idle_s": self.idle_s, "monitor_s": self.monitor_s,
            "log_s": self.log_s, "gradients": float(self.gradients),
            "transmissions": float(self.t.outbox.transmissions),
            "models_replaced": float(self.t.outbox.models_replaced),
            "slot_retries": float(self.t.slot_retries),
        }
        if self.delays_on:
            t["compute_units"] = self.compute_units
        pairs = self.t.pairs
        if pairs is not None:  # AD-PSGD: exchanges started here (active) or own-lock waits (passive)
            t.update(pair_averages=float(pairs.exchanges), pair_average_s=pairs.exchange_s,
                     pair_average_max_s=pairs.exchange_max_s, pair_lock_wait_s=pairs.lock_wait_s,
                     pair_busy_wait_s=pairs.busy_wait_s, own_lock_wait_s=pairs.own_lock_s)
        return t


def _worker(setup: _Setup, world: World, writer: AgentWriter | None, run_writer: RunWriter | None,
            result: RankResult, hosts: list[str], threads: int, abort_on_error: bool, quiet: bool) -> None:
    agent = setup.agent
    assert agent is not None and writer is not None and world.workers is not None
    comm, rank = world.comm, world.rank
    nbrs = setup.topology.neighbors(rank)
    comm_delay = None
    if setup.delays_on:
        def comm_delay() -> float:
            return setup.delays.comm(rank) * setup.time_unit
    delta_target = getattr(agent, "s", None) if agent.payload == "delta" and DELTA_IN_WINDOW else None
    if not isinstance(delta_target, np.ndarray):
        delta_target = None
    # AD-PSGD averages in pairs across the bipartition that `needs_bipartite` asks for
    pair_model = agent.x if getattr(type(agent), "needs_bipartite", False) else None

    transport = board = None
    complete = False
    w: _Worker | None = None
    try:
        transport = MpiTransport(world.workers, in_neighbors=nbrs, out_neighbors=nbrs, x0=setup.x0,
                                 payload=agent.payload, synchronous=type(agent).synchronous,
                                 iteration=lambda: agent.iteration, comm_delay=comm_delay,
                                 delta_target=delta_target, message0=agent.initial_message(),
                                 pair_model=pair_model, pair_active=agent.setup.active,
                                 yield_before_read=_oversubscribed(hosts, rank))
        if transport.pairs is not None:
            agent.x = transport.pairs.x  # the agent's model is its window of live models (pairs.py)
        board = Board(comm, setup.x0.size, publishes=world.has_monitor, x0=setup.x0)
        w = _Worker(setup, world, writer, transport, board)
        _warmup(setup)
        if run_writer is not None:  # rank 0 without a monitor: evaluate x0 at time 0 like the simulator
            row = {"virtual_time": setup.virtual(0.0), "wall_time": 0.0, "gradients": 0.0,
                   "consensus_distance": 0.0, **setup.problem.evaluate(setup.x0)}
            run_writer.append_eval(**row)
            result.evaluations.append(row)
        comm.Barrier()
        w.t0 = time.perf_counter()
        w.loop()
        # -- end of run ---------------------------------------------------------------------
        transport.outbox.flush()
        wall = w.now()
        _wait_all(comm.Ibarrier())  # everyone stopped; every RMA op has completed at its target
        agent.finish(transport)
        board.set_iteration(agent.iteration)
        board.publish(agent.model)
        _wait_all(comm.Ibarrier())  # final models published for the monitor
        result.agent, result.transport = agent, transport
        result.timings = w.timings(wall)
        result.wall_s = wall
        writer.write_timings(**result.timings)
        writer.write_final_model(agent.model)
        totals = world.workers.allreduce(w.gradients)
        if run_writer is not None:  # rank 0 of a job without a monitor
            _final_without_monitor(setup, world, run_writer, result, w, totals, wall, quiet)
        elif not world.has_monitor:  # the other workers send rank 0 their final models
            world.workers.gather(np.asarray(agent.model), root=0)
        result.gradients = totals
        complete = True
    except BaseException as exc:
        writer.close(complete=False)
        if run_writer is not None:
            run_writer.close(complete=False)
        if abort_on_error:
            _abort(comm, rank, exc)
        raise
    writer.close(complete=complete)
    if run_writer is not None:
        run_writer.close(complete=complete)
    # collective frees, only on the success path (a failed rank aborts the job instead)
    board.free()
    transport.free()
    if transport.pairs is not None:
        agent.x = transport.pairs.x  # a private copy of the final model once the window is freed


def _oversubscribed(hosts: list[str], rank: int) -> bool:
    """More ranks of this job on this rank's node than the node has cores."""
    from hpcasync.threads import node_cpus

    return hosts.count(hosts[rank]) > node_cpus()


def _final_without_monitor(setup: _Setup, world: World, run_writer: RunWriter, result: RankResult,
                           w: _Worker, totals: int, wall: float, quiet: bool) -> None:
    assert world.workers is not None
    models = world.workers.gather(np.asarray(w.agent.model), root=0)
    rows = np.ascontiguousarray(np.stack(models))
    from hpcasync.kernels import consensus_distance, mean_rows_into

    mean = np.empty(rows.shape[1])
    mean_rows_into(mean, rows)
    row = {"virtual_time": setup.virtual(wall), "wall_time": wall, "gradients": float(totals),
           "consensus_distance": float(consensus_distance(rows, mean)), **setup.problem.evaluate(mean)}
    run_writer.append_eval(**row)
    result.evaluations.append(row)
    result.final = row
    _summary(setup, run_writer, totals, wall, monitor=False)
    if not quiet:
        _print_summary(setup, result, wall, totals)


def _summary(setup: _Setup, run_writer: RunWriter, totals: int, wall: float, monitor: bool) -> None:
    summary: dict[str, Any] = {"gradients": int(totals), "wall_s": float(wall), "monitor": monitor,
                               "ranks": setup.world.comm.Get_size()}
    if setup.delays_on:
        summary["virtual_time"] = wall / setup.time_unit
        summary["time_unit_s"] = setup.time_unit
    run_writer.set_summary(**summary)


def _print_summary(setup: _Setup, result: RankResult, wall: float, totals: int) -> None:
    from hpcasync.results.analysis import time_to_target

    cfg = setup.cfg
    ev = result.evaluations
    times = [e["wall_time"] for e in ev]
    accs = [e.get("test_accuracy", math.nan) for e in ev]
    ttt = time_to_target(times, accs, cfg.eval.target_accuracy)
    reached = f"{ttt:.2f}s" if ttt is not None else "not reached"
    last = result.final
    print(f"{cfg.run.name}: {cfg.algorithm.name} on MPI wall={wall:.1f}s gradients={totals} "
          f"train_loss={last.get('train_loss', math.nan):.4f} test_acc={last.get('test_accuracy', math.nan):.4f} "
          f"time_to_{cfg.eval.target_accuracy:g}={reached} -> {result.out_dir}", flush=True)


def _warmup(setup: _Setup) -> None:
    """Load numba's cached kernels before the clock starts, without touching the real oracle's stream."""
    from hpcasync.kernels import warmup

    warmup()
    spare = setup.problem.oracle(setup.world.rank, setup.cfg.run.seed + 7919)
    spare.gradient(setup.x0)


def _wait_all(req: MPI.Request) -> None:
    sleep = 2e-5
    while not req.Test():
        time.sleep(sleep)
        sleep = min(2 * sleep, 1e-3)


# ----------------------------------------------------------------------------------------------
# the monitor
# ----------------------------------------------------------------------------------------------


def _monitor(setup: _Setup, world: World, run_writer: RunWriter | None, result: RankResult, hosts: list[str],
             abort_on_error: bool, quiet: bool) -> None:
    assert run_writer is not None
    comm = world.comm
    board = None
    try:
        board = Board(comm, setup.x0.size, publishes=False)
        evaluator = AverageModelEvaluator(setup.problem, board, world.n, setup.x0.size, setup.virtual)
        from hpcasync.kernels import warmup

        warmup()  # numba's cached kernels and the problem's evaluation, before the clock starts
        setup.problem.evaluate(setup.x0)
        comm.Barrier()
        t0 = time.perf_counter()

        def clock() -> float:
            return time.perf_counter() - t0

        def record(row: dict[str, float]) -> None:
            run_writer.append_eval(**row)

        final = monitor_loop(evaluator, comm, clock, setup.cfg.eval.interval, record)
        # the workers' final wall time is their own; the monitor's clock is within a barrier of it
        wall = final["wall_time"]
        totals = int(final["gradients"])
        result.evaluations = evaluator.evaluations
        result.final = final
        result.gradients = totals
        result.wall_s = wall
        result.timings = {"read_s": evaluator.read_s, "eval_s": evaluator.eval_s,
                          "read_retries": float(board.retries)}
        _summary(setup, run_writer, totals, wall, monitor=True)
        run_writer.set_summary(monitor_host=hosts[world.rank], monitor_read_s=evaluator.read_s,
                               monitor_eval_s=evaluator.eval_s)
        if not quiet:
            _print_summary(setup, result, wall, totals)
    except BaseException as exc:
        run_writer.close(complete=False)
        if abort_on_error:
            _abort(comm, world.rank, exc)
        raise
    run_writer.close(complete=True)
    board.free()


__all__ = ["RankResult", "SetupError", "run_rank"]
