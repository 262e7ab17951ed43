"""Memory per rank of ADSGD Alg. 2 (adsgd) vs Alg. 3 (adsgd-delta) on MPI as the degree grows (docs/design.md §4, §9).

    python benchmarks/bench_memory_mpi.py --dim 1e6 --degrees 2 4 8 --out benchmarks/results/memory_mpi.json

For each degree k the script launches ``mpiexec -n k+1`` of itself: a
complete graph on k + 1 agents (every rank has degree k), the synthetic
quadratic problem with d parameters (no gradient noise), no monitor, a
3 s run of the real engine (``run_rank``). Each rank measures its
proportional set size (PSS, /proc/self/smaps_rollup: pages shared with
another process, such as MPI shared-memory window pages a neighbour wrote
into, count for their share) and resident set size after building the
problem (baseline) and when its loop ends (steady state: every buffer is
allocated and written), and reports the growth in models of d float64.
It also adds up what the engine allocated for the algorithm ("accounted":
windows owned by the rank, agent state, the transport's and outbox's
buffers, the gradient buffer). Alg. 2 holds x, g, a local copy of the
neighbour models (k) and its double-buffered slot window (2k); Alg. 3 holds
x, g, Δ, s (local and in its window) plus the accumulator's fixed scratch
buffers, whatever the degree. With --delays the serial outbox (two models:
queued and in flight) is included. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mpi_common import mpirun, save, table

ALGORITHMS = ("adsgd", "adsgd-delta")


def proc_memory() -> dict[str, float]:
    out = {}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key.lower()] = float(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def config(algorithm: str, degree: int, dim: int, delays: bool, seconds: float) -> dict[str, dict[str, Any]]:
    return {
        "run": {"name": "memory", "seed": 0},
        "algorithm": {"name": algorithm, "alpha": 0.01},
        "topology": {"name": "complete", "n": degree + 1},
        "data": {"name": "quadratic", "dim": dim, "noise": 0.0},
        "problem": {"name": "quadratic"},
        "delays": {"model": "case", "case": 1} if delays else {"model": "none"},
        "budget": {"time": seconds},
        "eval": {"interval": 100.0, "log_every": 50},
        "mpi": {"time_unit": 0.005, "monitor": False, "flush_interval": 5.0},
    }


def accounted_bytes(worker: Any) -> dict[str, int]:
    """What the engine allocated for the algorithm on this rank (bytes)."""
    agent, t = worker.agent, worker.t
    parts: dict[str, int] = {"x": agent.x.nbytes, "g (oracle buffer)": worker.oracle._g.nbytes}
    if t.slots is not None:
        deg = len(t.in_neighbors)
        parts["slot window (2 per in-neighbour)"] = 2 * deg * t.dim * 8
        # zero-copy mixing (mix_latest) leaves these empty unless a torn mix or latest_models() needed them
        parts["local neighbour models"] = t._latest.nbytes
        parts["x backup for a torn mix (delays on)"] = t._backup.nbytes
    if t.acc is not None:
        parts["s"] = agent.s.nbytes
        parts["delta"] = agent.delta.nbytes
        parts["accumulator window"] = t.dim * 8
        parts["accumulator scratch, zeros, result"] = 3 * t.dim * 8
    parts["outbox buffers"] = t.outbox.buffers() * t.dim * 8
    return parts


def child(algorithm: str, degree: int, dim: int, delays: bool, seconds: float, json_out: Path) -> None:
    from mpi4py import MPI

    from hpcasync.config import from_dict
    from hpcasync.engines.mpi import rank_setup, worker
    from hpcasync.engines.mpi import runner as runner_mod

    comm = MPI.COMM_WORLD
    marks: dict[str, Any] = {}
    setup_init = rank_setup.RunSetup.__init__
    loop = worker.Worker.loop

    def measured_setup(self: Any, *a: Any, **k: Any) -> None:
        setup_init(self, *a, **k)
        marks["baseline"] = proc_memory()

    def measured_loop(self: Any) -> None:
        loop(self)
        time.sleep(0.05)
        marks["end"] = proc_memory()
        marks["accounted"] = accounted_bytes(self)

    rank_setup.RunSetup.__init__ = measured_setup  # type: ignore[method-assign]
    worker.Worker.loop = measured_loop  # type: ignore[method-assign]
    cfg = from_dict(config(algorithm, degree, dim, delays, seconds))
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        out = comm.bcast(tmp if comm.rank == 0 else None)
        res = runner_mod.run_rank(cfg, Path(out), comm)
        comm.Barrier()
    model = dim * 8
    row = {
        "rank": comm.rank,
        "pss_growth_models": (marks["end"]["pss"] - marks["baseline"]["pss"]) / model,
        "rss_growth_models": (marks["end"]["rss"] - marks["baseline"]["rss"]) / model,
        "accounted_models": sum(marks["accounted"].values()) / model,
        "accounted": {k: v / model for k, v in marks["accounted"].items()},
        "iterations": res.agent.iteration,
    }
    rows = comm.gather(row)
    if comm.rank == 0:
        json_out.write_text(json.dumps(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=float, default=1e6)
    p.add_argument("--degrees", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--delays", choices=("none", "case1", "both"), default="both",
                   help="inject case-1 delays (adds the outbox's two buffers)")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", nargs=3, metavar=("ALGORITHM", "DEGREE", "DELAYS"), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    dim = int(args.dim)
    if args.child:
        algorithm, degree, delays = args.child
        child(algorithm, int(degree), dim, delays == "case1", args.seconds, args.json)
        return
    modes = ["none", "case1"] if args.delays == "both" else [args.delays]
    results, commands = [], []
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        for mode in modes:
            for degree in args.degrees:
                for algorithm in ALGORITHMS:
                    js = Path(tmp) / "rows.json"
                    _, cmd = mpirun(degree + 1, [sys.executable, __file__, "--child", algorithm, str(degree), mode,
                                                 "--dim", str(dim), "--seconds", str(args.seconds), "--json",
                                                 str(js)])
                    commands.append(cmd)
                    per_rank = json.loads(js.read_text())
                    n = len(per_rank)
                    row = {"algorithm": algorithm, "delays": mode, "degree": degree, "ranks": n,
                           "pss_models_mean": sum(r["pss_growth_models"] for r in per_rank) / n,
                           "pss_models_max": max(r["pss_growth_models"] for r in per_rank),
                           "rss_models_max": max(r["rss_growth_models"] for r in per_rank),
                           "accounted_models": per_rank[0]["accounted_models"],
                           "accounted_parts": per_rank[0]["accounted"], "per_rank": per_rank}
                    results.append(row)
                    print(f"{algorithm} degree {degree} delays {mode}: PSS +{row['pss_models_mean']:.2f} models/rank, "
                          f"accounted {row['accounted_models']:.1f}", flush=True)
    print(table(results, ["algorithm", "delays", "degree", "ranks", "accounted_models", "pss_models_mean",
                          "pss_models_max", "rss_models_max"]))
    path = save("memory_mpi", {
        "definition": "memory growth per rank from after the problem was built to the end of the loop, in models "
                      "of d float64 (8 d bytes); PSS splits shared-memory window pages among the processes that "
                      "touched them, so the mean over ranks is exact; accounted = bytes the engine allocated for "
                      "the algorithm on the rank",
        "dim": dim, "model_bytes": dim * 8, "seconds": args.seconds, "runs": commands, "results": results,
    }, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
