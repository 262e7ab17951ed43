"""Rank layout of an MPI run and the agreement on setup errors (docs/design.md §1 ``engines/mpi``).

Ranks ``0..n-1`` are the agents (workers) of the communication graph, in
graph order. With ``mpi.monitor = true`` the job has one more rank,
``n``: the monitor, which evaluates the average model (``monitor.py``). Any
other size is refused before any communication: every rank knows the size
and the config, so every rank can decide alone, and rank 0 alone prints.

Errors during setup (config, data, output files; windows are not allocated
yet) must not leave the other ranks waiting in a collective: every rank
catches its own error, then :func:`agree` gathers them all and every rank
raises the same :class:`SetupError`, which names the first rank at fault.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mpi4py import MPI

from hpcasync.errors import UserError


class SetupError(UserError):
    """A setup error found on one or more ranks, known to every rank (see :func:`agree`)."""

    def __init__(self, message: str, ranks: list[int]) -> None:
        super().__init__(message)
        self.ranks = ranks


def needed_ranks_message(source: str, n: int, size: int, monitor: bool) -> str | None:
    """The one-line rank-count error, or None when ``size`` ranks fit ``n`` agents.

    The rule: ``mpi.monitor = true`` needs exactly n + 1 ranks, ``false`` exactly n. (n ranks with the
    monitor on used to run without it, silently: the user asked for live evaluations and got two.)
    """
    if size == (n + 1 if monitor else n):
        return None
    if monitor:
        need = (f"needs {n + 1} ranks with mpi.monitor = true ({n} agents + 1 monitor), "
                f"or {n} with --set mpi.monitor=false")
    else:
        need = f"needs {n} ranks (one per agent; mpi.monitor = false)"
    return f"{source} {need}; got {size}"


@dataclass
class World:
    """Who is who in the job.

    ``comm`` spans every rank (workers and monitor); ``workers`` spans the
    agents only (``None`` on the monitor), so the synchronous baselines'
    collectives never involve the monitor.
    """

    comm: MPI.Comm
    workers: MPI.Comm | None
    n: int
    rank: int
    monitor_rank: int | None

    @property
    def is_monitor(self) -> bool:
        return self.monitor_rank is not None and self.rank == self.monitor_rank

    @property
    def has_monitor(self) -> bool:
        return self.monitor_rank is not None

    @property
    def writes_run_file(self) -> bool:
        """The monitor writes run.h5, or rank 0 when there is no monitor."""
        return self.is_monitor or (not self.has_monitor and self.rank == 0)

    def free(self) -> None:
        if self.workers is not None and self.workers != MPI.COMM_NULL:
            self.workers.Free()
        self.workers = None


def make_world(comm: MPI.Comm, n: int) -> World:
    """Split ``comm`` (of size n or n + 1, checked before) into workers and the monitor. Collective."""
    size, rank = comm.Get_size(), comm.Get_rank()
    monitor_rank = n if size == n + 1 else None
    color = 1 if rank == monitor_rank else 0
    workers = comm.Split(color, rank)
    if color == 1:
        workers.Free()
        workers = None
    return World(comm=comm, workers=workers, n=n, rank=rank, monitor_rank=monitor_rank)


def describe(exc: BaseException) -> str:
    """One line for an exception: the UserError text, else ``Type: text``."""
    if isinstance(exc, UserError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def agree(comm: MPI.Comm, error: str | None, what: str | None = None) -> None:
    """Raise the same error on every rank if any rank has an ``error``. Collective.

    The one agreement of the MPI engine: a rank that raised alone would
    leave the others blocked in the next collective (``Win.Allocate``, a
    barrier). Without ``what`` (the setup of a run) every rank raises a
    :class:`SetupError` whose message names the first failing rank
    (``rank 2: data.dir …``); when every rank failed with the same message (a
    config mistake) it is given without a rank, as a single-process command
    would print it. With ``what`` (invalid arguments of a window class, a
    programming error) every rank raises ``ValueError("what: rank r: …; …")``
    naming up to three failing ranks.
    """
    errors = comm.allgather(error)
    bad = [r for r, e in enumerate(errors) if e]
    if not bad:
        return
    if what is not None:
        listed = [f"rank {r}: {errors[r]}" for r in bad]
        more = f" (and {len(bad) - 3} more ranks)" if len(bad) > 3 else ""
        raise ValueError(f"{what}: " + "; ".join(listed[:3]) + more)
    first = errors[bad[0]]
    assert first is not None
    if len(bad) == len(errors) and all(e == first for e in errors):
        raise SetupError(first, bad)
    more = f" (and {len(bad) - 1} more rank{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
    raise SetupError(f"rank {bad[0]}: {first}{more}", bad)


def config_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_config(comm: MPI.Comm, toml_text: str) -> str | None:
    """An error message on the ranks whose config differs from rank 0's (MPMD launches may differ)."""
    digests = comm.allgather(config_digest(toml_text))
    if digests[comm.Get_rank()] != digests[0]:
        return ("its config differs from rank 0's (after --set overrides): every rank must run "
                "the same experiment")
    return None
