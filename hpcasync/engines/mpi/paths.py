"""Which protocol carries a transport's pushes: shared memory on a node, RMA across nodes (``mpi.shared_memory``).

One choice for every algorithm that pushes models (ADSGD, RFAST, DASGD's model
slots: :class:`NumberedSlots`) or deltas (Alg. 3, the push-sum family:
:func:`delta_class`), made here once rather than per algorithm.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.delta import DeltaAccumulator
from hpcasync.engines.mpi.shared_deltas import SharedDeltas, all_on_one_node
from hpcasync.engines.mpi.shared_slots import SharedSlots, node_comm
from hpcasync.engines.mpi.slots import ModelSlots

__all__ = ["NumberedSharedSlots", "NumberedSlots", "delta_class", "slots_class"]


class NumberedSlots(ModelSlots):
    """ModelSlots whose model numbers are given by the writer (strictly increasing, may skip)."""

    def publish_as(self, x: np.ndarray, number: int) -> int:
        """Publish ``x`` as model ``number`` (its iteration count), or ``number`` − 1; returns which.

        Model u lives in buffer u mod 2 and the seqlock needs consecutive
        publications to alternate buffers (a reader of the newest model must
        never share its buffer with the next write). A skip by an even count
        would reuse the buffer of the model readers are copying, so such a
        model is published one number lower (a staleness figure one too high
        for that model). While it is written, the slot's word names the model
        published before it (``_publish``), so readers label every copy with
        the number of the model it holds (test_windows.py, skipping numbers).
        """
        return self._publish(x, self.next_number(number))

    def next_number(self, number: int) -> int:
        """The number :meth:`publish_as` gives model ``number``: above the last, of the other parity."""
        last = self.published  # comparisons, not max(int(…)): this runs once per update
        number = number if number > last else last + 1
        return number - 1 if (number - last) % 2 == 0 else number


class NumberedSharedSlots(NumberedSlots, SharedSlots):
    """The same on shared memory (same-node pushes are plain stores, shared_slots.py)."""

    def mix_publish_as(self, x: np.ndarray, g: np.ndarray, w_nbrs: np.ndarray, w_self: float, alpha: float,
                       beta: float, number: int) -> bool:
        """:meth:`SharedSlots.mix_publish` of model ``number``, numbered as :meth:`publish_as` does."""
        return self.mix_publish(x, g, w_nbrs, w_self, alpha, beta, self.next_number(number))


def shared_windows_work(comm: MPI.Comm) -> bool:
    """Whether ``Win.Allocate_shared`` works on every rank's node communicator (collective).

    An MPI can see ranks on one node and still have no shared-memory
    one-sided component: Open MPI with ``OMPI_MCA_osc=^sm`` answers
    ``MPI_ERR_INTERN``. "auto" then keeps RMA instead of failing the run.
    """
    node = node_comm(comm)
    ok = True
    try:
        win = MPI.Win.Allocate_shared(8, 8, comm=node)
        win.Free()
    except MPI.Exception:
        ok = False
    finally:
        node.Free()
    return bool(comm.allreduce(ok, op=MPI.LAND))


def slots_class(comm: MPI.Comm, shared_memory: str) -> type[NumberedSlots]:
    """"auto": shared memory when some rank shares its node with another and the MPI can allocate
    shared windows (collective); "off": RMA."""
    if shared_memory == "off":
        return NumberedSlots
    node = node_comm(comm)
    try:
        shared = comm.allreduce(node.Get_size() > 1, op=MPI.LOR)
    finally:
        node.Free()
    return NumberedSharedSlots if shared and shared_windows_work(comm) else NumberedSlots


def delta_class(comm: MPI.Comm, shared_memory: str) -> type[DeltaAccumulator] | type[SharedDeltas]:
    """"auto": per-writer running sums in shared memory when all ranks share one node (collective)."""
    if shared_memory == "off" or not all_on_one_node(comm):
        return DeltaAccumulator
    return SharedDeltas if shared_windows_work(comm) else DeltaAccumulator
