"""``hpcasync simulate CONFIG``: run an experiment in the discrete-event simulator.

SIGTERM, SIGUSR1 (SLURM's ``--signal``) and SIGINT (Ctrl-C) stop the run at
the next event boundary and write a checkpoint to RUN_DIR/checkpoint/sim.h5;
``hpcasync simulate --resume RUN_DIR`` continues it exactly.

``hpcasync simulate --replay RUN_DIR [--out DIR]`` replays an MPI run: the
simulator with the computation and communication times the run recorded
(engines/sim/replay.py), into DIR (default RUN_DIR/replay). A replay is not
checkpointed.
"""

from __future__ import annotations

import argparse
import signal
import sys

from tqdm import tqdm

from hpcasync.cli.common import add_config_args, add_out_args, load_config, run_dir
from hpcasync.engines.sim.runner import simulate
from hpcasync.results import rundir
from hpcasync.results.analysis import time_to_target

#: signals that stop a simulation with a checkpoint: the scheduler (SIGTERM, SLURM's SIGUSR1), Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("simulate", help="run a config in the discrete-event simulator",
                       description=__doc__)
    add_config_args(p, resumable=True)
    add_out_args(p)
    p.add_argument("--replay", metavar="RUN_DIR",
                   help="replay the MPI run in RUN_DIR with its recorded times (default --out RUN_DIR/replay)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpcasync.engines.sim import replay
    from hpcasync.errors import UserError

    if args.config is not None or args.resume is not None or args.overrides:
        raise UserError("--replay RUN_DIR: replays the run's own config; CONFIG, --set and --resume do not apply")
    cfg, delays = replay.load(Path(args.replay))
    out = Path(args.out) if args.out else Path(args.replay) / "replay"
    rundir.claim(out, args.overwrite)
    sim = simulate(cfg, out, delays=delays)
    print(f"replay of {args.replay}: {cfg.algorithm.name} t={sim.now:.1f} gradients={sim.gradients} -> {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.replay is not None:
        return _replay(args)
    cfg = load_config(args)
    out = run_dir(cfg, args)
    resume = args.resume is not None
    if not resume:
        rundir.claim(out, args.overwrite)
    total = cfg.budget.time if cfg.budget.time > 0 else None
    quiet = True if args.quiet else None  # None: tqdm shows the bar on a terminal only
    with tqdm(total=total, desc=f"{cfg.run.name} [{cfg.algorithm.name}]", unit="t", disable=quiet, leave=False,
              bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} time units [{elapsed}<{remaining}]",
              ) as bar:
        stops: list[int] = []

        def on_signal(signum: int, frame: object) -> None:
            stops.append(signum)  # the simulator stops at the next event boundary and checkpoints

        def progress(now: float) -> None:
            bar.update(now - bar.n)

        previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
        try:
            sim = simulate(cfg, out, progress=progress, resume=resume, stop_requests=stops)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if sim.interrupted and sim.checkpoint_path is None:
        print(f"hpcasync simulate: interrupted by {sim.interrupted} at t={sim.now:.2f}; files closed, marked "
              f"complete = false; no checkpoint: algorithm {cfg.algorithm.name} cannot resume "
              f"(resumable = False)", file=sys.stderr)
        return 128 + stops[0] if stops else 1
    if sim.interrupted:
        print(f"hpcasync simulate: interrupted by {sim.interrupted} at t={sim.now:.2f}; checkpoint "
              f"{sim.checkpoint_path} written in {sim.checkpoint_s:.2f} s; continue with: "
              f"hpcasync simulate --resume {out}", file=sys.stderr)
        return 128 + stops[0] if stops else 1
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
