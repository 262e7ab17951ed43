"""Figures and a table (time to target accuracy, ratio to ADSGD) from one or more run directories.

RUN_DIR is a run directory (holding run.h5) or a folder of runs, searched
recursively. A run that is still going or was killed is read as far as it got.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcasync.errors import UserError
from hpcasync.results.report import make_report


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="plots and tables from run directories", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory, or a folder of runs")
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default: RUN_DIR/report for one RUN_DIR, else ./report)")
    p.add_argument("--target", type=float, metavar="ACC",
                   help="target test accuracy, e.g. 0.89 (default: the first run's eval.target_accuracy)")
    p.add_argument("--time", choices=("wall", "virtual"), dest="time",
                   help="time axis (default: virtual if all runs are simulated, wall if all are MPI, "
                        "else each run's own)")
    p.add_argument("--smooth", type=int, default=1, metavar="K",
                   help="time to target on a moving average of K evaluations (default 1: raw)")
    p.add_argument("--xmax", type=float, metavar="T", help="cut the time axis of the figures at T")
    p.add_argument("--loss-target", type=float, metavar="L",
                   help="also report the time until the average model's training loss is <= L")
    return p


def run(args: argparse.Namespace) -> int:
    if args.target is not None and not 0.0 < args.target <= 1.0:
        raise UserError(f"--target: expected an accuracy in (0, 1], got {args.target}")
    if args.out:
        out = Path(args.out)
    elif len(args.run_dirs) == 1 and Path(args.run_dirs[0]).is_dir():
        out = Path(args.run_dirs[0]) / "report"
    else:
        out = Path("report")
    if args.smooth < 1:
        raise UserError(f"--smooth: expected a number of evaluations >= 1, got {args.smooth}")
    result = make_report(args.run_dirs, out, target=args.target, time_key=args.time, smooth=args.smooth,
                         xmax=args.xmax, loss_target=args.loss_target)
    print(f"wrote {', '.join(p.name for p in result['files'].values())} to {out}")
    return 0
