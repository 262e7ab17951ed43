"""A torch CNN on MPI, end to end: ``mpiexec -n 5 hpcasync run`` (4 workers + the monitor) trains the
digits CNN in float32; the monitor's loss of the average model falls; the files hold float32 models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (make install-torch: pip install torch==2.13.0)")

from hpcasync.results.reader import open_run  # noqa: E402
from tests.test_mpi_cli import mpirun, needs_mpiexec, write_config  # noqa: E402


@needs_mpiexec
@pytest.mark.parametrize("algorithm", ["adsgd"])  # Alg. 3 in float32 on MPI: tests/mpi/test_float32.py
def test_cnn_on_four_workers_and_a_monitor_trains(tmp_path: Path, algorithm: str) -> None:
    cfg = write_config(tmp_path / "cnn.toml", algorithm={"name": algorithm, "alpha": 0.3, "batch_size": 32},
                       problem={"name": "torch", "model": "cnn"}, delays={"case": 1, "straggler": 0},
                       budget={"time": 0.0, "gradients": 600}, eval={"interval": 0.5},
                       mpi={"time_unit": 0.002, "monitor": True, "flush_interval": 0.5})
    out = tmp_path / "run"
    proc = mpirun(5, str(cfg), "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = open_run(out)
    assert run.complete and run.n_agents == 4
    loss = run.evaluations["train_loss"]
    assert len(loss) >= 2 and np.all(np.isfinite(loss))
    assert loss[-1] < 0.85 * loss[0], f"loss of the average model {loss[0]:.3f} -> {loss[-1]:.3f}"
    assert run.evaluations["gradients"][-1] >= 550  # the job-wide budget of 600, give or take the last round
    for a in run.agents():
        assert a["final_model"].dtype == np.float32 and a["status"] == "complete"
