"""``hpcasync doctor [CONFIG]``: is this MPI's one-sided communication wait-free? Start it like a run.

    mpiexec -n 2 hpcasync doctor
    srun -n 2 hpcasync doctor configs/mpi/demo-case5-adsgd.toml
    mpiexec -n 2 --mca osc ucx hpcasync doctor          # Open MPI: a given one-sided component

Reports the MPI library, the one-sided component where it can tell, the
thread level, and measures whether a publish, an accumulate and a drain
complete while the target computes without calling MPI, without and with
the progress thread of ``mpi.progress = "thread"``. Ends with a verdict line
and the fix. Exit status 0 when runs will not wait (with the config's
``mpi.progress`` if a config is given), 1 when they would. Run it with the
ranks spread as a run's (e.g. two nodes: ``srun -N 2 -n 2``) to test the
network path.
"""

from __future__ import annotations

import argparse
import math

from hpcasync.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("doctor", help="check that one-sided MPI operations never wait (start with mpiexec/srun)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="experiment config (TOML): its mpi.progress is judged too")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field (value in TOML syntax); repeatable")
    p.add_argument("--sleep", type=float, default=0.5, metavar="SECONDS",
                   help="how long a probed target computes without MPI (default 0.5)")
    p.add_argument("--ops", type=int, default=20, help="publishes and accumulates per origin (default 20)")
    return p


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.sleep) and args.sleep > 0):
        raise UserError(f"--sleep: expected a finite number of seconds > 0, got {args.sleep}")
    if args.ops < 1:
        raise UserError(f"--ops: expected >= 1, got {args.ops}")
    config_progress = None
    if args.config:
        from hpcasync import config as config_mod

        config_progress = config_mod.load(args.config, args.overrides).mpi.progress
    elif args.overrides:
        raise UserError("--set needs a CONFIG")

    from mpi4py import MPI

    from hpcasync.engines.mpi.doctor import diagnose, format_report

    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        raise UserError("doctor needs at least 2 ranks (one computes, one pushes): "
                        "start it with `mpiexec -n 2 hpcasync doctor` or `srun -n 2 hpcasync doctor`")
    d = diagnose(comm, sleep_s=args.sleep, ops=args.ops, config_progress=config_progress)
    if comm.Get_rank() == 0:
        print("\n".join(format_report(d)), flush=True)
    fixed_by_thread = d.thread is not None and not d.thread.waits and not d.thread.lost
    ok = d.off is not None and not d.off.lost and (not d.off.waits or (fixed_by_thread and config_progress != "off"))
    return 0 if ok else 1
