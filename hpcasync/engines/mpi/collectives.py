"""The synchronous algorithms' collectives on MPI, a mixin of
:class:`~hpcasync.engines.mpi.transport.MpiTransport` (docs/design.md §5): non-blocking
``Iallreduce`` (AllReduce SGD) and ``Ineighbor_allgather`` on the graph communicator (DSGD), each
carrying the stop round the ranks agree on and the time the slowest contribution is available;
the runner starts them and completes them with sleeping waits."""

from __future__ import annotations

import math

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.dtypes import words_for


class Collectives:
    """Collective buffers and calls; ``comm``, ``graph_comm``, ``n``, ``dtype``, the neighbour lists and
    the ``_coll_*`` counters are the transport's."""

    comm: MPI.Comm
    graph_comm: MPI.Comm | None
    n: int
    dtype: np.dtype
    in_neighbors: list[int]
    out_neighbors: list[int]
    _coll_bytes: int
    _coll_messages: int

    def _init_collectives(self) -> None:
        # the payload (model dtype) plus [stop round, available-at time] (float64), packed as bytes for
        # the neighbour exchange; the allreduce sends the payload alone
        self._sync_d = 0
        self._sync_send = np.empty(0, np.uint8)
        self._sync_recv = np.empty((0, 0), np.uint8)
        self._ar_send = np.empty(0, self.dtype)
        self._ar_recv = np.empty(0, self.dtype)
        self._flags = np.zeros(2)
        self._flags_out = np.zeros(2)

    def _sync_buffers(self, d: int, rows: int) -> None:
        """Rows of [payload (d of the model dtype), padding to 8 bytes, stop round, available-at (float64)]."""
        width = 8 * words_for(d, self.dtype) + 16
        self._sync_d = d
        if self._sync_send.size != width:
            self._sync_send = np.zeros(width, np.uint8)
        if self._sync_recv.shape != (rows, width):
            self._sync_recv = np.zeros((rows, width), np.uint8)

    def start_allreduce(self, v: np.ndarray, stop_round: int, available_at: float) -> list[MPI.Request]:
        """Iallreduce(SUM) of v and Iallreduce(MAX) of [−stop round, available-at] (two requests)."""
        d = v.size
        if self._ar_send.size != d:
            self._ar_send = np.empty(d, self.dtype)
            self._ar_recv = np.empty(d, self.dtype)
        send, recv = self._ar_send, self._ar_recv
        np.copyto(send, v)
        self._flags[0] = -float(stop_round)  # MAX of −round = the earliest proposal
        self._flags[1] = available_at
        n = self.n
        self._coll_bytes += int(2 * (n - 1) * (v.nbytes + 16) / n) if n > 1 else 0
        self._coll_messages += 2 * (n - 1)
        return [self.comm.Iallreduce(send, recv, op=MPI.SUM),
                self.comm.Iallreduce(self._flags, self._flags_out, op=MPI.MAX)]

    def finish_allreduce(self) -> tuple[np.ndarray, int, float]:
        """(mean of v, agreed stop round, time the slowest contribution is available)."""
        mean = self._ar_recv / self.dtype.type(self.n)
        return mean, int(-self._flags_out[0]), float(self._flags_out[1])

    def start_exchange(self, v: np.ndarray, stop_round: int, available_at: float) -> list[MPI.Request]:
        """Ineighbor_allgather of [v, stop round, available-at] on the graph communicator."""
        assert self.graph_comm is not None, "transport built without synchronous=True"
        d = v.size
        deg = len(self.in_neighbors)
        self._sync_buffers(d, deg)
        send = self._sync_send
        send[:d * self.dtype.itemsize].view(self.dtype)[:] = v
        tail = send[-16:].view(np.float64)
        tail[0] = float(stop_round)
        tail[1] = available_at
        self._coll_bytes += send.nbytes * len(self.out_neighbors)
        self._coll_messages += len(self.out_neighbors)
        return [self.graph_comm.Ineighbor_allgather(send, self._sync_recv)]

    def finish_exchange(self, stop_round: int) -> tuple[np.ndarray, int, float]:
        """(in-neighbours' models as a fresh (deg, d) array, min stop round seen, latest available-at)."""
        d = self._sync_d
        recv = self._sync_recv
        if recv.shape[0] == 0:
            return np.empty((0, d), self.dtype), stop_round, -math.inf
        models = np.ascontiguousarray(recv[:, :d * self.dtype.itemsize]).view(self.dtype)
        tail = np.ascontiguousarray(recv[:, -16:]).view(np.float64)
        return models, min(stop_round, int(tail[:, 0].min())), float(tail[:, 1].max())

    def start_barrier(self) -> list[MPI.Request]:
        return [self.comm.Ibarrier()]
