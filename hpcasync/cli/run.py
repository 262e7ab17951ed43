"""``hpcasync run CONFIG``: one rank of a real MPI run; start it with mpiexec or srun.

    mpiexec -n 10 hpcasync run configs/mpi/demo-case5-adsgd.toml     # 9 agents + monitor
    srun -n 9 hpcasync run CONFIG --set mpi.monitor=false

N ranks = the config's agents (topology.n), plus one monitor rank that
evaluates the average model while the run goes (mpi.monitor = true). Every
rank writes its own rank-NNNNN.h5; the monitor (or rank 0) writes run.h5.
Errors found while setting up are printed once, by rank 0, and every rank
exits with status 2; an error during the run aborts the whole job.

SIGTERM, SIGUSR1 (SLURM's ``--signal``) or SIGINT stop a run at an agreed
point (every built-in algorithm can be checkpointed; a plug-in that says
``resumable = False`` just stops): every rank writes
RUN_DIR/checkpoint/rank-NNNNN.h5, and

    mpiexec -n 10 hpcasync run --resume RUN_DIR

continues it (same number of ranks).
"""

from __future__ import annotations

import argparse
import signal
import sys

from hpcasync.cli.common import add_config_args, add_out_args, load_config, run_dir
from hpcasync.errors import EXIT_USER_ERROR, UserError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="one rank of an MPI run (start with mpiexec/srun, or use `launch`)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, resumable=True)
    add_out_args(p)
    p.add_argument("--quiet", action="store_true", help="no summary line at the end")
    return p


def _fail(rank: int, message: str) -> int:
    if rank == 0:
        print(f"hpcasync run: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from hpcasync import threads
    from hpcasync.engines.mpi.runner import TerminatedError, run_rank
    from hpcasync.engines.mpi.world import SetupError, agree, describe

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    n_threads, _ = threads.configure(local.Get_size())
    local.Free()

    cfg = None
    error = None
    try:
        cfg = load_config(args)
        out = run_dir(cfg, args)
        # Every rank checks (one message, no rank named); with --overwrite rank 0 alone removes the old
        # run, before agree() below lets any rank create a file.
        from hpcasync.results import rundir

        if args.resume is None:
            rundir.claim(out, args.overwrite, clears=rank == 0)
    except UserError as exc:
        error = describe(exc)
    try:
        agree(comm, error)
        assert cfg is not None
        result = run_rank(cfg, out, comm, source=args.config or args.resume, threads=n_threads, quiet=args.quiet,
                          resume=args.resume is not None)
    except SetupError as exc:
        return _fail(rank, str(exc))
    except TerminatedError as exc:  # outside the loop (setup, or the end of run)
        if rank == 0:
            print(f"hpcasync run: interrupted by {exc}", file=sys.stderr, flush=True)
        return 128 + exc.signum
    if result.interrupted:
        if rank == 0:
            print(f"hpcasync run: interrupted by {result.interrupted}; files closed, marked complete = false; "
                  f"checkpoint written to {out}/checkpoint "
                  f"(rank 0: {result.checkpoint_s:.3f} s); "
                  f"continue with: hpcasync run --resume {out}", file=sys.stderr, flush=True)
        return 128 + int(signal.Signals[result.interrupted])
    return 0
