"""Prague on MPI: a run with a 10× straggler spends its budget, and every Partial All-Reduce was completed by
exactly its members, each leaving with the same model (the group generator's window, engines/mpi/groups.py).

Run: ``mpiexec -n 6 python -m pytest --with-mpi tests/mpi/test_prague_mpi.py -q`` (any size ≥ 3).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from mpi4py import MPI

from hpcasync.engines.mpi.groups import GroupWindow
from hpcasync.engines.mpi.runner import run_rank
from tests.mpi.test_engine import _all_ok, _config

pytestmark = pytest.mark.timeout(180)
BUDGET_S = 2.0


@pytest.mark.mpi(min_size=3)
@pytest.mark.parametrize("size", [2, 3])
def test_groups_are_completed_by_exactly_their_members(out_dir: Path, size: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GroupWindow, "checksums", True)
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": "prague", "alpha": 0.05, "group_size": size},
                  delays={"model": "case", "case": 3, "straggler": n - 1, "slowdown": 10.0},
                  budget={"time": BUDGET_S}, eval={"interval": 1e6}, mpi={"time_unit": 0.002})
    res = run_rank(cfg, out_dir / f"mpi-{size}", comm)
    groups = res.transport.groups
    error = None
    if res.wall_s < BUDGET_S - 0.05:
        error = f"stopped after {res.wall_s:.2f} s of a {BUDGET_S} s budget"
    elif not groups.closed:
        error = "the group window was not freed"
    elif groups.current is not None:
        error = f"left group {groups.current} unfinished"
    elif not groups.log:
        error = "averaged in no group"
    logs = comm.allgather(groups.log)
    if error is None and comm.rank == 0:
        seen: dict[int, list[tuple[int, tuple[int, ...], float]]] = defaultdict(list)
        for rank, log in enumerate(logs):
            for gid, members, total in log:
                seen[gid].append((rank, members, total))
        for gid, entries in seen.items():
            ranks = sorted(r for r, _, _ in entries)
            members = entries[0][1]
            if ranks != list(members) or any(e[1] != members for e in entries):
                error = f"group {gid}: members {members}, completed by {ranks}"
            elif len({e[2] for e in entries}) != 1:
                error = f"group {gid}: members left with different models (sums {[e[2] for e in entries]})"
            elif not 2 <= len(members) <= size:
                error = f"group {gid} has {len(members)} members, expected 2..{size}"
            if error:
                break
    _all_ok(comm, error)
