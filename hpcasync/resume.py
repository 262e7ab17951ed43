"""What both engines check before resuming a run directory (``--resume RUN_DIR``).

The run directory holds the run's config (run.h5 ``/config``) and its
checkpoint (``checkpoint/``, see :mod:`hpcasync.results.checkpoint`). A resume
is refused with one line (exit status 2) when the directory is not a run, the
run is already complete, the checkpoint is missing or unreadable, or the
config given on the command line (or the checkpoint's own) differs from the
run's in anything but where its files go.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hpcasync import config as config_mod
from hpcasync.config import Config
from hpcasync.errors import UserError
from hpcasync.results import schema
from hpcasync.results.h5check import BrokenFileError, check_file

#: fields that may differ between the run and its resume: where files go, not what is computed
IGNORED = {("run", "name"), ("run", "out"), ("data", "dir")}


def stored_config(run_dir: Path, option: str = "--resume") -> tuple[Config, bool]:
    """(the config run.h5 stores, whether the run is complete); UserError if ``run_dir`` is no readable run."""
    import h5py

    run_dir = Path(run_dir)
    path = run_dir / schema.RUN_FILENAME
    if not run_dir.is_dir():
        raise UserError(f"{option} {run_dir}: not a directory")
    if not path.is_file():
        raise UserError(f"{option} {run_dir}: no {schema.RUN_FILENAME}; not a run directory")
    try:
        check_file(path)
        with h5py.File(path, "r", swmr=True) as f:
            toml = f[schema.CONFIG_GROUP].attrs["toml"]
            complete = bool(f.attrs.get("complete", False))
    except (BrokenFileError, OSError, KeyError) as exc:
        raise UserError(f"{option} {run_dir}: {path.name} is unreadable ({exc})") from None
    return config_from_toml(toml, str(path)), complete


def config_from_toml(text: str, where: str) -> Config:
    try:
        return config_mod.from_dict(tomllib.loads(text), source=where)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where}: stored config is not valid TOML ({exc})") from None


def first_difference(a: Config, b: Config) -> tuple[str, Any, Any] | None:
    """The first field (``section.name``, value in a, value in b) where a and b differ, IGNORED aside."""
    da, db = a.to_dict(), b.to_dict()
    for section in da:
        for name, value in da[section].items():
            other = db.get(section, {}).get(name)
            if (section, name) not in IGNORED and value != other:
                return f"{section}.{name}", value, other
    return None


def check_same(cfg: Config, other: Config, what: str, run_dir: Path) -> None:
    """UserError naming the first field in which ``cfg`` (the run's) and ``other`` (``what``) differ."""
    diff = first_difference(cfg, other)
    if diff is not None:
        field, mine, theirs = diff
        raise UserError(f"--resume {run_dir}: config mismatch: field {field} is {theirs!r} in {what}, "
                        f"{mine!r} in the run")


def resume_config(run_dir: Path, given: Config | None) -> Config:
    """The config to resume ``run_dir`` with: the run's own, checked against ``given`` (CONFIG [--set])."""
    cfg, complete = stored_config(run_dir)
    if complete:
        raise UserError(f"--resume {run_dir}: the run is complete; nothing to resume")
    if given is not None:
        check_same(cfg, given, "the config given", run_dir)
    return cfg
