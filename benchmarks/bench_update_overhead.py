"""The MPI engine's own cost per ADSGD update: the digits case with the gradient taken for free.

    python benchmarks/bench_update_overhead.py --ranks 2 --seconds 3 --repeat 8 [--before DIR] --out FILE.json

Runs ``bench_async_efficiency.py``'s "digits flat out" job (ring, no monitor,
shared memory where the MPI has it) with every rank's oracle answering each
gradient with the one it computed first (a cached array: ~0.5 µs instead of
~15 µs). What is left of an update is the engine: the loop's bookkeeping, the
algorithm's generator, the mix and the publication (one kernel on a node),
the logging. ``us_per_update`` = wall ÷ updates; ``mix``, ``compute`` and
``log`` are the runner's own timers per update (``compute`` includes the cached
gradient); "rest" is the loop. Medians over ``--repeat`` jobs, per rank mean.
This is the number the efficiency of a short gradient is made of
(efficiency ≈ gradient ÷ (gradient + us_per_update − compute)), measured without
the gradient's own noise. Jobs vary by ~1.5 µs from one launch to the next (a
bimodal 4.5 / 6 µs here, whatever the code), hence the repeats.

``--before DIR`` (a checkout of an older commit) runs every job twice,
interleaved, with and without ``PYTHONPATH=DIR``: the before/after of a change
measured in one session. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from mpi_common import mpirun, save, table  # noqa: E402

KEYS = ("us_per_update", "compute_us", "mix_us", "log_us", "rest_us")


def child(seconds: float, json_out: Path) -> None:
    from bench_async_efficiency import case_config
    from mpi4py import MPI

    from hpcasync import threads
    from hpcasync.config import from_dict
    from hpcasync.engines.mpi.runner import run_rank
    from hpcasync.problems.softmax import SoftmaxOracle

    computed = SoftmaxOracle.gradient
    cached: dict[int, tuple[Any, float]] = {}

    def cached_gradient(self: SoftmaxOracle, x: Any) -> tuple[Any, float]:
        if id(self) not in cached:
            g, loss = computed(self, x)
            cached[id(self)] = (g.copy(), loss)
        return cached[id(self)]

    SoftmaxOracle.gradient = cached_gradient  # type: ignore[method-assign]
    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    threads.configure(local.Get_size())
    local.Free()
    cfg = from_dict(case_config("digits flat out", comm.size, seconds))
    with tempfile.TemporaryDirectory(prefix="bench-ovh-") as tmp:
        res = run_rank(cfg, Path(comm.bcast(tmp if comm.rank == 0 else None)), comm)
        comm.Barrier()
    t = res.timings
    n = max(t["gradients"], 1)
    row = {"us_per_update": 1e6 * t["wall_s"] / n, "compute_us": 1e6 * t["compute_s"] / n,
           "mix_us": 1e6 * t["mix_s"] / n, "log_us": 1e6 * t["log_s"] / n}
    row["rest_us"] = row["us_per_update"] - row["compute_us"] - row["mix_us"] - row["log_us"]
    rows = comm.gather(row)
    if comm.rank == 0:
        json_out.write_text(json.dumps(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path)
    p.add_argument("--before", type=Path, help="a checkout of an older commit: interleaved jobs of both")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.seconds, a.child)
        return
    variants = {"this tree": None} if a.before is None else {"this tree": None, "before": str(a.before.resolve())}
    jobs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    commands = []
    with tempfile.TemporaryDirectory(prefix="bench-ovh-") as tmp:
        out = Path(tmp) / "rows.json"
        for _ in range(a.repeat):
            for variant, path in variants.items():
                if path is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = path  # the child imports hpcasync from there
                _, cmd = mpirun(a.ranks, [sys.executable, __file__, "--seconds", str(a.seconds), "--child", str(out)],
                                timeout=120 + 4 * a.seconds)
                rows = json.loads(out.read_text())
                jobs[variant].append({k: statistics.fmean(r[k] for r in rows) for k in KEYS})
                commands.append(cmd if path is None else f"PYTHONPATH={path} {cmd}")
    os.environ.pop("PYTHONPATH", None)
    median = {v: {k: statistics.median(j[k] for j in js) for k in KEYS} for v, js in jobs.items()}
    print(table([{"variant": v, "jobs": len(jobs[v]), **m} for v, m in median.items()], ["variant", "jobs", *KEYS]))
    commit = None
    if a.before is not None:  # which code "before" was, if DIR is a git checkout
        git = subprocess.run(["git", "-C", str(a.before), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True)
        commit = git.stdout.strip() or None
    path = save("update_overhead", {"ranks": a.ranks, "seconds": a.seconds, "repeat": a.repeat, "before": variants.get(
        "before"), "before_commit": commit, "runs": commands, "jobs": jobs, "median": median}, a.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
