"""One run per directory: a run directory that already holds a run is refused unless overwriting.

A second run into the same directory used to replace ``run.h5`` and the
first ranks' files and leave the first run's other rank files behind, marked
complete: two runs mixed in one directory. ``hpcasync simulate``, ``run``
and ``launch`` therefore refuse a directory holding ``run.h5`` or any
``rank-*.h5`` (one line, exit status 2) unless ``--overwrite`` is given; then
every file of the old run is removed before the new run writes anything, so
the directory only ever holds one run. (``hpcasync sweep`` decides per run
itself: finished runs are skipped, partial ones cleared and redone.)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hpcasync.errors import UserError
from hpcasync.results import schema

#: ``rank-NNNNN.h5`` written by the agents (schema.agent_filename)
AGENT_GLOB = "rank-*.h5"


def run_files(out_dir: Path) -> list[Path]:
    """The files of a run in ``out_dir``: run.h5 and every agent file (empty if there is none)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    run_file = out_dir / schema.RUN_FILENAME
    return ([run_file] if run_file.exists() else []) + sorted(out_dir.glob(AGENT_GLOB))


def check_unused(out_dir: Path) -> None:
    """UserError if ``out_dir`` already holds (part of) a run."""
    found = run_files(out_dir)
    if found:
        agents = len(found) - (found[0].name == schema.RUN_FILENAME)
        what = ", ".join(filter(None, [schema.RUN_FILENAME if found[0].name == schema.RUN_FILENAME else "",
                                        f"{agents} agent file{'s' if agents != 1 else ''}" if agents else ""]))
        raise UserError(f"output directory {out_dir}: already holds a run ({what}); choose another --out "
                        "or run.name, or pass --overwrite to replace it")


def clear(out_dir: Path) -> None:
    """Remove the files of the run in ``out_dir`` (run.h5, rank-*.h5); nothing else is touched."""
    for p in run_files(out_dir):
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UserError(f"output directory {out_dir}: cannot remove {p.name} of the previous run "
                            f"({exc.strerror or exc})") from None
    with contextlib.suppress(OSError):
        for tmp in Path(out_dir).glob(".*.h5.tmp"):  # half-created files of a killed writer
            tmp.unlink()
        for ck in Path(out_dir).glob("checkpoint/*.h5"):  # the old run's checkpoint (resume)
            ck.unlink()


def claim(out_dir: Path, overwrite: bool, *, clears: bool = True) -> None:
    """Refuse a used ``out_dir`` (``overwrite`` False), or remove its old run (``clears``, ``overwrite`` True)."""
    if not overwrite:
        check_unused(out_dir)
    elif clears:
        clear(out_dir)
