"""Alg. 3's delta window on MPI-3 shared memory: per-writer running sums (docs/design.md §5.6).

:class:`SharedDeltas` has :class:`~hpcasync.engines.mpi.delta.DeltaAccumulator`'s
interface for a job whose ranks all share one node. Each rank's segment
(``Win.Allocate_shared`` over the node communicator) holds one running sum
per in-neighbour: writer i owns row k of reader j's segment (k: i's position
among j's in-neighbours) and is the only process that ever stores to it.
``accumulate`` adds ``scale·delta`` into that row in place (no MPI call);
the reader never stores to it.

Lossless by construction: a row only ever holds Σ(deltas its writer sent),
so nothing can be overwritten or lost by a concurrent writer (there is
none), and the reader takes what arrived by *differencing*, not by
zeroing. ``snapshot_into`` (the ``initial=`` mode, s_i in the window):
``out = initial + Σ_k row_k``. ``drain_into``: ``s += row_k − seen_k`` and
``seen_k ← row_k`` for a copy ``row_k`` read once, so what is added is
exactly what is recorded as seen; the sum of all drains telescopes to the
rows' final value.

Atomicity: numpy's in-place add and the reader's copy move each aligned
8-byte (or 4-byte) element with single-copy-atomic accesses (x86-64: aligned
accesses up to 8 bytes, also element-wise inside SSE/AVX moves; aarch64:
per element for SIMD loads/stores), so a reader sees every element either
before or after a given add: as with the RMA window, one drain may see part
of a message and the next one the rest. ``Win.Sync`` after an add and before
a read only makes the adds visible promptly (a full barrier); correctness
needs no ordering between elements.

A job whose ranks span several nodes keeps the RMA ``DeltaAccumulator``
(:func:`all_on_one_node`): an RMA accumulate into a row read with plain
loads is not atomic in MPI's model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.dtypes import model_dtype
from hpcasync.engines.mpi.epoch import Epoch, check_ranks, window_info
from hpcasync.engines.mpi.shared_slots import node_comm
from hpcasync.engines.mpi.world import agree

__all__ = ["SharedDeltas", "all_on_one_node"]


def all_on_one_node(comm: MPI.Comm) -> bool:
    """Whether every rank of ``comm`` shares memory with every other (collective)."""
    node = node_comm(comm)
    try:
        return bool(comm.allreduce(node.Get_size() == comm.Get_size(), op=MPI.LAND)) and comm.Get_size() > 1
    finally:
        node.Free()


class SharedDeltas(Epoch):
    """DeltaAccumulator on shared memory, one running sum per writer (module docstring)."""

    def __init__(self, comm: MPI.Comm, dim: int, out_neighbors: Sequence[int],
                 initial: np.ndarray | None = None, dtype: np.dtype | type | None = None) -> None:
        """Collective over ``comm``, whose ranks must all be on one node."""
        super().__init__(comm)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype) if dtype is not None else model_dtype(initial)
        self.out_neighbors = [int(j) for j in out_neighbors]
        error = (f"dim must be a positive integer, got {dim}" if self.dim < 1 else None) or check_ranks(
            self.out_neighbors, comm.Get_size(), self.rank, "out_neighbors")
        if error is None and initial is not None and np.shape(initial) != (self.dim,):
            error = f"initial has shape {np.shape(initial)}, expected ({self.dim},)"
        agree(comm, error, "SharedDeltas")
        all_out = comm.allgather(self.out_neighbors)
        in_nb = [i for i in range(comm.Get_size()) if self.rank in all_out[i]]
        all_in = comm.allgather(in_nb)
        self._row_at = {j: all_in[j].index(self.rank) for j in self.out_neighbors}
        self._initial = np.zeros(self.dim, self.dtype) if initial is None else np.array(initial, self.dtype)
        deg = len(in_nb)
        self._seen = np.zeros((deg, self.dim), self.dtype)  # drain: the part of each row already taken
        self._cur = np.empty(self.dim, self.dtype)
        self._scratch = np.empty(self.dim, self.dtype)
        self._peer: dict[int, np.ndarray] = {}
        self.drains = 0
        self._node = node_comm(comm)
        try:
            if self._node.Get_size() != comm.Get_size():
                raise ValueError("SharedDeltas needs every rank on one node (use DeltaAccumulator)")

            def initialise() -> None:
                info = window_info()
                info.Set("alloc_shared_noncontig", "true")
                try:
                    nbytes = deg * self.dim * self.dtype.itemsize
                    win = MPI.Win.Allocate_shared(nbytes, self.dtype.itemsize, info, self._node)
                finally:
                    info.Free()
                self._windows.append(win)
                self._in_epoch.append(win)
                self._win = win
                self._rows = (np.frombuffer(win.tomemory(), self.dtype).reshape(deg, self.dim) if deg
                              else np.zeros((0, self.dim), self.dtype))
                self._rows[:] = 0

            self.build(initialise)
            for j in self.out_neighbors:  # node ranks are comm ranks: one node, same order
                seg = np.frombuffer(self._win.Shared_query(j)[0], self.dtype)[:len(all_in[j]) * self.dim]
                self._peer[j] = seg.reshape(len(all_in[j]), self.dim)[self._row_at[j]]
        except BaseException:
            self.free()
            raise

    def release_views(self) -> None:
        self._rows = np.zeros((0, self.dim), self.dtype)
        self._peer = {}

    def free(self) -> None:
        try:
            super().free()
        finally:
            if getattr(self, "_node", MPI.COMM_NULL) != MPI.COMM_NULL:
                self._node.Free()
                self._node = MPI.COMM_NULL

    def accumulate(self, j: int, delta: np.ndarray, scale: float = 1.0) -> None:
        """Add ``scale · delta`` into this rank's running sum at ``j``; visible to ``j`` on return."""
        self.check_open()
        row = self._peer.get(j)
        if row is None:
            raise ValueError(f"rank {j} is not an out-neighbour of rank {self.rank}")
        if np.shape(delta) != (self.dim,):
            raise ValueError(f"delta has shape {np.shape(delta)}, expected ({self.dim},)")
        if scale == 1.0:
            np.add(row, delta, out=row)
        else:
            np.multiply(delta, scale, out=self._scratch)
            np.add(row, self._scratch, out=row)
        self._win.Sync()  # make the adds visible promptly (not needed for correctness)
        self.messages_sent += 1
        self.bytes_sent += self.dim * self.dtype.itemsize

    def drain_into(self, s: np.ndarray) -> None:
        """s ← s + (everything that arrived since the last drain), by differencing the running sums."""
        self.check_open()
        self._win.Sync()
        cur, seen = self._cur, self._seen
        for k in range(self._rows.shape[0]):
            np.copyto(cur, self._rows[k])  # one read of the row: exactly what is marked as seen
            s += cur
            s -= seen[k]
            np.copyto(seen[k], cur)
        self.drains += 1

    def snapshot_into(self, out: np.ndarray) -> None:
        """out ← initial + Σ rows: s_i itself in the ``initial=`` mode."""
        self.check_open()
        self._win.Sync()
        np.copyto(out, self._initial)
        for k in range(self._rows.shape[0]):
            out += self._rows[k]
        self.drains += 1
