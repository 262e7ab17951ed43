"""Turn run directories into figures and a table: loss.png, accuracy.png, time_to_target.png, table.md/csv."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcasync.results import analysis, plots
from hpcasync.results.reader import find_runs, open_run
from hpcasync.results.writer import ensure_output_dir

TIME_ALIASES = {"wall": "wall_time", "virtual": "virtual_time", "wall_time": "wall_time",
                "virtual_time": "virtual_time"}


def _fmt(value: Any) -> str:
    """Markdown cell text."""
    if value is None:
        return "not reached"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(table: Sequence[dict[str, Any]]) -> str:
    """The table as GitHub-flavoured Markdown (``None`` time or ratio shows as "not reached")."""
    cols = analysis.TABLE_COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table:
        cells = []
        for c in cols:
            value = row[c]
            if c == "ratio_to_adsgd" and value is None and row["time_to_target"] is not None:
                cells.append("–")  # reached, but no ADSGD run to compare with
            else:
                cells.append(_fmt(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(table: Sequence[dict[str, Any]], path: Path) -> Path:
    """The table as CSV; None (not reached / no reference) is an empty cell."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(analysis.TABLE_COLUMNS))
        writer.writeheader()
        for row in table:
            writer.writerow({c: "" if row[c] is None else row[c] for c in analysis.TABLE_COLUMNS})
    return path


def default_time_key(engines: Sequence[str]) -> str | None:
    """virtual_time if all runs are simulated, wall_time if all are MPI, None (each run's own) if mixed."""
    kinds = set(engines)
    if kinds == {"sim"}:
        return "virtual_time"
    if kinds <= {"mpi"}:
        return "wall_time"
    return None


def make_report(run_dirs: Sequence[str | Path], out_dir: str | Path, target: float | None = None,
                time_key: str | None = None, *, echo: bool = True) -> dict[str, Any]:
    """Read the runs, write the figures and tables into ``out_dir``, return what was written.

    ``run_dirs`` may name run directories or folders holding runs (searched
    recursively). ``target`` defaults to the first run's
    ``eval.target_accuracy``. ``time_key`` is ``"virtual_time"``/``"virtual"``
    or ``"wall_time"``/``"wall"``; by default virtual time when every run is
    simulated, wall time when every run is MPI, and for a mix of both each
    run on its own axis (sim: virtual time units, MPI: wall seconds) — the
    curves are overlaid with each legend entry naming its axis, and ratios to
    ADSGD are only formed between runs on the same axis. A run lacking the
    requested axis (MPI without a delay model has no virtual time) falls back
    to the other.

    Returns ``{"table": rows, "markdown": str, "files": {name: Path}, "target": float,
    "time_key": str | None}``; prints the Markdown table when ``echo``.
    """
    if time_key is not None:
        if time_key not in TIME_ALIASES:
            raise ValueError(f"time_key must be one of {sorted(TIME_ALIASES)}, got {time_key!r}")
        time_key = TIME_ALIASES[time_key]
    runs = [open_run(p) for p in find_runs(list(run_dirs))]
    out = ensure_output_dir(Path(out_dir))
    if time_key is None:
        time_key = default_time_key([r.engine for r in runs])
    if target is None:
        target = analysis.default_target(runs)
    table = analysis.summary_table(runs, target, time_key)
    markdown = markdown_table(table)
    files = {
        "loss": plots.plot_curves(runs, "train_loss", out / "loss.png", time_key),
        "accuracy": plots.plot_curves(runs, "test_accuracy", out / "accuracy.png", time_key, target),
        "time_to_target": plots.plot_time_to_target_bars(table, out / "time_to_target.png"),
        "csv": write_csv(table, out / "table.csv"),
    }
    (out / "table.md").write_text(markdown)
    files["markdown"] = out / "table.md"
    if echo:
        print(markdown, end="")
    return {"table": table, "markdown": markdown, "files": files, "target": target, "time_key": time_key}
