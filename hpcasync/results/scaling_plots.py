"""Scaling figures: speedup vs number of agents, and curves by number of agents (the report's
``scaling*.png``), drawn with the helpers of :mod:`hpcasync.results.plots`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from hpcasync.results.plots import (
    KEY_LABELS,
    LINESTYLES,
    _accuracy_ylim,
    _axis_label,
    _draw_curves,
    _save,
    algorithm_colors,
)
from hpcasync.results.reader import Run


def plot_scaling(rows: Sequence[dict[str, Any]], out_png: str | Path, *, title: str | None = None) -> Path:
    """Speedup vs number of agents (log–log, base 2), one line per algorithm, ideal = n.

    Left: speedup in time to target (``speedup`` of
    :func:`~hpcasync.results.analysis.scaling_table`); points whose run
    never reached the target are left out and listed in the legend. Right:
    throughput speedup (gradients per time unit ÷ the reference's).
    """
    loss_target = next((r.get("loss_target") for r in rows if r.get("loss_target") is not None), None)
    panels = [("speedup", "time-to-target speedup")]
    if loss_target is not None:
        target = rows[0].get("target_accuracy")
        panels = [("speedup", "speedup: time to " + (f"{target:g} accuracy" if target else "target accuracy")),
                  ("loss_speedup", f"speedup: time to training loss ≤ {loss_target:g}")]
    panels.append(("throughput_speedup", "throughput speedup (gradients / time)"))
    fig = Figure(figsize=(5 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels))
    colors = algorithm_colors([r["algorithm"] for r in rows])
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault((r["algorithm"], r["setting"]), []).append(r)
    ns = sorted({r["n"] for r in rows}) or [1]
    for ax, (column, what) in zip(axes, panels, strict=True):
        ax.plot(ns, ns, color="black", linewidth=0.8, linestyle="--", label="ideal (= n)")
        for k, ((alg, setting), pts) in enumerate(series.items()):
            pts = sorted(pts, key=lambda r: r["n"])
            xs = [p["n"] for p in pts if p[column] is not None]
            ys = [p[column] for p in pts if p[column] is not None]
            missed = [str(p["n"]) for p in pts if p[column] is None]
            label = alg + (f" [{setting}]" if setting else "")
            if missed and column != "throughput_speedup":
                label += f" (not reached: n={','.join(missed)})"
            ax.plot(xs, ys, marker="o", color=colors[alg], linestyle=LINESTYLES[k // len(colors) % 4],
                    label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("agents n")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
    ref = rows[0]["reference"] if rows else ""
    fig.suptitle(title or f"scaling with the number of agents; reference: {ref}", fontsize="medium")
    return _save(fig, out_png)


def plot_scaling_curves(panels: Sequence[tuple[str, Sequence[Run]]], key: str, out_png: str | Path,
                        time_key: str | None = None, target: float | None = None, *,
                        xmax: float | None = None, ncols: int = 2) -> Path:
    """One subplot per algorithm, one line per number of agents (colour from a sequential map)."""
    from matplotlib import colormaps

    n = max(len(panels), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.6 * ncols + 0.4, 3.2 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    sizes = sorted({r.n_agents for _, runs in panels for r in runs})
    cmap = colormaps["viridis"]
    color = {m: cmap(0.9 * k / max(len(sizes) - 1, 1)) for k, m in enumerate(sizes)}
    keys: set[str] = set()
    for k, (label, runs) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        _, used = _draw_curves(ax, runs, key, time_key, [{"color": color[r.n_agents]} for r in runs],
                               [f"n={r.n_agents}" for r in runs], xmax)
        keys |= used
        if target is not None:
            ax.axhline(target, color="black", linewidth=0.8, linestyle="--")
        if key == "test_accuracy":
            _accuracy_ylim(ax, runs, target)
        ax.set_title(label, fontsize="medium")
        ax.legend(fontsize="x-small", ncols=2)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel(_axis_label(keys) if keys else "time")
    for row in axes:
        row[0].set_ylabel(KEY_LABELS.get(key, key).replace(" of the average model", ""))
    fig.suptitle(f"{KEY_LABELS.get(key, key)} vs time, by number of agents", fontsize="medium")
    return _save(fig, out_png, dpi=100)
