"""The discrete-event engine: a virtual clock, an event heap, one generator per agent.

Each agent's algorithm is a generator of blocking ops (see
``algorithms/transport.py``). The engine answers them on the virtual clock:

* ``Compute(x)``: the gradient is taken at x now and handed back after one
  sample of the agent's computation delay (x cannot change meanwhile);
* ``AllreduceMean`` / ``Barrier``: every agent resumes when the last one has
  arrived and every contribution has travelled (max over agents of arrival
  + its communication delay) — a round waits for the slowest;
* ``NeighborExchange``: round r completes for agent i once every
  in-neighbour's round-r model has arrived (its post time + comm delay);
* ``PairAverage``: both endpoints are blocked for a round trip, one sample
  of each endpoint's communication delay (request, then response), and the
  pair waits while the peer is busy in another exchange.

Ties: at equal times, agents resume before messages land, and messages land
before evaluations. So a model that arrives exactly when an agent mixes is
seen at its next mix — which makes zero-delay ADSGD and DSGD take identical
steps (test_equivalences.py). An agent that yields ``Settle`` resumes at the same
time after those messages (ASBCD reads its buffer so).
"""

from __future__ import annotations

import heapq
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hpcasync.algorithms.base import Algorithm
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
from hpcasync.delays import DelayModel
from hpcasync.engines.evaluation import evaluate_average, pairwise_staleness_row
from hpcasync.engines.sim.events import DELIVER, EVAL, GROUP, PAIR, PRIORITY, RESUME, SERVE, SETTLED
from hpcasync.engines.sim.exchanges import Exchange, ExchangeOps
from hpcasync.engines.sim.groups import GroupOps
from hpcasync.engines.sim.server import SimServer
from hpcasync.engines.sim.transport import Packet, SimTransport
from hpcasync.kernels import mean_rows_into
from hpcasync.problems.base import Oracle
from hpcasync.topology import Topology


class Recorder(Protocol):
    """Where the engine reports what happens (the HDF5 writers, or a list in tests)."""

    def update(self, agent: int, row: dict[str, float]) -> None: ...

    def evaluation(self, row: dict[str, float]) -> None: ...


@dataclass
class AgentClock:
    """Per-agent accounting in virtual time units and wall seconds."""

    compute_units: float = 0.0
    wait_units: float = 0.0
    blocked_since: float = 0.0
    gradient_s: float = 0.0
    last_loss: float = float("nan")
    last_grad_norm: float = float("nan")


class Simulator(ExchangeOps, GroupOps):
    """Runs ``agents`` over ``topology`` with delays from ``delays`` on a virtual clock."""

    def __init__(self, agents: list[Algorithm], oracles: list[Oracle], topology: Topology,
                 delays: DelayModel, *, budget_time: float, budget_gradients: int = 0,
                 evaluate: Callable[[np.ndarray], dict[str, float]] | None = None,
                 eval_interval: float = 0.0, log_every: int = 1, recorder: Recorder | None = None,
                 progress: Callable[[float], None] | None = None) -> None:
        self.n = len(agents)
        self.agents = agents
        self.oracles = oracles
        self.topology = topology
        self.delays = delays
        self.budget_time = budget_time if budget_time > 0 else float("inf")
        self.budget_gradients = budget_gradients
        self.evaluate = evaluate
        self.eval_interval = eval_interval
        self.log_every = log_every
        self.recorder = recorder
        self.progress = progress
        self.now = 0.0
        self.gradients = 0
        self.events = 0
        self.stopped = False
        self._heap: list[tuple[float, int, int, int, int, Any]] = []
        self._seq = 0
        self.clocks = [AgentClock() for _ in range(self.n)]
        #: the parameter server of async-sgd / hogwild (server.py); None for the other algorithms
        self.server = SimServer(agents[0].x, self.n) if "server" in type(agents[0]).requires else None
        self.transports = [
            SimTransport(self, i, topology.in_neighbors(i), topology.out_neighbors(i),
                         agents[i].initial_message(), agents[i].payload)
            for i in range(self.n)
        ]
        self.gens = [a.run(t) for a, t in zip(agents, self.transports, strict=True)]
        #: the op each agent's generator is suspended at (None: not started); a checkpoint names them
        self.ops: list[Any] = [None] * self.n
        #: stop requests: a signal number appended (by a handler) interrupts the run at the next event
        #: boundary, as does ``interrupt_at_events`` > 0 events processed (tests); ``interrupted`` then
        #: names the cause and the run can be checkpointed (engines/sim/checkpoint.py)
        self.stop_requests: list[int] = []
        self.interrupt_at_events = 0
        self.interrupted = ""
        self.restored = False
        self.checkpoint_path: Any = None  # where the runner wrote the checkpoint of an interrupted run
        self.checkpoint_s = 0.0
        self._allreduce: list[tuple[int, float, np.ndarray | None]] = []
        self._exchange = Exchange([0] * self.n, [{} for _ in range(self.n)], [{} for _ in range(self.n)])
        self._pair_busy = [False] * self.n
        self._pair_queue: list[tuple[int, int, np.ndarray]] = []
        self._awaiting: set[int] = set()  # agents blocked in AwaitDeltas
        self._init_groups()  # Prague's pending groups (groups.py)
        self._mean = np.empty_like(agents[0].x)
        self._wall0 = time.perf_counter()
        self.evaluations: list[dict[str, float]] = []
        self.problem: Any = None  # set by the runner, for callers that want the problem back

    # -- event heap ------------------------------------------------------------------------------
    def _push(self, t: float, kind: int, a: int, b: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, PRIORITY[kind], self._seq, kind, a, b))

    def wall(self) -> float:
        return time.perf_counter() - self._wall0

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Process events until the time or gradient budget is spent, then let the network drain."""
        if not self.restored:  # a restored simulator continues from its event heap
            for i in range(self.n):
                self._push(0.0, RESUME, i, None)
            if self.evaluate is not None and self.eval_interval > 0:
                self._push(0.0, EVAL, -1, None)
        heap = self._heap
        stops = self.stop_requests
        while heap and not self.stopped:
            if stops or self.events == self.interrupt_at_events > 0:
                # an event boundary: every generator is suspended at an op, the state is the heap's
                self.interrupted = signal.Signals(stops[0]).name if stops else "interrupt_at_events"
                return
            t, _, _, kind, a, b = heapq.heappop(heap)
            if t > self.budget_time:
                heapq.heappush(heap, (t, PRIORITY[kind], 0, kind, a, b))
                self.now = self.budget_time
                break
            self.now = t
            self.events += 1
            if kind == RESUME:
                self._resume(a, b)
            elif kind == DELIVER:
                self._deliver(a, b)
            elif kind == PAIR:
                self._finish_pair(a, *b)
            elif kind == SERVE:
                self._serve(a, b)
            elif kind == SETTLED:
                self._resume(a, None)
            elif kind == GROUP:
                self._finish_group(b)
            else:
                self._evaluate()
                if self.now + self.eval_interval <= self.budget_time:
                    self._push(self.now + self.eval_interval, EVAL, -1, None)
        self.stopped = True
        if self.evaluate is not None and (not self.evaluations or self.evaluations[-1]["virtual_time"] < self.now):
            self._evaluate()
        for gen in self.gens:
            gen.close()
        self.quiesce()
        for agent, tr in zip(self.agents, self.transports, strict=True):
            agent.finish(tr)

    def quiesce(self) -> None:
        """Deliver every message in flight or queued, with no further computation."""
        heap = self._heap
        for i in range(self.n):
            self._kick(i)
        while heap:
            t, _, _, kind, a, b = heapq.heappop(heap)
            if kind == DELIVER:
                self.now = max(self.now, t)
                self._deliver(a, b)
            elif kind == PAIR:
                self.now = max(self.now, t)
                self._finish_pair(a, *b)
            elif kind == GROUP:  # a P-Reduce under way completes (its members have stopped)
                self.now = max(self.now, t)
                self._finish_group(b)
            elif kind == SERVE:  # a gradient on its way to the server is applied; nobody resumes
                self.now = max(self.now, t)
                assert self.server is not None
                self.server.apply(a, b, self.now, self.wall())

    # -- agents ----------------------------------------------------------------------------------
    def _resume(self, i: int, value: Any) -> None:
        agent = self.agents[i]
        op = self.gens[i].send(value)
        self.ops[i] = op
        self._kick(i)
        kind = type(op)
        if kind is Compute:
            self._compute(i, agent, op.x)
        elif kind is NeighborExchange:
            self._post_exchange(i, op.v)
        elif kind is AllreduceMean:
            self._collective(i, op.v)
        elif kind is Barrier:
            self._collective(i, None)
        elif kind is PairAverage:
            self._pair_request(i, op.peer, op.v)
        elif kind is GroupAverage:
            self._group_request(i, op)
        elif kind is AwaitDeltas:
            self._block(i)
            if self.transports[i].fresh:
                self._wake(i, self.now, None)
            else:
                self._awaiting.add(i)
        elif kind is ServerStep:
            self._block(i)
            tr = self.transports[i]
            tr.bytes_sent += op.g.nbytes
            tr.messages_sent += 1
            self._push(self.now + self.delays.comm(i), SERVE, i, op)
        elif kind is Settle:
            self._push(self.now, SETTLED, i, None)
        elif kind is WaitFlooded:
            self._wait_flooded(i)
        elif kind is WaitArrival:
            self._block(i)
            self.transports[i].arrival_waiting = True
        else:
            raise TypeError(f"agent {i} yielded {op!r}, not an Op")

    def _compute(self, i: int, agent: Algorithm, x: np.ndarray) -> None:
        clock = self.clocks[i]
        if agent.iteration and agent.iteration % self.log_every == 0 and self.recorder is not None:
            self._record(i, agent, clock)
        if self.budget_gradients and self.gradients >= self.budget_gradients:
            self.stopped = True
            return
        w0 = time.perf_counter()
        g, loss = self.oracles[i].gradient(x)
        clock.gradient_s += time.perf_counter() - w0
        clock.last_loss = loss
        clock.last_grad_norm = float(np.sqrt(np.dot(g, g)))
        dt = self.delays.compute(i)
        clock.compute_units += dt
        self.gradients += 1
        self._push(self.now + dt, RESUME, i, g)

    def _record(self, i: int, agent: Algorithm, clock: AgentClock) -> None:
        tr = self.transports[i]
        assert self.recorder is not None
        self.recorder.update(i, {
            "wall_time": self.wall(), "virtual_time": self.now, "iteration": agent.iteration,
            "loss": clock.last_loss, "grad_norm": clock.last_grad_norm, "bytes_sent": tr.bytes_sent,
            "messages_sent": tr.messages_sent,
            "staleness": agent.staleness_of(self._iterations()) if agent.own_staleness else tr.staleness(),
        })

    def _iterations(self) -> np.ndarray:
        return np.fromiter((a.iteration for a in self.agents), np.int64, self.n)

    # -- point-to-point --------------------------------------------------------------------------
    def _kick(self, i: int) -> None:
        """Start agent i's next transmission if its link is free and something is queued."""
        tr = self.transports[i]
        if tr.busy:
            return
        packet = tr.take_queued()
        if packet is not None:
            tr.busy = True
            self._push(self.now + self.delays.comm(i), DELIVER, i, packet)

    def _deliver(self, i: int, packet: Packet) -> None:
        tr = self.transports[i]
        drop = self.delays.drop
        for j in tr.out_neighbors:
            if drop and self.delays.dropped():
                continue
            rj = self.transports[j]
            rj.receive(i, packet)
            if j in self._awaiting and rj.fresh:
                self._awaiting.discard(j)
                self._wake(j, self.now, None)
            if packet.flood:
                self._flooded(j)
            if rj.arrival_waiting:
                rj.arrival_waiting = False
                self._wake(j, self.now, True)
        tr.recycle(packet)
        tr.busy = False
        self._kick(i)

    def _flooded(self, j: int) -> None:
        """Flooded items reached agent j: it forwards the new ones; a waiting agent resumes."""
        self._kick(j)
        fs = self.transports[j].flood_state
        if fs.waiting and fs.pending:
            fs.waiting = False
            self._wake(j, self.now, True)

    def _wait_flooded(self, i: int) -> None:
        fs = self.transports[i].flood_state
        if fs.pending:
            self._push(self.now, RESUME, i, True)
        else:
            self._block(i)
            fs.waiting = True

    # -- collectives -----------------------------------------------------------------------------
    def _block(self, i: int) -> None:
        self.clocks[i].blocked_since = self.now

    def _wake(self, i: int, t: float, value: Any) -> None:
        clock = self.clocks[i]
        clock.wait_units += t - clock.blocked_since
        self._push(t, RESUME, i, value)

    def _serve(self, i: int, op: ServerStep) -> None:
        """Worker i's gradient reaches the server (server.py); the new x travels back to it."""
        assert self.server is not None
        result = self.server.apply(i, op, self.now, self.wall())
        self._wake(i, self.now + self.delays.comm(i), result)

    # -- evaluation ------------------------------------------------------------------------------
    def _models(self) -> np.ndarray:
        """What is evaluated: the agents' models, or the parameter server's x (one row)."""
        if self.server is not None:
            return self.server.x[None, :]
        return np.stack([a.model for a in self.agents])

    def average_model(self) -> np.ndarray:
        rows = self._models()
        mean_rows_into(self._mean, rows)
        return self._mean

    def _evaluate(self) -> None:
        assert self.evaluate is not None
        rows = self._models()
        head = {"virtual_time": self.now, "wall_time": self.wall(), "gradients": float(self.gradients)}
        row = evaluate_average(self.evaluate, head, self._mean, rows)
        if self.agents and type(self.agents[0]).vector_clock:
            row.update(pairwise_staleness_row(np.stack([a.clock for a in self.agents])))
        self.evaluations.append(row)
        if self.recorder is not None:
            self.recorder.evaluation(row)
        if self.progress is not None:
            self.progress(self.now)
