"""``hpcasync simulate CONFIG``: run an experiment in the discrete-event simulator."""

from __future__ import annotations

import argparse
import signal

from tqdm import tqdm

from hpcasync.cli.common import add_config_args, add_out_args, load_config, output_dir
from hpcasync.engines.sim.runner import simulate
from hpcasync.results import rundir
from hpcasync.results.analysis import time_to_target


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("simulate", help="run a config in the discrete-event simulator",
                       description=__doc__)
    add_config_args(p)
    add_out_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    out = output_dir(cfg, args.out)
    rundir.claim(out, args.overwrite)
    total = cfg.budget.time if cfg.budget.time > 0 else None
    quiet = True if args.quiet else None  # None: tqdm shows the bar on a terminal only
    with tqdm(total=total, desc=f"{cfg.run.name} [{cfg.algorithm.name}]", unit="t", disable=quiet, leave=False,
              bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} time units [{elapsed}<{remaining}]",
              ) as bar:
        interrupted: list[int] = []

        def on_sigint(signum: int, frame: object) -> None:
            interrupted.append(signum)
            raise KeyboardInterrupt

        def progress(now: float) -> None:
            # Python drops a KeyboardInterrupt raised inside a weakref/GC callback: look again here
            if interrupted:
                raise KeyboardInterrupt
            bar.update(now - bar.n)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            sim = simulate(cfg, out, progress=progress)
        finally:
            signal.signal(signal.SIGINT, previous)
    last = sim.evaluations[-1] if sim.evaluations else {}
    times = [e["virtual_time"] for e in sim.evaluations]
    accs = [e.get("test_accuracy", float("nan")) for e in sim.evaluations]
    ttt = time_to_target(times, accs, cfg.eval.target_accuracy)
    reached = f"{ttt:.1f}" if ttt is not None else "not reached"
    print(f"{cfg.run.name}: {cfg.algorithm.name} t={sim.now:.1f} gradients={sim.gradients} "
          f"train_loss={last.get('train_loss', float('nan')):.4f} "
          f"test_acc={last.get('test_accuracy', float('nan')):.4f} "
          f"time_to_{cfg.eval.target_accuracy:g}={reached} -> {out}")
    return 0
