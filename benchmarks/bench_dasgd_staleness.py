"""DASGD's staleness across Zhou & Pu's (2025) five delay cases, and its time to target against ADSGD (simulator).

    python benchmarks/bench_dasgd_staleness.py [--budget 15000] [--bound 16] [--out benchmarks/results/dasgd.json]

The 9-agent grid on digits (configs/digits-grid/case1-dasgd.toml, the case
replaced). Per case: S_i (the ``staleness`` column: gradients computed
anywhere not yet applied at agent i) averaged and maximised over the
records; the pairwise S_avg / S_max of Tosi & Theobald 2023 over the
agents' vector clocks, sampled at every evaluation; virtual time to 0.9
test accuracy (5-evaluation moving average) for DASGD at α = 0.01 and at
α/9 (every model applies all 9 agents' gradients: equal effective step on
the average model) and ADSGD at α = 0.01; bytes per update. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from hpcasync.config import load
from hpcasync.engines.sim.runner import build_simulator
from hpcasync.results.metrics import time_to_target

ROOT = Path(__file__).resolve().parents[1]
CASES = {1: "base", 2: "slow communication", 3: "computation straggler", 4: "communication straggler",
         5: "combined straggler"}


class Staleness:
    """Recorder: the staleness column of every update row, and pairwise S over clocks at each evaluation."""

    def __init__(self) -> None:
        self.column: list[float] = []
        self.pairs: list[tuple[float, float]] = []

    def update(self, agent: int, row: dict[str, float]) -> None:
        self.column.append(row["staleness"])

    def evaluation(self, row: dict[str, float]) -> None:
        if math.isfinite(row.get("staleness_avg", math.nan)):  # the evaluation columns (DASGD only)
            self.pairs.append((row["staleness_avg"], row["staleness_max"]))


def time_to(evals: list[dict[str, float]], target: float) -> float:
    """Virtual time to ``target`` test accuracy on the 5-evaluation moving average (docs/reproduction.md)."""
    t = time_to_target([r["virtual_time"] for r in evals], [r["test_accuracy"] for r in evals], target, smooth=5)
    return math.inf if t is None else t


def run(algorithm: str, case: int, budget: float, bound: int, alpha_scale: float = 1.0) -> dict[str, float]:
    overrides = [f"delays.case={case}", f"budget.time={budget}", f"algorithm.name=\"{algorithm}\"",
                 f"algorithm.alpha={0.01 * alpha_scale}"]
    if algorithm == "dasgd":
        overrides.append(f"algorithm.max_staleness={bound}")
    cfg = load(ROOT / "configs/digits-grid/case1-dasgd.toml", overrides)
    rec = Staleness()
    sim = build_simulator(cfg, rec)
    t0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - t0
    updates = sum(a.iteration for a in sim.agents)
    out = {"algorithm": algorithm, "alpha": cfg.algorithm.alpha, "case": case,
           "time_to_90": time_to(sim.evaluations, 0.9),
           "final_accuracy": sim.evaluations[-1]["test_accuracy"], "updates": updates,
           "bytes_per_update": sum(t.bytes_sent for t in sim.transports) / updates,
           "us_per_event": 1e6 * wall / sim.events}
    if algorithm == "dasgd":
        col = np.array(rec.column)
        pairs = np.array(rec.pairs)
        out.update(S_i_mean=float(col.mean()), S_i_max=float(col.max()), S_avg=float(pairs[:, 0].mean()),
                   S_max=float(pairs[:, 1].max()), waits=sum(a.waits for a in sim.agents))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=15000.0)
    p.add_argument("--bound", type=int, default=16)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    rows = []
    for case in CASES:
        rows += [run("dasgd", case, args.budget, args.bound), run("dasgd", case, args.budget, args.bound, 1 / 9),
                 run("adsgd", case, args.budget, args.bound)]
    print("| case | S_i mean / max | pairwise S_avg / S_max | bound waits | time to 0.9: dasgd α / dasgd α/9 / adsgd α "
          "| bytes per update: dasgd / adsgd |")
    print("|---|---|---|---|---|---|")
    for case, label in CASES.items():
        d, d9, a = (r for r in rows if r["case"] == case)
        print(f"| {case} ({label}) | {d['S_i_mean']:.1f} / {d['S_i_max']:.0f} | {d['S_avg']:.1f} / {d['S_max']:.0f} "
              f"| {d['waits']} | {d['time_to_90']:.0f} / {d9['time_to_90']:.0f} / {a['time_to_90']:.0f} "
              f"| {d['bytes_per_update']:.0f} / {a['bytes_per_update']:.0f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
