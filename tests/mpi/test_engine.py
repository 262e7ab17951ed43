"""Multi-rank tests of the MPI engine (runner, transport, outbox, monitor).

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi -q`` (any size 4–9;
the graphs are built for ``comm.size`` agents, or ``size − 1`` plus a monitor).
Results are gathered and asserted on every rank, so a failure never leaves a
rank waiting in a collective; an error inside a run aborts the whole job.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.config import Config, from_dict
from hpcasync.engines.mpi import rank_setup
from hpcasync.engines.mpi import runner as runner_mod
from hpcasync.engines.mpi.runner import RankResult, run_rank
from hpcasync.engines.mpi.world import SetupError
from hpcasync.kernels import adsgd_step
from hpcasync.results.reader import open_run

pytestmark = pytest.mark.timeout(120)


def _config(n: int, **sections: dict[str, Any]) -> Config:
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": "mpi-test", "seed": 5},
        "algorithm": {"name": "adsgd", "alpha": 0.05, "batch_size": 16},
        "topology": {"name": "ring", "n": n},
        "data": {"name": "digits"},
        "problem": {"name": "softmax"},
        "delays": {"model": "case", "case": 5, "straggler": n - 1},
        "budget": {"time": 1.0},
        "eval": {"interval": 0.25},
        "mpi": {"time_unit": 0.002, "monitor": False, "flush_interval": 0.2},
    }
    for name, fields in sections.items():
        raw.setdefault(name, {}).update(fields)
    return from_dict(raw, source="test")



def _all_ok(comm: MPI.Comm, error: str | None) -> None:
    errors = [f"rank {r}: {e}" for r, e in enumerate(comm.allgather(error)) if e]
    assert not errors, "\n".join(errors)


def _models(comm: MPI.Comm, res: RankResult) -> tuple[np.ndarray | None, list[Any]]:
    """Every worker's final x (rows in rank order) and the algorithm objects' extra state."""
    x = None if res.agent is None else np.array(res.agent.model)
    s = None if res.agent is None else getattr(res.agent, "s", None)
    xs = [v for v in comm.allgather(x) if v is not None]
    ss = comm.allgather(None if s is None else np.array(s))
    return np.stack(xs), ss


# -- Alg. 3: the lossless invariant -----------------------------------------------------------


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("mode", ["window", "drain"])
@pytest.mark.parametrize("graph", ["ring", "complete", "grid"])
def test_delta_invariant_after_quiescence(out_dir: Path, graph: str, mode: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """adsgd-delta with injected delays (queued, summed deltas): s_i = Σ_j w_ij·x_j once all landed."""
    comm = MPI.COMM_WORLD
    n = comm.size
    monkeypatch.setattr(runner_mod, "DELTA_IN_WINDOW", mode == "window")
    cfg = _config(n, algorithm={"name": "adsgd-delta"}, topology={"name": graph, "n": n},
                  delays={"case": 4, "comm_mean": 3.0})
    res = run_rank(cfg, out_dir, comm)
    X, S = _models(comm, res)
    from hpcasync.engines.build import build_topology

    W = build_topology(cfg).W
    error = None
    i = comm.rank
    expected = W[i] @ X - W[i, i] * X[i]
    err = np.max(np.abs(S[i] - expected)) / max(np.max(np.abs(expected)), 1e-300)
    if not err <= 1e-12:
        error = f"|s_i − Σ_j w_ij x_j| / |.| = {err:.3e}"
    elif res.agent.iteration < 20:
        error = f"only {res.agent.iteration} iterations"
    elif res.transport.outbox.per_target_fallbacks:
        error = "the outbox left its shared-sum mode for Alg. 3's deltas"
    # the slow link queued deltas: summed in the outbox before leaving (docs/design.md §6)
    if comm.allreduce(res.transport.outbox.deltas_merged) == 0:
        error = error or "no queued deltas were ever summed: the test did not exercise the queue"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_delta_invariant_flat_out(out_dir: Path) -> None:
    """No delay model: every push goes out at once; gradient budget via the job-wide counter."""
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": "adsgd-delta"}, topology={"name": "complete", "n": n},
                  delays={"model": "none"}, budget={"time": 0.0, "gradients": 400 * n})
    res = run_rank(cfg, out_dir, comm)
    X, S = _models(comm, res)
    from hpcasync.engines.build import build_topology

    W = build_topology(cfg).W
    i = comm.rank
    expected = W[i] @ X - W[i, i] * X[i]
    err = float(np.max(np.abs(S[i] - expected)) / np.max(np.abs(expected)))
    total = comm.allreduce(res.agent.iteration)
    error = None if err <= 1e-12 else f"invariant error {err:.3e}"
    # each rank syncs its count at least every millisecond: the overshoot is a few gradients per rank
    if not 400 * n <= total <= 400 * n + 200 * n:
        error = error or f"gradient budget {400 * n}, computed {total}"
    _all_ok(comm, error)


# -- synchronous baselines: everybody stops after the same round -------------------------------


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("algorithm", ["dsgd", "allreduce"])
@pytest.mark.parametrize("budget", ["time", "gradients"])
def test_synchronous_stop_together(out_dir: Path, algorithm: str, budget: str) -> None:
    comm = MPI.COMM_WORLD
    n = comm.size
    b = {"time": 0.6} if budget == "time" else {"time": 0.0, "gradients": 30 * n + 1}
    cfg = _config(n, algorithm={"name": algorithm}, topology={"name": "ring", "n": n}, budget=b)
    res = run_rank(cfg, out_dir, comm)
    iters = comm.allgather(res.agent.iteration)
    X, _ = _models(comm, res)
    error = None
    if len(set(iters)) != 1:
        error = f"iterations differ: {iters}"
    elif budget == "gradients" and iters[0] != 31:
        error = f"{iters[0]} rounds for a budget of {30 * n + 1} gradients on {n} agents (expected 31)"
    elif iters[0] < 5:
        error = f"only {iters[0]} rounds"
    elif algorithm == "allreduce" and not np.all(X[0] == X):
        error = "AllReduce SGD models differ between ranks"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_dsgd_matches_sequential_reference(out_dir: Path) -> None:
    """DSGD on MPI takes exactly the steps of x^{k+1} = W x^k − α G^k (gradients recomputed serially)."""
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": "dsgd", "batch_size": 4000}, topology={"name": "ring", "n": n},
                  delays={"model": "none"}, budget={"time": 0.0, "gradients": 10 * n})
    res = run_rank(cfg, out_dir, comm)
    X, _ = _models(comm, res)
    from hpcasync import problems
    from hpcasync.engines.build import build_topology

    W = build_topology(cfg).W
    problem = problems.build(cfg, n)
    oracles = [problem.oracle(i, cfg.run.seed) for i in range(n)]  # full-batch: deterministic
    x = np.tile(problem.init_params(cfg.run.seed), (n, 1))
    for _ in range(10):
        G = np.stack([oracles[i].gradient(x[i])[0].copy() for i in range(n)])
        x = W @ x - cfg.algorithm.alpha * G
    err = float(np.max(np.abs(X - x)))
    _all_ok(comm, None if err <= 1e-12 else f"max |x_mpi − x_ref| = {err:.3e}")


# -- the monitor and the files ------------------------------------------------------------------


@pytest.mark.mpi(min_size=4)
def test_monitor_evaluates_the_average_model(out_dir: Path) -> None:
    """size − 1 agents + monitor: evaluations every interval; the last one is of the final models."""
    comm = MPI.COMM_WORLD
    n = comm.size - 1
    cfg = _config(n, topology={"name": "ring", "n": n}, mpi={"monitor": True}, budget={"time": 1.2},
                  eval={"interval": 0.2, "log_every": 2})
    res = run_rank(cfg, out_dir, comm)
    X, _ = _models(comm, res)
    total = comm.allreduce(0 if res.agent is None else res.agent.iteration)
    error = None
    if res.role == "monitor":
        from hpcasync import problems

        final = res.final
        mean = X.mean(axis=0)
        ref = problems.build(cfg, n).evaluate(mean)
        cd = float(np.mean(np.sum((X - mean) ** 2, axis=1)))
        evals = res.evaluations
        if not 4 <= len(evals) <= 10:
            error = f"{len(evals)} evaluations in 1.2 s at 0.2 s intervals"
        elif not math.isclose(final["train_loss"], ref["train_loss"], rel_tol=1e-12):
            error = f"final train loss {final['train_loss']} vs average of final models {ref['train_loss']}"
        elif not math.isclose(final["consensus_distance"], cd, rel_tol=1e-9, abs_tol=1e-15):
            error = f"consensus distance {final['consensus_distance']} vs {cd}"
        elif final["gradients"] != total:
            error = f"final gradients {final['gradients']}, workers' iterations {total}"
    comm.Barrier()
    if comm.rank == 0:
        run = open_run(out_dir)
        assert run.engine == "mpi" and run.complete and run.n_agents == n
        assert len(run.evaluations["wall_time"]) >= 5
        assert "mpi_library" in run.versions
        for a in run.agents():
            assert a["status"] == "complete", a["status"]
            assert a["iteration"].size > 10 and np.all(a["iteration"] % 2 == 0)
            assert np.all(np.isfinite(a["virtual_time"]))
            assert a["final_model"].shape == X[0].shape
            for key in ("compute_s", "mix_s", "communicate_s", "idle_s", "gradient_s"):
                assert key in a["timings"]
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_wrong_rank_count_raises_everywhere(out_dir: Path) -> None:
    comm = MPI.COMM_WORLD
    cfg = _config(comm.size + 3, mpi={"monitor": True})
    with pytest.raises(SetupError, match=rf"needs {comm.size + 4} ranks .* or {comm.size + 3} .*got {comm.size}"):
        run_rank(cfg, out_dir, comm, source="x.toml")


@pytest.mark.mpi(min_size=4)
def test_setup_error_on_one_rank_reaches_all(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data error on rank 1 only: every rank raises the same SetupError naming rank 1; no hang."""
    comm = MPI.COMM_WORLD
    from hpcasync.errors import UserError

    real = rank_setup.problems.build

    def build(cfg: Config, n: int) -> Any:
        if comm.rank == 1:
            raise UserError("data.dir /nowhere: does not exist")
        return real(cfg, n)

    monkeypatch.setattr(rank_setup.problems, "build", build)
    cfg = _config(comm.size)
    with pytest.raises(SetupError, match=r"^rank 1: data.dir /nowhere: does not exist$"):
        run_rank(cfg, out_dir, comm)


# -- ADSGD's zero-copy mixing step (MpiTransport.mix_latest) ---------------------------------------


def _pair_transport(comm: MPI.Comm, counter: list[int], x0: np.ndarray, shared_memory: str = "auto") -> Any:
    """Ranks 0 and 1 are neighbours (the others have none); models are numbered by ``counter[0]``."""
    from hpcasync.engines.mpi.transport import MpiTransport

    nb = {0: [1], 1: [0]}.get(comm.rank, [])
    return MpiTransport(comm, in_neighbors=nb, out_neighbors=nb, x0=x0, payload="model", synchronous=False,
                        iteration=lambda: counter[0], shared_memory=shared_memory)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("restore", ["published", "initial", "backup"])
def test_mix_latest_redoes_a_torn_mix_exactly(restore: str) -> None:
    """Rank 1 mixes straight from its window the view of model 1, which model 3 overwrites
    before the view is validated: the step is undone (x fetched back from rank 0's window,
    the initial x0 there, or a local backup) and redone from a consistent copy of model 3."""
    comm = MPI.COMM_WORLD
    r = comm.rank
    dim = 4096
    counter = [0]
    x0 = np.zeros(dim)
    t = _pair_transport(comm, counter, x0)
    error = None
    try:
        if r == 0:
            counter[0] = 1
            t.push_model(np.full(dim, 1.0))
        x = x0 if restore == "initial" else np.full(dim, 5.0)
        if r == 1 and restore == "published":
            counter[0] = 1
            t.push_model(x)  # x unchanged from here on: the interface's precondition
        comm.Barrier()
        if r == 1:
            close = t.slots.close_views

            def paused_close() -> list[int]:
                comm.Barrier()  # rank 0: publish models 2 and 3 (3 rewrites buffer 1)
                comm.Barrier()
                return close()

            t.slots.close_views = paused_close
            start = float(x[0])
            t.mix_latest(x, np.ones(dim), np.array([0.5]), 0.5, 0.0, 1.0)
            expected = 0.5 * start + 0.5 * 3.0
            if not np.all(x == expected) or t.versions.tolist() != [3]:
                error = f"x {np.unique(x)[:4]} (expected {expected}), versions {t.versions}"
            elif (t.zero_copy_mixes, t.redone_mixes, t.slots.retries) != (1, 1, 1):
                error = f"mixes {t.zero_copy_mixes}, redone {t.redone_mixes}, retries {t.slots.retries}"
        else:
            comm.Barrier()
            if r == 0:
                for u in (2, 3):
                    counter[0] = u
                    t.push_model(np.full(dim, float(u)))
            comm.Barrier()
    finally:
        comm.Barrier()
        t.free()
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("restore", ["published", "backup"])
@pytest.mark.parametrize("path", ["off", "auto"])
def test_mix_latest_under_a_hammering_writer(restore: str, path: str) -> None:
    """Rank 0 pushes at full rate (every element = the model number) while rank 1 runs
    ADSGD steps with mix_latest: every step must be the mix of one complete model, the
    one ``versions`` reports, whether it was taken from the window or redone."""
    comm = MPI.COMM_WORLD
    r = comm.rank
    dim, seconds = 60_000, 1.0
    counter = [0]
    t = _pair_transport(comm, counter, np.zeros(dim), shared_memory=path)
    error = None
    steps = 0
    w_nbrs, w_self, alpha = np.array([0.5]), 0.5, 0.25
    g = np.full(dim, 2.0)
    x = np.zeros(dim)
    one = np.zeros(1)
    adsgd_step(one, one, np.zeros((1, 1)), w_nbrs, w_self, alpha, 1.0)  # load the kernels first
    try:
        comm.Barrier()
        stop = time.monotonic() + seconds
        if r == 0:
            while time.monotonic() < stop:
                counter[0] += 1
                x.fill(float(counter[0]))
                t.push_model(x)
        elif r == 1:
            last = 0
            while time.monotonic() < stop and error is None:
                steps += 1
                value = float(steps % 1000)
                x.fill(value)
                if restore == "published":
                    counter[0] = steps
                    t.push_model(x)
                t.mix_latest(x, g, w_nbrs, w_self, alpha, 1.0)
                v = int(t.versions[0])
                ref = np.array([value])
                adsgd_step(ref, g[:1], np.array([[float(v)]]), w_nbrs, w_self, alpha, 1.0)
                if v < last:
                    error = f"version went back from {last} to {v}"
                elif not np.all(x == ref[0]):
                    error = f"step {steps}: mixed {np.unique(x)[:4]}, the mix of model {v} is {ref[0]}"
                last = v
        comm.Barrier()
        stats = (t.zero_copy_mixes, t.redone_mixes)
    finally:
        comm.Barrier()
        t.free()
    # A writer that publishes back to back can starve the reader's mixes (ModelSlots' docstring; measured
    # 1-5 mixes/s under Open MPI at this d on a loaded machine, on either path); an agent computes between
    # publications, so only progress is required here, and every mix must be exact (README, Limitations)
    if r == 1 and error is None and steps < 1:
        error = f"only {steps} steps in {seconds} s"
    lines = comm.gather(f"{steps} steps, {stats[0]} zero-copy, {stats[1]} redone" if r == 1 else "")
    if r == 0:
        print("\n  [rank 1] " + lines[1], file=sys.stderr)
    _all_ok(comm, error)
