"""ASBCD on MPI: only the owner moves its block, and relayed copies are exact copies of the owner's.

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_asbcd_mpi.py -q``. The zero-delay equivalence
with Jacobi block descent is a simulator test (tests/test_asbcd.py): on MPI the interleaving of reads
and pushes is not deterministic, so iterates cannot be compared one for one; these invariants hold
whatever the interleaving.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.engines.mpi.runner import run_rank
from tests.mpi.test_engine import _all_ok, _config

pytestmark = pytest.mark.timeout(120)


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("topology", ["complete", "ring"])
def test_blocks_are_owned_and_copied_exactly(out_dir: Path, topology: str) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": "asbcd", "alpha": 0.5}, topology={"name": topology, "n": n},
                  delays={"model": "none"}, budget={"time": 0.0, "gradients": 100 * n}, eval={"interval": 1e6})
    res = run_rank(cfg, out_dir / topology, comm)
    agent = res.agent
    xs = comm.allgather(np.array(agent.x))
    vs = comm.allgather(np.array(agent.versions))
    iters = comm.allgather(agent.iteration)
    b = agent.bounds
    error = None
    for i in range(n):
        for blk in range(n):
            if vs[i][blk] > iters[blk]:
                error = f"rank {i} holds block {blk} at version {vs[i][blk]} > its owner's {iters[blk]}"
            elif vs[i][blk] == iters[blk] and not np.array_equal(xs[i][b[blk]:b[blk + 1]], xs[blk][b[blk]:b[blk + 1]]):
                error = f"rank {i}'s copy of block {blk} (version {iters[blk]}) differs from its owner's"
        if vs[i][i] != iters[i]:
            error = f"rank {i}'s own block is at version {vs[i][i]}, it made {iters[i]} updates"
    if error is None and min(iters) < 1:
        error = f"updates {iters}"
    if error is None and topology == "complete" and sum(v[blk] > 0 for v in vs for blk in range(n)) <= n:
        error = "no block of another rank was ever received"
    _all_ok(comm, error)
