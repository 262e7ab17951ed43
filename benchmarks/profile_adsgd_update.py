"""Where one ADSGD update's time goes on the MPI engine (flat out, ring, no monitor).

    python benchmarks/profile_adsgd_update.py --ranks 2 --seconds 6 [--cases ...] [--out file.json]

Runs ``run_rank`` under ``mpiexec`` with the cases of ``bench_async_efficiency.py``
and wraps the engine's pieces with timers: the oracle's gradient, the rest of
the runner's ``_compute``, the transport's read of the neighbours' models
(word fetches vs copies), the mixing kernel, the publication (and its three
seqlock steps), the outbox, the board, the HDF5 appends/flushes. "python" is
the rest of the loop: the generator, the runner's bookkeeping, the wrappers'
own cost (~0.3 µs a call). Numbers are µs per update, mean over the ranks.
Never asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_async_efficiency import CASES, case_config  # noqa: E402
from mpi_common import mpirun  # noqa: E402

FLAT = [c for c in CASES if "flat out" in c]


def child(case: str, seconds: float, json_out: Path) -> None:
    from mpi4py import MPI

    import hpcasync.algorithms.adsgd as adsgd_mod
    from hpcasync import problems
    from hpcasync.config import from_dict
    from hpcasync.engines.mpi import board, outbox, runner, transport, windows, worker
    from hpcasync.results import writer

    comm = MPI.COMM_WORLD
    cfg = from_dict(case_config(case, comm.size, seconds))
    acc: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    clock = time.perf_counter

    def wrap(owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def timed(*a: Any, **k: Any) -> Any:
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                acc[label] += clock() - t0
                calls[label] += 1

        import inspect

        static = isinstance(inspect.getattr_static(owner, name), staticmethod)
        setattr(owner, name, staticmethod(timed) if static else timed)

    oracle_cls = type(problems.build(cfg, comm.size).oracle(comm.rank, 0))
    wrap(oracle_cls, "gradient", "gradient")
    wrap(worker.Worker, "_compute", "compute (runner)")
    wrap(windows.ModelSlots, "_fetch_words", "read: word fetches")
    wrap(windows.ModelSlots, "_read_slots", "read (seqlock, total)")
    for name in ("mix_and_push", "mix_latest", "latest_models"):
        if hasattr(transport.MpiTransport, name):
            wrap(transport.MpiTransport, name, f"transport.{name} (total)")
    for name in ("_mix_zero_copy", "_mix_slots"):
        if hasattr(windows.ModelSlots, name):
            wrap(windows.ModelSlots, name, "zero-copy mix (total)")
    for kname in ("adsgd_step", "adsgd_step_rows"):
        for mod in (adsgd_mod, windows, transport):
            if hasattr(mod, kname):
                wrap(mod, kname, "kernel")
    import hpcasync.algorithms.transport as base_transport
    if hasattr(base_transport, "adsgd_step"):
        wrap(base_transport, "adsgd_step", "kernel")
    from hpcasync.engines.mpi import shared_slots

    wrap(shared_slots.SharedSlots, "mix_publish", "fused kernel (read, mix, publish)")
    wrap(windows.ModelSlots, "publish", "publish (total)")
    wrap(windows.ModelSlots, "_flush", "publish: flushes")
    wrap(outbox.Outbox, "push_model", "outbox.push_model (incl. publish)")
    wrap(outbox.Outbox, "poll", "outbox.poll")
    wrap(board.Board, "set_iteration", "board.set_iteration")
    wrap(board.Board, "read_iterations", "board.read_iterations")
    wrap(writer.AgentWriter, "append", "hdf5 append")
    wrap(writer.AgentWriter, "flush", "hdf5 flush")
    wrap(worker.Worker, "_after_step", "after_step (total)")
    wrap(worker.Worker, "_async_stop", "stop check")
    loop = worker.Worker.loop

    def measured_loop(self: Any) -> None:
        acc.clear()  # set-up and warm-up calls are not part of an update
        calls.clear()
        loop(self)

    worker.Worker.loop = measured_loop  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory(prefix="prof-") as tmp:
        out = comm.bcast(tmp if comm.rank == 0 else None)
        res = runner.run_rank(cfg, Path(out), comm)
        comm.Barrier()
    n = res.timings["gradients"]
    wall = res.timings["wall_s"]
    row = {"wall_us": 1e6 * wall / n, "updates": n, "slot_retries": res.timings["slot_retries"],
           "us": {k: 1e6 * v / n for k, v in acc.items()}, "calls_per_update": {k: c / n for k, c in calls.items()}}
    rows = comm.gather(row)
    if comm.rank == 0:
        json_out.write_text(json.dumps(rows))


def summarize(case: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = sorted({k for r in rows for k in r["us"]})
    us = {k: sum(r["us"].get(k, 0.0) for r in rows) / len(rows) for k in keys}
    wall = sum(r["wall_us"] for r in rows) / len(rows)
    top = ["compute (runner)", "after_step (total)", "outbox.push_model (incl. publish)", "outbox.poll",
           "stop check"]
    # mix_and_push contains mix_latest and push_model when it does not take the fused path
    mix = next((k for k in ("transport.mix_and_push (total)", "transport.mix_latest (total)") if k in us), None)
    if mix == "transport.mix_and_push (total)":
        top.remove("outbox.push_model (incl. publish)")
    top += [mix] if mix else ["transport.latest_models (total)", "kernel"]
    us["python (rest of the loop)"] = wall - sum(us.get(k, 0.0) for k in top)
    return {"case": case, "wall_us_per_update": wall, "us_per_update": us,
            "slot_retries": sum(r["slot_retries"] for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--cases", nargs="+", default=FLAT, choices=list(CASES))
    p.add_argument("--out", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.seconds, args.json)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="prof-") as tmp:
        for case in args.cases:
            js = Path(tmp) / "rows.json"
            mpirun(args.ranks, [sys.executable, __file__, "--child", case, "--seconds", str(args.seconds),
                                "--json", str(js)])
            s = summarize(case, json.loads(js.read_text()))
            results.append(s)
            print(f"\n{case}: {s['wall_us_per_update']:.1f} µs/update, slot retries {s['slot_retries']:.0f}")
            for k, v in sorted(s["us_per_update"].items(), key=lambda kv: -kv[1]):
                print(f"  {k:40s} {v:12.2f} µs")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
