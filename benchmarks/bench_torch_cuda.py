"""The torch problem's CUDA path (``problem.device = "cuda"``): gradients on the GPU, exchanges in host memory.

    python benchmarks/bench_torch_cuda.py --out benchmarks/results/torch_cuda.json

Without a GPU it says so plainly and exits 0 (nothing measured). With one it measures, for the
CIFAR VGG11 of Zhou & Pu 2025 (9.2 M parameters, float32) on random 3×32×32 batches of 8 (their
batch size) and 128: seconds per gradient on the CPU (zero-copy host path) and on the GPU (x copied
host → device per gradient, the gradient back through a pinned host buffer), the share of a GPU
gradient spent in those two copies, and the agreement of the two gradients (max relative error).
It then runs 20 ADSGD steps of 4 simulated agents with ``device = "cuda"`` to exercise the whole
path. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _seconds(fn, repeats: int) -> float:
    fn()  # warm-up (cuDNN autotuning, allocator)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    try:
        import torch
    except ImportError:
        print("bench_torch_cuda: torch is not installed (make install-torch); nothing measured")
        return 0
    if not torch.cuda.is_available():
        print(f"bench_torch_cuda: no GPU on this machine (torch {torch.__version__}, torch.cuda.is_available() "
              "is False): the CUDA path was NOT exercised; nothing measured")
        return 0
    from hpcasync.problems.nn import zoo
    from hpcasync.problems.nn.flat import FlatModule

    results = []
    torch.manual_seed(0)
    template = zoo.vgg11((3, 32, 32), 10)
    cpu = FlatModule(template, np.float32)
    x = cpu.initial_vector()
    cpu.attach_grad()
    import copy

    gpu = FlatModule(copy.deepcopy(template), np.float32, "cuda")
    gpu.attach_grad(pin=True)
    for batch in (8, 128):
        X, y = torch.randn(batch, 3, 32, 32), torch.arange(batch) % 10
        Xg, yg = X.cuda(), y.cuda()

        def step(flat: FlatModule, X: torch.Tensor, y: torch.Tensor) -> None:
            flat.bind(x)
            flat.zero_grad()
            flat.module.train()
            torch.nn.functional.cross_entropy(flat.module(X), y).backward()
            flat.grad_to_host()
            if flat.device.type == "cuda":
                torch.cuda.synchronize()

        t_cpu = _seconds(lambda X=X, y=y: step(cpu, X, y), max(2, args.repeats // 5))
        t_gpu = _seconds(lambda Xg=Xg, yg=yg: step(gpu, Xg, yg), args.repeats)

        def copies() -> None:
            gpu.bind(x)
            gpu.grad_to_host()
            torch.cuda.synchronize()

        t_copy = _seconds(copies, args.repeats)
        step(cpu, X, y)
        step(gpu, Xg, yg)
        err = float(np.max(np.abs(gpu.grad - cpu.grad)) / max(np.max(np.abs(cpu.grad)), 1e-30))
        results.append({"batch": batch, "cpu_s_per_gradient": t_cpu, "gpu_s_per_gradient": t_gpu,
                        "host_device_copies_s": t_copy, "copy_share_of_gpu_gradient": t_copy / t_gpu,
                        "max_rel_error_gpu_vs_cpu": err})
        print(f"batch {batch}: cpu {t_cpu * 1e3:.1f} ms, gpu {t_gpu * 1e3:.1f} ms per gradient "
              f"(copies {t_copy * 1e3:.2f} ms = {100 * t_copy / t_gpu:.0f} %), max rel error {err:.1e}")

    from hpcasync.config import from_dict
    from hpcasync.engines.sim.runner import build_simulator

    cfg = from_dict({"problem": {"name": "torch", "model": "cnn", "device": "cuda"}, "data": {"name": "digits"},
                     "topology": {"name": "ring", "n": 4}, "delays": {"case": 1, "straggler": 0},
                     "algorithm": {"alpha": 0.3, "batch_size": 32}, "budget": {"time": 0.0, "gradients": 80},
                     "eval": {"interval": 10.0}})
    sim = build_simulator(cfg)
    sim.run()
    sim_row = {"gradients": sim.gradients, "first": sim.evaluations[0], "last": sim.evaluations[-1]}
    print(f"simulated ADSGD, digits CNN on cuda: {sim.gradients} gradients, train loss "
          f"{sim.evaluations[0]['train_loss']:.3f} -> {sim.evaluations[-1]['train_loss']:.3f}")
    if args.out:
        doc = {"benchmark": "torch_cuda", "command": " ".join([sys.executable, *sys.argv]),
               "machine": {"platform": platform.platform(), "gpu": torch.cuda.get_device_name(0),
                           "torch": torch.__version__},
               "model": "vgg11 (CIFAR)", "dim": int(x.size), "results": results, "simulation": sim_row}
        args.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
