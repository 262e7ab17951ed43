"""Parameter-server throughput on MPI: gradients applied per second by async-sgd's one-sided server vs M.

Run: ``.venv/bin/python benchmarks/bench_server.py [--workers 2 4 8 16] [--seconds 5]``. Each M is one
``mpiexec -n M hpcasync run`` of configs/mishchenko-2022/fig1.toml without a delay model and without a monitor
(least squares, d = 400, batch ``--batch``), for a wall-time budget; the applied steps are read back from
the rank files' /server_steps. Prints a Markdown table and writes benchmarks/results/server_updates.json.
On the 2-core development machine M > 2 is oversubscribed: the rate then measures the scheduler too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(m: int, seconds: float, batch: int, algorithm: str, mpiexec: str, python: str) -> dict[str, float]:
    from hpcasync.results.reader import open_run

    out = Path(tempfile.mkdtemp(prefix="bench-server-"))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    cmd = [mpiexec, "-n", str(m), python, "-m", "hpcasync", "run", str(ROOT / "configs/mishchenko-2022/fig1.toml"),
           "--set", f"topology.n={m}", "--set", "delays.model=none", "--set", f"budget.time={seconds}",
           "--set", "budget.gradients=0", "--set", "mpi.monitor=false", "--set", f"algorithm.batch_size={batch}",
           "--set", f"algorithm.name={algorithm}", "--set", "algorithm.alpha=0.01", "--set", "eval.interval=1e6",
           "--out", str(out / "run"), "--quiet"]
    try:
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        run = open_run(out / "run")
        wall = float(run.summary["wall_s"])
        steps = run.server_steps()
        applied = len(steps["step"]) if steps is not None else int(run.summary["gradients"])
        tau = float(steps["tau"].mean()) if steps is not None else 0.0
        lock = [run.agent(r)["timings"].get("communicate_s", 0.0) for r in range(m)]
        return {"workers": m, "wall_s": wall, "applied": applied, "per_s": applied / wall, "tau_mean": tau,
                "server_s_per_step": sum(lock) / max(applied, 1)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--algorithm", default="async-sgd")
    ap.add_argument("--mpiexec", default=str(ROOT / ".venv/bin/mpiexec"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/server_updates.json"))
    args = ap.parse_args()
    rows = [measure(m, args.seconds, args.batch, args.algorithm, args.mpiexec, args.python) for m in args.workers]
    print("| M | gradients applied / s | mean τ | server time per step (µs) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['per_s']:.0f} | {r['tau_mean']:.2f} | {1e6 * r['server_s_per_step']:.1f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"algorithm": args.algorithm, "batch": args.batch, "rows": rows},
                                          indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
