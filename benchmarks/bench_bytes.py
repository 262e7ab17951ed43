"""Bytes and messages per update of each algorithm, counted by the MPI transport (docs/design.md §3, §9).

    python benchmarks/bench_bytes.py --budget 5 --time-unit 0.002 --out benchmarks/results/bytes.json

Each algorithm runs for real (``mpiexec -n 9 hpcasync run``, 3×3 digits
grid, d = 650 parameters, 5200 bytes per model) twice: flat out (no delay
model: every push leaves at once) and with case 1's injected delays (a
transmission takes about as long as a computation, so the serial outbox
replaces queued models and sums queued deltas). Bytes are what the RMA
windows and collectives moved, seqlock words included; per update = the
agents' total bytes ÷ their total gradients. The simulator's count for the
case-1 config (same delays, in time units) is given for comparison.
Never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mpi_common import digits_config, run_config, save, table

from hpcasync.config import from_dict
from hpcasync.engines.sim.runner import build_simulator
from hpcasync.results.analysis import bytes_per_update
from hpcasync.results.reader import open_run

MODEL_BYTES = 650 * 8


def sim_bytes(raw: dict, time_units: float) -> tuple[float, float]:
    cfg = from_dict({**raw, "budget": {"time": time_units}})
    sim = build_simulator(cfg)
    sim.run()
    b = sum(t.bytes_sent for t in sim.transports)
    m = sum(t.messages_sent for t in sim.transports)
    g = sum(a.iteration for a in sim.agents)
    return b / g, m / g


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=5.0, help="wall seconds per run")
    p.add_argument("--time-unit", type=float, default=0.002)
    p.add_argument("--algorithms", nargs="+", default=["adsgd", "adsgd-delta", "dsgd", "allreduce"])
    p.add_argument("--topology", default="grid",
                   help="topology.name of the 9 agents (grid 3x3; e.g. time-varying-exponential for push-sum)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    rows, commands = [], []
    with tempfile.TemporaryDirectory(prefix="bench-bytes-") as tmp:
        for algorithm in args.algorithms:
            for delays in ("none", "case"):
                raw = digits_config(f"{algorithm}-{delays}", algorithm, delays={"model": delays, "case": 1},
                                    budget={"time": args.budget}, mpi={"time_unit": args.time_unit},
                                    eval={"log_every": 10},
                                    topology={"name": args.topology, "n": 9,
                                              "shape": [3, 3] if args.topology == "grid" else []})
                run_dir, cmd = run_config(raw, Path(tmp))
                commands.append(cmd)
                b = bytes_per_update(open_run(run_dir))
                row = {"algorithm": algorithm, "delays": "case 1" if delays == "case" else "none",
                       "bytes_per_update": b["mean"], "models_per_update": b["mean"] / MODEL_BYTES,
                       "messages_per_update": b["messages_per_update"]}
                if delays == "case":
                    sb, sm = sim_bytes(raw, args.budget / args.time_unit)
                    row.update(sim_bytes_per_update=sb, sim_messages_per_update=sm)
                rows.append(row)
                print(f"{algorithm} delays={delays}: {b['mean']:.0f} bytes/update", flush=True)
    cols = ["algorithm", "delays", "bytes_per_update", "models_per_update", "messages_per_update",
            "sim_bytes_per_update", "sim_messages_per_update"]
    print(table(rows, cols))
    path = save("bytes", {
        "definition": "bytes (and messages) sent per gradient, all agents together; models_per_update = bytes / "
                      "(8 d); MPI counts include the two 8-byte seqlock words of each model message and the "
                      "stop/time words of each synchronous round",
        "model_bytes": MODEL_BYTES, "topology": args.topology, "budget_s": args.budget,
        "time_unit_s": args.time_unit, "runs": commands,
        "results": rows,
    }, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
