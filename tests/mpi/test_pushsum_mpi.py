"""Push-sum on MPI: Σ_i φ_i = n and Σ_i w_i = Σ_i x_i(0) − Σ applied steps after a real run, and sgp ≡ AllReduce.

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_pushsum_mpi.py``.
The runner drains every accumulator after the closing barrier
(``Algorithm.finish``), so nothing is in flight when the states are gathered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.engines.mpi.runner import run_rank
from tests.mpi.test_engine import _all_ok, _config

pytestmark = pytest.mark.timeout(120)

TOPOLOGIES = {
    "time-varying-exponential": {"name": "time-varying-exponential"},
    "directed-random": {"name": "directed-random", "degree": 2, "seed": 1},
    "ring": {"name": "ring"},
}


def _states(comm: MPI.Comm, res) -> list[dict]:
    return [s for s in comm.allgather(None if res.agent is None else res.agent.state()) if s is not None]


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("algorithm", ["sgp", "osgp", "agp"])
@pytest.mark.parametrize("topology", list(TOPOLOGIES))
@pytest.mark.parametrize("delays", ["none", "case"])
def test_mass_is_conserved_on_mpi(out_dir: Path, algorithm: str, topology: str, delays: str) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": algorithm, "alpha": 0.05, "overlap": 1},
                  topology={**TOPOLOGIES[topology], "n": n},
                  delays={"model": delays, "case": 4, "straggler": 1},
                  budget={"time": 0.0, "gradients": 80 * n}, eval={"interval": 1e6})
    res = run_rank(cfg, out_dir / f"{algorithm}-{topology}-{delays}", comm)
    states = _states(comm, res)
    updates = sum(comm.allgather(res.agent.iteration))
    error = None
    phi = sum(s["phi"] for s in states)
    w = sum(s["w"] for s in states)
    expected = len(states) * res.agent.setup.x0 - sum(s["applied"] for s in states)
    werr = float(np.abs(w - expected).max())
    if abs(phi - n) > 1e-12:
        error = f"Σφ − n = {phi - n:.3g}"
    elif werr > 1e-12 * max(1.0, float(np.abs(expected).max())):
        error = f"max |Σw − (Σx0 − Σ applied)| = {werr:.3g}"
    elif updates < 20 * n:  # all ranks together: one may start late on a loaded machine
        error = f"only {updates} updates in all"
    elif topology == "directed-random" and np.ptp([s["phi"] for s in states]) < 1e-6:
        error = "φ_i all equal on a column- but not row-stochastic graph: the check would be vacuous"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_sgp_on_the_complete_graph_is_allreduce_on_mpi(out_dir: Path) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n = comm.size
    models = {}
    for algorithm in ("sgp", "allreduce"):
        cfg = _config(n, algorithm={"name": algorithm, "alpha": 0.05}, topology={"name": "complete", "n": n},
                      delays={"model": "none"}, budget={"time": 0.0, "gradients": 60 * n},
                      eval={"interval": 1e6})
        res = run_rank(cfg, out_dir / algorithm, comm)
        models[algorithm] = (np.array(res.agent.model), res.agent.iteration)
    (xs, ks), (xa, ka) = models["sgp"], models["allreduce"]
    error = None
    if ks != ka or ks < 50:
        error = f"rounds: sgp {ks}, allreduce {ka}"
    elif not np.allclose(xs, xa, rtol=1e-12, atol=1e-14):
        error = f"max |x_sgp − x_allreduce| = {np.abs(xs - xa).max():.3g}"
    _all_ok(comm, error)
