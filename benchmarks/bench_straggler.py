"""One rank slowed 10×: what it costs the other ranks' gradient rate, ADSGD vs DSGD (docs/design.md §6, §9).

    python benchmarks/bench_straggler.py --budget 10 --time-unit 0.002 --out benchmarks/results/straggler.json

9 agents on the 3×3 digits grid run for real on MPI (``mpiexec -n 9 hpcasync
run``, no monitor), with injected delays: case 1 (every computation takes
Gamma(10) with mean 1 time unit, every transmission log-normal with mean 1)
and case 3 (the same, but agent 4, the centre of the grid, computes 10× slower).
A rank's gradient rate is its gradients ÷ its wall time; the table gives the
mean over the eight other ranks and its ratio case 3 ÷ case 1. Under ADSGD the
others should keep (≥ 0.9 of) their rate, under DSGD every round waits for the
straggler's neighbours, which wait for the straggler. Never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from mpi_common import digits_config, run_config, save, table

from hpcasync.results.reader import open_run

STRAGGLER = 4


def rates(run_dir: Path) -> np.ndarray:
    run = open_run(run_dir)
    out = np.full(run.n_agents, np.nan)
    for a in run.agents():
        t = a["timings"]
        out[a["rank"]] = t["gradients"] / t["wall_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=10.0, help="wall seconds per run")
    p.add_argument("--time-unit", type=float, default=0.002, help="seconds per delay unit")
    p.add_argument("--algorithms", nargs="+", default=["adsgd", "dsgd"])
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    rows, commands = [], []
    with tempfile.TemporaryDirectory(prefix="bench-straggler-") as tmp:
        for algorithm in args.algorithms:
            base = None
            for case in (1, 3):
                raw = digits_config(f"{algorithm}-case{case}", algorithm,
                                    delays={"case": case, "straggler": STRAGGLER},
                                    budget={"time": args.budget}, mpi={"time_unit": args.time_unit})
                run_dir, cmd = run_config(raw, Path(tmp))
                commands.append(cmd)
                r = rates(run_dir)
                others = float(np.mean(np.delete(r, STRAGGLER)))
                if case == 1:
                    base = others
                row = {"algorithm": algorithm, "case": case, "others_grad_per_s": others,
                       "straggler_grad_per_s": float(r[STRAGGLER]),
                       "others_per_time_unit": others * args.time_unit,
                       "others_vs_case1": others / base if base else float("nan"),
                       "per_rank": [float(x) for x in r]}
                rows.append(row)
                print(f"{algorithm} case {case}: others {others:.1f} gradients/s, "
                      f"straggler {r[STRAGGLER]:.1f}", flush=True)
    cols = ["algorithm", "case", "others_grad_per_s", "straggler_grad_per_s", "others_per_time_unit",
            "others_vs_case1"]
    print(table(rows, cols))
    path = save("straggler", {
        "definition": "mean gradient rate (gradients / wall s) of the 8 non-straggler ranks; case 3 = agent 4 "
                      "computes 10x slower; others_vs_case1 = that rate in case 3 / in case 1",
        "budget_s": args.budget, "time_unit_s": args.time_unit, "ranks": 9, "runs": commands, "results": rows,
    }, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
