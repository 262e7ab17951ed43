"""float32 end to end on MPI: windows, board and the engine with the model dtype of a torch model.

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi/test_float32.py``. The window tests need
no torch; the engine tests skip without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.engines.mpi.board import Board
from hpcasync.engines.mpi.pairs import PairWindow
from hpcasync.engines.mpi.runner import run_rank
from hpcasync.engines.mpi.windows import DeltaAccumulator, ModelSlots
from tests.mpi.test_engine import _all_ok, _config, _models

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed (make install-torch: pip install torch==2.13.0)")


def _ring(comm: MPI.Comm) -> list[int]:
    r, n = comm.rank, comm.size
    return sorted({(r - 1) % n, (r + 1) % n})


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_slots_in_the_model_dtype(dtype) -> None:
    comm = MPI.COMM_WORLD
    nb = _ring(comm)
    dim = 1001  # odd: float32 rows end off an 8-byte boundary
    x0 = np.zeros(dim, dtype)
    with ModelSlots(comm, dim, nb, nb, x0=x0) as slots:
        assert slots.dtype == np.dtype(dtype) and slots._data.dtype == np.dtype(dtype)
        x = (np.arange(dim) + comm.rank * 1e-3).astype(dtype)
        slots.publish(x)
        comm.Barrier()
        out = np.empty((len(nb), dim), dtype)
        versions = slots.read_all(out)
        error = None
        for k, j in enumerate(nb):
            if not np.array_equal(out[k], (np.arange(dim) + j * 1e-3).astype(dtype)) or versions[k] != 1:
                error = f"slot of {j}: wrong model"
        if slots.bytes_sent != len(nb) * (dim * np.dtype(dtype).itemsize + 16):
            error = f"bytes_sent {slots.bytes_sent}"
        with pytest.raises(ValueError, match="array of shape"):
            slots.read_all(np.empty((len(nb), dim), np.float32 if dtype == np.float64 else np.float64))
        comm.Barrier()
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_delta_accumulator_float32_is_lossless() -> None:
    comm = MPI.COMM_WORLD
    nb = _ring(comm)
    dim = 513
    with DeltaAccumulator(comm, dim, nb, dtype=np.float32) as acc:
        for k in range(20):
            for j in nb:
                acc.accumulate(j, np.full(dim, 0.5 * (k + 1), np.float32), 2.0 if k % 2 else 1.0)
        comm.Barrier()
        s = np.zeros(dim, np.float32)
        acc.drain_into(s)
        expected = len(nb) * sum(0.5 * (k + 1) * (2.0 if k % 2 else 1.0) for k in range(20))
        error = None if np.all(s == np.float32(expected)) else f"drained {np.unique(s)[:3]}, expected {expected}"
        assert acc.bytes_sent == 20 * len(nb) * dim * 4
        comm.Barrier()
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=4)
def test_board_and_pairs_float32() -> None:
    comm = MPI.COMM_WORLD
    r, n = comm.rank, comm.size
    dim = 77
    x0 = np.zeros(dim, np.float32)
    error = None
    with Board(comm, dim, publishes=r != 0, x0=x0 if r else None, dtype=np.float32) as board:
        if r:
            board.publish(np.full(dim, -1.0, np.float32))
            board.publish(np.full(dim, r, np.float32))
            # the layout in the window's own memory: model u in buffer u mod 2, nothing past 2·dim
            mem = np.frombuffer(board._data_win.tomemory(), np.float32)
            if mem.size != 2 * dim or not (np.all(mem[:dim] == r) and np.all(mem[dim:] == -1.0)):
                error = f"board window layout: {mem.size} elements, {mem[:2]}, {mem[dim:dim + 2]}"
        comm.Barrier()
        if r == 0:
            out = np.empty(dim, np.float32)
            for j in range(1, n):
                board.read_model(j, out)
                if not np.all(out == j):
                    error = f"board model of {j}: {out[:3]}"
        comm.Barrier()
    even = n - n % 2
    nbrs = ([r + 1] if r % 2 == 0 else [r - 1]) if r < even else []
    with PairWindow(comm, np.full(dim, float(r), np.float32), nbrs, active=r % 2 == 0) as pw:
        assert pw.x.dtype == np.float32
        if r % 2 == 0 and nbrs:
            v = np.array(pw.x)
            pw.average(nbrs[0], v, iteration=3)
            if not np.all(v == np.float32(r + 0.5)):
                error = f"pair average {v[:3]}"
        comm.Barrier()
        if r % 2 == 1 and r < even and not np.all(pw.x == np.float32(r - 0.5)):
            error = f"passive model after the average: {pw.x[:3]}"
        comm.Barrier()
    _all_ok(comm, error)



@needs_torch
@pytest.mark.mpi(min_size=4)
def test_torch_dsgd_matches_sequential_reference(out_dir: Path) -> None:
    """DSGD with a torch MLP on MPI, float32, = x^{k+1} = W x^k − α G^k computed serially."""
    comm = MPI.COMM_WORLD
    n = comm.size
    cfg = _config(n, algorithm={"name": "dsgd", "batch_size": 4000}, problem={"name": "torch", "model": "mlp"},
                  delays={"model": "none"}, budget={"time": 0.0, "gradients": 5 * n})
    res = run_rank(cfg, out_dir, comm)
    X, _ = _models(comm, res)
    from hpcasync import problems
    from hpcasync.engines.build import build_topology

    W = build_topology(cfg).W
    problem = problems.build(cfg, n)
    oracles = [problem.oracle(i, cfg.run.seed) for i in range(n)]
    x = np.tile(problem.init_params(cfg.run.seed), (n, 1)).astype(np.float64)
    for _ in range(5):
        G = np.stack([oracles[i].gradient(x[i].astype(np.float32))[0].copy() for i in range(n)])
        x = W @ x - cfg.algorithm.alpha * G
    err = float(np.max(np.abs(X - x)))
    _all_ok(comm, None if X.dtype == np.float32 and err <= 1e-4 else f"{X.dtype}: max |x_mpi − x_ref| = {err:.3e}")


@needs_torch
@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("algorithm", ["adsgd", "adsgd-delta", "allreduce", "adpsgd", "rfast"])
def test_every_algorithm_runs_a_torch_model_in_float32(out_dir: Path, algorithm: str) -> None:
    comm = MPI.COMM_WORLD
    n = comm.size - comm.size % 2 if algorithm == "adpsgd" else comm.size
    if comm.rank >= n:  # AD-PSGD needs an even ring: the odd rank out sits this one out
        sub = comm.Split(MPI.UNDEFINED, comm.rank)
        comm.Barrier()
        return
    sub = comm.Split(0, comm.rank)
    cfg = _config(n, algorithm={"name": algorithm}, problem={"name": "torch", "model": "mlp"},
                  budget={"time": 0.8}, delays={"straggler": n - 1})
    res = run_rank(cfg, out_dir, sub)
    X, _ = _models(sub, res)
    error = None
    if X.dtype != np.float32 or not np.all(np.isfinite(X)):
        error = f"final models {X.dtype}, finite {np.isfinite(X).all()}"
    elif sub.allreduce(res.agent.iteration) < n:
        error = "no progress"
    sub.Free()
    comm.Barrier()
    _all_ok(comm, error)
