"""hpcasync from a Python script: configs, in-memory simulations, a run directory, your own algorithm.

    python examples/api_quickstart.py                 # ~1 min on one core
    python examples/api_quickstart.py --time 20       # the short version the test suite runs

1. build a config from a dict (validated exactly like a TOML file);
2. simulate ADSGD and DSGD in memory (nothing is written) and compare them;
3. write one run to disk and read it back with ``open_run``;
4. run an algorithm defined in this very file — no registration, just
   ``algorithm.name = "module:Class"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import hpcasync
from hpcasync.algorithms import Algorithm, OpGenerator, Transport


class LocalSGDWithAveraging(Algorithm):
    """A toy algorithm: asynchronous SGD that mixes the newest neighbour models with equal weights,

        g ← ∇f_i(x_i);  x_i ← (x_i + Σ_j x̃_j) / (1 + |N_i|) − α·g;  push_model(x_i)

    (not doubly stochastic on irregular graphs — it is an example of the contract, not a method)."""

    requires = frozenset({"push_model"})  # the transport features it uses

    def run(self, t: Transport) -> OpGenerator:
        while True:
            g = yield from t.gradient(self.x)
            mixed = (self.x + t.latest_models().sum(axis=0)) / (1 + len(t.in_neighbors))
            self.x[:] = mixed - self.alpha() * g
            self.iteration += 1
            t.push_model(self.x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--time", type=float, default=100.0, help="virtual-time budget of each run")
    p.add_argument("--out", help="run directory for step 3 (default: a temporary one)")
    args = p.parse_args(argv)

    # 1. a config as a dict: every field not given keeps its default
    base = {
        "algorithm": {"alpha": 0.05, "batch_size": 16},
        "topology": {"name": "grid", "n": 9},
        "data": {"name": "digits"},
        "delays": {"model": "case", "case": 5, "straggler": 4},  # agent 4 computes and sends 10x slower
        "budget": {"time": args.time},
        "eval": {"interval": args.time / 10},
    }

    # 2. two algorithms, in memory
    for name in ("adsgd", "dsgd"):
        cfg = hpcasync.load_config(base, overrides={"algorithm.name": name})
        res = hpcasync.simulate(cfg)
        ev = res.evaluations
        print(f"{name:6s} gradients={res.summary['gradients']:5d} test_accuracy={ev['test_accuracy'][-1]:.3f} "
              f"consensus={ev['consensus_distance'][-1]:.2e} models={res.models.shape}")

    # 3. one run on disk, read back
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="hpcasync-api-")) / "adsgd"
    hpcasync.simulate(hpcasync.load_config(base, overrides={"algorithm.name": "adsgd"}), out=out)
    run = hpcasync.open_run(out)
    losses = run.updates(4)["loss"]
    print(f"{out}: {len(run.evaluations['train_loss'])} evaluations, agent 4 logged {len(losses)} updates, "
          f"final train loss {run.evaluations['train_loss'][-1]:.4f}")

    # 4. your own algorithm, straight from this module
    module = __name__ if __name__ != "__main__" else "__main__"
    mine = hpcasync.simulate(hpcasync.load_config(base, overrides={
        "algorithm.name": f"{module}:LocalSGDWithAveraging"}))
    acc = mine.evaluations["test_accuracy"]
    print(f"LocalSGDWithAveraging: test_accuracy {acc[0]:.3f} -> {acc[-1]:.3f}")
    return 0 if np.isfinite(acc[-1]) else 1


if __name__ == "__main__":
    sys.exit(main())
