"""AD-PSGD on the MPI engine: atomic pairwise averaging under CAS-taken lock words (engines/mpi/pairs.py).

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi -q``. Averaging
preserves Σ_i x_i exactly (up to rounding), so after a run
Σ_i x_i = n·x0 − α·Σ_i Σ_k g_i,k, where g_i,k are the gradients agent i
applied: a torn or lost average (an update of x_j interleaved between an
exchange's get and put, or two exchanges with one agent overlapping) breaks
that sum by whole models, far above rounding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.config import Config
from hpcasync.engines.mpi import rank_setup
from hpcasync.engines.mpi.runner import RankResult, run_rank
from hpcasync.engines.mpi.world import SetupError
from hpcasync.results.reader import open_run
from tests.mpi.test_engine import _all_ok, _config

pytestmark = pytest.mark.timeout(120)



class _Recording:
    """An oracle that remembers the sum of the gradients it returned (and the last one)."""

    def __init__(self, oracle: Any) -> None:
        self.oracle = oracle
        self.dim = oracle.dim
        self.calls = 0
        self.total = np.zeros(oracle.dim)
        self.last = np.zeros(oracle.dim)

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        g, loss = self.oracle.gradient(x)
        self.calls += 1
        self.total += g
        self.last[:] = g
        return g, loss


def _record_gradients(monkeypatch: pytest.MonkeyPatch) -> dict[str, _Recording]:
    """Make the runner's oracle (not the warm-up's spare one) a :class:`_Recording`."""
    real = rank_setup.problems.build
    recorded: dict[str, _Recording] = {}

    def build(cfg: Config, n: int) -> Any:
        problem = real(cfg, n)
        make = problem.oracle

        def oracle(agent: int, seed: int) -> Any:
            o = make(agent, seed)
            if seed == cfg.run.seed:
                recorded["oracle"] = _Recording(o)
                return recorded["oracle"]
            return o

        problem.oracle = oracle
        return problem

    monkeypatch.setattr(rank_setup.problems, "build", build)
    return recorded


def _applied_steps(res: RankResult, rec: _Recording, alpha: float) -> tuple[np.ndarray, str | None]:
    """α·Σ_k g_k over the gradients this agent applied (the last one may have been cut by the budget)."""
    it = res.agent.iteration
    total = rec.total.copy()
    if rec.calls == it + 1:
        total -= rec.last
    elif rec.calls != it:
        return total, f"{rec.calls} gradients computed for {it} iterations"
    return alpha * total, None


def _even_ring(comm: MPI.Comm) -> tuple[int, bool]:
    """A bipartite ring over the workers: all ranks, or all but a monitor when the size is odd."""
    n = comm.size if comm.size % 2 == 0 else comm.size - 1
    return n, n != comm.size


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("delays", ["none", "case"])
def test_adpsgd_preserves_the_sum_of_models(out_dir: Path, delays: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Σ_i x_i = n·x0 − α Σ_i Σ_k g_i,k to 1e-10 (relative) after a run on a ring.

    ``none``: flat out, exchanges back to back (the most contention), gradient
    budget; ``case``: injected delays with a straggler, so passive agents pad
    (and must keep MPI progressing for their peers' locks).
    """
    comm = MPI.COMM_WORLD
    n, monitor = _even_ring(comm)
    recorded = _record_gradients(monkeypatch)
    alpha = 0.05
    if delays == "none":
        cfg = _config(n, algorithm={"name": "adpsgd", "alpha": alpha}, delays={"model": "none"},
                      budget={"time": 0.0, "gradients": 300 * n}, mpi={"monitor": monitor})
    else:
        cfg = _config(n, algorithm={"name": "adpsgd", "alpha": alpha}, budget={"time": 0.8},
                      mpi={"monitor": monitor})
    res = run_rank(cfg, out_dir, comm)
    worker = res.agent is not None
    error = None
    step = np.zeros(0)
    if worker:
        step, error = _applied_steps(res, recorded["oracle"], alpha)
    x = np.array(res.agent.model) if worker else None
    xs = [v for v in comm.allgather(x) if v is not None]
    steps = [s for s, w in zip(comm.allgather(step), comm.allgather(worker), strict=True) if w]
    X = np.stack(xs)
    x0 = np.zeros(X.shape[1])  # softmax starts at 0
    expected = n * x0 - np.sum(steps, axis=0)
    err = float(np.linalg.norm(X.sum(axis=0) - expected) / np.linalg.norm(expected))
    if error is None and not err <= 1e-10:
        error = f"|Σ x_i − (n x0 − α Σ g)| / |.| = {err:.3e}"
    pairs = res.transport.pairs if worker else None
    exchanges = comm.allreduce(pairs.exchanges if pairs is not None else 0)
    if exchanges < 20:
        error = error or f"only {exchanges} pair averages in the whole run"
    if pairs is not None and error is None:
        if pairs.active:
            if pairs.exchanges == 0:
                error = "an active agent never averaged"
            d = X.shape[1]
            if res.transport.bytes_sent != pairs.exchanges * 2 * (d + 1) * 8:
                error = f"bytes_sent {res.transport.bytes_sent} for {pairs.exchanges} exchanges of d = {d}"
            if res.transport.messages_sent != 2 * pairs.exchanges:
                error = f"messages_sent {res.transport.messages_sent} for {pairs.exchanges} exchanges"
        elif pairs.exchanges or res.transport.bytes_sent:
            error = "a passive agent started exchanges"
        if pairs.closed is False:
            error = "the pair window was not freed"
    # models differ (gradient steps) but stay close (averaging): consensus is happening
    spread = float(np.max(np.linalg.norm(X - X.mean(axis=0), axis=1)) / np.linalg.norm(X.mean(axis=0)))
    if spread > 0.5:
        error = error or f"models drifted apart: max |x_i − x̄| / |x̄| = {spread:.2f}"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_adpsgd_lowers_the_loss_on_digits(out_dir: Path) -> None:
    """The training loss of the average model drops well below log(10) in under a second."""
    comm = MPI.COMM_WORLD
    n, monitor = _even_ring(comm)
    cfg = _config(n, algorithm={"name": "adpsgd", "alpha": 0.1}, budget={"time": 0.8},
                  delays={"case": 1}, mpi={"monitor": monitor})
    res = run_rank(cfg, out_dir, comm)
    error = None
    if res.evaluations:  # the rank that evaluates (rank 0, or the monitor)
        first, last = res.evaluations[0]["train_loss"], res.final["train_loss"]
        if not (math.isfinite(last) and last < 0.6 * first):
            error = f"train loss {first:.4f} -> {last:.4f}"
        elif not 0.5 < res.final["test_accuracy"] <= 1:
            error = f"test accuracy {res.final['test_accuracy']:.3f}"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_adpsgd_star_with_monitor(out_dir: Path) -> None:
    """size − 1 agents on a star (bipartite for any n) + the monitor: evaluations, staleness, files.

    On the star, several agents of one side share one neighbour: concurrent
    lock requests for the same window.
    """
    comm = MPI.COMM_WORLD
    n = comm.size - 1
    cfg = _config(n, algorithm={"name": "adpsgd"}, topology={"name": "star", "n": n}, mpi={"monitor": True},
                  budget={"time": 0.8}, eval={"interval": 0.2, "log_every": 2})
    res = run_rank(cfg, out_dir, comm)
    x = np.array(res.agent.model) if res.agent is not None else None
    X = np.stack([v for v in comm.allgather(x) if v is not None])
    error = None
    if res.role == "monitor":
        from hpcasync import problems

        ref = problems.build(cfg, n).evaluate(X.mean(axis=0))
        if not 3 <= len(res.evaluations) <= 8:
            error = f"{len(res.evaluations)} evaluations in 0.8 s at 0.2 s intervals"
        elif not math.isclose(res.final["train_loss"], ref["train_loss"], rel_tol=1e-12):
            error = f"final train loss {res.final['train_loss']} vs the average of final models {ref['train_loss']}"
        elif not res.final["train_loss"] < res.evaluations[0]["train_loss"]:
            error = "the loss did not decrease"
    comm.Barrier()
    if comm.rank == 0 and error is None:
        run = open_run(out_dir)
        if not run.complete:
            error = "run.h5 not complete"
        for a in run.agents():
            st = a["staleness"]
            if a["status"] != "complete" or st.size == 0 or not np.all(np.isfinite(st)) or np.any(st < 0):
                error = error or f"agent status {a['status']}, staleness {st[:5]}…"
            if "pair_averages" not in a["timings"]:
                error = error or f"no pair timings: {sorted(a['timings'])}"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_message_loss_is_refused_on_mpi(out_dir: Path) -> None:
    """delays.drop > 0 is a simulator feature: every rank raises the same clear SetupError."""
    comm = MPI.COMM_WORLD
    n, monitor = _even_ring(comm)
    cfg = _config(n, algorithm={"name": "adpsgd"}, delays={"drop": 0.1}, mpi={"monitor": monitor})
    with pytest.raises(SetupError, match=r"delays.drop = 0.1: message loss exists only in the simulator"):
        run_rank(cfg, out_dir, comm)


@pytest.mark.mpi(min_size=4)
def test_non_bipartite_graph_is_refused(out_dir: Path) -> None:
    comm = MPI.COMM_WORLD
    cfg = _config(comm.size, algorithm={"name": "adpsgd"}, topology={"name": "complete", "n": comm.size})
    with pytest.raises(SetupError, match="adpsgd: needs a bipartite graph"):
        run_rank(cfg, out_dir, comm)
