"""``hpcasync sweep SWEEP.toml``: expand a grid of settings into runs and run them, several at a time.

Every run's config is checked before the first one starts. Finished runs
(run.h5 complete, same config) are skipped, so an interrupted sweep picks up
where it stopped. A failing run is reported in one line and the others go on;
the exit status is 1 if any run failed, 2 for a bad sweep file. A [report]
table in the file writes `hpcasync report`'s figures and tables once the
runs are done. See
hpcasync/sweep.py (or docs/reproduction.md) for the file format.
"""

from __future__ import annotations

import argparse

from hpcasync.errors import UserError
from hpcasync.sweep import STALE, load_sweep, report_sweep, run_status, run_sweep


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="run a grid of configs (parallel, resumable)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", metavar="SWEEP.toml", help="sweep file: [base] config + [sweep] axes")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a field of the base config for every run (TOML value); repeatable")
    p.add_argument("-j", "--jobs", type=int, help="runs at a time (default: [sweep.options] jobs, else 2)")
    p.add_argument("--out", help="parent directory of the runs (default: [sweep.options] out)")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only the runs whose name matches GLOB; repeatable")
    p.add_argument("--force", action="store_true", help="run again even the runs that are finished")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    rep = p.add_mutually_exclusive_group()
    rep.add_argument("--no-report", action="store_true", help="skip the file's [report] after the runs")
    rep.add_argument("--report-only", action="store_true",
                     help="run nothing; write the file's [report] from the runs that exist")
    return p


def run(args: argparse.Namespace) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    sweep = load_sweep(args.sweep, args.overrides, out=args.out, jobs=args.jobs, only=args.only)
    if args.dry_run:
        for spec in sweep.runs:
            status = "new" if args.force else run_status(spec)
            print(f"{status:8s}{spec.name:40s} {spec.label()}")
        n_stale = sum(run_status(s) == STALE for s in sweep.runs) if not args.force else 0
        print(f"{len(sweep.runs)} runs -> {sweep.out} (engine {sweep.engine}, {sweep.jobs} at a time"
              f"{f', {n_stale} with a changed config' if n_stale else ''})")
        return 0
    if args.report_only:
        if sweep.report is None:
            raise UserError(f"sweep file {args.sweep}: --report-only, but the file has no [report] table")
        report_sweep(sweep)
        return 0
    result = run_sweep(sweep, force=args.force, progress=not args.quiet)
    if not args.no_report:
        report_sweep(sweep)
    return 0 if result.ok else 1
