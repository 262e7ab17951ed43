"""Threads per rank for numba and BLAS (docs/design.md §5: the cores per rank, 1 when oversubscribed).

The count comes from, in order: ``SLURM_CPUS_PER_TASK`` (what ``srun -c``
gave each task), ``OMP_NUM_THREADS`` (what the user asked for), else the
node's cores divided by the ranks on this node; never more than that share
(nor than the rank's affinity mask). When the ranks on the node already fill
or outnumber its cores each rank gets one thread: more would only make them
preempt each other.

:func:`configure` applies it with ``numba.set_num_threads`` (capped by
``NUMBA_NUM_THREADS``, which numba reads once at import) and
``threadpoolctl.threadpool_limits`` (OpenBLAS/MKL/OpenMP pools), and torch's intra-op pool
with ``torch.set_num_threads`` — at once if torch is already imported, else when the torch problem
is built (:func:`configure_torch`); this module never imports torch itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

_ENV_SOURCES = ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS")

# threadpoolctl's limiter must stay alive for the limit to hold.
_limiter: Any = None
# What configure() chose for this rank (None: not called, e.g. in the simulator).
_chosen: int | None = None


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def node_cpus() -> int:
    return max(1, os.cpu_count() or 1)


def _positive_int(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = int(text.strip().split(",")[0].split("(")[0])
    except ValueError:
        return None
    return value if value >= 1 else None


def threads_per_rank(local_ranks: int, env: Mapping[str, str] | None = None,
                     cpus: int | None = None, affinity: int | None = None) -> tuple[int, str]:
    """(threads, where the number came from) for one of ``local_ranks`` ranks on this node."""
    env = os.environ if env is None else env
    cpus = node_cpus() if cpus is None else cpus
    affinity = usable_cpus() if affinity is None else affinity
    local_ranks = max(1, local_ranks)
    if local_ranks >= cpus:
        return 1, f"{local_ranks} ranks on {cpus} cores (oversubscribed or full)"
    for name in _ENV_SOURCES:
        value = _positive_int(env.get(name))
        if value is not None:
            share = max(1, cpus // local_ranks)
            if value > share:
                return min(share, affinity), f"{name}={env[name]} capped to {cpus} cores / {local_ranks} ranks"
            return min(value, affinity), name
    return max(1, min(affinity, cpus // local_ranks)), f"{cpus} cores / {local_ranks} ranks"


def configure(local_ranks: int, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Set numba's and the BLAS pools' thread counts for this rank; returns (threads, source)."""
    global _limiter, _chosen
    threads, source = threads_per_rank(local_ranks, env)
    _chosen = threads
    if "torch" in sys.modules:
        configure_torch()
    try:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    except (ImportError, ValueError):
        pass
    try:
        from threadpoolctl import threadpool_limits

        _limiter = threadpool_limits(limits=threads)
    except ImportError:
        pass
    return threads, source


def configure_torch() -> int:
    """``torch.set_num_threads`` to this rank's count (one process on the node when configure() was not called)."""
    import torch

    threads = _chosen if _chosen is not None else threads_per_rank(1)[0]
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
