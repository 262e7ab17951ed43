"""The blocking ops of a rank's loop other than computing (docs/design.md §5), a mixin of
:class:`~hpcasync.engines.mpi.worker.Worker`: the synchronous collectives with their agreed stop
round, OSGP's wait for deltas, AD-PSGD's pairwise average, the parameter server's step, and the
flood waits of DASGD and DSGD-AAU. Every wait sleeps with a back-off and checks for stop signals."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from hpcasync.algorithms.transport import GroupAverage, ServerStep
from hpcasync.engines.mpi.groups import sleep_backoff
from hpcasync.engines.mpi.messages import wait_arrival
from hpcasync.engines.mpi.transport import MpiTransport

#: longest sleep between two Tests of a pending collective
MAX_WAIT_SLEEP_S = 5e-4
#: AwaitDeltas (OSGP): first and longest back-off sleep while waiting for neighbours' messages
AWAIT_SLEEP_S = (2e-5, 5e-4)


class WorkerOps:
    """The op handlers; the state they use (transport ``t``, clocks, budgets, delays, the trace) and
    ``now``/``_signals``/``_sleep_until``/``_delay_until``/``_async_stop`` are the Worker's."""

    t: MpiTransport
    rank: int
    rounds: int
    stop_after: int
    stop_signal: int
    _signal_proposed: bool
    budget_time: float
    diameter: int
    delays_on: bool
    delays: Any
    unit: float
    trace: Any
    peer_comm_rng: Any
    idle_s: float
    t0: float
    setup: Any
    _await_sleep: float

    if TYPE_CHECKING:  # the host class's methods these handlers call
        def now(self) -> float: ...

        def _signals(self) -> None: ...

        def _sleep_until(self, until: float, check_stop: bool) -> bool: ...

        def _delay_until(self, ready: float) -> None: ...

        def _async_stop(self, now: float, adding: int = 0) -> bool: ...

    def _wait(self, reqs: list[MPI.Request]) -> None:
        self.t.complete_pushes()  # before any wait: a neighbour may be waiting for this rank's last model
        start = self.now()
        sleep = 2e-5
        while not MPI.Request.Testall(reqs):
            self._signals()
            time.sleep(sleep)
            sleep = min(2 * sleep, MAX_WAIT_SLEEP_S)
        self.idle_s += self.now() - start

    def _available_at(self, now: float) -> float:
        if not self.delays_on:
            return now
        travel = self.delays.comm(self.rank) * self.unit
        self.trace.add_comm(travel)
        return now + travel

    def _propose_stop(self, now: float, lag: int) -> None:
        if self.stop_signal and not self._signal_proposed:  # stop early for a checkpoint
            self._signal_proposed = True
            self.stop_after = min(self.stop_after, self.rounds + lag)
        elif now >= self.budget_time and self.rounds + lag < self.stop_after:
            # "< stop_after", not "== NEVER": with a gradient budget too, stop_after is set from the start
            # and the time budget was never proposed (minibatch-sgd with a straggler ran far past budget.time)
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
        self.t.complete_pushes()  # before entering: what this rank pushed is visible after the barrier
        self._wait(self.t.start_barrier())

    def _await_deltas(self) -> bool:
        """Sleep one back-off step (doubling while the agent keeps waiting); True if the budget ran out."""
        start = self.now()
        stopped = self._sleep_until(start + self._await_sleep, check_stop=True)
        self._await_sleep = min(2 * self._await_sleep, AWAIT_SLEEP_S[1])
        self.idle_s += self.now() - start
        return stopped

    def _pair_average(self, peer: int, v: np.ndarray) -> None:
        hold = None
        if self.delays_on:
            # As in the simulator: once the peer is free (reserved for this exchange) the pair is busy
            # for a round trip, comm(rank) + comm(peer), then averaged with the peer's model of that
            # moment. The response leg follows the peer's delay *distribution*, drawn here from this
            # rank's own peer stream (delays.comm_from), not from the peer's own random stream.
            own = self.delays.comm(self.rank) * self.unit
            self.trace.add_comm(own)
            transfer = own + self.delays.comm_from(peer, self.peer_comm_rng) * self.unit

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

    def _group_average(self, op: GroupAverage) -> tuple[int, ...] | None:
        """Prague's P-Reduce (groups.py): find or form the group, then (its model travelling one sample of
        this rank's communication delay, as in the simulator) average; None if the run stops meanwhile
        (the runner's ``leave`` completes the group)."""
        groups = self.t.groups
        assert groups is not None
        self.t.complete_pushes()
        start = self.now()
        t0 = time.perf_counter()
        members = groups.request(op.order)
        self.t.comm_s += time.perf_counter() - t0
        if len(members) > 1:
            if self.delays_on:
                self._delay_until(self.now() + self.delays.comm(self.rank) * self.unit)
            groups.start(op.v)
            sleep = AWAIT_SLEEP_S[0]
            while not groups.test():
                if self._stop_now():
                    self.idle_s += self.now() - start
                    return None
                sleep = sleep_backoff(sleep)
            members = groups.finish(op.v)
        self.idle_s += self.now() - start
        return members

    def _wait_flooded(self) -> bool:
        """DASGD's staleness bound: poll (short sleeps) until a flooded item waits; False at the budget."""
        assert self.t.flood_channel is not None
        self.t.complete_pushes()
        start = self.now()
        got = self.t.flood_channel.wait(self._stop_now)
        self.idle_s += self.now() - start
        return got

    def _wait_arrival(self) -> bool:
        """DSGD-AAU's Pathsearch: until a neighbour's model or a flooded item lands; False at the budget."""
        t, slots = self.t, self.t.slots
        t.complete_pushes()  # Pathsearch: the neighbours may be waiting for this rank's last model
        start = self.now()
        got = wait_arrival(t.flood_channel, slots.newest_numbers if slots is not None else list,
                           t.versions.tolist() if slots is not None else [],
                           lambda: t.outbox.poll(self.now() + self.t0), self._stop_now)
        self.idle_s += self.now() - start
        return got

    def _stop_now(self) -> bool:
        self._signals()  # a checkpointing run notes a stop signal and ends at this wait, like a budget
        return self._async_stop(self.now())
