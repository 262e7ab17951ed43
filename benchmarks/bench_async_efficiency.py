"""Async efficiency of ADSGD on MPI: gradients/s running ADSGD ÷ gradients/s computing alone (docs/design.md §9).

    python benchmarks/bench_async_efficiency.py --ranks 2 --seconds 8 --out benchmarks/results/async_efficiency.json

For each case the script launches ``mpiexec -n RANKS`` of itself. Every rank
computes alone (its own oracle, a local SGD step, no communication; with the
case's computation delay injected exactly as the engine does) for SECONDS/2,
then all ranks run ADSGD (``run_rank``, no monitor) for SECONDS on a ring,
then every rank computes alone for SECONDS/2 again. Efficiency = the ADSGD
rate ÷ the alone rate (both alone phases pooled) of the same rank, measured
in one job on one machine.

Fairness: every rank is busy in every phase (the alone phases run on all
ranks at once, from a barrier), so the ranks share the cores and the memory
bandwidth the same way in both, and the ratio measures the engine's
overhead, not contention. With a delay model both pad only the gradient's
computation to the sampled time, with the engine's own overshoot
compensation, and take their step (alone: the local SGD step; ADSGD: mix
and publish) after it. Alone–ADSGD–alone cancels a drift of the machine's
speed (other jobs, clocks) to first order; the two alone rates are reported
(``alone_drift``: second ÷ first) to show how large it was. On a machine
shared with other jobs single runs are noisy: ``--repeat`` runs each case
several times (interleaved) and reports the median job, and
``efficiency_same_compute`` (an upper bound: the efficiency had the gradient
computation taken the same time in both phases) shows how much of a low
number is the gradient's own slowdown.

Cases: the digits softmax problem (d = 650) flat out and with 1 ms
computations; the synthetic per-agent quadratic (``data.name = quadratic``,
Gaussian gradient noise) with d = 1e6 and 1e7 flat out, and d = 1e6 with a
50 ms computation (a model whose gradient costs far more than its size,
like a network's). "Flat out" (no delay model) measures the engine's
per-update overhead against the bare gradient: for d = 650 a gradient takes
~20 µs, so the read/mix/publish/log of an update are of the same order.
Torch cases (``--cases "digits CNN (torch) flat out" "VGG11 (torch, batch 8) flat out"``; not in the
default list): the digits CNN (d = 21 386) and the CIFAR VGG11 (d = 9.2 M, random CIFAR-shaped
images, batch 8), float32, a real network's gradient through the zero-copy flat view; the VGG11
``cuda`` cases (batch 8 and 128) take the gradient on the GPU (x copied to the device, the gradient
back through a pinned host buffer: both copies count as gradient time) and mix on the host.
Never asserts.
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

CASES: dict[str, dict[str, Any]] = {
    "digits flat out": {"data": {"name": "digits"}, "problem": {"name": "softmax"}, "delays": {"model": "none"},
                        "dim": 650},
    "digits, 1 ms compute": {"data": {"name": "digits"}, "problem": {"name": "softmax"},
                             "delays": {"model": "constant", "compute_mean": 1.0, "comm_mean": 1.0},
                             "mpi": {"time_unit": 0.001}, "dim": 650},
    "quadratic 1e6 flat out": {"data": {"name": "quadratic", "dim": 1_000_000, "noise": 0.1},
                               "problem": {"name": "quadratic"}, "delays": {"model": "none"}, "dim": 1_000_000},
    "quadratic 1e6, 50 ms compute": {"data": {"name": "quadratic", "dim": 1_000_000, "noise": 0.1},
                                     "problem": {"name": "quadratic"},
                                     "delays": {"model": "constant", "compute_mean": 1.0, "comm_mean": 0.2},
                                     "mpi": {"time_unit": 0.05}, "dim": 1_000_000},
    "quadratic 1e7 flat out": {"data": {"name": "quadratic", "dim": 10_000_000, "noise": 0.1},
                               "problem": {"name": "quadratic"}, "delays": {"model": "none"},
                               "dim": 10_000_000},
}
#: torch models (need torch; not in the default --cases): a real network's gradient, float32 x
TORCH_CASES: dict[str, dict[str, Any]] = {
    "digits CNN (torch) flat out": {"data": {"name": "digits"}, "problem": {"name": "torch", "model": "cnn"},
                                    "delays": {"model": "none"}, "dim": 21_386},
    "VGG11 (torch, batch 8) flat out": {"data": {"name": "torch_data:random_cifar"},
                                        "problem": {"name": "torch", "model": "vgg11", "eval_batch": 64,
                                                    "bn_samples": 64},
                                        "algorithm": {"batch_size": 8}, "delays": {"model": "none"},
                                        "dim": 9_231_114},
    "VGG11 (torch, batch 8, cuda) flat out": {"data": {"name": "torch_data:random_cifar"},
                                              "problem": {"name": "torch", "model": "vgg11", "eval_batch": 64,
                                                          "bn_samples": 64, "device": "cuda"},
                                              "algorithm": {"batch_size": 8}, "delays": {"model": "none"},
                                              "dim": 9_231_114},
    "VGG11 (torch, batch 128, cuda) flat out": {"data": {"name": "torch_data:random_cifar"},
                                                "problem": {"name": "torch", "model": "vgg11", "eval_batch": 64,
                                                            "bn_samples": 64, "device": "cuda"},
                                                "algorithm": {"batch_size": 128}, "delays": {"model": "none"},
                                                "dim": 9_231_114},
}
DEFAULT_CASES = list(CASES)
CASES.update(TORCH_CASES)


def case_config(case: str, ranks: int, seconds: float, progress: str = "auto",
                shared_memory: str = "auto") -> dict[str, dict[str, Any]]:
    spec = {k: v for k, v in CASES[case].items() if k != "dim"}
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": "efficiency", "seed": 0},
        "algorithm": {"name": "adsgd", "alpha": 0.01, "batch_size": 32},
        "topology": {"name": "ring", "n": ranks},
        "budget": {"time": seconds},
        "eval": {"interval": 10.0, "log_every": 100},
        "mpi": {"time_unit": 0.001, "monitor": False, "flush_interval": 5.0, "progress": progress,
                "shared_memory": shared_memory},
    }
    for section, fields in spec.items():
        raw.setdefault(section, {}).update(fields)
    return raw


def child(case: str, seconds: float, json_out: Path, progress: str = "auto", shared_memory: str = "auto",
          fused: str = "auto", defer_closing: str = "auto") -> None:
    """One rank: compute alone, then ADSGD; rank 0 writes the per-rank rates."""
    from mpi4py import MPI

    if defer_closing == "off":  # the RMA publication with its third flush (the "before")
        from hpcasync.engines.mpi.slots import ModelSlots

        init = ModelSlots.__init__

        def flushing_init(self: ModelSlots, *args: Any, **kwargs: Any) -> None:
            kwargs["defer_closing"] = False
            init(self, *args, **kwargs)

        ModelSlots.__init__ = flushing_init  # type: ignore[method-assign]

    if fused == "off":  # the update as four steps (open_views, kernel, close_views, publish): the "before"
        from hpcasync.engines.mpi.shared_slots import SharedSlots

        SharedSlots.fused = property(lambda self: False)  # type: ignore[assignment,method-assign]

    from hpcasync import delays as delay_models
    from hpcasync import problems, threads
    from hpcasync.config import from_dict
    from hpcasync.engines.mpi.runner import run_rank
    from hpcasync.kernels import axpy, warmup

    comm = MPI.COMM_WORLD
    rank = comm.rank
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    threads.configure(local.Get_size())  # as `hpcasync run` does: both phases with the same threads
    local.Free()
    cfg = from_dict(case_config(case, comm.size, seconds, progress, shared_memory))
    problem = problems.build(cfg, comm.size)
    oracle = problem.oracle(rank, cfg.run.seed + 1)
    delays = delay_models.build(cfg.delays, comm.size, cfg.run.seed)
    unit = cfg.mpi.time_unit
    x = problem.init_params(cfg.run.seed)
    warmup(x.dtype)
    oracle.gradient(x)

    pad_debt = 0.0

    def alone_phase(duration: float) -> tuple[int, float, float, float]:
        """(gradients, seconds, seconds in the oracle, seconds computing incl. padding) alone for ``duration``."""
        nonlocal pad_debt
        comm.Barrier()
        t0 = time.perf_counter()
        count = 0
        grad_s = comp_s = 0.0
        while True:
            start = time.perf_counter()
            if start - t0 >= duration:
                break
            g, _ = oracle.gradient(x)
            now = time.perf_counter()
            grad_s += now - start
            if delays.enabled:
                # exactly the engine's padding (worker.Worker._compute): the gradient's computation
                # lasts the sampled time on average, sleep overshoot carried over; the step is not padded
                sample = delays.compute(rank) * unit
                padded = start + sample - pad_debt
                if padded > now:
                    while (now := time.perf_counter()) < padded:
                        time.sleep(min(padded - now, 5e-3))
                    pad_debt = min(max(now - padded, 0.0), sample)
                else:
                    pad_debt = max(pad_debt - max(start + sample - now, 0.0), 0.0)
            comp_s += now - start
            axpy(x, -0.01, g)
            count += 1
        return count, time.perf_counter() - t0, grad_s, comp_s

    # -- alone, ADSGD, alone ---------------------------------------------------------------------
    first = alone_phase(seconds / 2)
    comm.Barrier()
    with tempfile.TemporaryDirectory(prefix="bench-eff-") as tmp:
        out = comm.bcast(tmp if rank == 0 else None)
        res = run_rank(cfg, Path(out), comm)
        comm.Barrier()
    second = alone_phase(seconds / 2)
    count, wall, grad_s, comp_s = (a + b for a, b in zip(first, second, strict=True))
    alone = count / wall
    t = res.timings
    n = max(t["gradients"], 1)
    adsgd = t["gradients"] / t["wall_s"]
    # Diagnostic for a busy machine: the efficiency had the (padded) gradient computation taken the
    # same time in both phases, i.e. alone step ÷ (alone step + the change in per-update time
    # outside the computation). It ignores the slowdown the engine's memory traffic causes the
    # other rank's gradients, so it is an upper bound; the efficiency itself is the headline.
    alone_comp = comp_s / max(count, 1)
    alone_step = 1.0 / alone
    adsgd_rest = 1.0 / adsgd - t["compute_s"] / n
    row = {"rank": rank, "alone_grad_per_s": alone, "adsgd_grad_per_s": adsgd, "efficiency": adsgd / alone,
           "efficiency_same_compute": alone_step / (alone_comp + adsgd_rest),
           "alone_drift": (second[0] / second[1]) / (first[0] / first[1]),
           "alone_gradient_ms": 1e3 * grad_s / max(count, 1),
           "alone_compute_ms": 1e3 * alone_comp,
           "adsgd_ms_per_update": {k: 1e3 * t[k] / n
                                   for k in ("gradient_s", "compute_s", "mix_s", "communicate_s", "log_s")},
           "slot_retries": t["slot_retries"]}
    rows = comm.gather(row)
    if rank == 0:
        json_out.write_text(json.dumps(rows))


def _thread_level() -> str:
    """The MPI thread level the ranks request (mpi4py's default unless MPI4PY_RC_THREAD_LEVEL says)."""
    import os

    return os.environ.get("MPI4PY_RC_THREAD_LEVEL", "multiple (mpi4py default)")


def readme_rows(results: list[dict[str, Any]], shared_memory: str) -> str:
    """README table rows: MPI | path | case | median efficiency (all jobs) | per-update us."""
    from mpi_common import machine

    mpi = machine().get("mpi", "?").split(",")[0].split(" Version")[0]
    out = []
    for r in results:
        per = [row["adsgd_ms_per_update"] for row in r["per_rank"]]
        us = {k: 1e3 * sum(p[k] for p in per) / len(per) for k in ("gradient_s", "mix_s", "communicate_s", "log_s")}
        jobs = ", ".join(f"{e:.3f}" for e in r.get("efficiency_all_jobs", [r["efficiency_mean"]]))
        out.append(f"| {mpi} | {'shared' if shared_memory == 'auto' else 'RMA'} | {r['case']} | "
                   f"{r['efficiency_mean']:.3f} ({jobs}) | {us['gradient_s']:.1f} / {us['mix_s']:.1f} / "
                   f"{us['communicate_s']:.1f} / {us['log_s']:.1f} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=list(CASES))
    p.add_argument("--repeat", type=int, default=1,
                   help="jobs per case, cases interleaved; the table shows the median job (a shared, busy "
                        "machine makes single jobs noisy)")
    p.add_argument("--out", type=Path)
    p.add_argument("--progress", choices=["auto", "off", "thread"], default="auto",
                   help="mpi.progress of the ADSGD phase (the progress thread's cost: off vs thread)")
    p.add_argument("--shared-memory", choices=["auto", "off"], default="auto",
                   help="mpi.shared_memory of the ADSGD phase (off: the RMA path only, the 'before')")
    p.add_argument("--fused", choices=["auto", "off"], default="auto",
                   help="off: no one-kernel update on shared memory (kernels/seqlock.py), the 'before'")
    p.add_argument("--defer-closing", choices=["auto", "off"], default="auto",
                   help="off: RMA publications flush their closing words at once (3 flushes), the 'before'")
    p.add_argument("--table", action="store_true",
                   help="also print README rows: MPI, path, case, efficiency (all jobs), per-update us")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.seconds, args.json, args.progress, args.shared_memory, args.fused,
              args.defer_closing)
        return
    jobs: dict[str, list[dict[str, Any]]] = {case: [] for case in args.cases}
    commands = []
    with tempfile.TemporaryDirectory(prefix="bench-eff-") as tmp:
        for _ in range(max(1, args.repeat)):
            for case in args.cases:
                js = Path(tmp) / "rows.json"
                _, cmd = mpirun(args.ranks, [sys.executable, __file__, "--child", case, "--seconds",
                                             str(args.seconds), "--json", str(js), "--progress", args.progress,
                                             "--shared-memory", args.shared_memory, "--fused", args.fused,
                                             "--defer-closing", args.defer_closing])
                commands.append(cmd)
                per_rank = json.loads(js.read_text())
                eff = [r["efficiency"] for r in per_rank]
                row = {"case": case, "d": CASES[case]["dim"], "ranks": args.ranks,
                       "alone_grad_per_s": sum(r["alone_grad_per_s"] for r in per_rank) / len(per_rank),
                       "adsgd_grad_per_s": sum(r["adsgd_grad_per_s"] for r in per_rank) / len(per_rank),
                       "efficiency_mean": sum(eff) / len(eff), "efficiency_min": min(eff),
                       "alone_drift": sum(r["alone_drift"] for r in per_rank) / len(per_rank),
                       "efficiency_same_compute": sum(r["efficiency_same_compute"] for r in per_rank) / len(per_rank),
                       "per_rank": per_rank}
                jobs[case].append(row)
                print(f"{case}: efficiency {row['efficiency_mean']:.3f} (min {row['efficiency_min']:.3f})",
                      flush=True)
    results = []
    for rows in jobs.values():
        ranked = sorted(rows, key=lambda r: r["efficiency_mean"])
        row = dict(ranked[(len(ranked) - 1) // 2])  # the median job (the lower one of an even count)
        if len(rows) > 1:
            row["efficiency_all_jobs"] = [r["efficiency_mean"] for r in rows]
        results.append(row)
    print(table(results, ["case", "d", "ranks", "alone_grad_per_s", "adsgd_grad_per_s", "efficiency_mean",
                          "efficiency_min", "alone_drift", "efficiency_same_compute"]))
    if args.table:
        print(readme_rows(results, args.shared_memory))
    path = save("async_efficiency", {
        "definition": "gradients/s of a rank running ADSGD (ring, no monitor) / gradients/s of the same rank "
                      "computing alone (local SGD, no communication), same injected computation delay; one job, "
                      "phases alone (seconds/2), ADSGD (seconds), alone (seconds/2), all ranks busy in each",
        "thread_level": _thread_level(), "progress": args.progress, "shared_memory": args.shared_memory,
        "fused": args.fused, "defer_closing": args.defer_closing,
        "repeat": args.repeat,
        "seconds": args.seconds, "runs": commands, "results": results,
    }, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
