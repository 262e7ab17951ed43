"""The loop of one worker rank: drives its algorithm's generator and performs each blocking op.

See :mod:`hpcasync.engines.mpi.runner` for the ops and how a run stops.
"""

from __future__ import annotations

import math
import time
from typing import Any

import networkx as nx
import numpy as np
from mpi4py import MPI

from hpcasync import delays as delay_models
from hpcasync.algorithms.transport import AllreduceMean, Barrier, Compute, NeighborExchange, PairAverage, ServerStep
from hpcasync.engines.mpi import progress as progress_mod
from hpcasync.engines.mpi.board import Board
from hpcasync.engines.mpi.monitor import publish_interval
from hpcasync.engines.mpi.rank_setup import RunSetup
from hpcasync.engines.mpi.rank_setup import check_stop as check_stop_signal
from hpcasync.engines.mpi.transport import NEVER, MpiTransport
from hpcasync.engines.mpi.world import World
from hpcasync.results.writer import AgentWriter

#: how often a rank adds its gradients to the job-wide counter of a gradient budget
TOTAL_SYNC_S = 1e-3
#: longest sleep while padding a computation (budget checks, outbox landings wake it earlier)
MAX_PAD_SLEEP_S = 5e-3
#: longest sleep between two Tests of a pending collective
MAX_WAIT_SLEEP_S = 5e-4
#: longest sleep of a passive AD-PSGD agent while padding: peers' locks on its model wait for its progress
PAIR_POLL_S = 2e-4


def diameter(graph: nx.Graph, n: int) -> int:
    try:
        return max(1, int(nx.diameter(graph)))
    except (nx.NetworkXError, ValueError):
        return max(1, n - 1)


class Worker:
    """The per-rank loop of one agent."""

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
        self.diameter = diameter(setup.topology.graph, self.n)
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
            check_stop_signal()
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
                with progress_mod.computing():
                    time.sleep(wake - now)

    def _compute(self, x: np.ndarray) -> np.ndarray | None:
        """The gradient at x, after the injected computation time; None if the budget ran out meanwhile."""
        start = self.now()
        comm0 = self.t.comm_s
        with progress_mod.computing():  # no MPI call: the progress thread may poll meanwhile
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
            check_stop_signal()
            time.sleep(sleep)
            sleep = min(2 * sleep, MAX_WAIT_SLEEP_S)
        self.idle_s += self.now() - start

    def _available_at(self, now: float) -> float:
        return now + self.delays.comm(self.rank) * self.unit if self.delays_on else now

    def _propose_stop(self, now: float, lag: int) -> None:
        # "< stop_after", not "== NEVER": with a gradient budget too, stop_after is set from the start and the
        # time budget was never proposed (minibatch-sgd with a straggler ran far past budget.time)
        if now >= self.budget_time and self.rounds + lag < self.stop_after:
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

    def _server_step(self, op: ServerStep) -> tuple[int, int]:
        """The step at rank 0's window (server.py); with a delay model the gradient travels there and the
        new x back, one sample of this rank's communication delay each, as in the simulator."""
        server = self.t.server
        assert server is not None
        if self.delays_on:
            self._delay_until(self.now() + self.delays.comm(self.rank) * self.unit)
        t0 = time.perf_counter()
        result = server.step(op.g, op.version, op.rule, op.out, op.atomic)
        now = self.now()
        self.t.comm_s += time.perf_counter() - t0
        server.record(now, self.setup.virtual(now))
        if self.delays_on:
            self._delay_until(self.now() + self.delays.comm(self.rank) * self.unit)
        return result

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
                check_stop_signal()
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
                elif kind is ServerStep:
                    value = self._server_step(op)
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
