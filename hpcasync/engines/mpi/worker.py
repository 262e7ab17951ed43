"""The loop of one worker rank: drives its algorithm's generator and performs each blocking op.

See :mod:`hpcasync.engines.mpi.runner` for the ops and how a run stops.
"""

from __future__ import annotations

import math
import time
from typing import Any

import networkx as nx
import numpy as np

from hpcasync import delays as delay_models
from hpcasync.algorithms.transport import (
    AllreduceMean,
    AwaitDeltas,
    Barrier,
    Compute,
    GroupAverage,
    NeighborExchange,
    PairAverage,
    ServerStep,
    Settle,
    WaitArrival,
    WaitFlooded,
)
from hpcasync.engines.mpi import progress as progress_mod
from hpcasync.engines.mpi.board import Board
from hpcasync.engines.mpi.monitor import publish_interval
from hpcasync.engines.mpi.rank_setup import RunSetup, stop_signal
from hpcasync.engines.mpi.rank_setup import check_stop as check_stop_signal
from hpcasync.engines.mpi.status import StatusReporter, mean_staleness
from hpcasync.engines.mpi.trace import Trace
from hpcasync.engines.mpi.transport import NEVER, MpiTransport
from hpcasync.engines.mpi.worker_ops import AWAIT_SLEEP_S, WorkerOps
from hpcasync.engines.mpi.world import World
from hpcasync.results.writer import AgentWriter

#: how often a rank adds its gradients to the job-wide counter of a gradient budget
TOTAL_SYNC_S = 1e-3
#: longest sleep while padding a computation (budget checks, outbox landings wake it earlier)
MAX_PAD_SLEEP_S = 5e-3
#: longest sleep of a passive AD-PSGD agent while padding: peers' locks on its model wait for its progress
PAIR_POLL_S = 2e-4


def diameter(graph: nx.Graph, n: int) -> int:
    try:
        return max(1, int(nx.diameter(graph)))
    except (nx.NetworkXError, ValueError):
        return max(1, n - 1)


class Worker(WorkerOps):
    """The per-rank loop of one agent.

    With ``checkpoints`` (engines/mpi/checkpoint.py) a stop signal does not raise: it ends the run
    like a spent budget — asynchronous ranks at their next gradient, synchronous ones after an agreed
    round — so every rank reaches the end-of-run path and writes a consistent checkpoint.
    """

    #: tests: behave as if SIGUSR1 arrived once the agent has made this many steps (0: never)
    stop_at_iteration = 0

    def __init__(self, setup: RunSetup, world: World, writer: AgentWriter, transport: MpiTransport,
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
        self.diameter = diameter(setup.topology.directed_graph(), self.n)  # hops along arcs (stop rounds)
        self._await_sleep = AWAIT_SLEEP_S[0]
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
        #: the live status (rank 0 of a job without a monitor, unless quiet; set by the runner)
        self.status: StatusReporter | None = None
        # AD-PSGD: a passive agent's x is changed by peers; it steps under its own lock (see loop)
        pairs = transport.pairs
        self.pair_passive = pairs is not None and not pairs.active
        self.max_pad_sleep = PAIR_POLL_S if self.pair_passive else MAX_PAD_SLEEP_S
        self.checkpoints = False  # set by the runner where this run can be checkpointed
        self.stop_signal = 0  # the signal that stops this run with a checkpoint
        self._signal_proposed = False
        self.bytes0 = self.messages0 = 0  # cumulative counters of the run before a resume
        self.elapsed0 = 0.0  # wall seconds of the run before a resume
        self.trace = Trace()  # computation and communication times, for replay (engines/mpi/trace.py)
        transport.trace = self.trace
        self._cycle: tuple[float, float] | None = None  # (start, idle_s) of the gradient step in progress
        self.checkpoint_s = 0.0

    def _signals(self) -> None:
        """A safe point: raise a stop signal (TerminatedError), or note it when checkpointing."""
        if not self.checkpoints:
            check_stop_signal()
        elif not self.stop_signal:
            self.stop_signal = stop_signal()
            if not self.stop_signal and self.stop_at_iteration and self.agent.iteration >= self.stop_at_iteration:
                self.stop_signal = 10  # SIGUSR1

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
        return (now >= self.budget_time or self.stop_signal > 0
                or (self.budget_gradients > 0 and self._gradient_budget_spent(now, adding)))

    # -- ops ----------------------------------------------------------------------------
    def _sleep_until(self, until: float, check_stop: bool) -> bool:
        """Sleep until ``until`` landing outbox transmissions on time; True if the budget ran out."""
        self.t.complete_pushes()  # no last model left unannounced while this rank sleeps (slots.py)
        outbox = self.t.outbox
        while True:
            self._signals()
            if self.pair_passive:
                self.t.progress()  # serve peers' locks on this agent's model
            if self.t.flood_channel is not None:
                self.t.flood_channel.poll()  # keep forwarding flooded items while computing
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
                with progress_mod.computing():
                    time.sleep(wake - now)

    def _compute(self, x: np.ndarray) -> np.ndarray | None:
        """The gradient at x, after the injected computation time; None if the budget ran out meanwhile."""
        start = self.now()
        comm0 = self.t.comm_s
        with progress_mod.computing():  # no MPI call: the progress thread may poll meanwhile
            g, loss = self.oracle.gradient(x)
        end = self.now()
        self.gradient_s += end - start
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
            end = self.now()
        self.compute_s += end - start - (self.t.comm_s - comm0)
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
        if self.board.clock_len:
            self.board.set_clock(self.agent.clock)
        if it % self.log_every == 0:
            staleness = math.nan
            if self.synchronous:
                staleness = 0.0
            elif type(self.agent).own_staleness:  # DASGD: from every agent's update count
                iters = self.board.read_iterations(range(self.n), np.zeros(self.n, np.int64))
                staleness = self.agent.staleness_of(iters)
                self.board.set_staleness(staleness)
            elif (self.t.slots is not None or self.t.pairs is not None) and self.t.in_neighbors:
                self.board.read_iterations(self.t.in_neighbors, self._nbr_iters)
                staleness = self.t.staleness(self._nbr_iters)
                self.board.set_staleness(staleness)
            g = self._norm_pending
            if g is not None:
                self.last_grad_norm = float(np.sqrt(np.dot(g, g)))
                self._norm_pending = None
            self.writer.append(now, self.setup.virtual(now), it, self.last_loss, self.last_grad_norm,
                               self.bytes0 + self.t.bytes_sent, self.messages0 + self.t.messages_sent, staleness)
        if now >= self._next_flush:
            self.writer.flush()
            self._next_flush = now + self.flush_interval
            if self.status is not None:
                self._report_status(now)
        self.log_s += time.perf_counter() - t_log
        if now >= self._next_publish:
            t_pub = time.perf_counter()
            # a passive AD-PSGD agent's x may be mid-average: publish its snapshot of this step
            self.board.publish(self.t.pairs.snapshot if self.pair_passive else self.agent.model)
            self.monitor_s += time.perf_counter() - t_pub
            self._next_publish = now + self.publish_every

    def _report_status(self, now: float) -> None:
        """Rank 0 of a job without a monitor: the live status from every worker's board (one-sided)."""
        assert self.status is not None
        ranks = range(self.n)
        iters = self.board.read_iterations(ranks, np.zeros(self.n, np.int64))
        stale = self.board.read_staleness(ranks, np.zeros(self.n))
        self.status.update(now, float(iters.sum()), None, mean_staleness(stale))

    # -- the loop -----------------------------------------------------------------------
    def loop(self) -> None:
        gen = self.agent.run(self.t)
        value: Any = None
        # loop invariants, bound once: the loop's own Python is a fixed cost of every update
        clock, t, trace, outbox = time.perf_counter, self.t, self.trace, self.t.outbox
        queued_sends = not outbox.immediate  # a delay model queues sends: land them after every step
        try:
            while True:
                self._signals()
                t_step = clock()
                comm0 = t.comm_s
                op = self._send(gen, value)
                t_end = clock()
                self.mix_s += t_end - t_step - (t.comm_s - comm0)
                now = t_end - self.t0
                if self._cycle is not None:  # the gradient's step is over: its busy time, for replay
                    trace.add_compute(now - self._cycle[0] - (self.idle_s - self._cycle[1]))
                    self._cycle = None
                trace.end_step()
                if queued_sends:
                    outbox.poll(now + self.t0)
                self._after_step(now)
                kind = type(op)
                if kind is Compute:
                    if self.synchronous:
                        if self.rounds > self.stop_after:
                            break
                    elif self._async_stop(now, adding=1):
                        break
                    self._await_sleep = AWAIT_SLEEP_S[0]
                    x = op.x
                    if self.pair_passive and x is self.t.pairs.x:
                        x = self.t.pairs.snapshot  # peers may average into x meanwhile
                    self._cycle = (now, self.idle_s)
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
                elif kind is AwaitDeltas:
                    if self._await_deltas():
                        break
                    value = None
                elif kind is ServerStep:
                    value = self._server_step(op)
                elif kind is GroupAverage:
                    value = self._group_average(op)
                    if value is None:
                        break
                elif kind is Settle:  # what has landed is in the windows already
                    value = None
                elif kind is WaitFlooded or kind is WaitArrival:
                    value = self._wait_flooded() if kind is WaitFlooded else self._wait_arrival()
                    if not value:
                        break
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
