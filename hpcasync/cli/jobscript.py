"""``hpcasync jobscript CONFIG``: write a SLURM or PBS script that runs CONFIG on a cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcasync.cli.common import add_config_args, load_config, output_dir
from hpcasync.errors import UserError, require
from hpcasync.jobs import SCHEDULERS, JobSpec, render, write


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("jobscript", help="render a SLURM/PBS job script for a config", description=__doc__)
    add_config_args(p)
    p.add_argument("--scheduler", default="slurm", choices=SCHEDULERS)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--time", default="01:00:00", help="wall-time limit HH:MM:SS")
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--env-setup", default="", help="shell lines run before launching (modules, venv)")
    p.add_argument("--python", default="python", help="the Python that has hpcasync installed")
    p.add_argument("--out", help="run directory (default: run.out/run.name)")
    p.add_argument("--list", dest="list_file", default="",
                   help="slurm-array: file with one config path per line (one array task each)")
    p.add_argument("-o", "--output", help="write the script here instead of printing it")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    array_size = 1
    if args.scheduler == "slurm-array":
        require(bool(args.list_file), "--scheduler slurm-array needs --list FILE (one config per line)")
        listed = Path(args.list_file)
        require(listed.is_file(), f"--list {listed}: not found")
        array_size = len([line for line in listed.read_text().splitlines() if line.strip()])
        require(array_size > 0, f"--list {listed}: lists no config")
    spec = JobSpec(list_file=args.list_file or "configs.txt", array_size=array_size,
                   scheduler=args.scheduler, nodes=args.nodes, cpus_per_task=args.cpus_per_task,
                   time=args.time, partition=args.partition, account=args.account,
                   env_setup=args.env_setup, python=args.python, overrides=args.overrides)
    text = render(cfg, args.config, str(output_dir(cfg, args.out)), spec)
    # The scheduler opens the job's log file before the script runs and does not create its directory
    # (relative to the submission directory, normally this one): without it the log is lost.
    log_dir = Path(spec.log_dir)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"log directory {log_dir}: cannot be created ({exc.strerror or exc})") from None
    if args.output:
        write(Path(args.output), text)
        print(f"wrote {args.output} (job logs go to {log_dir}/ of the directory it is submitted from)")
    else:
        print(text, end="")
    return 0
