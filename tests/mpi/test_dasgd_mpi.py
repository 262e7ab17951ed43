"""DASGD on MPI (flooded gradients over two-sided messages, engines/mpi/messages.py): every gradient is
applied exactly once at every rank and all models end equal; the staleness bound holds under a 100×
straggler; the channel leaves no message in flight.

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_dasgd_mpi.py -q``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.algorithms.dasgd import DASGD
from hpcasync.engines.mpi.runner import run_rank
from tests.mpi.test_engine import _all_ok, _config

pytestmark = pytest.mark.timeout(120)


class CountingDASGD(DASGD):
    """DASGD that counts how often each (origin, seq) is applied to its model (own gradients included)."""

    name = ""

    def __init__(self, setup) -> None:
        super().__init__(setup)
        self.counts: dict[tuple[int, int], int] = {}

    def apply(self, items) -> None:
        for o, s, _ in items:
            self.counts[(o, s)] = self.counts.get((o, s), 0) + 1
        super().apply(items)


def _check_complete(comm: MPI.Comm, agent: CountingDASGD | DASGD, transport) -> str | None:
    iters = np.array(comm.allgather(agent.iteration))
    if (agent.clock != iters).any():
        return f"clock {agent.clock.tolist()} != every rank's count {iters.tolist()}"
    ch = transport.flood_channel
    if ch.cancelled:
        return f"{ch.cancelled} sends still pending when the channel was freed"
    if ch.left_in_flight:
        return "a message was still in flight when the channel was freed"
    return None


@pytest.mark.mpi(min_size=4)
def test_every_gradient_applied_once_and_models_equal(out_dir: Path) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": "tests.mpi.test_dasgd_mpi:CountingDASGD", "alpha": 0.05,
                                "max_staleness": 0},
                  delays={"model": "none"}, budget={"time": 0.0, "gradients": 200 * n}, eval={"interval": 1e6})
    res = run_rank(cfg, out_dir / "mpi", comm)
    agent = res.agent
    error = _check_complete(comm, agent, res.transport)
    if error is None:
        for s in range(1, agent.iteration + 1):  # own gradients: applied at once, in run()
            agent.counts.setdefault((agent.rank, s), 1)
        iters = comm.allgather(agent.iteration)
        everything = {(o, s) for o in range(n) for s in range(1, iters[o] + 1)}
        if set(agent.counts) != everything:
            error = f"applied {len(agent.counts)} of {len(everything)} gradients"
        elif set(agent.counts.values()) != {1}:
            error = "a gradient was applied twice"
    models = comm.allgather(np.array(agent.x))
    if error is None and not all(np.allclose(m, models[0], rtol=1e-10, atol=1e-12) for m in models):
        error = "final models differ"
    if error is None and np.linalg.norm(models[0] - res.agent.setup.x0) < 1e-3:
        error = "the models did not move"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_staleness_bound_under_a_100x_straggler(out_dir: Path) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n, bound = comm.size, 3
    cfg = _config(n, algorithm={"name": "dasgd", "alpha": 0.05, "max_staleness": bound},
                  delays={"model": "case", "case": 3, "straggler": n - 1, "slowdown": 100.0},
                  budget={"time": 1.5}, eval={"interval": 1e6}, mpi={"time_unit": 0.001})
    res = run_rank(cfg, out_dir / "mpi", comm)
    agent = res.agent
    error = _check_complete(comm, agent, res.transport)
    iters = comm.allgather(agent.iteration)
    if error is None and max(iters) - min(iters) > bound:
        error = f"update counts {iters} spread more than the bound {bound}"
    if error is None and iters[n - 1] < 2:
        error = f"the straggler made {iters[n - 1]} updates"
    if error is None and comm.rank == 0 and agent.waits == 0:
        error = "the bound never held rank 0 back"
    models = comm.allgather(np.array(agent.x))
    if error is None and not all(np.allclose(m, models[0], rtol=1e-10, atol=1e-12) for m in models):
        error = "final models differ"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("monitor", [True, False])
def test_pairwise_staleness_columns_in_run_h5(out_dir: Path, monitor: bool) -> None:  # noqa: F811
    """S_avg / S_max reach run.h5 (the monitor reads every worker's vector clock; without a monitor rank 0
    gathers them at the end): finite, S_max ≥ S_avg, and 0 at the final evaluation, which follows
    finish() (every gradient applied everywhere, so every clock equal)."""
    from hpcasync.results.reader import open_run

    comm = MPI.COMM_WORLD
    workers = comm.size - 1 if monitor else comm.size
    cfg = _config(workers, algorithm={"name": "dasgd", "alpha": 0.05, "max_staleness": 0},
                  delays={"model": "case", "case": 3, "straggler": workers - 1},
                  budget={"time": 1.0}, eval={"interval": 0.1}, mpi={"time_unit": 0.002, "monitor": monitor})
    out = out_dir / f"mpi-{monitor}"
    res = run_rank(cfg, out, comm)
    error = None
    if comm.rank == 0:
        ev = open_run(out).evaluations
        avg, mx = ev["staleness_avg"], ev["staleness_max"]
        if not (np.isfinite(avg).all() and np.isfinite(mx).all()):
            error = f"non-finite pairwise staleness {avg.tolist()}"
        elif (mx < avg).any():
            error = f"S_max < S_avg: {mx.tolist()} {avg.tolist()}"
        elif (avg[-1], mx[-1]) != (0.0, 0.0):
            error = f"final S_avg/S_max {avg[-1]}/{mx[-1]}, expected 0 after finish()"
        elif monitor and (len(avg) < 4 or mx.max() <= 0):
            error = f"{len(avg)} evaluations, S_max {mx.tolist()}: the monitor saw no staleness"
    del res
    _all_ok(comm, error)
