"""The Transport interface: the only way an algorithm talks to other agents (docs/design.md §3).

Algorithms are generators. Non-blocking calls (``push_model``, ``latest``,
``push_delta``, ``drain_into``, ``send_small``, ``poll_small``) are plain
method calls. Blocking calls (computing a gradient, collectives, pairwise
averaging) are generator methods used with ``yield from``::

    g = yield from t.gradient(x)
    xbar = yield from t.allreduce_mean(x)

Each blocking call yields one :class:`Op` to the engine driving the
generator and returns what the engine sends back. The simulator turns an op
into events on its virtual clock; the MPI engine performs it at once. So the
same algorithm code runs on both engines, and an algorithm never imports MPI
or the event queue.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcasync.kernels import adsgd_step


@dataclass
class Op:
    """A blocking request from an algorithm to its engine."""


@dataclass
class Compute(Op):
    """Compute a stochastic gradient of f_i at ``x`` (x must not change meanwhile).

    The engine answers with the gradient (an array the algorithm may keep until
    its next ``Compute``) after the computation delay.
    """

    x: np.ndarray


@dataclass
class AllreduceMean(Op):
    """Blocking mean of ``v`` over all agents; the answer is a fresh array."""

    v: np.ndarray


@dataclass
class NeighborExchange(Op):
    """Blocking exchange with in-neighbours: send ``v``, receive every in-neighbour's ``v``
    of the same round, as a ``(degree, d)`` array ordered like ``Transport.in_neighbors``."""

    v: np.ndarray


@dataclass
class Barrier(Op):
    """Wait until every agent reached the same barrier."""


@dataclass
class PairAverage(Op):
    """Atomically set x_i, x_j ← (x_i + x_j)/2 with neighbour ``peer`` (AD-PSGD).

    ``v`` is updated in place; the engine blocks both endpoints for the exchange."""

    peer: int
    v: np.ndarray


@dataclass
class AwaitDeltas(Op):
    """Block until a delta lands in this agent's accumulator (push-sum's bounded overlap, OSGP).

    The simulator resumes the agent when the next delta for it is delivered (at
    once if one arrived since the last ``drain_into``); the MPI engine sleeps a
    short, growing back-off. The caller drains and checks again: a wake-up says
    only that something may have arrived."""


@dataclass
class ServerStep(Op):
    """Hand gradient ``g``, computed at the parameter server's model of version ``version``, to the server
    (Mishchenko et al. 2022, Alg. 1, lines 4–6).

    The server holds x and its version k (steps applied so far). It applies
    x ← x − rule(k, τ)·g with delay τ = k − ``version``, sets k ← k + 1, writes the
    new x into ``out`` and answers ``(k, τ)``: the worker restarts from version k.
    With ``atomic`` (async-sgd) the step is one indivisible update: nobody reads
    half of it. Without (Hogwild!, Recht et al. 2011) the engine adds −rule(k, τ)·g
    element by element with no lock, so concurrent readers may see part of it.
    """

    g: np.ndarray
    version: int
    rule: Callable[[int, int], float]
    out: np.ndarray
    atomic: bool = True


@dataclass
class Settle(Op):
    """Take no time, but let every message due by now land first (ASBCD reads its buffer after
    the blocks pushed at the same instant: with zero delays that makes it Jacobi block descent).
    The MPI engine has nothing to wait for (a landed message is in the window already)."""


@dataclass
class WaitFlooded(Op):
    """Block until at least one flooded item is waiting in ``flooded()`` (DASGD's staleness bound).
    The engine answers False when the run stops meanwhile (the algorithm's loop is then closed)."""


@dataclass
class WaitArrival(Op):
    """Block until something lands at this agent: a model, a delta or a flooded item (DSGD-AAU's
    Pathsearch waits so for some neighbour's update or an edge announcement)."""


@dataclass
class GroupAverage(Op):
    """Prague's Partial All-Reduce (Luo et al. 2020 §4): ask the group generator for a group, wait until
    every member has asked too, then ``v`` ← the mean of the members' ``v`` (in place).

    The generator puts the caller into the group it was drafted into, if any; else it drafts the first
    ``size`` − 1 workers of ``order`` (the caller's random permutation of the workers) that are in no
    pending group, so groups never overlap. The answer is the sorted tuple of members (the caller alone,
    with nothing averaged, when no other worker was free)."""

    v: np.ndarray
    order: np.ndarray
    size: int


OpGenerator = Generator[Op, Any, Any]


class Transport(abc.ABC):
    """One agent's view of the network.

    ``rank`` is this agent, ``n`` the number of agents, ``in_neighbors`` the
    agents whose models/deltas arrive here and ``out_neighbors`` those this
    agent sends to (equal on undirected graphs). Every transport counts
    ``bytes_sent`` and ``messages_sent``.
    """

    #: the features of ``Algorithm.requires`` this transport provides (an engine refuses the rest)
    features: frozenset[str] = frozenset()
    rank: int
    n: int
    in_neighbors: list[int]
    out_neighbors: list[int]
    bytes_sent: int
    messages_sent: int

    # -- blocking calls: generators, use with ``yield from`` ---------------------------------
    def gradient(self, x: np.ndarray) -> Generator[Op, Any, np.ndarray]:
        """g ← ∇f_i(x; ξ), taking the computation delay."""
        return (yield Compute(x))

    def allreduce_mean(self, v: np.ndarray) -> Generator[Op, Any, np.ndarray]:
        """mean_i v_i over all agents (AllReduce SGD)."""
        return (yield AllreduceMean(v))

    def neighbor_exchange(self, v: np.ndarray) -> Generator[Op, Any, np.ndarray]:
        """Round-synchronous exchange with in-neighbours (DSGD)."""
        return (yield NeighborExchange(v))

    def barrier(self) -> Generator[Op, Any, None]:
        yield Barrier()

    def await_deltas(self) -> Generator[Op, Any, None]:
        """Wait for deltas to arrive (OSGP); see :class:`AwaitDeltas`."""
        yield AwaitDeltas()

    def pair_average(self, peer: int, v: np.ndarray) -> Generator[Op, Any, None]:
        """Atomic pairwise average with ``peer`` (AD-PSGD); ``v`` is updated in place."""
        yield PairAverage(peer, v)

    def server_step(self, g: np.ndarray, version: int, rule: Callable[[int, int], float], out: np.ndarray,
                    atomic: bool = True) -> Generator[Op, Any, tuple[int, int]]:
        """Apply ``g`` at the parameter server (see :class:`ServerStep`); ``out`` ← the new x; returns (k, τ)."""
        return (yield ServerStep(g, version, rule, out, atomic))

    def group_average(self, v: np.ndarray, order: np.ndarray, size: int) -> Generator[Op, Any, tuple[int, ...]]:
        """Partial all-reduce in a group of at most ``size`` workers (Prague, see :class:`GroupAverage`)."""
        return (yield GroupAverage(v, order, size))

    def settle(self) -> Generator[Op, Any, None]:
        """Let the messages due at this instant land (zero time, see :class:`Settle`)."""
        yield Settle()

    def wait_flooded(self) -> Generator[Op, Any, None]:
        """Block until ``flooded()`` has an item (feature ``flood``)."""
        yield WaitFlooded()

    def wait_arrival(self) -> Generator[Op, Any, None]:
        """Block until a message of any kind lands here (feature ``wait_arrival``)."""
        yield WaitArrival()

    # -- non-blocking calls -----------------------------------------------------------------
    @abc.abstractmethod
    def push_model(self, v: np.ndarray) -> None:
        """Make a copy of ``v`` the latest model of this agent as seen by every out-neighbour."""

    @abc.abstractmethod
    def latest_models(self) -> np.ndarray:
        """The newest complete model from each in-neighbour, ``(degree, d)``, rows ordered
        like ``in_neighbors``. Read-only for the caller; valid until the next call."""

    def mix_latest(self, x: np.ndarray, g: np.ndarray, w_nbrs: np.ndarray, w_self: float, alpha: float,
                   beta: float) -> None:
        """ADSGD's step (Zhou & Pu 2025 Alg. 2) in place on the newest models of the in-neighbours:
        x ← (1−β)·x + β·(w_ii·x + Σ_j w_ij·x̃_j) − α·g, ``w_nbrs`` ordered like ``in_neighbors``.

        ``x`` must be this agent's model as it was last pushed (``push_model(x)``
        with no change since; or, before the first push, its initial model): an
        engine may rely on it (the MPI engine mixes straight from its window
        and, should a neighbour's model be overwritten meanwhile, restores x
        from what it pushed). Default: :meth:`latest_models` + ``adsgd_step``.
        """
        adsgd_step(x, g, self.latest_models(), w_nbrs, w_self, alpha, beta)

    def mix_and_push(self, x: np.ndarray, g: np.ndarray, w_nbrs: np.ndarray, w_self: float, alpha: float,
                     beta: float) -> None:
        """:meth:`mix_latest` then ``push_model(x)``: one ADSGD update after its gradient.

        Same contract as the two calls (x as last pushed). An engine may do both at once: the MPI
        engine on one node reads, mixes and publishes in one numba kernel (kernels/seqlock.py).
        """
        self.mix_latest(x, g, w_nbrs, w_self, alpha, beta)
        self.push_model(x)

    def latest(self, j: int) -> np.ndarray:
        """The newest complete model received from in-neighbour ``j``."""
        return self.latest_models()[self.in_neighbors.index(j)]

    @abc.abstractmethod
    def push_delta(self, j: int, delta: np.ndarray, scale: float = 1.0) -> None:
        """Add ``scale · delta`` into out-neighbour ``j``'s accumulator (deltas commute)."""

    @abc.abstractmethod
    def drain_into(self, s: np.ndarray) -> None:
        """s ← s + (everything accumulated here), and zero the accumulator, atomically."""

    def send_small(self, j: int, obj: Any) -> None:
        """Send a small control message to agent ``j`` (delayed delivery)."""
        raise NotImplementedError(f"{type(self).__name__} has no control channel")

    def poll_small(self) -> list[tuple[int, Any]]:
        """All control messages that arrived, as ``(source, obj)`` pairs."""
        raise NotImplementedError(f"{type(self).__name__} has no control channel")

    def read_server(self, out: np.ndarray) -> int:
        """out ← the parameter server's x, a complete step (never half of one); returns its version k."""
        raise NotImplementedError(f"{type(self).__name__} has no parameter server")

    # -- flooding (feature "flood"): every item reaches every agent exactly once --------------
    def flood(self, v: np.ndarray) -> int:
        """Send a copy of ``v`` as this agent's next item to every agent (flooded over the graph:
        each agent forwards an item it sees for the first time to its other neighbours and drops
        copies it has seen); returns its sequence number (1, 2, …)."""
        raise NotImplementedError(f"{type(self).__name__} has no flooding channel")

    def flooded(self) -> list[tuple[int, int, np.ndarray]]:
        """The items of other agents that arrived since the last call, as ``(origin, seq, v)``,
        each exactly once and in sequence order per origin. ``v`` is read-only."""
        raise NotImplementedError(f"{type(self).__name__} has no flooding channel")

    def quiesce_flood(self) -> None:  # noqa: B027 - nothing to do by default
        """After the run (from ``Algorithm.finish``): return once every item flooded by anyone has
        reached this agent (collective on MPI; the simulator has drained the network already)."""
