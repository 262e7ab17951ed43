"""Figures of seed 000: curves of the average model vs time, and relative time to a target accuracy.

Uses matplotlib's object API with the Agg canvas directly (no pyplot), so it
works without a display and never changes the caller's backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hpcasync.results import schema
from hpcasync.results.analysis import REFERENCE_ALGORITHMS, resolve_time_key
from hpcasync.results.reader import Run

KEY_LABELS = {
    "train_loss": "training loss of the average model",
    "test_loss": "test loss of the average model",
    "test_accuracy": "test accuracy of the average model",
    "consensus_distance": "consensus distance",
    "gradients": "gradients (all agents)",
}
NOT_REACHED_COLOR = "0.85"
LINESTYLES = ("-", "--", ":", "-.")


def _case_order(case: str) -> tuple[int, float, str]:
    """Numbered cases first, in numeric order, then named delay models."""
    return (0, float(case), "") if case.isdigit() else (1, 0.0, case)


def _styles(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Colour by algorithm and line style by case when that tells the runs apart, else a colour per run."""
    pairs = [(r.algorithm, r.case) for r in runs]
    if len(set(pairs)) < len(pairs):
        return [{"color": f"C{i % 10}"} for i in range(len(runs))]
    colors = algorithm_colors([a for a, _ in pairs])
    cases = sorted(dict.fromkeys(c for _, c in pairs), key=_case_order)
    return [{"color": colors[a], "linestyle": LINESTYLES[cases.index(c) % len(LINESTYLES)]} for a, c in pairs]


def algorithm_colors(algorithms: Sequence[str]) -> dict[str, str]:
    """One colour per algorithm, ADSGD first, so curves and bars of one report agree."""
    ordered = sorted(dict.fromkeys(algorithms), key=lambda a: (a not in REFERENCE_ALGORITHMS, a))
    return {a: f"C{i % 10}" for i, a in enumerate(ordered)}


def _save(fig: Figure, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    FigureCanvasAgg(fig)
    fig.savefig(out_png, dpi=120)
    return out_png


def _axis_label(keys: set[str]) -> str:
    if len(keys) == 1:
        return schema.time_label(next(iter(keys)))
    return "time (each run on its own axis: sim in time units, MPI in wall seconds)"


def plot_curves(runs: Sequence[Run], key: str, out_png: str | Path, time_key: str | None = None,
                target: float | None = None) -> Path:
    """``key`` of /evaluations (e.g. ``train_loss``, log y; ``test_accuracy``) vs time, one line per run.

    ``time_key``: see :func:`~hpcasync.results.analysis.resolve_time_key`; when
    runs end up on different axes, each legend entry names its axis. ``target``
    draws a dashed horizontal line (the target accuracy).
    """
    if key not in schema.EVALUATION_NAMES:
        raise ValueError(f"key must be one of {schema.EVALUATION_NAMES}, got {key!r}")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    keys = {resolve_time_key(run, time_key) for run in runs}
    plotted = 0
    for run, style in zip(runs, _styles(runs), strict=True):
        tk = resolve_time_key(run, time_key)
        t, y = run.evaluations[tk], run.evaluations[key].astype(np.float64)
        ok = np.isfinite(t) & np.isfinite(y)
        if key.endswith("loss"):
            ok &= y > 0
        if not ok.any():
            continue
        label = f"{run.name} ({run.algorithm})" if run.algorithm not in run.name else run.name
        if len(keys) > 1:
            label += " [virtual]" if tk == "virtual_time" else " [wall s]"
        ax.plot(t[ok], y[ok], label=label, linewidth=1.5, **style)
        plotted += 1
    if key.endswith("loss") and plotted:
        ax.set_yscale("log")
    if target is not None:
        ax.axhline(target, color="black", linewidth=0.8, linestyle="--", label=f"target {target:g}")
    ax.set_xlabel(_axis_label(keys))
    ax.set_ylabel(KEY_LABELS.get(key, key))
    ax.grid(True, which="both", alpha=0.3)
    if plotted:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, out_png)


def plot_time_to_target_bars(table: Sequence[dict[str, Any]], out_png: str | Path) -> Path:
    """Per case, each run's time to target relative to ADSGD (seed 000 Fig. 9/15 style).

    Rows come from :func:`~hpcasync.results.analysis.summary_table`. A run
    that never reached the target gets a hatched grey bar drawn above the
    tallest real one, an "×" and the label "not reached"; a run without an
    ADSGD reference in its case gets a grey bar at 1 labelled "no ADSGD".
    """
    fig = Figure(figsize=(max(6.0, 1.0 + 0.6 * len(table)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    cases = sorted(dict.fromkeys(str(r["case"]) for r in table), key=_case_order)
    ratios = [r["ratio_to_adsgd"] for r in table if r["ratio_to_adsgd"] is not None]
    top = max([1.0, *ratios])
    missing_height = 1.15 * top
    colors = algorithm_colors([r["algorithm"] for r in table])
    x = 0.0
    ticks, tick_labels = [], []
    legend_done: set[str] = set()
    for case in cases:
        # The reference first, as in the papers' figures.
        rows = sorted((r for r in table if str(r["case"]) == case),
                      key=lambda r: r["algorithm"] not in REFERENCE_ALGORITHMS)
        start = x
        for r in rows:
            label = None if r["algorithm"] in legend_done else r["algorithm"]
            legend_done.add(r["algorithm"])
            if r["time_to_target"] is None:
                ax.bar(x, missing_height, width=0.8, color=NOT_REACHED_COLOR, hatch="//",
                       edgecolor=colors[r["algorithm"]], label=label)
                ax.text(x, missing_height, "×", ha="center", va="bottom", fontsize=14, color="red")
                ax.text(x, missing_height / 2, "not reached", ha="center", va="center", rotation=90,
                        fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5})
            elif r["ratio_to_adsgd"] is None:
                ax.bar(x, 1.0, width=0.8, color=NOT_REACHED_COLOR, edgecolor=colors[r["algorithm"]],
                       label=label)
                ax.text(x, 0.5, "no ADSGD", ha="center", va="center", rotation=90, fontsize=8)
            else:
                ax.bar(x, r["ratio_to_adsgd"], width=0.8, color=colors[r["algorithm"]], label=label)
                ax.text(x, r["ratio_to_adsgd"], f"{r['ratio_to_adsgd']:.2f}", ha="center", va="bottom",
                        fontsize=8)
            x += 1.0
        ticks.append((start + x - 1.0) / 2)
        tick_labels.append(f"case {case}" if case.isdigit() else case)
        x += 0.8  # gap between cases
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(ticks, tick_labels)
    ax.set_ylim(0, missing_height * 1.15 if table else 1.0)
    target = table[0]["target"] if table else float("nan")
    ax.set_ylabel(f"time to {target:.0%} accuracy / {REFERENCE_ALGORITHMS[0].upper()}'s")
    if table:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, out_png)
