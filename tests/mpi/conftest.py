"""Multi-rank tests: run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi``.

Without ``--with-mpi`` pytest-mpi skips every ``@pytest.mark.mpi`` test, so a
plain ``pytest tests`` run collects these modules harmlessly (importing
mpi4py initialises a singleton MPI world of size 1).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from mpi4py import MPI

from hpcasync.engines.mpi import progress

# A rank stuck in a collective never returns to Python, so the default
# signal-based timeout could not fire: the thread method dumps the stacks and
# exits the process, and mpiexec then tears the whole job down.
MPI_TEST_TIMEOUT_S = 120


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("mpi") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(MPI_TEST_TIMEOUT_S, method="thread"))


@pytest.fixture(autouse=True)
def _mpi_barrier(request: pytest.FixtureRequest) -> Iterator[None]:
    """Keep the ranks in step: no test's RMA traffic can overlap the next test's."""
    if request.node.get_closest_marker("mpi") is None:
        yield
        return
    MPI.COMM_WORLD.Barrier()
    yield
    MPI.COMM_WORLD.Barrier()


@pytest.fixture
def mpi_progress() -> Callable[[MPI.Comm], AbstractContextManager[progress.ProgressThread | None]]:
    """``with mpi_progress(comm):`` runs what ``HPCASYNC_TEST_PROGRESS`` asks for (``mpi.progress``'s
    values; default "off"), so ``make test-progress`` can show a test failing without the thread and
    passing with it. Enter it after the windows: it stops the thread before they are freed."""
    mode = os.environ.get("HPCASYNC_TEST_PROGRESS", "off")

    @contextmanager
    def run(comm: MPI.Comm) -> Iterator[progress.ProgressThread | None]:
        thread = progress.start(mode, comm)
        try:
            yield thread
        finally:
            progress.stop(thread)

    return run


@pytest.fixture
def out_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """One temporary run directory shared by all ranks (made by rank 0, removed after the test)."""
    comm = MPI.COMM_WORLD
    path = Path(tempfile.mkdtemp(prefix=f"hpcasync-{request.module.__name__.rsplit('.', 1)[-1]}-")) \
        if comm.rank == 0 else None
    path = comm.bcast(path)
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def sleeping_barrier(comm: MPI.Comm) -> None:
    """A barrier that sleeps while it waits: a spinning one would steal the core of a rank that computes."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(1e-3)
