"""`hpcasync run` under mpiexec: SIGUSR1 (SLURM's --signal) to mpiexec stops the job with a checkpoint per
rank, and `mpiexec … hpcasync run --resume RUN_DIR` completes it with the rows continuing."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np

from hpcasync.results.reader import open_run
from tests.test_mpi_cli import HPCASYNC, MPIEXEC, env, needs_mpiexec, write_config


def _wait_for_rows(out: Path, n: int, rows: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(out.glob("rank-*.h5"))
        try:
            if len(files) == n and all(h5py.File(p, "r", swmr=True)["updates/committed_rows"][()] >= rows
                                       for p in files):
                return
        except (OSError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {rows} rows per rank in {out} after {timeout} s")


@needs_mpiexec
def test_sigusr1_to_mpiexec_then_resume(tmp_path: Path) -> None:
    # DSGD: a checkpointable algorithm; 4 agents and a monitor; long enough to be interrupted
    cfg = write_config(tmp_path / "c.toml", algorithm={"name": "dsgd"}, topology={"name": "ring", "n": 4},
                       budget={"time": 0.0, "gradients": 4 * 4000}, delays={"model": "none"},
                       mpi={"monitor": True, "flush_interval": 0.05}, eval={"interval": 0.2})
    out = tmp_path / "o"
    proc = subprocess.Popen([str(MPIEXEC), "-n", "5", str(HPCASYNC), "run", str(cfg), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        _wait_for_rows(out, 4, 20)
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGUSR1, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("hpcasync")]
    assert len(lines) == 1 and lines[0].startswith("hpcasync run: interrupted by SIGUSR1; files closed"), err
    assert "checkpoint written to" in lines[0] and f"hpcasync run --resume {out}" in lines[0], err
    assert sorted(p.name for p in (out / "checkpoint").glob("*.h5")) == [f"rank-{r:05d}.h5" for r in range(5)]
    cut = {}
    for r in range(4):
        with h5py.File(out / f"rank-{r:05d}.h5", "r") as f:  # closed: opens plainly
            assert not f.attrs["complete"] and f.attrs["interrupted"] == "SIGUSR1"
            cut[r] = int(f["updates/committed_rows"][()])
    assert all(0 < k < 4000 for k in cut.values()) and len(set(cut.values())) == 1  # the same round
    # the same number of ranks is needed
    bad = subprocess.run([str(MPIEXEC), "-n", "4", str(HPCASYNC), "run", "--resume", str(out)],
                         capture_output=True, text=True, timeout=120, env=env())
    assert bad.returncode == 2 and "hpcasync run: error:" in bad.stderr, bad.stderr
    done = subprocess.run([str(MPIEXEC), "-n", "5", str(HPCASYNC), "run", "--resume", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env())
    assert done.returncode == 0, done.stderr
    for r in range(4):
        with h5py.File(out / f"rank-{r:05d}.h5", "r") as f:
            assert f.attrs["complete"] and "interrupted" not in f.attrs and f.attrs["resumes"] == 1
            np.testing.assert_array_equal(f["updates/iteration"][()], np.arange(1, 4001))  # no gap, no duplicate
    assert not list((out / "checkpoint").glob("*.h5"))
    run = open_run(out)
    assert run.complete
    again = subprocess.run([str(MPIEXEC), "-n", "5", str(HPCASYNC), "run", "--resume", str(out)],
                           capture_output=True, text=True, timeout=120, env=env())
    assert again.returncode == 2 and "the run is complete; nothing to resume" in again.stderr, again.stderr
