"""The state of a sweep's run directories before the sweep runs: new, done, stale or partial."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hpcasync.errors import UserError
from hpcasync.sweep_spec import RunSpec

# status of a run directory before the sweep runs
# status of a run directory before the sweep runs
NEW, DONE, STALE, PARTIAL = "new", "done", "stale", "partial"


def run_status(spec: RunSpec) -> str:
    """new (no run.h5) | done (complete, same config) | stale (complete, config changed) | partial."""
    from hpcasync.results.reader import open_run

    if not (spec.out_dir / "run.h5").is_file():
        return NEW
    try:
        run = open_run(spec.out_dir)
    except UserError:
        return PARTIAL
    if not run.complete:
        return PARTIAL
    return DONE if run.config_toml == spec.config.to_toml() else STALE


def clear_run_dir(out_dir: Path) -> None:
    """Remove the files a previous attempt left (run.h5, rank-*.h5); nothing else is touched."""
    if not out_dir.is_dir():
        return
    for p in [out_dir / "run.h5", *out_dir.glob("rank-*.h5"), *out_dir.glob("checkpoint/*.h5")]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
