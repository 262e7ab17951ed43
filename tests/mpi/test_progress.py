"""Multi-rank tests of the progress thread and the probe (engines/mpi/progress.py, probe.py).

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_progress.py`` (any size ≥ 2).
Whether an operation *waits* depends on the MPI build and the machine's load, so it is reported,
not asserted; what is asserted holds on every build: nothing is lost, every rank agrees, the
thread sleeps between polls and is gone after ``stop``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.engines.mpi import progress
from hpcasync.engines.mpi.doctor import diagnose, format_report, verdict
from hpcasync.engines.mpi.probe import measure
from hpcasync.engines.mpi.windows import DeltaAccumulator

pytestmark = pytest.mark.mpi(min_size=2)


def _threads_named(name: str) -> int:
    return sum(t.name == name for t in threading.enumerate())


def test_thread_polls_with_sleeps_and_is_joined_by_stop() -> None:
    comm = MPI.COMM_WORLD
    poll = 1e-3
    t0 = time.perf_counter()
    thread = progress.ProgressThread(comm, poll_s=poll)
    assert thread.running
    deadline = time.monotonic() + 30
    while thread.polls < 3 and time.monotonic() < deadline:
        with progress.computing():  # under MPI_THREAD_SERIALIZED the thread polls only meanwhile
            time.sleep(0.01)
    thread.stop()
    elapsed = time.perf_counter() - t0
    assert not thread.running and _threads_named("hpcasync-mpi-progress") == 0
    # Event.wait(poll) between polls: never more polls than sleeps fit in the time (no busy spin)
    assert 3 <= thread.polls <= elapsed / poll + 1
    thread.stop()  # idempotent
    comm.Barrier()


def test_start_modes_agree_on_every_rank() -> None:
    comm = MPI.COMM_WORLD
    assert progress.start("off", comm) is None
    on = progress.start("thread", comm)
    assert on is not None and on.running
    progress.stop(on)
    auto = progress.start("auto", comm)
    started = comm.allgather(auto is not None)
    progress.stop(auto)
    assert len(set(started)) == 1, f"ranks disagree on the probe's verdict: {started}"


def test_accumulates_complete_with_the_thread_running() -> None:
    """The thread's Iprobes must not disturb the engine's RMA: 4 origins' sums arrive exactly."""
    comm = MPI.COMM_WORLD
    r, n, dim, steps = comm.rank, comm.size, 257, 50
    out_nb = [j for j in range(n) if j != r]
    with DeltaAccumulator(comm, dim, out_nb) as acc, progress.ProgressThread(comm, poll_s=1e-4):
        comm.Barrier()
        for step in range(steps):
            for j in out_nb:
                acc.accumulate(j, np.full(dim, float(step + 1)))
        comm.Barrier()
        s = np.zeros(dim)
        acc.drain_into(s)
    assert np.all(s == (n - 1) * steps * (steps + 1) / 2)


@pytest.mark.parametrize("thread", [False, True])
def test_measure_loses_nothing_and_agrees(thread: bool) -> None:
    comm = MPI.COMM_WORLD
    m = measure(comm, sleep_s=0.05, ops=5, dim=513, progress_thread=thread)
    assert m.lost == 0
    assert m.publish_s > 0 and m.accumulate_s > 0 and m.drain_s > 0
    assert len({(x.publish_s, x.accumulate_s, x.drain_s) for x in comm.allgather(m)}) == 1
    assert _threads_named("hpcasync-mpi-progress") == 0


def test_diagnose_reports_a_verdict_and_a_fix() -> None:
    comm = MPI.COMM_WORLD
    d = diagnose(comm, sleep_s=0.05, ops=3, dim=129, config_progress="auto")
    lines = format_report(d)
    assert "\x00" not in "".join(lines)
    assert lines[0].startswith("MPI library:") and lines[-2].startswith("verdict: ")
    assert lines[-1] == "fix: " + verdict(d)[1]
    assert (d.thread is not None) == (MPI.Query_thread() >= MPI.THREAD_SERIALIZED)
