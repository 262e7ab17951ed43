"""Arguments and helpers shared by the subcommands that take a config."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcasync import config as config_mod
from hpcasync.config import Config
from hpcasync.errors import UserError


def add_config_args(p: argparse.ArgumentParser, *, resumable: bool = False) -> None:
    if resumable:  # with --resume the run directory holds the config; one given must match it
        p.add_argument("config", nargs="?", help="experiment config (TOML); optional with --resume")
        p.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the interrupted run in RUN_DIR from its checkpoint")
    else:
        p.add_argument("config", help="experiment config (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field (value in TOML syntax); repeatable")


def load_config(args: argparse.Namespace) -> Config:
    resume = getattr(args, "resume", None)
    if resume is not None:
        from hpcasync.resume import resume_config

        given = config_mod.load(args.config, args.overrides) if args.config is not None else None
        if given is None and args.overrides:
            raise UserError("--set: needs a CONFIG with --resume (the run's own config is used unchanged)")
        return resume_config(Path(resume), given)
    if args.config is None:
        raise UserError("missing CONFIG (or --resume RUN_DIR)")
    return config_mod.load(args.config, args.overrides)


def run_dir(cfg: Config, args: argparse.Namespace) -> Path:
    """The run directory: ``--resume RUN_DIR``, else as :func:`output_dir`."""
    resume = getattr(args, "resume", None)
    if resume is not None:
        if args.out is not None or args.overwrite:
            raise UserError("--resume: continues the run where it is; --out and --overwrite do not apply")
        return Path(resume)
    return output_dir(cfg, args.out)


def add_out_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="run directory (default: run.out/run.name from the config)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in the run directory (default: refuse a used directory)")


def output_dir(cfg: Config, out: str | None) -> Path:
    """``--out`` if given, else ``run.out/run.name``."""
    if out is not None:
        if not out.strip():
            raise UserError("--out: empty path; expected a run directory")
        return Path(out)
    if not cfg.run.out.strip() or not cfg.run.name.strip():
        raise UserError(f"config fields run.out = {cfg.run.out!r}, run.name = {cfg.run.name!r}: "
                        "expected non-empty names for the run directory run.out/run.name")
    return Path(cfg.run.out) / cfg.run.name
