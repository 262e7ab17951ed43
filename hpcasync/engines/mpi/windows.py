"""One-sided RMA building blocks of the MPI engine (docs/design.md §5).

Two window types, both living in **one** passive-target epoch per window that
is opened with ``Lock_all(MPI.MODE_NOCHECK)`` at construction and closed in
:meth:`free`. docs/design.md §5 measured why: a per-operation ``Win.Lock`` blocks
while the target computes without calling MPI, whereas inside a long
``Lock_all`` epoch an operation completed with ``Win.Flush`` never waits for
the target. So no method here takes a lock, and none waits for another rank.

* :class:`ModelSlots` (§5.1): every agent publishes its latest model into a
  double-buffered slot in each out-neighbour's memory, guarded by a sequence
  word (a seqlock); readers copy the newest complete model.
* :class:`DeltaAccumulator` (§5.2): senders add deltas into the owner's
  window with ``Accumulate(SUM)``; the owner takes them atomically.

Both are collective to construct and to free, are context managers, and free
their windows and close their epochs on every exit path: a leaked epoch hangs
``MPI_Finalize``. Both count ``bytes_sent`` and ``messages_sent`` (docs/design.md §3).

This module gathers them: the epoch life cycle is :mod:`.epoch`, the slots
:mod:`.slots`, the accumulator :mod:`.delta`.
"""

from __future__ import annotations

from hpcasync.engines.mpi.delta import DeltaAccumulator
from hpcasync.engines.mpi.epoch import Epoch
from hpcasync.engines.mpi.slots import ATOMIC_WORD_READS, ModelSlots

__all__ = ["ATOMIC_WORD_READS", "DeltaAccumulator", "Epoch", "ModelSlots"]
