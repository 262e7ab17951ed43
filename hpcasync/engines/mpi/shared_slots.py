"""Model slots whose same-node pushes are plain stores into MPI-3 shared memory (docs/design.md §5.6).

:class:`SharedSlots` keeps :class:`~hpcasync.engines.mpi.slots.ModelSlots`'
layout, seqlock and reader side unchanged; only where the slot memory comes
from and how a writer reaches a neighbour on its own node differ:

* every rank's word and data segments are allocated with
  ``MPI.Win.Allocate_shared`` over its node communicator
  (``Split_type(COMM_TYPE_SHARED)``); a writer maps each same-node
  out-neighbour's segments with ``Shared_query`` once, at construction;
* a publish to a same-node neighbour is two aligned int64 stores and one
  ``numpy.copyto`` of the model into the neighbour's buffer: no MPI call
  but two ``Win.Sync`` fences;
* neighbours on other nodes keep the RMA protocol of §5.1 through a second
  window created (``Win.Create``) over the same memory and the whole
  communicator, so one run can mix both kinds of neighbour, and a reader's
  slots look the same whoever wrote them. That window exists only when some
  edge crosses nodes.

Memory ordering (seqlock over plain stores). Writer, per same-node target:
``word ← 2u−1``; fence; copy data; fence; ``word ← 2u``. Reader (unchanged,
slots.py): load words; fence; load data; fence; load words again. The fence
is ``MPI_Win_sync``, which MPI-3 defines as synchronising the public and
private copies of the window; in the unified model (every shared-memory
window) both MPICH (``MPL_atomic_read_write_barrier``) and Open MPI
(``opal_atomic_mb``) implement it as a full hardware memory barrier
(x86-64 ``mfence``, aarch64 ``dmb ish``), which is also a compiler barrier
(an opaque call). Writer-side the two fences order the word store before
the data stores and the data stores before the final word store
(store→store); reader-side the library's fences order word load → data
loads → word load (load→load). That pairing is the classic seqlock
argument: if the second word read equals what the reader's buffer choice
assumed (no ``2d+3``), no store of a later publication into that buffer
can have been observed. On x86-64 (TSO) store→store and load→load are
already ordered by hardware, and every step is a separate opaque C call
(numpy, numba, MPI) that no compiler can reorder across, so on x86-64 a
job on one node skips the fences (:data:`TSO`; measured: the reader's four
and the writer's two ``Win.Sync`` cost several µs per update). On aarch64
(weakly ordered) they are required and sufficient, ``dmb ish`` covering
every core of the node. Where some edge crosses nodes the fences stay
(``Win.Sync`` also makes RMA updates visible in MPI's model). An aligned 8-byte numpy store
or load is single-copy atomic on both, so a word is never torn. Each word
has exactly one writer (its slot's owner), plain or RMA, never both.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.epoch import WORD, window_info
from hpcasync.engines.mpi.slots import ModelSlots
from hpcasync.kernels.seqlock import adsgd_mix_publish

__all__ = ["NODE_SPLIT_ENV", "TSO", "SharedSlots", "node_comm"]

#: Whether this CPU is total-store-ordered (x86-64): there the seqlock of a job on one node
#: needs no fence instruction at all (module docstring), so ``Win.Sync`` is skipped; tests
#: set it False to run the fenced protocol (what aarch64 runs) on x86 too.
TSO = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

#: Test-only override: split every real node into fake nodes of this many
#: consecutive ranks, so that one machine runs a job with RMA neighbours too.
NODE_SPLIT_ENV = "HPCASYNC_TEST_NODE_SPLIT"


def node_comm(comm: MPI.Comm) -> MPI.Comm:
    """The ranks of ``comm`` that share memory with this one (collective; the caller frees it)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    split = int(os.environ.get(NODE_SPLIT_ENV, "0") or 0)
    if split > 0:
        fake = node.Split(comm.Get_rank() // split, comm.Get_rank())
        node.Free()
        node = fake
    return node


class _Unfenced:
    """A window whose ``Sync`` is a no-op (x86-64, one node: module docstring); the rest is the window's."""

    def __init__(self, win: MPI.Win) -> None:
        self._win = win

    def Sync(self) -> None:  # noqa: N802 (MPI's name)
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._win, name)


def _nothing() -> None:
    pass


class SharedSlots(ModelSlots):
    """:class:`ModelSlots` on shared memory: same-node pushes without MPI calls (module docstring).

    Same constructor and interface as ModelSlots. ``rma_ops`` counts only
    the RMA operations (those to other nodes); ``shared_pushes`` counts the
    same-node ones.
    """

    def __init__(self, comm: MPI.Comm, dim: int, in_neighbors: Sequence[int], out_neighbors: Sequence[int],
                 x0: np.ndarray | None = None, atomic_words: bool | None = None,
                 dtype: np.dtype | type | None = None, defer_closing: bool = False) -> None:
        self._node = node_comm(comm)
        self._node_rank_of: dict[int, int] = {}
        try:
            members = self._node.allgather(comm.Get_rank())
            self._node_rank_of = {r: k for k, r in enumerate(members)}
            # Some edge may cross nodes only if some node is smaller than the job (all ranks agree).
            self._in_degree = comm.allgather(len(in_neighbors))
            self._cross = bool(comm.allreduce(len(members) < comm.Get_size(), op=MPI.LOR))
            self._shared_wins: list[MPI.Win] = []
            self._peers: list[tuple[np.ndarray, int, np.ndarray]] = []
            self._table: np.ndarray | None = None  # mix_publish's target addresses (fused)
            self._own_words: np.ndarray | None = None
            self.shared_pushes = 0
            super().__init__(comm, dim, in_neighbors, out_neighbors, x0=x0, atomic_words=atomic_words,
                             dtype=dtype, defer_closing=defer_closing)
        except BaseException:
            self._free_node()
            raise
        self._split_targets()

    # -- memory ----------------------------------------------------------------------------
    def allocate(self, nbytes: int, dtype: type | np.dtype = np.float64, *, epoch: bool = True,
                 relaxed_ordering: bool = True, disp_unit: int = WORD) -> tuple[MPI.Win, np.ndarray]:
        """Shared-memory segment of this rank (and, with cross-node edges, an RMA window over it)."""
        info = window_info(relaxed_ordering)
        info.Set("alloc_shared_noncontig", "true")  # each segment on its owner's NUMA node
        try:
            swin = MPI.Win.Allocate_shared(nbytes, disp_unit, info, self._node)
            self._windows.append(swin)
            self._in_epoch.append(swin)  # Win.Sync (the fence) needs an epoch
            self._shared_wins.append(swin)
            mem = np.frombuffer(swin.tomemory(), dtype) if nbytes else np.zeros(0, dtype)
            if not self._cross:
                return swin, mem
            win = MPI.Win.Create(mem if nbytes else MPI.BOTTOM, disp_unit, info, self.comm)
        finally:
            info.Free()
        self._windows.append(win)
        self._in_epoch.append(win)
        return win, mem

    def _split_targets(self) -> None:
        """Map the same-node out-neighbours' segments; leave the others to the RMA protocol."""
        word_win, data_win = self._shared_wins
        local = {j for j, _ in self._targets if j in self._node_rank_of}
        for j, k in self._targets:
            if j in local:
                r, deg = self._node_rank_of[j], self._in_degree[j]
                # a segment may be longer than asked (Open MPI rounds it up to pages)
                words = np.frombuffer(word_win.Shared_query(r)[0], np.int64)[:deg]
                data = np.frombuffer(data_win.Shared_query(r)[0], self.dtype)[:2 * deg * self.dim]
                data = data.reshape(2 * deg, self.dim)
                self._peers.append((words, k, data))
        self._word_targets = [t for t in self._word_targets if t[0] not in local]
        self._data_targets = [[t for t in ts if t[0] not in local] for ts in self._data_targets]
        self._fence = word_win.Sync
        if not self._cross and not self.atomic_words:
            # every slot of the job is written with plain stores: one kernel may read, mix and
            # publish (kernels/seqlock.py); the addresses stay valid while self._peers holds the maps
            self._table = np.array([[words[k:].ctypes.data, data[2 * k].ctypes.data, data[2 * k + 1].ctypes.data]
                                    for words, k, data in self._peers], np.int64).reshape(-1, 3)
            self._own_words = self._words[:len(self.in_neighbors)]
        if TSO and not self._cross:
            # no RMA writer anywhere: every slot is written with plain stores, ordered by TSO
            self._fence = _nothing
            self._word_win, self._data_win = _Unfenced(self._word_win), _Unfenced(self._data_win)

    def release_views(self) -> None:
        self._table = self._own_words = None  # before the maps they point into go
        super().release_views()
        self._peers = []

    def free(self) -> None:
        try:
            super().free()
        finally:
            self._free_node()

    def _free_node(self) -> None:
        if getattr(self, "_node", MPI.COMM_NULL) != MPI.COMM_NULL:
            self._node.Free()
            self._node = MPI.COMM_NULL

    # -- writer ----------------------------------------------------------------------------
    def _publish(self, x: np.ndarray, u: int) -> int:
        """§5.1's publication: plain stores + fences to same-node targets, RMA to the others
        (words as :meth:`ModelSlots._publish`)."""
        self.check_open()
        if type(x) is not np.ndarray or x.dtype != self.dtype or not x.flags.c_contiguous:
            x = self._as_model(x, "x")
        elif x.shape != self._shape:
            raise ValueError(f"x has shape {x.shape}, expected ({self.dim},)")
        opening = 2 * self.published + 1
        peers, fence = self._peers, self._fence
        wwin, dwin = self._word_win, self._data_win
        remote = self._word_targets
        word, replace = self._word_spec, MPI.REPLACE

        self._word[0] = opening
        for j, k, old in remote:
            wwin.Fetch_and_op(word, old, j, k, replace)
        for words, k, _ in peers:
            words[k] = opening
        if remote:
            wwin.Flush_all()
        fence()  # word stores before data stores (module docstring)
        b = u % 2
        if remote:
            src = [x, self.dim, self._T]
            for j, target in self._data_targets[b]:
                dwin.Put(src, j, target=target)
        for _, k, data in peers:
            np.copyto(data[2 * k + b], x)
        if remote:
            dwin.Flush_all()
        fence()  # data stores before the closing word store
        self._word[0] = 2 * u
        for words, k, _ in peers:
            words[k] = 2 * u
        if remote:
            self._close(2 * u)  # RMA targets: flushed now or by the next publication (defer_closing)

        self.published = u
        self._count(len(peers), len(remote))
        return u

    def _count(self, shared: int, remote: int) -> None:
        """One publication's counters: ``shared`` plain-store pushes and ``remote`` RMA ones (3 ops each)."""
        self.messages_sent += shared + remote
        self.shared_pushes += shared
        self.rma_ops += 3 * remote
        self.bytes_sent += (shared + remote) * (self.dim * self.dtype.itemsize + 2 * WORD)

    @property
    def fused(self) -> bool:
        """Whether :meth:`mix_publish` may be used: no slot of the job is written with RMA."""
        return self._table is not None

    def mix_publish(self, x: np.ndarray, g: np.ndarray, w_nbrs: np.ndarray, w_self: float, alpha: float,
                    beta: float, u: int) -> bool:
        """ADSGD's step from the views (``open_views`` … ``close_views``) and the publication of the
        new x as model ``u``, in one kernel (:func:`~hpcasync.kernels.seqlock.adsgd_mix_publish`).

        Only when :attr:`fused`; ``x`` must be a C-contiguous model of this dtype (the caller
        checks). Returns False when a slot may have been rewritten during the mix: x is then void
        and nothing was published (restore x, redo the step from copies, publish).
        """
        table = self._table
        if table is None:  # freed, or slots with an RMA writer: its addresses must never be used
            raise RuntimeError("SharedSlots.mix_publish: not fused, or used after free()")
        torn = adsgd_mix_publish(x, g, self._data, self._own_words, w_nbrs, w_self, alpha, beta, self._views,
                                 table, 2 * self.published + 1, 2 * u)
        self.reads += len(self._view_rows)
        if torn:
            self.retries += torn
            return False
        self.published = u
        self._count(len(self._peers), 0)
        return True

    def fetch_published(self, out: np.ndarray) -> int:
        """As :meth:`ModelSlots.fetch_published`, copied straight from a same-node neighbour if any."""
        if not self._peers:
            return super().fetch_published(out)
        self.check_open()
        if self.published == 0 and not self.common_x0:
            raise RuntimeError("fetch_published: nothing published yet, and the ranks' x0 differ")
        out = self._as_out(out, (self.dim,))
        _, k, data = self._peers[0]
        np.copyto(out, data[2 * k + self.published % 2])  # rewritten only by this rank's next publish
        return self.published
