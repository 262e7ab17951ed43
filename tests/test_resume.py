"""Preemption and resume in the simulator: an interrupted run, resumed from its checkpoint, is the
uninterrupted run bit for bit (models, rows, evaluations), and bad resumes are refused with one line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcasync import algorithms
from hpcasync.cli.main import main
from hpcasync.engines.sim.checkpoint import capture
from hpcasync.engines.sim.runner import simulate
from hpcasync.errors import UserError
from hpcasync.results import checkpoint
from hpcasync.results.reader import open_run
from hpcasync.results.schema import EVALUATION_NAMES, UPDATE_NAMES
from tests.conftest import make_config

#: every column but the wall clock must match exactly
UPDATE_COLS = [c for c in UPDATE_NAMES if c != "wall_time"]
EVAL_COLS = [c for c in EVALUATION_NAMES if c != "wall_time"]


def config(name: str, **sections):
    sections = {"algorithm": {"name": name}, "budget": {"time": 12.0}, "eval": {"interval": 3.0}, **sections}
    return make_config(**sections)


def read_run(out: Path) -> dict:
    with h5py.File(out / "run.h5", "r") as f:
        res = {"complete": bool(f.attrs["complete"]),
               "evals": np.stack([f["evaluations"][c][()] for c in EVAL_COLS], axis=1),
               "summary": {k: f["summary"].attrs.get(k) for k in ("virtual_time", "gradients", "events")}}
    models, rows, flags, server = [], [], [], []
    for p in sorted(out.glob("rank-*.h5")):
        with h5py.File(p, "r") as f:
            if "final/model" in f:
                models.append(f["final/model"][()])
            if "server_steps" in f:  # a parameter server's steps of this worker: (k, τ, virtual time)
                steps = f["server_steps"]
                server.append(np.stack([steps[c][()] for c in ("step", "tau", "virtual_time")], axis=1))
            rows.append(np.stack([f["updates"][c][()] for c in UPDATE_COLS], axis=1))
            flags.append((bool(f.attrs["complete"]), "interrupted" in f.attrs))
    return {**res, "models": np.stack(models) if models else None, "rows": rows, "flags": flags,
            "server": server}


def assert_same(a: dict, b: dict) -> None:
    assert np.array_equal(a["models"], b["models"])  # bit for bit
    assert len(a["rows"]) == len(b["rows"])
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        np.testing.assert_array_equal(ra, rb)  # no gap, no duplicate, same values
    np.testing.assert_array_equal(a["evals"], b["evals"])
    assert len(a["server"]) == len(b["server"])
    for sa, sb in zip(a["server"], b["server"], strict=True):
        np.testing.assert_array_equal(sa, sb)
    assert a["summary"] == b["summary"]


RESUMABLE = [n for n in algorithms.names() if algorithms.get(n).resumable]


@pytest.mark.parametrize("case", [1, 5])
@pytest.mark.parametrize("name", RESUMABLE)
def test_interrupt_and_resume_is_the_uninterrupted_run(name: str, case: int, tmp_path: Path) -> None:
    slow = case == 5 and algorithms.get(name).synchronous  # a round waits for the straggler
    cfg = config(name, delays={"case": case}, budget={"time": 60.0 if slow else 12.0})
    full = simulate(cfg, tmp_path / "full")
    ref = read_run(tmp_path / "full")
    assert ref["complete"] and full.events > 30 and full.gradients >= 3 * 9
    for at in (1, full.events // 3):
        out = tmp_path / f"cut{at}"
        sim = simulate(cfg, out, interrupt_at_events=at)
        assert sim.interrupted == "interrupt_at_events" and sim.events == at
        part = read_run(out)
        assert not part["complete"] and all(f == (False, True) for f in part["flags"])
        with h5py.File(out / "rank-00000.h5", "r") as f:  # the end-of-run pieces are not there yet
            assert "final/model" not in f and "timings" not in f
        simulate(cfg, out, resume=True)
        got = read_run(out)
        assert got["complete"] and all(f == (True, False) for f in got["flags"])
        assert_same(got, ref)
        assert not (out / "checkpoint" / "sim.h5").exists()


#: algorithms whose loops block in more than their gradient: (config, the op a cut must catch)
BLOCKING = {"dasgd": ({"max_staleness": 2}, "WaitFlooded"), "dsgd-aau": ({}, "WaitArrival"),
            "prague": ({"group_size": 3}, "GroupAverage"), "asbcd": ({}, "Settle"),
            "osgp": ({"overlap": 1}, "AwaitDeltas"), "sgp": ({}, "NeighborExchange"),
            "minibatch-sgd": ({}, "AllreduceMean"), "async-sgd": ({}, "ServerStep")}


@pytest.mark.parametrize("name", sorted(BLOCKING))
def test_resume_inside_a_blocking_op_is_the_uninterrupted_run(name: str, tmp_path: Path) -> None:
    """Cut while agents wait in their algorithm's own blocking op (DASGD's staleness bound, Pathsearch,
    a pending Prague group, ASBCD's read, OSGP's bound on outstanding rounds, a push-sum exchange, a
    minibatch round, a parameter server's step): the flood, the groups, the blocked set and the loop's
    phase come back."""
    section, op = BLOCKING[name]
    cfg = config(name, algorithm={"name": name, **section}, delays={"case": 5}, budget={"time": 30.0})
    full = simulate(cfg, tmp_path / "full")
    ref = read_run(tmp_path / "full")
    caught = []
    for at in (full.events // 7, full.events // 5, full.events // 3, full.events // 2):
        out = tmp_path / f"cut{at}"
        simulate(cfg, out, interrupt_at_events=at)
        _, state = checkpoint.read(out / "checkpoint" / "sim.h5")
        caught.append(state["ops"].count(op))
        simulate(cfg, out, resume=True)
        assert_same(read_run(out), ref)
    assert sum(caught) > 0, f"no cut caught an agent in {op}: {caught}"


def test_two_interruptions(tmp_path: Path) -> None:
    cfg = config("adsgd-delta", delays={"case": 2})
    events = simulate(cfg, tmp_path / "full").events
    out = tmp_path / "cut"
    simulate(cfg, out, interrupt_at_events=40)
    assert simulate(cfg, out, resume=True, interrupt_at_events=events // 2).interrupted
    simulate(cfg, out, resume=True)
    assert_same(read_run(out), read_run(tmp_path / "full"))
    with h5py.File(out / "rank-00003.h5", "r") as f:
        assert f.attrs["resumes"] == 2


def test_a_resumed_run_differs_from_another_seed(tmp_path: Path) -> None:
    """The comparison above can fail: a resume onto a different run does not pass it."""
    simulate(config("adsgd"), tmp_path / "a")
    out = tmp_path / "b"
    simulate(config("adsgd", run={"seed": 4}), out, interrupt_at_events=50)
    with pytest.raises(UserError, match="config mismatch: field run.seed"):
        simulate(config("adsgd"), out, resume=True)
    simulate(config("adsgd", run={"seed": 4}), out, resume=True)
    with pytest.raises(AssertionError):
        assert_same(read_run(out), read_run(tmp_path / "a"))


def test_checkpoint_is_plain_hdf5(tmp_path: Path) -> None:
    sim = simulate(config("rfast"), tmp_path, interrupt_at_events=77)
    path = tmp_path / "checkpoint" / "sim.h5"
    assert sim.checkpoint_path == path and sim.checkpoint_s > 0
    with h5py.File(path, "r") as f:
        assert f.attrs["engine"] == "sim" and f.attrs["n_agents"] == 9 and f.attrs["events"] == 77
        assert f["state/agents/4/z"].shape == (sim.agents[4].x.size,)
    assert not list(tmp_path.glob("checkpoint/.*.tmp"))
    if shutil.which("h5dump"):  # HDF5's own tools (1.10 here) read it too
        done = subprocess.run(["h5dump", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "state" in done.stdout, done.stderr


# -- refusals: one line, exit status 2 ----------------------------------------------------------------
def cli(*args: str) -> int:
    return main(["simulate", *args])


@pytest.fixture
def interrupted(tmp_path: Path, small_config) -> Path:
    out = tmp_path / "run"
    simulate(config("adsgd"), out, interrupt_at_events=30)
    return out


def test_resume_refusals(interrupted: Path, tmp_path: Path, capsys) -> None:
    out = interrupted
    assert cli("--resume", str(tmp_path / "nowhere")) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli("--resume", str(tmp_path / "empty")) == 2
    assert "no run.h5" in capsys.readouterr().err
    # another config: different n, different algorithm
    toml = tmp_path / "other.toml"
    toml.write_text(config("adsgd").to_toml())
    assert cli(str(toml), "--set", "topology.n=4", "--set", "topology.shape=[2, 2]",
               "--set", "delays.straggler=1", "--resume", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert "config mismatch: field topology.n is 4" in err and len(err.splitlines()) == 1
    assert cli(str(toml), "--set", "algorithm.name=dsgd", "--resume", str(out)) == 2
    assert "field algorithm.name is 'dsgd'" in capsys.readouterr().err
    # a corrupt checkpoint, then a missing one
    ck = out / "checkpoint" / "sim.h5"
    saved = ck.read_bytes()
    ck.write_bytes(saved[: len(saved) // 2])
    assert cli("--resume", str(out)) == 2
    assert "unreadable" in capsys.readouterr().err
    ck.unlink()
    assert cli("--resume", str(out)) == 2
    assert "not found" in capsys.readouterr().err
    ck.write_bytes(saved)
    # a checkpoint of another run (n = 4) copied in
    other = tmp_path / "other"
    small = make_config(topology={"name": "grid", "n": 4, "shape": [2, 2]}, delays={"straggler": 1},
                        budget={"time": 5.0})
    simulate(small, other, interrupt_at_events=9)
    shutil.copy(other / "checkpoint" / "sim.h5", ck)
    assert cli("--resume", str(out)) == 2
    assert "config mismatch: field topology.n is 4 in checkpoint" in capsys.readouterr().err
    ck.write_bytes(saved)
    assert cli("--resume", str(out), "--quiet") == 0
    assert cli("--resume", str(out)) == 2  # complete now
    assert "the run is complete; nothing to resume" in capsys.readouterr().err


def test_an_algorithm_that_cannot_resume_stops_without_a_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """Stopped like any run (files closed, marked interrupted, rows kept) but no checkpoint is written, and
    a checkpoint of it could not be captured either."""
    monkeypatch.setattr(algorithms.get("adsgd"), "resumable", False)
    out = tmp_path / "run"
    sim = simulate(config("adsgd", budget={"time": 200.0}), out, interrupt_at_events=400)
    assert sim.interrupted and sim.checkpoint_path is None
    assert not (out / "checkpoint").exists() or not any((out / "checkpoint").iterdir())
    run = open_run(out)
    assert not run.complete and all(a["iteration"].size > 0 for a in run.agents())
    with h5py.File(out / "run.h5", "r") as f:
        assert f.attrs["interrupted"]
    with pytest.raises(UserError, match=r"algorithm adsgd: cannot be checkpointed \(resumable = False\)"):
        capture(sim)


# -- the command line: SIGTERM / SIGUSR1 to `hpcasync simulate`, then --resume ---------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_to_simulate_then_resume(sig: int, tmp_path: Path) -> None:
    cfg = config("adsgd", budget={"time": 1500.0}, eval={"interval": 2.0})  # a few seconds
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    full, out = tmp_path / "full", tmp_path / "cut"
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "hpcasync", "simulate", str(path), "--out", str(out), "--quiet"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / "rank-00008.h5").exists():
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, err
    assert err.strip().startswith(f"hpcasync simulate: interrupted by {name} at t=") and "--resume" in err, err
    with h5py.File(out / "run.h5", "r") as f:
        assert f.attrs["interrupted"] == name and not f.attrs["complete"]
        t_cut = f.attrs.get("finished")
    assert t_cut and (out / "checkpoint" / "sim.h5").is_file()
    done = subprocess.run([sys.executable, "-m", "hpcasync", "simulate", "--resume", str(out), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert main(["simulate", str(path), "--out", str(full), "--quiet"]) == 0
    assert_same(read_run(out), read_run(full))


def test_alg3_invariant_after_resume(tmp_path: Path) -> None:
    """Alg. 3's s_i = Σ_{j≠i} w_ij·x_j once the network drains, also after a resume (Zhou & Pu 2025 App. A.3)."""
    cfg = config("adsgd-delta", delays={"case": 4})
    assert simulate(cfg, tmp_path, interrupt_at_events=60).interrupted
    sim = simulate(cfg, tmp_path, resume=True)
    W = sim.topology.W
    xs = np.stack([a.x for a in sim.agents])
    for i, a in enumerate(sim.agents):
        expected = sum(W[i, j] * xs[j] for j in range(sim.n) if j != i)
        np.testing.assert_allclose(a.s, expected, rtol=1e-10, atol=1e-12)


# -- job scripts: resume when a checkpoint exists, requeue after a checkpointed stop ----------------------
@pytest.mark.parametrize("scheduler", ["slurm", "pbs"])
def test_job_script_resumes_when_a_checkpoint_exists(scheduler: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(make_config().to_toml())
    script = tmp_path / "job.sh"
    out = tmp_path / "run"
    assert main(["jobscript", str(cfg), "--scheduler", scheduler, "--out", str(out), "-o", str(script)]) == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for tool, status in (("srun", 138), ("mpiexec", 0), ("scontrol", 0), ("python", 0)):
        (bin_dir / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {calls}\nexit {status}\n')
        (bin_dir / tool).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="42")
    subprocess.run(["bash", str(script)], env=env, capture_output=True, timeout=30)
    first = calls.read_text()
    assert f"--out {out}" in first and "--resume" not in first and "scontrol" not in first
    calls.unlink()
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "rank-00000.h5").write_bytes(b"")
    subprocess.run(["bash", str(script)], env=env, capture_output=True, timeout=30)
    second = calls.read_text()
    assert f"run {cfg} --resume {out}" in second and "--out" not in second.split("\n")[0]
    if scheduler == "slurm":  # stopped by SIGUSR1 (138) with a checkpoint: the job requeues itself
        assert "scontrol requeue 42" in second


# -- trace replay: refusals (the replay itself is tested on MPI, tests/mpi/test_replay_mpi.py) ----------
def test_replay_refusals(interrupted: Path, tmp_path: Path, capsys) -> None:
    assert cli("--replay", str(interrupted)) == 2
    err = capsys.readouterr().err.strip()
    assert "a sim run; replay needs a run of `hpcasync run` (MPI)" in err and len(err.splitlines()) == 1
    assert cli("c.toml", "--replay", str(interrupted)) == 2
    assert "CONFIG, --set and --resume do not apply" in capsys.readouterr().err
    assert cli("--replay", str(tmp_path / "nowhere")) == 2
    assert f"--replay {tmp_path / 'nowhere'}: not a directory" in capsys.readouterr().err


def test_torch_model_resumes_bit_for_bit(tmp_path: Path) -> None:
    """float32 torch models: the oracle's torch augmentation stream and torch's global stream are saved."""
    pytest.importorskip("torch")
    cfg = make_config(problem={"name": "torch", "model": "cnn", "dtype": "float32", "augment": True},
                      algorithm={"name": "adsgd", "alpha": 0.3, "batch_size": 16}, budget={"time": 6.0},
                      eval={"interval": 2.0})
    simulate(cfg, tmp_path / "full")
    simulate(cfg, tmp_path / "cut", interrupt_at_events=40)
    simulate(cfg, tmp_path / "cut", resume=True)
    a, b = read_run(tmp_path / "full"), read_run(tmp_path / "cut")
    assert a["models"].dtype == np.float32
    assert_same(b, a)
