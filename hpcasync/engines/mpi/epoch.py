"""The long passive-target epoch that every RMA window of the MPI engine lives in.

:class:`Epoch` owns the life cycle of its windows: ``Win.Allocate`` and the
numpy view of the memory (:meth:`Epoch.allocate`), the local
initialisation and the opening of one ``Lock_all(MPI.MODE_NOCHECK)`` epoch
per window (:meth:`Epoch.build`), and ``Unlock_all`` + ``Win.Free`` on every
exit path (:meth:`Epoch.free`, also from ``__exit__`` and when construction
fails): a leaked epoch hangs ``MPI_Finalize``. docs/design.md §5 measured why one
long epoch: a per-operation ``Win.Lock`` blocks while the target computes
without calling MPI, whereas inside a long ``Lock_all`` epoch an operation
completed with ``Win.Flush`` never waits for the target.

Reads. An operation that only reads (``Get``, ``Get_accumulate``/``Fetch_and_op``
with ``NO_OP``) is issued request-based (``Rget``, ``Rget_accumulate``) and
completed with the request's ``Wait``: its completion means the result buffer
holds the data, which is all a read needs. Under MPICH with more processes than
cores ``Win.Flush`` gives up the core and comes back only after a scheduler tick:
a read of a busy rank's counter measured median 1.5 µs, mean 100–150 µs, p99
4 ms with ``Flush``, against mean 0.9 µs, p99 2 µs with ``Wait`` (two ranks and
one spinning process on 2 cores, ``benchmarks/bench_read_completion.py``; Open
MPI: ~1 µs both ways).
Operations that change the target (puts, sums, swaps) keep ``Flush``: a
request's completion does not promise that the change has reached the target.

Used by :class:`~hpcasync.engines.mpi.slots.ModelSlots`,
:class:`~hpcasync.engines.mpi.delta.DeltaAccumulator`,
:class:`~hpcasync.engines.mpi.board.Board` and
:class:`~hpcasync.engines.mpi.pairs.PairWindow`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import numpy as np
from mpi4py import MPI

__all__ = ["IMMEDIATE_RETRIES", "WORD", "Epoch", "back_off_s", "check_ranks", "window_info"]

WORD = 8  # bytes in an int64 sequence word (data windows take the model dtype's itemsize as unit)

#: a torn seqlock copy (slots.py, board.py) is retried at once this many times, then after back_off_s
IMMEDIATE_RETRIES = 2


def back_off_s(attempt: int) -> float:
    """The sleep before retry ``attempt`` (> IMMEDIATE_RETRIES) of a torn copy: doubling from 20 µs to 1 ms."""
    return min(1e-5 * 2 ** min(attempt - IMMEDIATE_RETRIES, 10), 1e-3)


def check_ranks(ranks: Sequence[int], size: int, me: int, name: str) -> str | None:
    if len(set(ranks)) != len(ranks):
        return f"{name} has duplicates: {list(ranks)}"
    for j in ranks:
        if not 0 <= j < size:
            return f"{name} contains {j}, not a rank of a communicator of size {size}"
        if j == me:
            return f"{name} contains the rank itself ({me})"
    return None


def window_info(relaxed_ordering: bool = True) -> MPI.Info:
    info = MPI.Info.Create()
    # Every protocol step is completed with a Flush before the next one is
    # issued, so no ordering between accumulates is needed; relaxing it lets
    # the library pipeline them.
    if relaxed_ordering:
        info.Set("accumulate_ordering", "none")
    info.Set("same_disp_unit", "true")
    return info


class Epoch:
    """Windows held in one ``Lock_all(MODE_NOCHECK)`` epoch each; collective free.

    ``free`` is idempotent and runs from ``__exit__`` whatever happened inside
    the ``with`` block, so windows are released on error paths too. It is
    collective (``MPI_Win_free`` is): every rank must reach it.
    """

    bytes_sent: int
    messages_sent: int
    rma_ops: int

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm
        self.rank = comm.Get_rank()
        self._windows: list[MPI.Win] = []
        self._in_epoch: list[MPI.Win] = []  # allocated with epoch=True
        self._locked: list[MPI.Win] = []
        self.bytes_sent = 0
        self.messages_sent = 0
        self.rma_ops = 0

    def allocate(self, nbytes: int, dtype: type | np.dtype = np.float64, *, epoch: bool = True,
                 relaxed_ordering: bool = True, disp_unit: int = WORD) -> tuple[MPI.Win, np.ndarray]:
        """Collective ``Win.Allocate`` of ``nbytes`` (displacement unit ``disp_unit``, 8 by default; a
        model's data window uses one element of its dtype) and a numpy view of it.

        The window is freed by :meth:`free`; with ``epoch`` it is also put in
        a long ``Lock_all`` epoch by :meth:`open_epochs` (a window without one
        is locked per operation by its owner class). ``relaxed_ordering``: see
        :func:`window_info`.
        """
        info = window_info(relaxed_ordering)
        try:
            win = MPI.Win.Allocate(nbytes, disp_unit, info, self.comm)
        finally:
            info.Free()
        self._windows.append(win)
        if epoch:
            self._in_epoch.append(win)
        return win, np.frombuffer(win.tomemory(), dtype)

    def build(self, initialise: Callable[[], None]) -> None:
        """Run ``initialise`` (the :meth:`allocate` calls and the local stores), then :meth:`open_epochs`.

        Whatever raises, every window allocated so far is freed (and its epoch
        closed) before the error propagates.
        """
        try:
            initialise()
            self.open_epochs()
        except BaseException:
            self.free()
            raise

    def open_epochs(self) -> None:
        """Open the long epochs and make the locally initialised memory visible.

        Must follow the local initialisation of every window: ``Win.Sync``
        publishes those stores (unified model) and the barrier keeps any remote
        operation from arriving before every owner has initialised.
        """
        for win in self._in_epoch:
            win.Lock_all(MPI.MODE_NOCHECK)
            self._locked.append(win)
            win.Sync()
        self.comm.Barrier()

    @property
    def closed(self) -> bool:
        return not self._windows

    def check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} used after free()")

    def free(self) -> None:
        """Close the epochs (completing every pending operation) and free the windows.

        Collective. Safe to call twice. Each window is unlocked and freed even
        if an earlier one failed, and the first error is re-raised afterwards.
        """
        first: BaseException | None = None
        while self._locked:
            win = self._locked.pop()
            try:
                win.Unlock_all()
            except BaseException as e:  # keep freeing, re-raise below
                first = first or e
        while self._windows:
            win = self._windows.pop()
            try:
                win.Free()
            except BaseException as e:
                first = first or e
        # The memory is unmapped now: drop the numpy views of it.
        self._in_epoch.clear()
        self.release_views()
        if first is not None:
            raise first

    def release_views(self) -> None:
        """Replace numpy views of window memory by empty arrays (called by free)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.free()
