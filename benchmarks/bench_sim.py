"""Simulator cost per event, excluding gradient time, from 9 to 1024 agents on a ring (docs/design.md §9).

    python benchmarks/bench_sim.py [--agents 9 128 1024] [--algorithms adsgd adsgd-delta dsgd]
                                   [--gradients-per-agent 200] [--dim 100]

A cheap quadratic problem keeps gradient time small; the time spent inside
gradient oracles is measured and subtracted, so what remains is the engine:
event heap, transports, sending queues, algorithm bookkeeping and mixing
kernels. Writes benchmarks/results/sim.json; never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hpcasync.config import from_dict
from hpcasync.engines.sim.runner import build_simulator


def measure(n: int, algorithm: str, gradients_per_agent: int, dim: int) -> dict[str, float]:
    cfg = from_dict({
        "run": {"seed": 0},
        "algorithm": {"name": algorithm, "alpha": 0.01},
        "topology": {"name": "ring", "n": n},
        "data": {"name": "quadratic", "dim": dim},
        "problem": {"name": "quadratic"},
        "delays": {"model": "case", "case": 5, "straggler": 0},
        "budget": {"time": 0.0, "gradients": n * gradients_per_agent},
        "eval": {"interval": 1e9},
    })
    sim = build_simulator(cfg)
    sim.evaluate = None
    t0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - t0
    grad = sum(c.gradient_s for c in sim.clocks)
    return {"agents": n, "algorithm": algorithm, "dim": dim, "events": sim.events,
            "gradients": sim.gradients, "wall_s": wall, "gradient_s": grad,
            "us_per_event_excl_gradient": 1e6 * (wall - grad) / sim.events,
            "events_per_s": sim.events / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=[9, 128, 1024])
    p.add_argument("--algorithms", nargs="+", default=["adsgd", "adsgd-delta", "dsgd"])
    p.add_argument("--gradients-per-agent", type=int, default=200)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sim.json"))
    args = p.parse_args()
    rows = []
    print(f"{'agents':>6} {'algorithm':>12} {'events':>9} {'us/event':>9} {'events/s':>10}")
    for algorithm in args.algorithms:
        measure(9, algorithm, 5, args.dim)  # load numba's cached kernels before timing
        for n in args.agents:
            r = measure(n, algorithm, args.gradients_per_agent, args.dim)
            rows.append(r)
            print(f"{n:>6} {algorithm:>12} {r['events']:>9} {r['us_per_event_excl_gradient']:>9.1f} "
                  f"{r['events_per_s']:>10.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": "python benchmarks/bench_sim.py", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
