"""How to complete a one-sided *read* of a busy rank's counter: ``Flush`` or the request's ``Wait`` (epoch.py, "Reads").

    python benchmarks/bench_read_completion.py --busy 1 --seconds 2 --out benchmarks/results/read_completion_mpich.json

Rank 1 computes without calling MPI (a numpy reduction of ~10 µs in a loop) and
stores its loop count into its own window word with a plain store, as a worker
does with its update count (board.py ``set_iteration``). Rank 0 does the same
and, every 100th pass, reads rank 1's word one-sided, four ways, each for
SECONDS inside one ``Lock_all`` epoch:

* ``Get_accumulate(NO_OP)`` + ``Flush_all`` (what ``Board.read_iterations`` did),
* ``Get_accumulate(NO_OP)`` + ``Flush(1)``,
* ``Fetch_and_op(NO_OP)`` + ``Flush(1)``,
* ``Rget_accumulate(NO_OP)`` + ``Request.Wait`` (what it does now).

Reported per way: median, mean, p99 and max µs of a read. ``--busy N`` adds N
processes that only spin (``while True: pass``) so that the ranks are more than
the cores, as on a 2-core machine running two ranks and anything else (the
oversubscription every multi-rank test here runs under). Never asserts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def _spin() -> None:
    while True:
        pass


def child(seconds: float, json_out: Path) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    W = MPI.INT64_T
    win = MPI.Win.Allocate(64, 8, comm=comm)
    mem = np.frombuffer(win.tomemory(), np.int64)
    mem[:] = 0
    win.Lock_all(MPI.MODE_NOCHECK)
    work = np.random.default_rng(comm.rank).random((650, 32))
    out, dummy = np.zeros(1, np.int64), np.zeros(1, np.int64)

    def getacc_flush_all() -> None:
        win.Get_accumulate([dummy, 1, W], [out, 1, W], 1, target=(1, 1, W), op=MPI.NO_OP)
        win.Flush_all()

    def getacc_flush() -> None:
        win.Get_accumulate([dummy, 1, W], [out, 1, W], 1, target=(1, 1, W), op=MPI.NO_OP)
        win.Flush(1)

    def fetch_flush() -> None:
        win.Fetch_and_op([dummy, 1, W], [out, 1, W], 1, 1, op=MPI.NO_OP)
        win.Flush(1)

    def rget_wait() -> None:
        win.Rget_accumulate([dummy, 1, W], [out, 1, W], 1, target=(1, 1, W), op=MPI.NO_OP).Wait()

    rows = []
    for name, read in [("Get_accumulate + Flush_all", getacc_flush_all), ("Get_accumulate + Flush", getacc_flush),
                       ("Fetch_and_op + Flush", fetch_flush), ("Rget_accumulate + Wait", rget_wait)]:
        comm.Barrier()
        end = time.perf_counter() + seconds
        times: list[float] = []
        k = 0
        while time.perf_counter() < end:
            work.sum()
            k += 1
            mem[1] = k
            if comm.rank == 0 and k % 100 == 0:
                t = time.perf_counter()
                read()
                times.append(time.perf_counter() - t)
        comm.Barrier()
        if comm.rank == 0:
            us = 1e6 * np.asarray(times)
            rows.append({"read": name, "reads": len(us), "median_us": float(np.median(us)),
                         "mean_us": float(us.mean()), "p99_us": float(np.percentile(us, 99)),
                         "max_us": float(us.max())})
    win.Unlock_all()
    win.Free()
    if comm.rank == 0:
        json_out.write_text(json.dumps({"mpi": MPI.Get_library_version().splitlines()[0].strip(), "rows": rows}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0, help="per way of reading")
    p.add_argument("--busy", type=int, default=1, help="spinning processes beside the two ranks")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.seconds, a.child)
        return
    from mpi_common import MPIEXEC, one_thread_env, save, table

    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(a.busy)]
    for s in spinners:
        s.start()
    try:
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"read-completion-{os.getpid()}.json"
        cmd = [MPIEXEC, "-n", "2", sys.executable, __file__, "--seconds", str(a.seconds), "--child", str(tmp)]
        subprocess.run(cmd, check=True, timeout=120 + 8 * a.seconds, env=one_thread_env())
        res = json.loads(tmp.read_text())
        tmp.unlink()
    finally:
        for s in spinners:
            s.terminate()
    print(f"{res['mpi']}, {a.busy} spinning process(es) beside 2 ranks on {os.cpu_count()} cores")
    print(table(res["rows"], ["read", "reads", "median_us", "mean_us", "p99_us", "max_us"]))
    path = save("read_completion", {"busy": a.busy, "seconds": a.seconds, **res}, a.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
