"""Flooding (feature ``flood``), the engine-independent part: de-duplication by (origin, sequence number).

Both engines deliver an agent's items to its neighbours in order (per-link
FIFO): in the simulator an item travels inside the sender's serial
transmissions (``Packet.flood``), taking the sender's sampled communication
delay; on MPI it is one non-blocking send on a communicator of its own
(``engines/mpi/messages.py``; MPI does not let messages between two ranks
overtake each other). An agent that
sees an item for the first time forwards it to every neighbour but the one
it came from; copies of items already seen are dropped (counted in
``duplicates``). With FIFO links and in-order forwarding items of one origin
arrive in sequence order; one that arrives early anyway (a lost message, see
``delays.drop``) waits in ``early`` until the gap is filled.
"""

from __future__ import annotations

import numpy as np

#: one flooded item in a packet: (origin, seq, payload, neighbour it must not be delivered to (-1: none))
Item = tuple[int, int, np.ndarray, int]


class FloodState:
    """What agent ``rank`` knows of the flood: ``seen[o]``, the items of origin o accepted so far."""

    def __init__(self, rank: int, n: int) -> None:
        self.rank = rank
        self.seen = np.zeros(n, np.int64)
        self.pending: list[tuple[int, int, np.ndarray]] = []  # accepted, not yet taken by the algorithm
        self.early: dict[tuple[int, int], np.ndarray] = {}
        self.duplicates = 0
        self.waiting = False  # the agent is blocked in wait_flooded

    def own(self, v: np.ndarray) -> Item:
        self.seen[self.rank] += 1
        return (self.rank, int(self.seen[self.rank]), v.copy(), -1)

    def arrive(self, src: int, origin: int, seq: int, v: np.ndarray) -> list[Item]:
        """Accept an arriving item (and any early ones it unblocks); what to forward (each item's
        last field is ``src``, the neighbour not to send it back to). ``v`` is kept as given."""
        if seq <= self.seen[origin] or (origin, seq) in self.early:
            self.duplicates += 1
            return []
        if seq > self.seen[origin] + 1:
            self.early[(origin, seq)] = v
            return []
        out = []
        while True:
            self.seen[origin] = seq
            self.pending.append((origin, seq, v))
            out.append((origin, seq, v, src))
            nxt = self.early.pop((origin, seq + 1), None)
            if nxt is None:
                return out
            seq, v = seq + 1, nxt

    def take(self) -> list[tuple[int, int, np.ndarray]]:
        out, self.pending = self.pending, []
        return out
