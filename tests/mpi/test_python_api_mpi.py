"""``hpcasync.run`` inside ``mpiexec -n N python …``: every rank calls it with a config dict.

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_python_api_mpi.py -q``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import hpcasync
from tests.mpi.test_engine import _all_ok

pytestmark = pytest.mark.timeout(120)


@pytest.mark.mpi(min_size=2)
def test_run_from_python(out_dir: Path) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = {"run": {"seed": 2}, "algorithm": {"name": "adsgd", "alpha": 0.05, "batch_size": 16},
           "topology": {"name": "ring", "n": n}, "data": {"name": "digits"}, "delays": {"model": "none"},
           "budget": {"time": 0.0, "gradients": 100 * n}, "eval": {"interval": 1e6},
           "mpi": {"monitor": False, "flush_interval": 0.2}}
    res = hpcasync.run(cfg, out=out_dir / "api")
    error = None
    if res.engine != "mpi" or res.agents != [comm.rank] or res.models.shape != (1, 650):
        error = f"unexpected result: agents {res.agents}, models {res.models.shape}"
    elif comm.rank == 0 and not len(res.evaluations["train_loss"]) >= 1:
        error = "rank 0 evaluated nothing"
    models = comm.allgather(res.models[0])
    comm.Barrier()
    if error is None and comm.rank == 0:
        run = hpcasync.open_run(out_dir / "api")
        if not (run.engine == "mpi" and run.complete and np.array_equal(run.final_models(), np.stack(models))):
            error = "open_run does not give back the final models"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=3)
def test_run_with_a_monitor_rank(out_dir: Path) -> None:  # noqa: F811
    comm = MPI.COMM_WORLD
    n = comm.size - 1
    cfg = {"algorithm": {"name": "adsgd", "batch_size": 16}, "topology": {"name": "ring", "n": n},
           "delays": {"model": "none"}, "budget": {"time": 0.0, "gradients": 50 * n}, "eval": {"interval": 0.05},
           "mpi": {"monitor": True, "flush_interval": 0.2}}
    res = hpcasync.run(cfg, out=out_dir / "monitored")
    error = None
    monitor = comm.rank == n
    if monitor and not (res.agents == [] and res.models.shape == (0, 0) and len(res.evaluations["gradients"]) >= 2):
        error = f"monitor: agents {res.agents}, models {res.models.shape}, {len(res.evaluations['gradients'])} evals"
    if not monitor and res.agents != [comm.rank]:
        error = f"worker: agents {res.agents}"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
def test_a_config_error_is_raised_on_every_rank(out_dir: Path) -> None:  # noqa: F811
    bad = {"algorithm": {"alpha": -1.0}, "topology": {"name": "ring", "n": MPI.COMM_WORLD.size}}
    with pytest.raises(hpcasync.UserError, match="algorithm.alpha"):
        hpcasync.run(bad, out=out_dir / "bad")
