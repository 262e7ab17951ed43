"""A plug-in algorithm and problem, defined in tests/plugins/ and never registered in the package,
run through the MPI engine (and the same config in the simulator, in rank 0).

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_plugins.py -q``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.engines.mpi.runner import run_rank
from hpcasync.engines.mpi.world import SetupError
from hpcasync.engines.sim.runner import build_simulator
from hpcasync.results.reader import open_run
from tests.mpi.conftest import sleeping_barrier
from tests.mpi.test_engine import _all_ok, _config

PLUGINS = str(Path(__file__).resolve().parents[1] / "plugins")
if PLUGINS not in sys.path:  # every rank imports the plug-in when it validates the config
    sys.path.insert(0, PLUGINS)

from hpcasync_toy_plugin import ToyMeans  # noqa: E402

pytestmark = pytest.mark.timeout(120)
TOY = "hpcasync_toy_plugin"
STEPS = 200


@pytest.mark.mpi(min_size=2)
def test_plugin_algorithm_and_problem_on_mpi(out_dir: Path) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": f"{TOY}:ToyGossip", "alpha": 0.05},
                  problem={"name": f"{TOY}:ToyMeans"}, data={"name": "quadratic", "dim": 6},
                  delays={"model": "none"}, budget={"time": 0.0, "gradients": STEPS * n}, eval={"interval": 1e6})
    res = run_rank(cfg, out_dir / "mpi", comm)
    error = None
    if res.agent is None or type(res.agent).__name__ != "ToyGossip" or res.agent.iteration < 1:
        error = f"rank {comm.rank}: the plug-in agent made no update"
    x = None if res.agent is None else np.array(res.agent.model)
    models = [v for v in comm.allgather(x) if v is not None]
    x_star = ToyMeans.from_config(cfg, n).centers.mean(axis=0)  # the optimum; every agent starts at 0
    if error is None and res.evaluations:  # rank 0: it evaluated the average model
        first, last = res.evaluations[0]["train_loss"], res.final["train_loss"]
        gap = float(np.linalg.norm(np.mean(models, axis=0) - x_star) / np.linalg.norm(x_star))
        if not (all(np.all(np.isfinite(m)) for m in models) and last < first and gap < 0.1):
            error = f"mpi: train loss {first} -> {last}, |mean x - x*| / |x*| = {gap:.3g}"
        elif open_run(out_dir / "mpi").algorithm != f"{TOY}:ToyGossip":
            error = "mpi: run.h5 does not record the plug-in's name"
    if comm.rank == 0 and error is None:
        sim = build_simulator(cfg)
        sim.run()
        gap = float(np.linalg.norm(sim.average_model() - x_star) / np.linalg.norm(x_star))
        if not gap < 0.1:
            error = f"sim: |mean x - x*| / |x*| = {gap:.3g}"
    sleeping_barrier(comm)
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
def test_mpi_engine_refuses_a_feature_it_lacks(out_dir: Path) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    cfg = _config(comm.size, algorithm={"name": f"{TOY}:NeedsControlChannel"}, delays={"model": "none"})
    with pytest.raises(SetupError, match=r"needs transport feature\(s\) send_small, which the mpi engine"):
        run_rank(cfg, out_dir / "refused", comm)
