"""``hpcasync launch CONFIG``: start ``hpcasync run`` under the configured launcher (mpi.launcher).

    hpcasync launch configs/mpi/demo-case5-adsgd.toml          # mpiexec -n 10 … hpcasync run …
    hpcasync launch -n 9 CONFIG --set mpi.monitor=false --dry-run
    hpcasync launch --resume RUN_DIR                           # continue an interrupted run

The rank count defaults to the config's agents plus one monitor rank
(mpi.monitor = true). ``mpiexec`` is the one next to this Python if there is
one (the ``mpich`` wheel's), else the first on PATH; the MPIEXEC environment
variable overrides it. With mpi.launcher = "srun" the command is
``srun -n N …`` (inside an allocation). The command is printed, run, and its
exit status returned.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from hpcasync.cli.common import add_config_args, add_out_args, load_config, run_dir
from hpcasync.errors import UserError
from hpcasync.results import rundir


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("launch", help="run a config on MPI with the configured launcher",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, resumable=True)
    p.add_argument("-n", "--ranks", type=int, metavar="N",
                   help="number of ranks (default: agents, + 1 with mpi.monitor = true)")
    add_out_args(p)
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
    cmd = head + [sys.executable, "-m", "hpcasync", "run"] + ([] if args.config is None else [args.config])
    if getattr(args, "resume", None) is not None:
        cmd += ["--resume", args.resume]
    for text in args.overrides:
        cmd += ["--set", text]
    if args.out is not None:
        cmd += ["--out", args.out]
    if getattr(args, "overwrite", False):
        cmd += ["--overwrite"]
    return cmd


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    ranks = args.ranks if args.ranks is not None else cfg.topology.n + (1 if cfg.mpi.monitor else 0)
    if ranks < 1:
        raise UserError(f"-n {ranks}: expected at least 1 rank")
    out = run_dir(cfg, args)
    cmd = build_command(args, cfg.mpi.launcher, ranks)
    # one line before any rank starts (`run` checks again)
    if not args.dry_run and not args.overwrite and args.resume is None:
        rundir.check_unused(out)
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    return call_forwarding_signals(cmd)


#: what a user, a scheduler (SIGTERM at the time limit, SIGUSR1 with ``--signal``) or a terminal sends
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)


def call_forwarding_signals(cmd: list[str]) -> int:
    """Run ``cmd`` in its own process group, forward FORWARDED signals to that group, wait for it.

    The launcher is the group leader of mpiexec/srun and, with MPICH's hydra, of the proxies and
    ranks it forks: a SIGTERM to ``hpcasync launch`` reaches all of them and launch returns only
    once mpiexec has ended, so it never leaves orphans. Ctrl-C on a terminal reaches the group
    through the forwarding too (the child is not in the terminal's foreground group).
    """
    try:
        proc = subprocess.Popen(cmd, start_new_session=True)
    except FileNotFoundError as exc:
        raise UserError(f"{cmd[0]}: cannot be started ({exc.strerror or exc})") from None
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled by forward() above
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        print(f"hpcasync launch: forwarded {signal.Signals(received[0]).name} to {cmd[0]}; it ended with "
              f"status {rc}", file=sys.stderr, flush=True)
    return rc if rc >= 0 else 128 - rc
