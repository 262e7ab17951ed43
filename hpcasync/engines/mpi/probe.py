"""Does a one-sided operation wait for a target that computes without calling MPI?

:func:`measure` answers it with the engine's own windows (``ModelSlots`` for
Alg. 2's publishes, ``DeltaAccumulator`` for Alg. 3's accumulates and
drains), so it measures exactly the operations of a run. Ranks pair up in
two phases (:func:`probe_pairs`): in each, the ranks of one parity "compute"
(sleep ``sleep_s`` without an MPI call) while every other rank pushes
``ops`` publishes and ``ops`` accumulates into its neighbours among them; then the roles
swap for the drain: the targets read their newest model and drain their
accumulator ``ops`` times while their origins sleep. On a library with
asynchronous progress each operation takes microseconds; without it the
first one waits until the target's next MPI call, i.e. the rest of its sleep.

Every rank returns the same :class:`Measurement` (maxima over the job), and
also checks what arrived: the last model published and the exact sum of the
accumulates, so a probe that "completes" by losing data would show as lost.

Used by ``mpi.progress = "auto"`` (one short measurement at start-up) and
by ``hpcasync doctor`` (with and without the progress thread).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

#: an operation taking longer than this fraction of the target's sleep waited for it
WAIT_FRACTION = 0.25


@dataclass
class Measurement:
    """Slowest per-operation times over the job (seconds), and whether every value arrived."""

    publish_s: float  # the slowest single publish
    accumulate_s: float  # the slowest single accumulate
    drain_s: float  # the slowest single read + drain at a target whose origins compute
    push_total_s: float  # all of one origin's pushes, slowest origin
    sleep_s: float
    ops: int
    lost: int  # ranks on which the last model or the accumulated sum was wrong
    progress_thread: bool

    @property
    def limit_s(self) -> float:
        return WAIT_FRACTION * self.sleep_s

    @property
    def publish_waits(self) -> bool:
        return self.publish_s > self.limit_s

    @property
    def accumulate_waits(self) -> bool:
        return self.accumulate_s > self.limit_s

    @property
    def drain_waits(self) -> bool:
        return self.drain_s > self.limit_s

    @property
    def waits(self) -> bool:
        return self.publish_waits or self.accumulate_waits or self.drain_waits


def probe_pairs(size: int, phase: int) -> dict[int, list[int]]:
    """origin → targets in one phase: the ranks of parity ``phase`` are targets, the others push into
    their neighbours r − 1 and r + 1. Every target has an origin (size ≥ 2); two phases cover every rank."""
    return {r: [t for t in (r - 1, r + 1) if 0 <= t < size] for r in range(size) if r % 2 != phase}


def measure(comm: MPI.Comm, sleep_s: float = 0.5, ops: int = 20, dim: int = 10_000,
            progress_thread: bool = False, drains: bool = True) -> Measurement:
    """Collective over ``comm`` (size ≥ 2): the two-phase measurement described in the module docstring.

    With ``progress_thread`` a :class:`~hpcasync.engines.mpi.progress.ProgressThread` runs on every
    rank while the windows exist; it is stopped before they are freed, whatever happens.
    Without ``drains`` the drain half is skipped (half the time; ``drain_s`` is then 0).
    """
    from hpcasync.engines.mpi.progress import ProgressThread, computing
    from hpcasync.engines.mpi.windows import DeltaAccumulator, ModelSlots

    size, rank = comm.Get_size(), comm.Get_rank()
    if size < 2:
        raise ValueError("the probe needs at least 2 ranks")
    worst = np.zeros(4)  # publish, accumulate, drain, push total
    lost = 0
    for phase in (0, 1):
        pairs = probe_pairs(size, phase)
        out_nb = pairs.get(rank, [])
        sources = [o for o, targets in pairs.items() if rank in targets]
        # one ModelSlots publish reaches every target: its time is the slowest target's
        with ModelSlots(comm, dim, sources, out_nb) as slots, DeltaAccumulator(comm, dim, out_nb) as acc:
            progress = ProgressThread(comm) if progress_thread else None
            try:
                x = np.zeros(dim)
                # pushes: targets compute, origins publish and accumulate
                comm.Barrier()
                if not out_nb:
                    with computing():  # no MPI call at all
                        time.sleep(sleep_s)
                else:
                    t_start = time.perf_counter()
                    for u in range(1, ops + 1):
                        x.fill(float(u))
                        t0 = time.perf_counter()
                        slots.publish(x)
                        t1 = time.perf_counter()
                        for target in out_nb:
                            acc.accumulate(target, x)
                        t2 = time.perf_counter()
                        worst[:2] = np.maximum(worst[:2], [t1 - t0, t2 - t1])
                    worst[3] = max(worst[3], time.perf_counter() - t_start)
                # drains: origins compute, targets read and drain
                comm.Barrier()
                if not drains:
                    pass
                elif sources:
                    model, s = np.empty(dim), np.zeros(dim)
                    for _ in range(ops):
                        t0 = time.perf_counter()
                        versions = [slots.read(j, model) for j in sources]
                        acc.drain_into(s)
                        worst[2] = max(worst[2], time.perf_counter() - t0)
                    expected = len(sources) * ops * (ops + 1) / 2
                    if any(v != ops for v in versions) or not np.all(model == float(ops)) or \
                            not np.allclose(s, expected, rtol=1e-12):
                        lost += 1
                else:
                    with computing():
                        time.sleep(sleep_s)
                comm.Barrier()
            finally:
                if progress is not None:
                    progress.stop()
    total = np.empty(4)
    comm.Allreduce(worst, total, op=MPI.MAX)
    lost = comm.allreduce(lost)
    return Measurement(publish_s=float(total[0]), accumulate_s=float(total[1]), drain_s=float(total[2]),
                       push_total_s=float(total[3]), sleep_s=sleep_s, ops=ops, lost=lost,
                       progress_thread=progress_thread)


__all__ = ["WAIT_FRACTION", "Measurement", "measure", "probe_pairs"]
