"""A window that neighbours add deltas into, owned by one rank.

Senders ``Accumulate(SUM)`` into the owner's window; the owner takes the
deltas atomically. The window lives in one long epoch
(:mod:`hpcasync.engines.mpi.epoch`). Counts ``bytes_sent`` and
``messages_sent``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.dtypes import model_dtype, mpi_type
from hpcasync.engines.mpi.epoch import Epoch, check_ranks
from hpcasync.engines.mpi.world import agree

__all__ = ["DeltaAccumulator"]


class DeltaAccumulator(Epoch):
    """A window of ``dim`` elements (float64, or float32 for torch models) per rank that neighbours
    add deltas into (docs/design.md §5.2).

    Senders ``Accumulate(SUM)``; accumulates are element-wise atomic across
    origins, so concurrent senders never lose an update. The owner takes
    everything with :meth:`drain_into` (``Get_accumulate`` of zeros with
    ``REPLACE`` on itself: an element-wise atomic swap). A drain may see part
    of one message and the rest at the next drain; nothing is lost or counted
    twice.

    The drain mixes ``REPLACE`` with the senders' ``SUM`` on one location,
    which the MPI default hint ``accumulate_ops=same_op_no_op`` formally
    excludes. MPICH stays atomic here: with its default
    ``which_accumulate_ops`` (all ops) it uses network atomics only where every
    op has them (ch4/ofi source), and on one node all accumulates take the
    shared-memory path; the lossless test checks it on this MPI. The
    ``initial=`` mode below needs only SUM and NO_OP, within the default hint
    on any MPI.

    Alternative mode for Alg. 3 ("the deltas land directly in the s_i
    window", docs/design.md §4): construct with ``initial=(1 − w_ii)·x0`` and never
    drain. The window then *is* s_i = s_i(0) + Σ(deltas arrived), and
    :meth:`snapshot_into` copies it with an element-wise atomic
    ``Get_accumulate(NO_OP)``. This is exact for the same reason draining is
    (each element is read atomically; an element may hold part of a message
    and get the rest later, as with a drain; nothing is subtracted, so nothing
    can be lost), and it saves the zero-writing and the ``s += r`` pass:
    measured 5× cheaper than :meth:`drain_into` at d = 1e6
    (``benchmarks/bench_rma.py``). Reading the window memory directly with
    numpy would avoid even the copy, but MPI does not make plain loads atomic
    with concurrent accumulates, so this class does not offer it.

    Threads: ``accumulate`` in one thread and ``drain_into``/``snapshot_into``
    in another is fine (separate buffers); two concurrent ``accumulate`` calls
    are not (they share the scaling scratch).
    """

    def __init__(
        self,
        comm: MPI.Comm,
        dim: int,
        out_neighbors: Sequence[int],
        initial: np.ndarray | None = None,
        dtype: np.dtype | type | None = None,
    ) -> None:
        """Collective over ``comm``. ``initial`` (default zeros) is this rank's
        starting window content (s_i(0) in the ``snapshot_into`` mode); ``dtype``
        defaults to initial's, else float64."""
        super().__init__(comm)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype) if dtype is not None else model_dtype(initial)
        self._T = mpi_type(self.dtype)
        self.out_neighbors = [int(j) for j in out_neighbors]
        error = (f"dim must be a positive integer, got {dim}" if self.dim < 1 else None) or check_ranks(
            self.out_neighbors, comm.Get_size(), self.rank, "out_neighbors"
        )
        if error is None and initial is not None and np.shape(initial) != (self.dim,):
            error = f"initial has shape {np.shape(initial)}, expected ({self.dim},)"
        agree(comm, error, "DeltaAccumulator")

        self._out = set(self.out_neighbors)
        self.drains = 0
        # Reused buffers: scaling, the REPLACE source and the fetched result are
        # never allocated per call (dim may be 1e7).
        self._scratch = np.empty(self.dim, self.dtype)
        self._zeros = np.zeros(self.dim, self.dtype)
        self._result = np.empty(self.dim, self.dtype)
        def initialise() -> None:
            size = self.dtype.itemsize
            self._win, self._local = self.allocate(self.dim * size, self.dtype, disp_unit=size)
            self._local[:] = 0.0 if initial is None else np.asarray(initial, self.dtype)

        self.build(initialise)

    def release_views(self) -> None:
        self._local = np.zeros(0, self.dtype)

    def accumulate(self, j: int, delta: np.ndarray, scale: float = 1.0) -> None:
        """Add ``scale · delta`` into out-neighbour ``j``'s window; complete on return."""
        self.check_open()
        if j not in self._out:
            raise ValueError(f"rank {j} is not an out-neighbour of rank {self.rank}")
        if np.shape(delta) != (self.dim,):
            raise ValueError(f"delta has shape {np.shape(delta)}, expected ({self.dim},)")
        if scale == 1.0 and delta.dtype == self.dtype and delta.flags.c_contiguous:
            src = delta
        else:
            np.multiply(delta, scale, out=self._scratch)
            src = self._scratch
        self._win.Accumulate([src, self.dim, self._T], j, target=(0, self.dim, self._T), op=MPI.SUM)
        # Completes the sum at j and frees src/scratch for reuse.
        self._win.Flush(j)
        self.messages_sent += 1
        self.rma_ops += 1
        self.bytes_sent += self.dim * self.dtype.itemsize

    def drain_into(self, s: np.ndarray) -> None:
        """s ← s + (everything accumulated here), zeroing the window atomically."""
        self.check_open()
        self._check_target(s, "s")
        win = self._win
        win.Get_accumulate(
            [self._zeros, self.dim, self._T],
            [self._result, self.dim, self._T],
            self.rank,
            target=(0, self.dim, self._T),
            op=MPI.REPLACE,
        )
        win.Flush(self.rank)
        s += self._result
        self.drains += 1

    def snapshot_into(self, out: np.ndarray) -> None:
        """out ← current window content, element-wise atomic (``initial=`` mode).

        In this mode the window is s_i itself: the owner never drains, so the
        content is ``initial`` plus every delta that has arrived.
        """
        self.check_open()
        self._check_target(out, "out")
        self._win.Rget_accumulate(  # a read: completed by its request (epoch.py, "Reads")
            [self._zeros, self.dim, self._T],  # ignored by NO_OP
            [out, self.dim, self._T],
            self.rank,
            target=(0, self.dim, self._T),
            op=MPI.NO_OP,
        ).Wait()
        self.drains += 1

    def _check_target(self, a: np.ndarray, name: str) -> None:
        if (
            not isinstance(a, np.ndarray)
            or a.shape != (self.dim,)
            or a.dtype != self.dtype
            or not a.flags.c_contiguous
        ):
            got = (getattr(a, "shape", None), getattr(a, "dtype", None))
            raise ValueError(f"{name} must be a contiguous {self.dtype} array of shape ({self.dim},), got {got}")
