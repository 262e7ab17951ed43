"""Arguments and helpers shared by the subcommands that take a config."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcasync import config as config_mod
from hpcasync.config import Config
from hpcasync.errors import UserError


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment config (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field (value in TOML syntax); repeatable")


def load_config(args: argparse.Namespace) -> Config:
    return config_mod.load(args.config, args.overrides)


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
