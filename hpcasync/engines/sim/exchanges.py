"""The simulator's blocking exchanges between agents (docs/design.md §6), a mixin of
:class:`~hpcasync.engines.sim.engine.Simulator`: ``AllreduceMean``/``Barrier`` (done when the
slowest contribution has travelled), ``NeighborExchange`` rounds, and AD-PSGD's pairwise
averaging (a round trip that blocks both endpoints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcasync.engines.sim.events import PAIR


@dataclass
class Exchange:
    """Round bookkeeping for NeighborExchange: posts[j][r] = (time available, model copy)."""

    rounds: list[int]
    posts: list[dict[int, tuple[float, np.ndarray]]]
    consumed: list[dict[int, int]]
    waiting: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)


class ExchangeOps:
    """The exchange handlers; the state they use (``transports``, ``agents``, ``delays``, ``now``,
    ``_allreduce``, ``_exchange``, ``_pair_queue``, ``_pair_busy``) and ``_push``/``_block``/``_wake``
    are the Simulator's."""

    transports: list[Any]
    agents: list[Any]
    delays: Any
    now: float
    n: int
    _allreduce: list[tuple[int, float, np.ndarray | None]]
    _exchange: Exchange
    _pair_queue: list[tuple[int, int, np.ndarray]]
    _pair_busy: list[bool]

    if TYPE_CHECKING:  # the host class's methods these handlers call
        def _push(self, t: float, kind: int, a: int, b: Any) -> None: ...

        def _block(self, i: int) -> None: ...

        def _wake(self, i: int, t: float, value: Any) -> None: ...

    def _collective(self, i: int, v: np.ndarray | None) -> None:
        """AllreduceMean (v given) or Barrier: done when the slowest contribution has travelled."""
        self._block(i)
        tr = self.transports[i]
        if v is not None:
            # a ring allreduce moves 2(n−1)/n of the vector per agent
            tr.bytes_sent += int(2 * (self.n - 1) * v.nbytes / self.n)
            tr.messages_sent += 2 * (self.n - 1)
        self._allreduce.append((i, self.now + self.delays.comm(i), None if v is None else v.copy()))
        if len(self._allreduce) < self.n:
            return
        done = max(t for _, t, _ in self._allreduce)
        mean = None
        if v is not None:
            mean = np.zeros_like(v)
            for _, _, u in self._allreduce:
                mean += u
            mean /= self.n
        for j, _, _ in self._allreduce:
            self._wake(j, done, None if mean is None else mean.copy())
        self._allreduce = []

    def _post_exchange(self, i: int, v: np.ndarray) -> None:
        ex = self._exchange
        r = ex.rounds[i]
        ex.rounds[i] += 1
        tr = self.transports[i]
        tr.bytes_sent += v.nbytes * len(tr.out_neighbors)
        tr.messages_sent += len(tr.out_neighbors)
        ex.posts[i][r] = (self.now + self.delays.comm(i), v.copy())
        ex.consumed[i][r] = 0
        self._block(i)
        ex.waiting[i] = (r, np.empty((len(tr.in_neighbors), v.size), v.dtype))
        self._try_exchange(i)
        for j in tr.out_neighbors:
            self._try_exchange(j)

    def _try_exchange(self, i: int) -> None:
        ex = self._exchange
        if i not in ex.waiting:
            return
        r, out = ex.waiting[i]
        tr = self.transports[i]
        if any(r not in ex.posts[j] for j in tr.in_neighbors):
            return
        del ex.waiting[i]
        done = self.now
        for k, j in enumerate(tr.in_neighbors):
            t_avail, model = ex.posts[j][r]
            done = max(done, t_avail)
            out[k] = model
            ex.consumed[j][r] += 1
            if ex.consumed[j][r] == len(self.transports[j].out_neighbors):
                del ex.posts[j][r], ex.consumed[j][r]
        self._wake(i, done, out)

    # -- pairwise averaging (AD-PSGD) ------------------------------------------------------------
    def _pair_request(self, i: int, peer: int, v: np.ndarray) -> None:
        self._block(i)
        self._pair_queue.append((i, peer, v))
        self._start_pairs()

    def _start_pairs(self) -> None:
        """Start every queued exchange whose two endpoints are free, oldest first."""
        waiting = []
        for i, peer, v in self._pair_queue:
            if self._pair_busy[i] or self._pair_busy[peer]:
                waiting.append((i, peer, v))
                continue
            self._pair_busy[i] = self._pair_busy[peer] = True
            tr = self.transports[i]
            tr.bytes_sent += 2 * v.nbytes
            tr.messages_sent += 2
            # a round trip: i's request (x_i) then peer's response (x_peer), one sample of each
            # endpoint's communication delay, so a slow link on either side slows the exchange
            done = self.now + self.delays.comm(i) + self.delays.comm(peer)
            self._push(done, PAIR, i, (peer, v))
        self._pair_queue = waiting

    def _finish_pair(self, i: int, peer: int, v: np.ndarray) -> None:
        x_peer = self.agents[peer].x
        v += x_peer
        v *= 0.5
        x_peer[:] = v
        # each end now holds the other's model as of this exchange (staleness bookkeeping)
        for a, b in ((i, peer), (peer, i)):
            tr = self.transports[a]
            tr.received[tr.in_index[b]] = self.agents[b].iteration
        self._pair_busy[i] = self._pair_busy[peer] = False
        self._wake(i, self.now, None)
        self._start_pairs()
