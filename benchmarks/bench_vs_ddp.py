"""The baseline users would pick instead: PyTorch DistributedDataParallel (gloo) vs hpcasync
``allreduce`` and ``adsgd``, the same model and data, with and without one rank slowed 10×.

    python benchmarks/bench_vs_ddp.py --ranks 4 --seconds 20 --out benchmarks/results/vs_ddp.json

Model and data: the digits CNN (``configs/torch/digits-cnn.toml``: LeNet-style, 21 386 float32
parameters, batch 32 per rank, α = 0.3, iid shards), ``--ranks`` workers.

* DDP: launched the usual way (``python -m torch.distributed.run --nproc_per_node RANKS`` of this
  file), gloo backend, ``torch.optim.SGD(lr=α)`` on the averaged gradient — the same update as
  hpcasync ``allreduce``. Every 10 steps the ranks agree whether the time is up (one tiny
  all-reduce: DDP ranks must stop at the same step). Rank 0 keeps a copy of the model every
  ``--interval`` seconds; the copies are evaluated after the run (evaluation is not timed).
* hpcasync ``allreduce`` and ``adsgd`` (ring): ``mpiexec -n RANKS+1 hpcasync run`` with the
  monitor rank evaluating the average model every ``--interval`` seconds.

Slowed rank, the same in all three (the sleep-after-each-gradient protocol of PyTorch's
straggler-mitigation blog): t_g, one gradient's time, is measured first in this process; rank 0
then takes 10·t_g per gradient — DDP: it sleeps 9·t_g after each backward; hpcasync: its
computation is padded to 10·t_g by the delay injection (``delays.model = "case"``, case 3,
constant distribution, mean t_g, slowdown 10, communication delay ≈ 0), which is
``max(real gradient, sampled time)``.

Reported per run: samples/s (gradients × batch ÷ wall, all ranks), time to the target test
accuracy on the 360 held-out digits (first evaluation at or above it), final accuracy. On a
machine with fewer cores than ranks (the 2-core development VM) the ranks share cores, and the
hpcasync runs have one more process (the monitor). Never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from mpi_common import HPCASYNC, mpirun, one_thread_env, save, table, write_config  # noqa: E402

TARGET = 0.9
ALPHA, BATCH = 0.3, 32


def base_config(name: str, ranks: int, algorithm: str, seconds: float, interval: float,
                slow_tg: float | None, time_unit: float) -> dict[str, dict[str, Any]]:
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": name, "seed": 0},
        "algorithm": {"name": algorithm, "alpha": ALPHA, "batch_size": BATCH},
        "topology": {"name": "ring", "n": ranks, "shape": []},
        "data": {"name": "digits", "partition": "iid"},
        "problem": {"name": "torch", "model": "cnn", "dtype": "float32"},
        "delays": {"model": "none", "straggler": 0},
        "budget": {"time": seconds},
        "eval": {"interval": interval, "log_every": 10, "target_accuracy": TARGET},
        "mpi": {"time_unit": time_unit, "monitor": True, "flush_interval": 2.0},
    }
    if slow_tg is not None:
        raw["delays"] = {"model": "case", "case": 3, "straggler": 0, "slowdown": 10.0,
                         "compute_dist": "constant", "compute_mean": slow_tg / time_unit,
                         "comm_dist": "constant", "comm_mean": 1e-9}
    return raw


def gradient_seconds(repeats: int = 60) -> float:
    """Median seconds of one digits-CNN gradient (batch 32) in this process."""
    from hpcasync import problems
    from hpcasync.config import from_dict

    cfg = from_dict(base_config("calib", 4, "adsgd", 1.0, 1.0, None, 0.01))
    pb = problems.build(cfg, 4)
    oracle = pb.oracle(0, 0)
    x = pb.init_params(0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        oracle.gradient(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[10:]))


# -- DDP -----------------------------------------------------------------------------------------


def ddp_child(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from hpcasync import problems
    from hpcasync.config import from_dict
    from hpcasync.problems.base import ShardSampler, oracle_rng

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    cfg = from_dict(base_config("ddp", world, "allreduce", args.seconds, args.interval, None, 0.01))
    pb = problems.build(cfg, world)
    module = pb.new_module()
    torch.nn.utils.vector_to_parameters(torch.from_numpy(pb.init_params(0)), module.parameters())
    model = DistributedDataParallel(module)
    opt = torch.optim.SGD(model.parameters(), lr=ALPHA)
    sampler = ShardSampler(pb.shards[rank], BATCH, oracle_rng(0, rank))
    X, y = pb.data.X_train, pb.data.y_train
    slow = args.slow_sleep if rank == 0 else 0.0
    checkpoints: list[tuple[float, np.ndarray]] = []
    flag = torch.zeros(1)
    dist.barrier()
    t0 = time.perf_counter()
    next_ck, steps = 0.0, 0
    while True:
        if rank == 0 and time.perf_counter() - t0 >= next_ck:
            checkpoints.append((time.perf_counter() - t0,
                                torch.nn.utils.parameters_to_vector(module.parameters()).detach().numpy().copy()))
            next_ck += args.interval
        idx = torch.from_numpy(sampler.next())
        opt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()  # DDP all-reduces (averages) the gradient here
        if slow:
            time.sleep(slow)
        opt.step()
        steps += 1
        if steps % 10 == 0:
            flag[0] = float(time.perf_counter() - t0 >= args.seconds)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag[0] > 0:
                break
    wall = time.perf_counter() - t0
    if rank == 0:
        checkpoints.append((wall, torch.nn.utils.parameters_to_vector(module.parameters()).detach().numpy().copy()))
        evals = [(t, pb.evaluate(x)["test_accuracy"]) for t, x in checkpoints]
        Path(args.json).write_text(json.dumps({"steps": steps, "wall_s": wall, "world": world, "evals": evals}))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ddp(ranks: int, seconds: float, interval: float, slow_sleep: float, work: Path) -> tuple[dict, str]:
    out = work / f"ddp-{slow_sleep > 0}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, "--ddp-child",
           "--seconds", str(seconds), "--interval", str(interval), "--slow-sleep", str(slow_sleep),
           "--json", str(out)]
    env = one_thread_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 10 + 600, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"DDP run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(out.read_text())
    times = [t for t, _ in res["evals"]]
    accs = [a for _, a in res["evals"]]
    return {"gradients": res["steps"] * res["world"], "wall_s": res["wall_s"], "times": times, "accs": accs}, \
        " ".join(cmd)


def run_hpcasync(algorithm: str, ranks: int, seconds: float, interval: float, slow_tg: float | None,
                 work: Path) -> tuple[dict, str]:
    from hpcasync.results.reader import open_run

    name = f"{algorithm}-{'slow' if slow_tg else 'even'}"
    raw = base_config(name, ranks, algorithm, seconds, interval, slow_tg, 0.001)
    cfg = write_config(raw, work / f"{name}.toml")
    out = work / name
    _, cmd = mpirun(ranks + 1, [HPCASYNC, "run", str(cfg), "--out", str(out), "--quiet"],
                    timeout=seconds * 10 + 600)
    run = open_run(out)
    ev = run.evaluations
    grads = float(ev["gradients"][-1])
    return {"gradients": grads, "wall_s": float(ev["wall_time"][-1]), "times": list(map(float, ev["wall_time"])),
            "accs": list(map(float, ev["test_accuracy"]))}, cmd


def summarise(method: str, slowed: bool, r: dict) -> dict[str, Any]:
    from hpcasync.results.analysis import time_to_target

    ttt = time_to_target(r["times"], r["accs"], TARGET)
    return {"method": method, "rank 0 slowed 10x": slowed, "samples_per_s": r["gradients"] * BATCH / r["wall_s"],
            "time_to_target_s": ttt if ttt is not None else float("nan"), "final_accuracy": r["accs"][-1],
            "gradients": r["gradients"], "wall_s": r["wall_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--out", type=Path)
    p.add_argument("--ddp-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--slow-sleep", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ddp_child:
        ddp_child(args)
        return
    t_g = gradient_seconds()
    print(f"one gradient: t_g = {t_g * 1e3:.2f} ms; the slowed rank takes 10 t_g = {10 * t_g * 1e3:.1f} ms")
    rows, commands = [], []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        work = Path(tmp)
        for slowed in (False, True):
            r, cmd = run_ddp(args.ranks, args.seconds, args.interval, 9 * t_g if slowed else 0.0, work)
            rows.append(summarise("PyTorch DDP (gloo)", slowed, r))
            commands.append(cmd)
            for algorithm in ("allreduce", "adsgd"):
                r, cmd = run_hpcasync(algorithm, args.ranks, args.seconds, args.interval, t_g if slowed else None,
                                      work)
                rows.append(summarise(f"hpcasync {algorithm}", slowed, r))
                commands.append(cmd)
            print(table(rows[-3:], ["method", "rank 0 slowed 10x", "samples_per_s", "time_to_target_s",
                                    "final_accuracy"]), flush=True)
    for slowed in (False, True):
        ddp = next(r for r in rows if r["method"].startswith("PyTorch") and r["rank 0 slowed 10x"] == slowed)
        for r in rows:
            if r["rank 0 slowed 10x"] == slowed:
                r["samples_per_s_vs_ddp"] = r["samples_per_s"] / ddp["samples_per_s"]
                r["time_to_target_vs_ddp"] = r["time_to_target_s"] / ddp["time_to_target_s"]
    cols = ["method", "rank 0 slowed 10x", "samples_per_s", "samples_per_s_vs_ddp", "time_to_target_s",
            "time_to_target_vs_ddp", "final_accuracy"]
    print(table(rows, cols))
    if args.out:
        save("vs_ddp", {"ranks": args.ranks, "seconds": args.seconds, "t_g_s": t_g, "target": TARGET,
                        "definition": "samples/s = gradients x batch 32 / wall, all ranks; time to target = first "
                                      "evaluation with test accuracy >= 0.9 (wall s from the start barrier)",
                        "runs": commands, "results": rows}, args.out)


if __name__ == "__main__":
    main()
