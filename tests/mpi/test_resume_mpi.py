"""Multi-rank preemption and resume: a run stopped by a signal writes one checkpoint per rank and
``run_rank(..., resume=True)`` continues it (DSGD exactly, Alg. 3 keeping s_i = Σ_j w_ij·x_j).

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_resume_mpi.py -q``.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.config import Config, from_dict
from hpcasync.engines.mpi.runner import run_rank
from hpcasync.engines.mpi.worker import Worker
from hpcasync.engines.mpi.world import SetupError
from hpcasync.topology import build as build_topology

pytestmark = pytest.mark.timeout(180)


def _config(n: int, monitor: bool, **sections: dict[str, Any]) -> Config:
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": "resume", "seed": 5},
        "algorithm": {"name": "dsgd", "alpha": 0.05, "batch_size": 16},
        "topology": {"name": "ring", "n": n},
        "data": {"name": "digits"},
        "problem": {"name": "softmax"},
        "delays": {"model": "none"},
        "budget": {"time": 0.0, "gradients": 30 * n},
        "eval": {"interval": 0.05},
        "mpi": {"monitor": monitor, "flush_interval": 0.2},
    }
    for name, fields in sections.items():
        raw.setdefault(name, {}).update(fields)
    return from_dict(raw, source="test")


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    comm = MPI.COMM_WORLD
    path = Path(tempfile.mkdtemp(prefix="hpcasync-resume-")) if comm.rank == 0 else None
    path = comm.bcast(path)
    yield path / "full", path / "cut"
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def _gather(comm: MPI.Comm, res: Any, attr: str) -> np.ndarray:
    v = None if res.agent is None else np.array(getattr(res.agent, attr))
    return np.stack([x for x in comm.allgather(v) if x is not None])


def _rows(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f["updates"][k][()] for k in ("iteration", "loss", "bytes_sent")} | {
            "complete": bool(f.attrs["complete"])}


def _interrupted(cfg: Config, out: Path, at: int, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(Worker, "stop_at_iteration", at)  # as if SIGUSR1 arrived at step `at`
    res = run_rank(cfg, out, MPI.COMM_WORLD, abort_on_error=False)
    monkeypatch.setattr(Worker, "stop_at_iteration", 0)
    return res


@pytest.mark.mpi(min_size=3)
@pytest.mark.parametrize(("name", "monitor"), [("dsgd", False), ("dsgd", True), ("sgp", False),
                                               ("minibatch-sgd", True)])
def test_synchronous_run_interrupted_and_resumed_equals_uninterrupted(dirs, name: str, monitor: bool,
                                                                      monkeypatch) -> None:
    """DSGD, SGP (push-sum over the ring) and minibatch SGD stop after an agreed round and go on exactly."""
    comm = MPI.COMM_WORLD
    n = comm.size - 1 if monitor else comm.size
    cfg = _config(n, monitor, algorithm={"name": name})
    full, cut = dirs
    ref = run_rank(cfg, full, comm, abort_on_error=False)
    res = _interrupted(cfg, cut, 10, monkeypatch)
    assert res.interrupted == "SIGUSR1"
    assert res.agent is None or 10 <= res.agent.iteration < 20  # stopped after an agreed round
    assert (cut / "checkpoint" / f"rank-{comm.rank:05d}.h5").is_file()
    with h5py.File(cut / "run.h5", "r") as f:
        assert not f.attrs["complete"] and f.attrs["interrupted"] == "SIGUSR1"
    comm.Barrier()
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    assert not done.interrupted
    x_ref, x = _gather(comm, ref, "x"), _gather(comm, done, "x")
    assert x.shape == (n, x_ref.shape[1])
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=1e-12)
    if res.agent is not None:
        a, b = _rows(full / f"rank-{comm.rank:05d}.h5"), _rows(cut / f"rank-{comm.rank:05d}.h5")
        assert a["complete"] and b["complete"]
        np.testing.assert_array_equal(b["iteration"], np.arange(1, 31))  # no gap, no duplicate
        np.testing.assert_array_equal(b["iteration"], a["iteration"])
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-12)
        assert np.all(np.diff(b["bytes_sent"]) >= 0)  # cumulative counters go on across the resume
    assert not (cut / "checkpoint" / f"rank-{comm.rank:05d}.h5").exists()
    with h5py.File(cut / "run.h5", "r") as f:
        assert f.attrs["complete"] and "interrupted" not in f.attrs and f.attrs["resumes"] == 1
        g = f["evaluations/gradients"][()]
        assert np.all(np.diff(g) >= 0) and g[-1] == 30 * n


@pytest.mark.mpi(min_size=3)
def test_resumed_dsgd_differs_when_the_checkpoint_is_of_another_step(dirs, monkeypatch) -> None:
    """The equality above is not vacuous: another run (seed) interrupted and resumed differs."""
    comm = MPI.COMM_WORLD
    full, cut = dirs
    ref = run_rank(_config(comm.size, False), full, comm, abort_on_error=False)
    cfg = _config(comm.size, False, run={"seed": 6})
    assert 10 <= _interrupted(cfg, cut, 10, monkeypatch).agent.iteration < 20
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    assert np.abs(_gather(comm, done, "x") - _gather(comm, ref, "x")).max() > 1e-6


@pytest.mark.mpi(min_size=3)
def test_alg3_after_resume_keeps_s_equal_to_the_mix(dirs, monkeypatch) -> None:
    """Zhou & Pu 2025 App. A.3: once every delta landed, s_i = Σ_{j≠i} w_ij·x_j — also after a resume."""
    comm = MPI.COMM_WORLD
    cfg = _config(comm.size, False, algorithm={"name": "adsgd-delta"}, budget={"time": 0.6, "gradients": 0},
                  delays={"model": "case", "case": 5, "straggler": 0}, mpi={"time_unit": 0.002})
    _, cut = dirs
    res = _interrupted(cfg, cut, 15, monkeypatch)
    assert res.interrupted == "SIGUSR1"
    s_cut, x_cut = _gather(comm, res, "s"), _gather(comm, res, "x")
    W = build_topology(cfg.topology).W
    offdiag = W - np.diag(np.diag(W))
    np.testing.assert_allclose(s_cut, offdiag @ x_cut, rtol=1e-9, atol=1e-12)  # the checkpoint is drained
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    s, x = _gather(comm, done, "s"), _gather(comm, done, "x")
    k = res.agent.iteration
    assert done.agent.iteration > k
    np.testing.assert_allclose(s, offdiag @ x, rtol=1e-9, atol=1e-12)
    rows = _rows(cut / f"rank-{comm.rank:05d}.h5")
    np.testing.assert_array_equal(np.diff(rows["iteration"]), 1)  # no gap, no duplicate
    # the resumed rank went on from its trained model, not from x0: the loss did not jump back up
    loss = rows["loss"]
    assert abs(loss[k:k + 3].mean() - loss[k - 3:k].mean()) < abs(loss[k:k + 3].mean() - loss[:3].mean())


@pytest.mark.mpi(min_size=3)
def test_resume_refusals(dirs, monkeypatch) -> None:
    comm = MPI.COMM_WORLD
    full, cut = dirs
    cfg = _config(comm.size, False)
    run_rank(cfg, full, comm, abort_on_error=False)
    with pytest.raises(SetupError, match="not found"):  # a complete run left no checkpoint
        run_rank(cfg, full, comm, abort_on_error=False, resume=True)
    _interrupted(cfg, cut, 5, monkeypatch)
    with pytest.raises(SetupError, match="config mismatch: field algorithm.alpha"):
        run_rank(_config(comm.size, False, algorithm={"alpha": 0.1}), cut, comm, abort_on_error=False,
                 resume=True)
    adsgd = _config(comm.size, False, algorithm={"name": "adsgd"})
    with pytest.raises(SetupError, match="config mismatch: field algorithm.name is 'dsgd' in checkpoint"):
        run_rank(adsgd, cut, comm, abort_on_error=False, resume=True)
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    assert not done.interrupted


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("name", ["adsgd", "rfast", "adpsgd", "asbcd"])
def test_async_resume_starts_from_the_checkpointed_windows(dirs, name: str, monkeypatch) -> None:
    """Model slots (ADSGD, RFAST, ASBCD) hold again each neighbour's last message, AD-PSGD's pair window the
    agent's model, when the resumed ranks start; the rows go on without a gap."""
    comm = MPI.COMM_WORLD
    n = comm.size if comm.size % 2 == 0 else comm.size - 1  # AD-PSGD: a bipartite ring
    if comm.rank >= n:
        pytest.skip("rank outside the even ring")  # pragma: no cover - even sizes in CI
    cfg = _config(n, False, algorithm={"name": name}, budget={"time": 0.6, "gradients": 0},
                  delays={"model": "case", "case": 1}, mpi={"time_unit": 0.002})
    _, cut = dirs
    res = _interrupted(cfg, cut, 12, monkeypatch)
    assert res.interrupted == "SIGUSR1"
    with h5py.File(cut / "checkpoint" / f"rank-{comm.rank:05d}.h5", "r") as f:
        mine = f["state/published/message"][()] if "published" in f["state"] else None
    published = comm.allgather(mine)
    x_cut = np.array(res.agent.x)
    seen: dict[str, np.ndarray] = {}
    real_loop = Worker.loop

    def loop(self: Worker) -> None:  # what the resumed rank starts from, after the start barrier
        seen["x"] = np.array(self.agent.x)
        if self.t.slots is not None:
            seen["slots"] = self.t.latest_models().copy()
        self.world.workers.Barrier()  # no neighbour publishes (or averages into x) before every one has read
        real_loop(self)

    monkeypatch.setattr(Worker, "loop", loop)
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    np.testing.assert_array_equal(seen["x"], x_cut)
    if "slots" in seen:
        nbrs = build_topology(cfg.topology).neighbors(comm.rank)
        np.testing.assert_array_equal(seen["slots"], np.stack([published[j] for j in nbrs]))
        if name == "adsgd":  # ADSGD publishes x after each step: the neighbours hold its model
            np.testing.assert_array_equal(published[comm.rank], x_cut)
    assert done.agent.iteration > res.agent.iteration and not done.interrupted
    rows = _rows(cut / f"rank-{comm.rank:05d}.h5")
    np.testing.assert_array_equal(np.diff(rows["iteration"]), 1)
    assert rows["complete"]


@pytest.mark.mpi(min_size=3)
@pytest.mark.parametrize("name", ["osgp", "agp"])
def test_push_sum_resume_conserves_mass(dirs, name: str, monkeypatch) -> None:
    """Push-sum (Assran et al. 2020 eq. (10)): at the drained checkpoint and at the end of the resumed run
    Σφ_i = n and Σw_i + Σ(applied steps) = n·x0, so no message was lost or doubled across the resume;
    OSGP's per-sender counts are kept (it resumes inside its wait for outstanding rounds)."""
    comm = MPI.COMM_WORLD
    cfg = _config(comm.size, False, algorithm={"name": name}, budget={"time": 0.6, "gradients": 0},
                  delays={"model": "case", "case": 5, "straggler": 0}, mpi={"time_unit": 0.002})
    _, cut = dirs
    res = _interrupted(cfg, cut, 12, monkeypatch)
    assert res.interrupted == "SIGUSR1"
    n, d = comm.size, res.agent.dim

    def conserved(agent: Any) -> None:
        m = np.stack(comm.allgather(np.array(agent.m[:d + 1])))
        applied = np.stack(comm.allgather(np.array(agent.applied)))
        assert abs(m[:, d].sum() - n) < 1e-9
        np.testing.assert_allclose(m[:, :d].sum(axis=0) + applied.sum(axis=0), 0.0, atol=1e-9)  # x0 = 0

    conserved(res.agent)
    with h5py.File(cut / "checkpoint" / f"rank-{comm.rank:05d}.h5", "r") as f:
        np.testing.assert_array_equal(f["state/agent/m"][()], res.agent.m)  # counters included
    seen: dict[str, Any] = {}
    real_loop = Worker.loop

    def loop(self: Worker) -> None:  # what the resumed rank starts from
        seen["m"], seen["applied"] = np.array(self.agent.m), np.array(self.agent.applied)
        real_loop(self)

    monkeypatch.setattr(Worker, "loop", loop)
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    np.testing.assert_array_equal(seen["m"], res.agent.m)
    np.testing.assert_array_equal(seen["applied"], res.agent.applied)
    assert np.abs(seen["applied"]).max() > 0  # not a fresh start
    assert done.agent.iteration > res.agent.iteration and not done.interrupted
    conserved(done.agent)
    rows = _rows(cut / f"rank-{comm.rank:05d}.h5")
    np.testing.assert_array_equal(np.diff(rows["iteration"]), 1)
    assert rows["complete"]


@pytest.mark.mpi(min_size=3)
@pytest.mark.parametrize(("name", "monitor"), [("async-sgd", False), ("async-sgd", True), ("hogwild", False)])
def test_parameter_server_resumes_its_model_and_version(dirs, name: str, monitor: bool, monkeypatch) -> None:
    """Rank 0's window holds again the server's x and version k at the checkpoint; the resumed steps are
    numbered on from k (no step lost or counted twice: k at the end = Σ steps every worker logged)."""
    comm = MPI.COMM_WORLD
    n = comm.size - 1 if monitor else comm.size
    cfg = _config(n, monitor, algorithm={"name": name}, budget={"time": 0.6, "gradients": 0},
                  delays={"model": "case", "case": 1}, mpi={"time_unit": 0.002})
    _, cut = dirs
    res = _interrupted(cfg, cut, 12, monkeypatch)
    assert res.interrupted == "SIGUSR1"
    k_cut = None if res.agent is None else res.agent.version  # its finish read the server's x and k
    seen: dict[str, Any] = {}
    real_loop = Worker.loop

    def loop(self: Worker) -> None:  # what the resumed rank starts from, behind the start barrier
        x = np.empty_like(self.agent.x)
        seen["k"], seen["x"], seen["agent_x"] = self.t.read_server(x), x, np.array(self.agent.x)
        self.world.workers.Barrier()  # no worker steps before every one has read (a fast one would: k + 1)
        real_loop(self)

    monkeypatch.setattr(Worker, "loop", loop)
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    steps = None
    if res.agent is not None:
        with h5py.File(cut / f"rank-{comm.rank:05d}.h5", "r") as f:
            steps = f["server_steps/step"][()]
    every = np.sort(np.concatenate([s for s in comm.allgather(steps) if s is not None]))
    if res.agent is None:  # the monitor
        return
    assert k_cut > 0 and seen["k"] == k_cut  # SEQ = 2k again, not 0
    np.testing.assert_array_equal(seen["x"], res.agent.x)
    np.testing.assert_array_equal(seen["agent_x"], res.agent.x)
    assert not done.interrupted and done.agent.iteration > res.agent.iteration
    assert steps.size == done.agent.iteration  # the steps logged before the cut are kept
    np.testing.assert_array_equal(every, np.arange(every.size))  # each version k taken by exactly one step
    assert done.agent.version == every.size


@pytest.mark.mpi(min_size=3)
def test_dsgd_interrupted_twice(dirs, monkeypatch) -> None:
    comm = MPI.COMM_WORLD
    cfg = _config(comm.size, False)
    full, cut = dirs
    ref = run_rank(cfg, full, comm, abort_on_error=False)
    assert _interrupted(cfg, cut, 7, monkeypatch).interrupted == "SIGUSR1"
    monkeypatch.setattr(Worker, "stop_at_iteration", 19)
    again = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    monkeypatch.setattr(Worker, "stop_at_iteration", 0)
    assert again.interrupted == "SIGUSR1" and 19 <= again.agent.iteration < 30
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    np.testing.assert_allclose(_gather(comm, done, "x"), _gather(comm, ref, "x"), rtol=0, atol=1e-12)
    rows = _rows(cut / f"rank-{comm.rank:05d}.h5")
    np.testing.assert_array_equal(rows["iteration"], np.arange(1, 31))
    with h5py.File(cut / f"rank-{comm.rank:05d}.h5", "r") as f:
        assert f.attrs["resumes"] == 2 and f["trace/compute_s"].shape == (30,)  # one trace across resumes


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("name", ["dasgd", "dsgd-aau", "prague"])
def test_flood_and_group_algorithms_resume(dirs, name: str, monkeypatch) -> None:
    """DASGD and DSGD-AAU resume their floods from the checkpointed sequence numbers (a duplicate or a gap
    would stop DASGD with an error), Prague starts with no group pending; all finish their budgets, the
    rows go on without a gap, and DASGD ends with every gradient applied once everywhere. The stop is a
    real SIGUSR1 to every rank at once, as from a scheduler, so ranks waiting in Pathsearch or for a
    group stop there too."""
    comm = MPI.COMM_WORLD
    cfg = _config(comm.size, False, algorithm={"name": name}, budget={"time": 1.0, "gradients": 0},
                  delays={"model": "case", "case": 1}, mpi={"time_unit": 0.002})
    _, cut = dirs
    real_loop, timers = Worker.loop, []

    def loop(self: Worker) -> None:  # the loops start together, behind the start barrier
        timers.append(threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGUSR1)))
        timers[-1].start()
        real_loop(self)

    monkeypatch.setattr(Worker, "loop", loop)
    try:
        res = run_rank(cfg, cut, comm, abort_on_error=False)
    finally:
        for timer in timers:
            timer.cancel()
    monkeypatch.setattr(Worker, "loop", real_loop)
    assert res.interrupted == "SIGUSR1" and res.wall_s < 0.9
    with h5py.File(cut / "checkpoint" / f"rank-{comm.rank:05d}.h5", "r") as f:
        seen = f["state/flood_seen"][()] if "flood_seen" in f["state"] else None
    assert (seen is not None) == (name != "prague")
    if name == "dasgd":  # quiesced at the checkpoint: every origin's gradients applied here
        np.testing.assert_array_equal(seen, res.agent.clock)
        np.testing.assert_array_equal(seen, comm.allgather(res.agent.iteration))
    done = run_rank(cfg, cut, comm, abort_on_error=False, resume=True)
    assert done.agent.iteration > res.agent.iteration and not done.interrupted
    rows = _rows(cut / f"rank-{comm.rank:05d}.h5")
    np.testing.assert_array_equal(np.diff(rows["iteration"]), 1)
    assert rows["complete"]
    if name == "dasgd":
        np.testing.assert_array_equal(done.agent.clock, comm.allgather(done.agent.iteration))
        xs = _gather(comm, done, "x")
        np.testing.assert_allclose(xs, np.broadcast_to(xs[0], xs.shape), rtol=0, atol=1e-10)
