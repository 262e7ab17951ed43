"""Gradients applied per second by a parameter server: Ray (the authors' design) vs hpcasync ``async-sgd`` on MPI.

Mishchenko et al. (2022) ran their parameter server on Ray: the driver holds x, M remote gradient
tasks run at once, ``ray.wait`` returns the first finished one, the driver applies it and
launches that worker again at the new x (their notebook's loop). This rebuilds that loop on the same
problem (least squares, d = 400, A ~ U[0,1)/√d, the rows of ``least-squares-uniform`` with seed 0,
batch 256, step 0.01 so nothing diverges) and measures, for M = 2, 4, 8, 16 workers and the same wall
time each, the gradients the server applied per second; then the same for hpcasync's one-sided MPI
server (``benchmarks/bench_server.py``, M ranks, no monitor).

Ray is an optional benchmark dependency, never needed by the tests or the install: put it in a venv of
its own (``python3 -m venv .venv-ray && .venv-ray/bin/pip install ray numpy``) and pass its
interpreter with ``--ray-python``. Without one the Ray column is skipped with a note.

Run: ``.venv/bin/python benchmarks/bench_vs_ray.py --ray-python .venv-ray/bin/python [--seconds 5]``;
writes benchmarks/results/server_vs_ray.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _data(n: int = 10000, d: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rows of hpcasync's ``least-squares-uniform`` (data/synthetic.py), rebuilt without importing hpcasync."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6C7371, 1]))
    n_all = n + max(1, n // 5)
    A = rng.random((n_all, d)) / np.sqrt(d)
    x_star = rng.standard_normal(d)
    b = A @ x_star + 1e-5 * rng.standard_normal(n_all)
    return A[:n], b[:n]


def ray_rate(m: int, seconds: float, batch: int) -> dict[str, float]:
    """The authors' loop on Ray: returns gradients applied per second by the driver (the server)."""
    import ray

    A, b = _data()

    @ray.remote
    def gradient(x: np.ndarray, A: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
        idx = np.random.default_rng(seed).choice(len(b), batch, replace=False)
        r = A[idx] @ x - b[idx]
        return r @ A[idx] / batch

    ray.init(num_cpus=m, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        A_ref, b_ref = ray.put(A), ray.put(b)
        x = np.zeros(A.shape[1])
        seed = 0
        running = {}
        for w in range(m):
            running[gradient.remote(x, A_ref, b_ref, seed)] = w
            seed += 1
        applied, warm = 0, None
        t0 = time.perf_counter()
        while True:
            ready, _ = ray.wait(list(running), num_returns=1)
            w = running.pop(ready[0])
            x -= 0.01 * ray.get(ready[0])
            now = time.perf_counter()
            if warm is None and now - t0 > 1.0:  # the first second starts the worker processes
                warm, applied = now, 0
            applied += 1
            if warm is not None and now - warm >= seconds:
                break
            running[gradient.remote(x, A_ref, b_ref, seed)] = w
            seed += 1
        return {"workers": m, "applied": applied, "per_s": applied / (time.perf_counter() - warm)}
    finally:
        ray.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--ray-python", default="")
    ap.add_argument("--ray-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/server_vs_ray.json"))
    args = ap.parse_args()
    if args.ray_only:  # inside the Ray venv: one JSON line per M
        for m in args.workers:
            print(json.dumps(ray_rate(m, args.seconds, args.batch)), flush=True)
        return 0
    ray_rows: dict[int, dict[str, float]] = {}
    note = ""
    if args.ray_python:
        cmd = [args.ray_python, __file__, "--ray-only", "--seconds", str(args.seconds), "--batch", str(args.batch),
               "--workers", *map(str, args.workers)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode == 0:
            for line in done.stdout.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    ray_rows[int(row["workers"])] = row
        else:
            note = f"Ray run failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    else:
        note = "Ray skipped: no --ray-python (pip install ray into a separate venv)"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_server import measure

    rows = []
    for m in args.workers:
        ours = measure(m, args.seconds, args.batch, "async-sgd", str(ROOT / ".venv/bin/mpiexec"), sys.executable)
        ray_row = ray_rows.get(m)
        rows.append({"workers": m, "hpcasync_per_s": ours["per_s"], "hpcasync_tau_mean": ours["tau_mean"],
                     "ray_per_s": None if ray_row is None else ray_row["per_s"]})
    print("| M | hpcasync async-sgd (MPI) gradients/s | Ray parameter server gradients/s | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        ray_s = "—" if r["ray_per_s"] is None else f"{r['ray_per_s']:.0f}"
        ratio = "—" if r["ray_per_s"] is None else f"{r['hpcasync_per_s'] / r['ray_per_s']:.1f}×"
        print(f"| {r['workers']} | {r['hpcasync_per_s']:.0f} | {ray_s} | {ratio} |")
    if note:
        print(note)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"batch": args.batch, "seconds": args.seconds, "rows": rows, "note": note},
                                          indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
