"""Figures of Zhou & Pu 2025: curves of the average model vs time, and relative time to a target accuracy.

Uses matplotlib's object API with the Agg canvas directly (no pyplot), so it
works without a display and never changes the caller's backend.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from hpcasync.results import replicates, schema
from hpcasync.results.analysis import reference_algorithms, resolve_time_key
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
MAX_LEGEND = 24  # more lines than this: no legend (it would cover the axes)
MAX_POINTS = 1500  # a curve with more points is thinned for drawing (figures stay small; data untouched)


def algorithm_linestyle(algorithm: str) -> str:
    """The algorithm's own line style (``Algorithm.plot_linestyle``, which sets apart curves that coincide,
    e.g. ADSGD Alg. 3 following Alg. 2 under the same arrival order); solid if it is unknown here."""
    from hpcasync.algorithms import lookup

    cls = lookup(algorithm)
    return "-" if cls is None else cls.plot_linestyle


def case_order(case: str) -> tuple[int, float, str]:
    """Numbered cases first, in numeric order, then named delay models."""
    return (0, float(case), "") if case.isdigit() else (1, 0.0, case)


def _styles(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Colour by algorithm and line style by case when that tells the runs apart, else a colour per run."""
    pairs = [(r.algorithm, r.case) for r in runs]
    if len(set(pairs)) < len(pairs):
        return [{"color": f"C{i % 10}"} for i in range(len(runs))]
    colors = algorithm_colors([a for a, _ in pairs])
    cases = sorted(dict.fromkeys(c for _, c in pairs), key=case_order)
    return [{"color": colors[a], "linestyle": LINESTYLES[cases.index(c) % len(LINESTYLES)]} for a, c in pairs]


def algorithm_colors(algorithms: Sequence[str]) -> dict[str, str]:
    """One colour per algorithm, ADSGD first, so curves and bars of one report agree."""
    ordered = sorted(dict.fromkeys(algorithms), key=lambda a: (a not in reference_algorithms(), a))
    return {a: f"C{i % 10}" for i, a in enumerate(ordered)}


def _save(fig: Figure, out_png: str | Path, dpi: int = 120) -> Path:
    """Render with Agg and write a 256-colour PNG: line plots lose nothing visible and the files
    are 3–4× smaller (figures are committed to docs/)."""
    out_png = Path(out_png)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out_png, optimize=True)
    return out_png


def _axis_label(keys: set[str]) -> str:
    if len(keys) == 1:
        return schema.time_label(next(iter(keys)))
    return "time (each run on its own axis: sim in time units, MPI in wall seconds)"


def _draw_curves(ax: Any, runs: Sequence[Run], key: str, time_key: str | None, styles: Sequence[dict[str, Any]],
                 labels: Sequence[str], xmax: float | None) -> tuple[int, set[str]]:
    """One line per run on ``ax``; runs sharing a label and an axis (seeds of one setting) are one line,
    their mean, in a band of ± one standard deviation. Returns (lines drawn, time axes used)."""
    keys = {resolve_time_key(run, time_key) for run in runs}
    lines: dict[tuple[str, str], list[int]] = {}
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        lines.setdefault((label, resolve_time_key(run, time_key)), []).append(i)
    plotted = 0
    for (label, tk), members in lines.items():
        if len(members) > 1:
            t, y, spread = replicates.mean_curve([runs[i] for i in members], key, tk, xmax)
            label += f" (mean ± std, {len(members)} seeds)"
        else:
            run = runs[members[0]]
            t, y = run.evaluations[tk], run.evaluations[key].astype(np.float64)
            spread = None
        ok = np.isfinite(t) & np.isfinite(y)
        if key.endswith("loss"):
            ok &= y > 0
        if xmax is not None:
            ok &= t <= xmax
        if not ok.any():
            continue
        if len(keys) > 1:
            label += " [virtual]" if tk == "virtual_time" else " [wall s]"
        keep = np.flatnonzero(ok)
        if keep.size > MAX_POINTS:
            keep = keep[np.unique(np.linspace(0, keep.size - 1, MAX_POINTS).astype(int))]
        style = styles[members[0]]
        ax.plot(t[keep], y[keep], label=label, linewidth=1.2, **style)
        if spread is not None:
            low = y[keep] - spread[keep]
            if key.endswith("loss"):
                low = np.maximum(low, y[keep] * 1e-3)  # a log axis cannot show values <= 0
            ax.fill_between(t[keep], low, y[keep] + spread[keep], color=style.get("color"), alpha=0.2,
                            linewidth=0)
        plotted += 1
    if key.endswith("loss") and plotted:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return plotted, keys


def _run_label(run: Run) -> str:
    return f"{run.name} ({run.algorithm})" if run.algorithm not in run.name else run.name


def plot_curves(runs: Sequence[Run], key: str, out_png: str | Path, time_key: str | None = None,
                target: float | None = None, *, title: str | None = None, xmax: float | None = None,
                labels: Sequence[str] | None = None, colors: Sequence[str] | None = None) -> Path:
    """``key`` of /evaluations (e.g. ``train_loss``, log y; ``test_accuracy``) vs time, one line per run.

    ``time_key``: see :func:`~hpcasync.results.analysis.resolve_time_key`; when
    runs end up on different axes, each legend entry names its axis. ``target``
    draws a dashed horizontal line (the target accuracy). ``xmax`` cuts the
    time axis; ``labels`` / ``colors`` replace the legend entries (default: run
    names) and the colours (default: by algorithm, line style by case).
    """
    if key not in schema.EVALUATION_NAMES:
        raise ValueError(f"key must be one of {schema.EVALUATION_NAMES}, got {key!r}")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    styles = _styles(runs) if colors is None else [
        {"color": c, "linestyle": algorithm_linestyle(r.algorithm)}
        for r, c in zip(runs, colors, strict=True)]
    plotted, keys = _draw_curves(ax, runs, key, time_key, styles,
                                 list(labels) if labels is not None else [_run_label(r) for r in runs], xmax)
    if target is not None:
        ax.axhline(target, color="black", linewidth=0.8, linestyle="--", label=f"target {target:g}")
    ax.set_xlabel(_axis_label(keys))
    ax.set_ylabel(KEY_LABELS.get(key, key))
    if title:
        ax.set_title(title, fontsize="medium")
    if plotted > MAX_LEGEND:
        ax.text(0.99, 0.99, f"{plotted} runs (too many to label; see the per-setting figures)",
                ha="right", va="top", fontsize="x-small", transform=ax.transAxes)
    elif plotted:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, out_png)


def plot_curve_panels(panels: Sequence[tuple[str, Sequence[Run]]], key: str, out_png: str | Path,
                      time_key: str | None = None, target: float | None = None, *, title: str | None = None,
                      xmax: float | None = None, ncols: int = 3,
                      series: Callable[[Run], str] | None = None) -> Path:
    """One subplot per panel (e.g. per delay case), one line per algorithm, one colour per algorithm
    across all panels and a single legend: Zhou & Pu's (2025) per-case loss / accuracy figures in one image.
    ``series`` names a run's line (default: its algorithm), e.g. ``"adsgd beta=0.5"`` in a β sweep."""
    name = series or (lambda r: r.algorithm)
    if key not in schema.EVALUATION_NAMES:
        raise ValueError(f"key must be one of {schema.EVALUATION_NAMES}, got {key!r}")
    n = max(len(panels), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(3.6 * ncols + 0.4, 2.8 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = algorithm_colors([name(r) for _, runs in panels for r in runs])
    handles: dict[str, Any] = {}
    all_keys: set[str] = set()
    for k, (label, runs) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        styles = [{"color": colors[name(r)], "linestyle": algorithm_linestyle(r.algorithm)} for r in runs]
        plotted, keys = _draw_curves(ax, runs, key, time_key, styles, [name(r) for r in runs], xmax)
        all_keys |= keys
        if target is not None:
            ax.axhline(target, color="black", linewidth=0.8, linestyle="--")
        if key == "test_accuracy":
            _accuracy_ylim(ax, runs, target)
        ax.set_title(label, fontsize="medium")
        if not plotted:
            ax.text(0.5, 0.5, f"no {key} recorded", ha="center", va="center", transform=ax.transAxes)
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                # keyed by series: a mean over seeds is labelled "series (mean ± std, m seeds)"
                handles.setdefault(line.get_label().split(" (mean ± std")[0], line)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel(_axis_label(all_keys) if len(all_keys) == 1 else "time")
    for row in axes:
        row[0].set_ylabel(KEY_LABELS.get(key, key).replace(" of the average model", ""))
    if title:
        fig.suptitle(title, fontsize="medium")
    handles = {a: handles[a] for a in colors if a in handles}  # legend in colour order, ADSGD first
    if handles:
        spare = len(panels) < nrows * ncols
        where = axes[-1][-1] if spare else axes[0][-1]
        extra = {"loc": "center"} if spare else {"fontsize": "x-small"}
        if target is not None:
            handles[f"target {target:g}"] = Line2D([], [], color="black", linewidth=0.8, linestyle="--",
                                                        label=f"target {target:g}")
        where.legend(list(handles.values()), [h.get_label() for h in handles.values()], **extra)
    return _save(fig, out_png, dpi=100)


def _accuracy_ylim(ax: Any, runs: Sequence[Run], target: float | None) -> None:
    """Zoom on the interesting band: from a little below the target (or the runs' median) to the top."""
    finals = [np.nanmax(r.evaluations["test_accuracy"]) for r in runs
              if np.isfinite(r.evaluations["test_accuracy"]).any()]
    if not finals:
        return
    top = min(1.0, max(finals) + 0.01)
    low = (target - 0.06) if target is not None else float(np.median(finals)) - 0.1
    ax.set_ylim(max(0.0, min(low, top - 0.05)), top)


def _series(row: dict[str, Any]) -> str:
    return str(row.get("series") or row["algorithm"])


def _draw_bars(ax: Any, table: Sequence[dict[str, Any]], colors: dict[str, str], missing_height: float,
               legend_done: set[str]) -> None:
    cases = sorted(dict.fromkeys(str(r["case"]) for r in table), key=case_order)
    x = 0.0
    ticks, tick_labels = [], []
    for case in cases:
        # The reference first, as in the papers' figures.
        rows = sorted((r for r in table if str(r["case"]) == case),
                      key=lambda r: r["algorithm"] not in reference_algorithms())
        ref_missed = any(r["algorithm"] in reference_algorithms() and r["time_to_target"] is None for r in rows)
        start = x
        for r in rows:
            series = _series(r)
            label = None if series in legend_done else series
            legend_done.add(series)
            if r["time_to_target"] is None:
                ax.bar(x, missing_height, width=0.8, color=NOT_REACHED_COLOR, hatch="//",
                       edgecolor=colors[series], label=label)
                ax.text(x, missing_height, "×", ha="center", va="bottom", fontsize=14, color="red")
                ax.text(x, missing_height / 2, "not reached", ha="center", va="center", rotation=90,
                        fontsize=7, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
            elif r["ratio_to_adsgd"] is None:
                ax.bar(x, 1.0, width=0.8, color=NOT_REACHED_COLOR, edgecolor=colors[series], label=label)
                ax.text(x, 0.5, "ADSGD ×" if ref_missed else "no ADSGD", ha="center", va="center", rotation=90,
                        fontsize=7)
                if ref_missed:
                    ax.text(x, 1.0, f"t={r['time_to_target']:.3g}", ha="center", va="bottom", fontsize=6)
            else:
                ratio, spread = r["ratio_to_adsgd"], r.get("ratio_std", float("nan"))
                ax.bar(x, ratio, width=0.8, color=colors[series], label=label)
                text = f"{ratio:.2f}"
                if np.isfinite(spread):  # mean over seeds: ± one standard deviation
                    ax.errorbar(x, ratio, yerr=spread, color="black", linewidth=0.8, capsize=2)
                if "n_seeds" in r and r["reached"] < r["n_seeds"]:
                    text += f"\n{r['reached']}/{r['n_seeds']}"
                ax.text(x, ratio + (spread if np.isfinite(spread) else 0.0), text, ha="center", va="bottom",
                        fontsize=7)
            x += 1.0
        ticks.append((start + x - 1.0) / 2)
        tick_labels.append(f"case {case}" if case.isdigit() else case)
        x += 0.8  # gap between cases
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(ticks, tick_labels)
    ax.set_ylim(0, missing_height * 1.15 if table else 1.0)


def _bar_top(table: Sequence[dict[str, Any]]) -> float:
    ratios = [r["ratio_to_adsgd"] for r in table if r["ratio_to_adsgd"] is not None]
    return 1.15 * max([1.0, *ratios])


def _bar_ylabel(table: Sequence[dict[str, Any]]) -> str:
    target = table[0]["target"] if table else float("nan")
    return f"time to {target:.0%} accuracy / {reference_algorithms()[0].upper()}'s"


def plot_time_to_target_bars(table: Sequence[dict[str, Any]], out_png: str | Path, *,
                             title: str | None = None) -> Path:
    """Per case, each run's time to target relative to ADSGD (Zhou & Pu 2025 Fig. 9/15 style).

    Rows come from :func:`~hpcasync.results.analysis.summary_table`. A run
    that never reached the target gets a hatched grey bar drawn above the
    tallest real one, an "×" and the label "not reached"; a run without an
    ADSGD reference in its case gets a grey bar at 1 labelled "no ADSGD".
    """
    fig = Figure(figsize=(max(6.0, 1.0 + 0.45 * len(table)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = algorithm_colors([_series(r) for r in table])
    _draw_bars(ax, table, colors, _bar_top(table), set())
    ax.set_ylabel(_bar_ylabel(table))
    if title:
        ax.set_title(title, fontsize="medium")
    if table:
        fig.legend(fontsize="small", loc="outside right upper")
    else:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, out_png)


def plot_time_to_target_panels(tables: Sequence[tuple[str, Sequence[dict[str, Any]]]], out_png: str | Path,
                               *, title: str | None = None) -> Path:
    """:func:`plot_time_to_target_bars` for several settings (e.g. ρ = 0, 0.5, 1), one row each,
    one colour per algorithm throughout, on a common y scale."""
    every = [r for _, t in tables for r in t]
    widest = max((len(t) for _, t in tables), default=1)
    fig = Figure(figsize=(max(6.0, 1.5 + 0.4 * widest), 2.6 * max(len(tables), 1) + 0.5), layout="constrained")
    axes = fig.subplots(max(len(tables), 1), 1, squeeze=False)[:, 0]
    colors = algorithm_colors([_series(r) for r in every])
    top = _bar_top(every)
    done: set[str] = set()
    for ax, (label, table) in zip(axes, tables, strict=False):
        _draw_bars(ax, table, colors, top, done)
        ax.set_title(label, fontsize="medium", loc="left")
        ax.set_ylabel("time / ADSGD's")
    fig.suptitle(title or _bar_ylabel(every) + " (× = target not reached within the budget)", fontsize="medium")
    if every:
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes[1:]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, fontsize="small", ncols=min(8, len(labels)), loc="outside lower center")
    return _save(fig, out_png, dpi=100)
