"""``hpcasync launch CONFIG``: start ``hpcasync run`` under the configured launcher (mpi.launcher).

    hpcasync launch configs/mpi/demo-case5-adsgd.toml          # mpiexec -n 10 … hpcasync run …
    hpcasync launch -n 9 CONFIG --set mpi.monitor=false --dry-run

The rank count defaults to the config's agents plus one monitor rank
(mpi.monitor = true). ``mpiexec`` is the one next to this Python if there is
one (the ``mpich`` wheel's), else the first on PATH; the MPIEXEC environment
variable overrides it. With mpi.launcher = "srun" the command is
``srun -n N …`` (inside an allocation). The command is printed, run, and its
exit status returned.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from hpcasync.cli.common import add_config_args, load_config
from hpcasync.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("launch", help="run a config on MPI with the configured launcher",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("-n", "--ranks", type=int, metavar="N",
                   help="number of ranks (default: agents, + 1 with mpi.monitor = true)")
    p.add_argument("--out", help="run directory (default: run.out/run.name from the config)")
    p.add_argument("--dry-run", action="store_true", help="print the command without running it")
    return p


def find_mpiexec() -> str:
    """MPIEXEC, else the mpiexec next to this interpreter, else the one on PATH."""
    env = os.environ.get("MPIEXEC")
    if env:
        return env
    local = Path(sys.executable).parent / "mpiexec"
    if local.exists():
        return str(local)
    found = shutil.which("mpiexec")
    if found is None:
        raise UserError("mpiexec: not found next to this Python or on PATH; install an MPI or set MPIEXEC")
    return found


def build_command(args: argparse.Namespace, launcher: str, ranks: int) -> list[str]:
    head = ["srun", "-n", str(ranks)] if launcher == "srun" else [find_mpiexec(), "-n", str(ranks)]
    cmd = head + [sys.executable, "-m", "hpcasync", "run", args.config]
    for text in args.overrides:
        cmd += ["--set", text]
    if args.out:
        cmd += ["--out", args.out]
    return cmd


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    ranks = args.ranks if args.ranks is not None else cfg.topology.n + (1 if cfg.mpi.monitor else 0)
    if ranks < 1:
        raise UserError(f"-n {ranks}: expected at least 1 rank")
    cmd = build_command(args, cfg.mpi.launcher, ranks)
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    try:
        return subprocess.call(cmd)
    except FileNotFoundError as exc:
        raise UserError(f"{cmd[0]}: cannot be started ({exc.strerror or exc})") from None
