"""The simulator's transport: slots, inboxes and a serial multicast sender per agent.

docs/design.md §6: sending is full-duplex multicast and *serial* — one outgoing
transmission at a time per agent. Pushes made while a transmission is in
flight wait in an outbox where a newer model replaces a queued one and
queued deltas are summed; when the link frees up, everything queued leaves
as one transmission whose duration is one sample of the agent's
communication delay. (A FIFO of every model would be a queue at utilisation
≈ 1 in case 1 and make ADSGD mix ever older models.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from hpcasync.algorithms.transport import Transport
from hpcasync.engines.flood import FloodState, Item
from hpcasync.kernels import add_and_zero, axpy, copy_into


class AgentHost(Protocol):
    """What a :class:`SimTransport` needs of its simulator (``engine.Simulator``): the agents."""

    n: int
    agents: Sequence[Any]


class Packet:
    """What one transmission carries: a model with its version and/or per-target deltas."""

    __slots__ = ("model", "version", "deltas", "delta_version", "small", "flood")

    def __init__(self) -> None:
        self.model: np.ndarray | None = None
        self.version = 0
        self.deltas: dict[int, np.ndarray] = {}
        self.delta_version = 0
        self.small: list[tuple[int, Any]] = []
        self.flood: list[Item] = []

    def empty(self) -> bool:
        return self.model is None and not self.deltas and not self.small and not self.flood


class SimTransport(Transport):
    """Agent ``rank``'s endpoint in a simulator (``engine.Simulator``)."""

    features = frozenset({"push_model", "push_delta", "allreduce", "neighbor_exchange", "barrier",
                          "pair_average", "send_small", "await_deltas", "server", "flood", "wait_arrival",
                          "group_average"})

    def __init__(self, sim: AgentHost, rank: int, in_neighbors: list[int], out_neighbors: list[int],
                 x0: np.ndarray, payload: str) -> None:
        self.sim = sim
        self.rank = rank
        self.n = sim.n
        self.in_neighbors = in_neighbors
        self.out_neighbors = out_neighbors
        self.in_index = {j: k for k, j in enumerate(in_neighbors)}
        self.bytes_sent = 0
        self.messages_sent = 0
        self.dim = x0.size
        self.published = 0  # versions this agent has pushed
        self.received = np.zeros(len(in_neighbors), dtype=np.int64)  # newest version seen per in-neighbour
        self.dtype = x0.dtype  # the problem's: float32 messages are half the bytes
        self.slots = np.tile(x0, (len(in_neighbors), 1)) if payload == "model" else np.empty((0, x0.size), x0.dtype)
        self.inbox = np.zeros_like(x0) if payload == "delta" else np.empty(0, x0.dtype)
        self.inbox_small: list[tuple[int, Any]] = []
        self.fresh = False  # a delta landed since the last drain_into (what wakes AwaitDeltas)
        self.queued = Packet()
        self.busy = False
        self._spare: list[np.ndarray] = []  # recycled model/delta buffers
        self.flood_state = FloodState(rank, self.n)
        self.arrival_waiting = False  # the agent is blocked in wait_arrival
        self.flood_bytes = 0  # of bytes_sent: flooded items

    # -- buffers -------------------------------------------------------------------------------
    def _buffer(self) -> np.ndarray:
        return self._spare.pop() if self._spare else np.empty(self.dim, self.dtype)

    def recycle(self, packet: Packet) -> None:
        if packet.model is not None:
            self._spare.append(packet.model)
        self._spare.extend(packet.deltas.values())

    # -- Transport: non-blocking ---------------------------------------------------------------
    def push_model(self, v: np.ndarray) -> None:
        self.published += 1
        q = self.queued
        if q.model is None:
            q.model = self._buffer()
        copy_into(q.model, v)
        q.version = self.published

    def latest_models(self) -> np.ndarray:
        return self.slots

    def push_delta(self, j: int, delta: np.ndarray, scale: float = 1.0) -> None:
        q = self.queued
        buf = q.deltas.get(j)
        if buf is None:
            buf = q.deltas[j] = self._buffer()
            buf.fill(0.0)
        axpy(buf, scale, delta)
        # a delta brings the receiver's view of this agent up to its current iteration
        q.delta_version = self.sim.agents[self.rank].iteration

    def drain_into(self, s: np.ndarray) -> None:
        add_and_zero(s, self.inbox)
        self.fresh = False

    def send_small(self, j: int, obj: Any) -> None:
        self.queued.small.append((j, obj))

    def poll_small(self) -> list[tuple[int, Any]]:
        out, self.inbox_small = self.inbox_small, []
        return out

    def read_server(self, out: np.ndarray) -> int:
        server = getattr(self.sim, "server", None)
        if server is None:
            raise RuntimeError("read_server: this simulator has no parameter server")
        return int(server.read(out))

    def flood(self, v: np.ndarray) -> int:
        item = self.flood_state.own(v)
        self.queued.flood.append(item)
        return item[1]

    def flooded(self) -> list[tuple[int, int, np.ndarray]]:
        return self.flood_state.take()

    # -- called by the engine ------------------------------------------------------------------
    def take_queued(self) -> Packet | None:
        """Hand the queued packet to the link (if any) and count what it carries."""
        q = self.queued
        if q.empty():
            return None
        self.queued = Packet()
        n_out = len(self.out_neighbors)
        if q.model is not None:
            self.bytes_sent += q.model.nbytes * n_out
            self.messages_sent += n_out
        for buf in q.deltas.values():
            self.bytes_sent += buf.nbytes
            self.messages_sent += 1
        self.messages_sent += len(q.small)
        for _, _, v, skip in q.flood:  # header: origin, dtype (4 bytes each), seq (8), as on MPI
            targets = n_out - (skip in self.in_index)
            self.flood_bytes += targets * (v.nbytes + 16)
            self.bytes_sent += targets * (v.nbytes + 16)
            self.messages_sent += targets
        return q

    def receive(self, src: int, packet: Packet) -> None:
        """Land ``packet`` from in-neighbour ``src``: newest model wins, deltas add up."""
        k = self.in_index.get(src)
        if packet.model is not None and k is not None and packet.version > self.received[k]:
            self.slots[k] = packet.model
            self.received[k] = packet.version
        delta = packet.deltas.get(self.rank)
        if delta is not None:
            axpy(self.inbox, 1.0, delta)
            self.fresh = True
            if k is not None:
                self.received[k] = max(self.received[k], packet.delta_version)
        for dst, obj in packet.small:
            if dst == self.rank:
                self.inbox_small.append((src, obj))
        for origin, seq, v, skip in packet.flood:
            if skip != self.rank:
                self.queued.flood.extend(self.flood_state.arrive(src, origin, seq, v))

    def staleness(self) -> float:
        """Mean over in-neighbours j of (j's iterations so far − version of j's newest model here)."""
        if not self.in_neighbors:
            return 0.0
        agents = self.sim.agents
        lag = sum(agents[j].iteration for j in self.in_neighbors) - int(self.received.sum())
        return lag / len(self.in_neighbors)
