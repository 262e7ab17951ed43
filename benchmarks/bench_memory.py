"""Memory per agent of ADSGD Alg. 2 vs Alg. 3 as the degree grows (docs/design.md §4, §9).

Models of size d an agent holds (Zhou & Pu 2025 Alg. 2 / Alg. 3, App. A.3):

    Alg. 2 (adsgd):        x, g, and one slot per neighbour   = deg + 2
    Alg. 3 (adsgd-delta):  x, s, g, Δ                         = 4, whatever the degree

The state is built as the algorithms hold it (float64; neighbour slots one
C-contiguous (deg, d) array, the layout ``adsgd_step`` takes) and measured
two ways: bytes that ``tracemalloc`` sees allocated, and the growth of the
resident set once every page has been written. Never asserts.

    python benchmarks/bench_memory.py --dim 1e6 --degrees 2 4 8 16 --out benchmarks/results/memory.json

``--dtype float32 --dim 9231114`` is the CIFAR VGG11 of Zhou & Pu 2025 as the torch problem holds it
(``benchmarks/results/memory_vgg11.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import sys
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

State = dict[str, np.ndarray]


def alg2_state(d: int, deg: int, dtype: str = "float64") -> State:
    """x, g and deg neighbour slots initialised to x0 (Zhou & Pu 2025 Alg. 2)."""
    x0 = np.ones(d, dtype)
    return {"x": x0.copy(), "g": np.ones(d, dtype), "slots": np.tile(x0, (deg, 1))}


def alg3_state(d: int, deg: int, dtype: str = "float64") -> State:
    """x, s = (1 − w_ii)·x0, g, Δ (Zhou & Pu 2025 Alg. 3); deg does not enter."""
    x0 = np.ones(d, dtype)
    w_self = 1.0 / (deg + 1)
    return {"x": x0.copy(), "s": (1.0 - w_self) * x0, "g": np.ones(d, dtype), "delta": np.ones(d, dtype)}


def _rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


MAKERS = {"adsgd (Alg. 2)": alg2_state, "adsgd-delta (Alg. 3)": alg3_state}


def measure(algo: str, d: int, deg: int, dtype: str = "float64") -> dict:
    """Allocated (tracemalloc) and resident bytes of one agent's state.

    Run in a fresh process each time: malloc keeps freed pages of an earlier
    state resident and hands them out again, which hides RSS growth.
    """
    gc.collect()
    rss0 = _rss_bytes()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    state = MAKERS[algo](d, deg, dtype)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = _rss_bytes()
    return {
        "traced_bytes": current - base,
        "traced_peak_bytes": peak - base,  # includes x0, a temporary of the initialisation
        "nbytes": sum(a.nbytes for a in state.values()),
        "rss_growth_bytes": None if rss0 is None or rss1 is None else rss1 - rss0,
    }


def run(d: int, degrees: list[int], dtype: str = "float64") -> dict:
    rows = []
    model = np.dtype(dtype).itemsize * d
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
        for deg in degrees:
            for algo, counted in (("adsgd (Alg. 2)", deg + 2), ("adsgd-delta (Alg. 3)", 4)):
                m = pool.submit(measure, algo, d, deg, dtype).result()
                rows.append({"algorithm": algo, "degree": deg, "d": d, "models_counted": counted,
                             "models_measured": m["traced_bytes"] / model, **m})
    return {"benchmark": "memory", "model_bytes": model, "dtype": dtype, "machine": {"platform": platform.platform()},
            "definition": "models_measured = bytes allocated for the state (tracemalloc) / (itemsize·d); "
                          "rss_growth_bytes = resident-set growth in a fresh process",
            "results": rows}


def table(report: dict) -> str:
    lines = [f"{'algorithm':<22} {'deg':>4} {'counted':>8} {'measured':>9} {'MB traced':>10} {'MB RSS':>8}"]
    for r in report["results"]:
        rss = "-" if r["rss_growth_bytes"] is None else f"{r['rss_growth_bytes'] / 1e6:.1f}"
        lines.append(f"{r['algorithm']:<22} {r['degree']:>4} {r['models_counted']:>8} "
                     f"{r['models_measured']:>9.2f} {r['traced_bytes'] / 1e6:>10.1f} {rss:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=float, default=1e6, help="model size d")
    ap.add_argument("--degrees", nargs="+", type=int, default=[2, 4, 8, 16])
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    args = ap.parse_args(argv)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command} | run(int(args.dim), args.degrees, args.dtype)
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
