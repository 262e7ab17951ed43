"""Latency of the RMA layer's operations on 2 ranks (docs/design.md §5.1, §5.2, §9).

    mpiexec -n 2 python benchmarks/bench_rma.py --dims 1e3 1e5 1e6 --out benchmarks/results/rma.json

Rank 0 writes into rank 1 (``publish``, ``accumulate``) while rank 1 waits
in a barrier; then rank 1 reads its own windows (``read``, ``drain``,
``snapshot``) while rank 0 waits. Every operation is timed call by call with
``time.perf_counter`` after a few untimed warm-up calls; the table shows the
median and the best call, and GB/s = payload bytes (8·d) / median.
``numpy.copyto`` of d float64 on rank 1 is the memory-bandwidth reference
(a ``read`` is one such copy plus the seqlock's two word fetches).
Never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import mpi4py
import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.shared_slots import SharedSlots
from hpcasync.engines.mpi.windows import DeltaAccumulator, ModelSlots

WARMUP = 5


def reps_for(d: int, budget_bytes: float = 4e8) -> int:
    """Enough calls for a stable median, bounded so that d = 1e6 stays quick."""
    return int(max(30, min(2000, budget_bytes // (8 * d))))


def time_calls(fn: Callable[[], object], reps: int) -> np.ndarray:
    for _ in range(WARMUP):
        fn()
    times = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return times


def bench_dim(comm: MPI.Comm, d: int) -> list[dict]:
    """All operations for one model size; returns rows on rank 0 (empty elsewhere)."""
    r = comm.rank
    peer = 1 - r
    reps = reps_for(d)
    measured: dict[str, np.ndarray] = {}
    # Rank 0 writes to rank 1 only: the windows mirror one edge of a graph.
    in_nb, out_nb = ([0], []) if r == 1 else ([], [1])
    x = np.random.default_rng(r).standard_normal(d)
    with ModelSlots(comm, d, in_nb, out_nb) as slots, DeltaAccumulator(comm, d, out_nb) as acc, \
            SharedSlots(comm, d, in_nb, out_nb) as shared:
        comm.Barrier()
        if r == 0:
            measured["publish"] = time_calls(lambda: slots.publish(x), reps)
            # the same-node path (shared_slots.py) against one copy of the same bytes on the same rank
            measured["publish (shared memory)"] = time_calls(lambda: shared.publish(x), reps)
            ref = np.empty(d)
            measured["numpy.copyto (writer's reference)"] = time_calls(lambda: np.copyto(ref, x), reps)
            measured["accumulate (scale 0.5)"] = time_calls(lambda: acc.accumulate(peer, x, 0.5), reps)
            measured["accumulate (scale 1)"] = time_calls(lambda: acc.accumulate(peer, x), reps)
        comm.Barrier()
        if r == 1:
            out, s, dst = np.empty(d), np.zeros(d), np.empty(d)
            measured["read"] = time_calls(lambda: slots.read(0, out), reps)
            rows = np.empty((1, d))
            measured["read_all (degree 1)"] = time_calls(lambda: slots.read_all(rows), reps)
            measured["read_all (shared memory)"] = time_calls(lambda: shared.read_all(rows), reps)
            measured["drain_into"] = time_calls(lambda: acc.drain_into(s), reps)
            measured["snapshot_into"] = time_calls(lambda: acc.snapshot_into(s), reps)
            measured["numpy.copyto (reference)"] = time_calls(lambda: np.copyto(dst, x), reps)
        comm.Barrier()
    gathered = comm.gather(measured)
    if r != 0:
        return []
    rows_out = []
    for rank, ops in enumerate(gathered):
        for op, t in ops.items():
            med = float(np.median(t))
            rows_out.append({
                "op": op, "rank": rank, "d": d, "reps": len(t), "bytes": 8 * d,
                "median_s": med, "min_s": float(t.min()), "mean_s": float(t.mean()),
                "p90_s": float(np.percentile(t, 90)), "gb_s": 8 * d / med / 1e9,
            })
    return rows_out


def run(comm: MPI.Comm, dims: list[int]) -> dict:
    results = [row for d in dims for row in bench_dim(comm, d)]
    return {
        "benchmark": "rma",
        "definition": "per-call wall time of each operation, 2 ranks on one node; "
                      "gb_s = 8*d / median; publish/accumulate from rank 0 into rank 1, "
                      "read/drain/snapshot by rank 1 on its own windows",
        "ranks": comm.size,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "numpy": np.__version__, "mpi4py": mpi4py.__version__,
                    "mpi": MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()},
        "results": results,
    }


def table(report: dict) -> str:
    head = ("operation", "d", "reps", "median us", "best us", "p90 us", "GB/s")
    lines = ["{:<26} {:>7} {:>5} {:>10} {:>9} {:>9} {:>6}".format(*head)]
    for row in report["results"]:
        lines.append(f"{row['op']:<26} {row['d']:>7.0e} {row['reps']:>5} {1e6 * row['median_s']:>10.1f} "
                     f"{1e6 * row['min_s']:>9.1f} {1e6 * row['p90_s']:>9.1f} {row['gb_s']:>6.2f}")
    for row in report["results"]:  # the figure: shared push / copy of the same bytes
        if row["op"] == "publish (shared memory)":
            ref = next(q for q in report["results"]
                       if q["d"] == row["d"] and q["op"].startswith("numpy.copyto (w"))
            ratio = row["median_s"] / ref["median_s"]
            lines.append(f"shared publish / numpy.copyto at d = {row['d']:.0e}: {ratio:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", nargs="+", type=float, default=[1e3, 1e5, 1e6], help="model sizes d")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rma.json"))
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    if comm.size != 2:
        if comm.rank == 0:
            print(f"bench_rma needs exactly 2 ranks (mpiexec -n 2), got {comm.size}")
        raise SystemExit(2)
    report = run(comm, [int(d) for d in args.dims])
    if comm.rank == 0:
        print(table(report))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
