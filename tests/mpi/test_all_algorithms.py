"""Every algorithm runs on both engines: a short MPI run and the same config in the simulator.

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi -q``. The MPI run
uses every rank (a ring of ``size`` agents; with an odd size, ``size − 1``
agents and the monitor, since AD-PSGD needs a bipartite ring). The
simulator runs the same config inside rank 0 while the other ranks wait in
a sleeping barrier (a spinning one would steal rank 0's core on an
oversubscribed machine). A gradient budget means the same in both engines.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync import algorithms
from hpcasync.engines.mpi.runner import run_rank
from hpcasync.engines.sim.runner import build_simulator
from tests.mpi.conftest import sleeping_barrier
from tests.mpi.test_engine import _all_ok, _config

pytestmark = pytest.mark.timeout(120)

#: every registered algorithm (a new module is tested here without editing this file)
ALGORITHMS = algorithms.names()
#: gradients per agent
STEPS = 300
#: every gradient takes 1 time unit (2 ms) on both engines. Flat out (20 µs gradients) on an oversubscribed
#: machine the OS runs ranks in bursts of ~100 updates while their neighbours sleep; an asynchronous method then
#: contracts towards its stale neighbours' models within each burst and a fixed gradient budget buys far less
#: progress (measured: adsgd-delta under Open MPI's osc sm, loss 2.30 -> 2.24 flat out, 2.30 -> 0.90 when the
#: ranks interleave) -- the algorithm's true behaviour, but a scheduling lottery for a test of correctness.
PACED = {"model": "constant", "compute_mean": 1.0, "comm_mean": 0.1}
#: RFAST runs without its α/n here (as in test_baselines.py) and at a larger α: its tracking moves the
#: average model slowly, and under an oversubscribed, loaded machine a 3 % loss drop at α = 0.05 was
#: flaky (the simulator gives a 26–47 % drop at α = 0.2 in 1200 gradients)
ALPHA = {"rfast": 0.2}




def _check(engine: str, first: float, last: float, models: list[np.ndarray]) -> str | None:
    if not all(np.all(np.isfinite(x)) for x in models):
        return f"{engine}: non-finite final models"
    if not (math.isfinite(first) and math.isfinite(last)):
        return f"{engine}: train loss {first} -> {last}"
    if not last < 0.97 * first:
        return f"{engine}: the train loss of the average model did not decrease: {first:.4f} -> {last:.4f}"
    return None


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_runs_on_both_engines(out_dir: Path, algorithm: str) -> None:
    comm = MPI.COMM_WORLD
    n = comm.size if comm.size % 2 == 0 else comm.size - 1
    cfg = _config(n, algorithm={"name": algorithm, "alpha": ALPHA.get(algorithm, 0.05),
                                              "scale_alpha_by_n": False}, delays=PACED,
                  budget={"time": 0.0, "gradients": STEPS * n}, eval={"interval": 1e6},
                  mpi={"monitor": n != comm.size})
    # -- MPI ---------------------------------------------------------------------------------------
    res = run_rank(cfg, out_dir / "mpi", comm)
    x = None if res.agent is None else np.array(res.agent.model)
    models = [v for v in comm.allgather(x) if v is not None]
    error = None
    if res.evaluations:  # the rank that evaluated the average model (rank 0 or the monitor)
        error = _check("mpi", res.evaluations[0]["train_loss"], res.final["train_loss"], models)
        # a rank that finds the budget spent does not compute the gradient it counted: up to n short
        if error is None and not STEPS * n - n <= res.gradients <= 3 * STEPS * n:
            error = f"mpi: {res.gradients} gradients for a budget of {STEPS * n}"
    if res.agent is not None and error is None and res.agent.iteration < 1:
        error = f"mpi: rank {comm.rank} made no update"
    # -- the simulator, in rank 0 -------------------------------------------------------------------
    if comm.rank == 0 and error is None:
        sim = build_simulator(cfg)
        sim.run()
        ev = sim.evaluations
        error = _check("sim", ev[0]["train_loss"], ev[-1]["train_loss"], [a.model for a in sim.agents])
        if error is None and sim.gradients < STEPS * n:
            error = f"sim: {sim.gradients} gradients for a budget of {STEPS * n}"
    sleeping_barrier(comm)
    _all_ok(comm, error)
