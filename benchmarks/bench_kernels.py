"""Mixing-kernel bandwidth relative to ``numpy.copyto`` (docs/design.md §9).

For each d, on the same arrays in one run, time every kernel and
``numpy.copyto`` best-of-N with ``time.perf_counter`` (kernel and copyto
calls interleaved, so both see the same machine load) and report

    GB/s = bytes / best time,  bytes = 8·d·(arrays read + arrays written), each counted once

(``adsgd_step`` with degree k reads x, g and k neighbour rows and writes x:
k + 3 arrays; ``copyto`` reads one and writes one: 2), and the ratio
kernel GB/s ÷ copyto GB/s (target ≥ 0.6: the kernels are memory-bound).
A second ratio divides by copyto moving the same bytes over the same working
set (arrays·d/2 elements): at d = 1e6 a copy of d elements fits in a 32 MB
L3 while the kernel's k + 3 arrays do not. Never asserts timings.

    python benchmarks/bench_kernels.py --dims 1e6 1e7 --repeat 10 --out benchmarks/results/kernels.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

from hpcasync.kernels import mixing as mk

TARGET = 0.6


def best_times(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Best of ``repeat`` timed calls of each function, calls interleaved round-robin.

    Interleaving makes a kernel and its copyto reference see the same machine
    load (this benchmark must also run on shared nodes), and each call starts
    with caches full of the other calls' data, as in the training loop where a
    gradient computation runs between two mixing steps. One untimed round
    first faults the pages in.
    """
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


Case = tuple[str, int, int, Callable[[], object]]


def cases(d: int, degs: list[int], rng: np.random.Generator) -> list[Case]:
    """(kernel, degree, arrays touched, call) for every kernel; all share the arrays of this d."""
    x, g, s, inbox, delta, out = (rng.standard_normal(d) for _ in range(6))
    rows = rng.standard_normal((max(degs), d))
    a, b = 0.01, 1.0
    out_cases: list[Case] = []
    for k in degs:
        nb = rows[:k]  # leading rows of a C-contiguous array: still C-contiguous
        w = np.full(k, 1.0 / (k + 1))
        ws = 1.0 / (k + 1)
        out_cases += [
            ("adsgd_step", k, k + 3, lambda nb=nb, w=w, ws=ws: mk.adsgd_step(x, g, nb, w, ws, a, b)),
            ("adsgd_step_blocked", k, k + 3,
             lambda nb=nb, w=w, ws=ws: mk.adsgd_step_blocked(x, g, nb, w, ws, a, b)),
            ("weighted_sum_into", k, k + 1, lambda nb=nb, w=w: mk.weighted_sum_into(out, nb, w)),
            ("mean_rows_into", k, k + 1, lambda nb=nb: mk.mean_rows_into(out, nb)),
            ("consensus_distance", k, k + 1, lambda nb=nb: mk.consensus_distance(nb, out)),
            # numpy, for comparison: the same update with d-sized temporaries
            ("numpy adsgd_step", k, k + 3, lambda nb=nb, w=w, ws=ws: _numpy_adsgd(x, g, nb, w, ws, a, b)),
        ]
    out_cases += [
        # reads x, s, g; writes x, Δ
        ("adsgd_delta_step", 0, 5, lambda: mk.adsgd_delta_step(x, s, g, delta, 0.5, a, b)),
        # reads x, s, inbox, g; writes x, s, inbox, Δ
        ("adsgd_delta_step_inbox", 0, 8, lambda: mk.adsgd_delta_step_inbox(x, s, inbox, g, delta, 0.5, a, b)),
        ("add_and_zero", 0, 4, lambda: mk.add_and_zero(s, inbox)),
        ("axpy", 0, 3, lambda: mk.axpy(s, 1e-9, g)),
        ("scale_into", 0, 2, lambda: mk.scale_into(out, 0.5, g)),
        ("copy_into", 0, 2, lambda: mk.copy_into(out, g)),
    ]
    return out_cases


def _numpy_adsgd(x, g, nbrs, w, ws, a, b) -> None:
    mix = ws * x
    for j in range(nbrs.shape[0]):
        mix += w[j] * nbrs[j]
    x *= 1.0 - b
    x += b * mix
    x -= a * g


def run(dims: list[int], degs: list[int], repeat: int) -> dict:
    mk.warmup()
    rng = np.random.default_rng(0)
    results = []
    for d in dims:
        src, dst = rng.standard_normal(d), np.empty(d)
        kernel_cases = cases(d, degs, rng)
        # copyto moving the kernel's bytes over the kernel's working set: tells a cache
        # effect (a copy of d elements fits in L3, the kernel's arrays may not) from a slow kernel
        big = (max(a for _, _, a, _ in kernel_cases) * d + 1) // 2
        bsrc, bdst = rng.standard_normal(big), np.empty(big)
        copies = []
        for name, k, arrays, fn in kernel_cases:
            m = (arrays * d + 1) // 2
            t, t_copy, t_foot = best_times([
                fn,
                lambda a=dst, b=src: np.copyto(a, b),
                lambda m=m, a=bdst, b=bsrc: np.copyto(a[:m], b[:m]),
            ], repeat)
            gbs = 8.0 * d * arrays / t / 1e9
            copy_gbs = 16.0 * d / t_copy / 1e9
            foot_gbs = 16.0 * m / t_foot / 1e9
            copies.append(t_copy)
            results.append({"kernel": name, "d": d, "degree": k, "arrays": arrays, "bytes": 8 * d * arrays,
                            "best_s": t, "gb_s": gbs, "copyto_gb_s": copy_gbs, "ratio": gbs / copy_gbs,
                            "copyto_same_bytes_gb_s": foot_gbs, "ratio_same_bytes": gbs / foot_gbs})
        t_copy = min(copies)
        copy_gbs = 16.0 * d / t_copy / 1e9
        results.append({"kernel": "numpy.copyto", "d": d, "degree": 0, "arrays": 2, "bytes": 16 * d,
                        "best_s": t_copy, "gb_s": copy_gbs, "copyto_gb_s": copy_gbs, "ratio": 1.0,
                        "copyto_same_bytes_gb_s": copy_gbs, "ratio_same_bytes": 1.0})
    return {
        "benchmark": "kernels",
        "definition": "GB/s = 8*d*(arrays read + arrays written, each once) / best time; "
                      "ratio = kernel GB/s / numpy.copyto GB/s on arrays of length d, "
                      "timed interleaved with the kernel; "
                      "ratio_same_bytes = kernel GB/s / numpy.copyto GB/s copying arrays*d/2 elements "
                      "(same bytes moved, same working set)",
        "target_ratio": TARGET,
        "repeat": repeat,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "numpy": np.__version__, "numba": numba.__version__},
        "results": results,
    }


def table(report: dict) -> str:
    lines = [f"{'kernel':<24} {'d':>7} {'deg':>4} {'GB/s':>7} {'copyto':>7} {'ratio':>6} "
             f"{'copyto*':>8} {'ratio*':>7}"]
    for r in report["results"]:
        flag = "" if r["ratio"] >= TARGET or r["kernel"].startswith("numpy") else "  < target"
        lines.append(f"{r['kernel']:<24} {r['d']:>7.0e} {r['degree']:>4} {r['gb_s']:>7.1f} "
                     f"{r['copyto_gb_s']:>7.1f} {r['ratio']:>6.2f} {r['copyto_same_bytes_gb_s']:>8.1f} "
                     f"{r['ratio_same_bytes']:>7.2f}{flag}")
    lines.append("copyto: numpy.copyto of d elements, timed interleaved with the kernel; copyto*/ratio*: "
                 "copyto moving the kernel's bytes (arrays*d/2 elements)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", nargs="+", type=float, default=[1e6, 1e7], help="model sizes d")
    ap.add_argument("--degrees", nargs="+", type=int, default=[2, 4, 8], help="neighbour counts")
    ap.add_argument("--repeat", type=int, default=10, help="timed calls per kernel; the best counts")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/kernels.json"))
    args = ap.parse_args(argv)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command} | run([int(d) for d in args.dims], args.degrees, args.repeat)
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
