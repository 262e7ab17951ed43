"""Bytes per update with a torch model, float32 vs float64 x, counted by the MPI transport.

    python benchmarks/bench_bytes_dtype.py --out benchmarks/results/bytes_dtype.json

The digits CNN (d = 21 386) on a ring of 4 ranks, no injected delays (every push leaves at once),
400 gradients in all, ``problem.dtype`` float32 and float64, for ADSGD (Alg. 2: a model to each
out-neighbour) and its delta form (Alg. 3: a delta to each). Bytes are what the RMA windows moved,
seqlock words included; per update = the agents' total bytes ÷ their total gradients. Never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mpi_common import run_config, save, table

from hpcasync.results.metrics import bytes_per_update
from hpcasync.results.reader import open_run

DIM = 21_386


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--gradients", type=int, default=400)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    rows, commands = [], []
    with tempfile.TemporaryDirectory(prefix="bench-bytes-dtype-") as tmp:
        for algorithm in ("adsgd", "adsgd-delta"):
            for dtype in ("float32", "float64"):
                raw = {"run": {"name": f"{algorithm}-{dtype}", "seed": 0},
                       "algorithm": {"name": algorithm, "alpha": 0.1, "batch_size": 32},
                       "topology": {"name": "ring", "n": args.ranks}, "data": {"name": "digits"},
                       "problem": {"name": "torch", "model": "cnn", "dtype": dtype},
                       "delays": {"model": "none", "straggler": 0},
                       "budget": {"time": 0.0, "gradients": args.gradients},
                       "eval": {"interval": 100.0, "log_every": 1},
                       "mpi": {"monitor": False, "flush_interval": 5.0}}
                run_dir, cmd = run_config(raw, Path(tmp))
                commands.append(cmd)
                b = bytes_per_update(open_run(run_dir))
                itemsize = 4 if dtype == "float32" else 8
                rows.append({"algorithm": algorithm, "dtype": dtype, "bytes_per_update": b["mean"],
                             "models_per_update": b["mean"] / (itemsize * DIM)})
    for r in rows:
        other = next(o for o in rows if o["algorithm"] == r["algorithm"] and o["dtype"] == "float64")
        r["vs_float64"] = r["bytes_per_update"] / other["bytes_per_update"]
    print(table(rows, ["algorithm", "dtype", "bytes_per_update", "models_per_update", "vs_float64"]))
    if args.out:
        save("bytes_dtype", {"dim": DIM, "ranks": args.ranks, "runs": commands, "results": rows,
                             "definition": "bytes sent per gradient, all agents together"}, args.out)


if __name__ == "__main__":
    main()
