"""Arguments and helpers shared by the subcommands that take a config."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcasync import config as config_mod
from hpcasync.config import Config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment config (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field (value in TOML syntax); repeatable")


def load_config(args: argparse.Namespace) -> Config:
    return config_mod.load(args.config, args.overrides)


def output_dir(cfg: Config, out: str | None) -> Path:
    """``--out`` if given, else ``run.out/run.name``."""
    return Path(out) if out else Path(cfg.run.out) / cfg.run.name
