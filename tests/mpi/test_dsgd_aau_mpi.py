"""DSGD-AAU on MPI: a run with a 10× computation straggler finishes its time budget (no deadlock), every
rank keeps updating, and the edge announcements leave no message in flight.

Run: ``mpiexec -n 16 python -m pytest --with-mpi tests/mpi/test_dsgd_aau_mpi.py -q`` (any size ≥ 4).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mpi4py import MPI

from hpcasync.engines.mpi.runner import run_rank
from tests.mpi.test_engine import _all_ok, _config

pytestmark = pytest.mark.timeout(180)
BUDGET_S = 3.0


@pytest.mark.mpi(min_size=4)
def test_straggler_run_finishes_its_budget(out_dir: Path) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": "dsgd-aau", "alpha": 0.05},
                  topology={"name": "random", "n": n, "degree": 3, "seed": 1},
                  delays={"model": "case", "case": 3, "straggler": n - 1, "slowdown": 10.0},
                  budget={"time": BUDGET_S}, eval={"interval": 1e6}, mpi={"time_unit": 0.002})
    t0 = time.perf_counter()
    res = run_rank(cfg, out_dir / "mpi", comm)
    wall = time.perf_counter() - t0
    agent, ch = res.agent, res.transport.flood_channel
    error = None
    if res.wall_s < BUDGET_S - 0.05:
        error = f"stopped after {res.wall_s:.2f} s of a {BUDGET_S} s budget"
    elif agent.iteration < 1:
        error = "made no update"
    elif ch.cancelled or ch.left_in_flight:
        error = f"{ch.cancelled} sends pending, in flight: {ch.left_in_flight} when the channel was freed"
    elif wall > BUDGET_S + 60:
        error = f"took {wall:.0f} s"
    iters = comm.allgather(agent.iteration)
    resets = comm.allgather(agent.path.resets)
    if error is None and comm.rank == 0 and max(resets) == 0:
        error = f"no epoch completed (updates {iters})"
    _all_ok(comm, error)
