"""The parameter server on MPI (engines/mpi/server.py): atomic steps, τ = k − prev, async-sgd ≡ SGD, step rules.

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_server.py -q``. Results are gathered and
checked on every rank, so a failure never leaves a rank waiting in a collective.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync import config, problems
from hpcasync.algorithms.async_sgd import delay_rule
from hpcasync.algorithms.base import StepSize
from hpcasync.engines.mpi.runner import run_rank
from hpcasync.engines.mpi.server import ServerWindow
from hpcasync.kernels import axpy
from hpcasync.results.reader import open_run
from tests.mpi.conftest import sleeping_barrier
from tests.mpi.test_engine import _all_ok
from tests.server_checks import lsq_sections, lsq_smoothness, tau_errors

pytestmark = pytest.mark.timeout(120)




def _sub(comm: MPI.Comm, size: int) -> MPI.Comm | None:
    """The first ``size`` ranks in a communicator of their own (None on the others)."""
    sub = comm.Split(0 if comm.rank < size else MPI.UNDEFINED, comm.rank)
    return None if sub == MPI.COMM_NULL else sub


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("atomic", [True, False])
def test_no_torn_or_half_applied_step_is_ever_read(atomic: bool) -> None:
    """Every rank but the last hammers the server with steps x ← x + 1 (all d elements); the last one reads.
    Atomic: every model returned by a step and every read is a constant vector equal to its version.
    Hogwild!: element-wise atomic adds lose nothing (final x = number of steps), reads may be torn."""
    comm = MPI.COMM_WORLD
    d, steps = 50_000, 150
    server = ServerWindow(comm, np.zeros(d))
    rule = delay_rule("constant", StepSize(1.0), comm.size)
    g = -np.ones(d)
    out = np.empty(d)
    error, torn, reads = None, 0, 0
    try:
        comm.Barrier()
        if comm.rank < comm.size - 1:
            version = 0
            for _ in range(steps):
                k, _tau = server.step(g, version, rule, out, atomic)
                version = k
                if atomic and not (out.min() == out.max() == k):
                    error = error or f"step to version {k} returned x in [{out.min()}, {out.max()}]"
        else:
            t_end = time.perf_counter() + 30.0
            while time.perf_counter() < t_end:
                k = server.read(out)
                reads += 1
                if out.min() != out.max():
                    torn += 1
                    if atomic:
                        error = error or f"read version {k}: x in [{out.min()}, {out.max()}]: a torn read"
                elif atomic and out[0] != k:
                    error = error or f"read version {k} holding x = {out[0]}"
                if k >= steps * (comm.size - 1):
                    break
        comm.Barrier()
        k = server.read(out)
        total = steps * (comm.size - 1)
        if error is None and not (k == total and out.min() == out.max() == total):
            error = f"final version {k}, x in [{out.min()}, {out.max()}], expected {total}"
        if error is None and comm.rank == comm.size - 1 and reads < 2:
            error = f"only {reads} reads"
    finally:
        server.free()
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("algorithm", ["async-sgd", "hogwild"])
def test_one_worker_without_delay_is_plain_sgd(out_dir: Path, algorithm: str) -> None:
    comm = MPI.COMM_WORLD
    sub = _sub(comm, 1)
    error = None
    if sub is not None:
        raw = lsq_sections(1, algorithm={"name": algorithm, "batch_size": 8}, budget={"gradients": 40},
                           mpi={"monitor": False})
        cfg = config.from_dict(raw, source="test")
        res = run_rank(cfg, out_dir, sub)
        rows = res.transport.server.rows()
        problem = problems.build(cfg, 1)
        oracle = problem.oracle(0, cfg.run.seed)
        x = problem.init_params(cfg.run.seed)
        for _ in range(len(rows)):
            g, _ = oracle.gradient(x)
            axpy(x, -cfg.algorithm.alpha, g)
        if len(rows) < 35 or list(rows["tau"]) != [0] * len(rows):
            error = f"{len(rows)} steps with delays {sorted(set(rows['tau'].tolist()))}"
        elif not np.array_equal(res.agent.model, x):
            error = f"final model differs from SGD's by {np.abs(res.agent.model - x).max()}"
        sub.Free()
    sleeping_barrier(comm)
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("algorithm", ["async-sgd", "hogwild"])
def test_recorded_tau_is_k_minus_prev(out_dir: Path, algorithm: str) -> None:
    """A straggler 8× slower: its gradients come back stale; every record obeys τ = k − prev, every version
    is applied exactly once, and run.h5's server_steps hold them all (monitor rank: x read from the window)."""
    comm = MPI.COMM_WORLD
    n = comm.size - 1
    raw = lsq_sections(n, algorithm={"name": algorithm, "step_rule": "adaptive"}, budget={"gradients": 60 * n},
                       delays={"model": "case", "case": 3, "straggler": n - 1, "slowdown": 8.0,
                               "compute_dist": "constant", "comm_dist": "constant", "comm_mean": 0.05},
                       mpi={"monitor": True, "time_unit": 0.003}, eval={"interval": 0.05})
    res = run_rank(config.from_dict(raw, source="test"), out_dir, comm)
    error = None
    comm.Barrier()
    if comm.rank == 0:
        run = open_run(out_dir)
        s = run.server_steps()
        steps = [run.agent(m)["server_steps"] for m in range(n)]
        errors = tau_errors(steps)
        slow = s["tau"][s["worker"] == n - 1]
        fast = s["tau"][s["worker"] != n - 1]
        if errors:
            error = "; ".join(errors[:3])
        elif not (len(s["step"]) >= 50 * n and slow.mean() > fast.mean() and slow.max() >= n):
            error = f"{len(s['step'])} steps, straggler's mean tau {slow.mean():.2f} vs {fast.mean():.2f}"
        elif not run.evaluations["train_loss"][-1] < 0.5 * run.evaluations["train_loss"][0]:
            error = f"the server's loss went {run.evaluations['train_loss'][0]} -> {run.evaluations['train_loss'][-1]}"
    _all_ok(comm, error)
    del res


@pytest.mark.mpi(min_size=2)
def test_adaptive_step_converges_where_the_constant_one_diverges(out_dir: Path) -> None:
    """The simulator test's setting on two ranks: γ = 1.9/L, the second worker 20× slower."""
    comm = MPI.COMM_WORLD
    sub = _sub(comm, 2)
    error = None
    if sub is not None:
        L = lsq_smoothness()
        final, first, taus = {}, {}, {}
        for rule in ("constant", "adaptive"):
            raw = lsq_sections(2, algorithm={"step_rule": rule, "alpha": 1.9 / L}, budget={"gradients": 400},
                               delays={"model": "case", "case": 3, "straggler": 1, "slowdown": 20,
                                       "compute_dist": "constant", "comm_dist": "constant", "comm_mean": 0.01},
                               mpi={"monitor": False, "time_unit": 0.002})
            res = run_rank(config.from_dict(raw, source="test"), out_dir / rule, sub)
            if sub.rank == 0:  # the rank that evaluates without a monitor
                first[rule], final[rule] = res.evaluations[0]["train_loss"], res.final["train_loss"]
            rows = sub.allgather(res.transport.server.rows())
            taus[rule] = max(int(r["tau"].max()) for r in rows if len(r))
        if sub.rank == 0:
            if not (final["constant"] > 1e3 * first["constant"] or not np.isfinite(final["constant"])):
                error = f"constant step did not diverge: {first['constant']} -> {final['constant']}, max tau {taus}"
            elif not final["adaptive"] < 1e-3 * first["adaptive"]:
                error = f"adaptive step did not converge: {first['adaptive']} -> {final['adaptive']}, max tau {taus}"
        sub.Free()
    sleeping_barrier(comm)
    _all_ok(comm, error)
