"""Multi-rank tests: run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi``.

Without ``--with-mpi`` pytest-mpi skips every ``@pytest.mark.mpi`` test, so a
plain ``pytest tests`` run collects these modules harmlessly (importing
mpi4py initialises a singleton MPI world of size 1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mpi4py import MPI

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
