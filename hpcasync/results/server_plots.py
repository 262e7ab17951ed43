"""Figures of parameter-server runs (async-sgd, hogwild; Mishchenko et al. 2022, Fig. 1).

* ``delays.png``: the histogram of the delays τ of every applied gradient,
  log-scale counts, one step outline per run (Fig. 1 right);
* ``server_loss.png``: the training loss of the server's model against the
  gradients computed (left) and against time (right), every run of the report
  (the synchronous minibatch baseline included), so both comparisons the paper
  makes sit side by side.

``offset`` (e.g. F*) is subtracted from the loss: the experiment scripts pass
the optimum to draw F − F*.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hpcasync.results import schema
from hpcasync.results.metrics import resolve_time_key
from hpcasync.results.plots import _run_label, _save, _styles
from hpcasync.results.reader import Run


def server_runs(runs: Sequence[Run]) -> list[tuple[Run, dict[str, np.ndarray]]]:
    """The runs that recorded server steps, with them."""
    out = []
    for run in runs:
        steps = run.server_steps()
        if steps is not None and len(steps["tau"]):
            out.append((run, steps))
    return out


def plot_delay_histogram(runs: Sequence[tuple[Run, dict[str, np.ndarray]]], out_png: str | Path,
                         labels: Sequence[str] | None = None) -> Path:
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    top = max(int(s["tau"].max()) for _, s in runs)
    edges = np.arange(top + 2) - 0.5 if top < 200 else np.linspace(-0.5, top + 0.5, 201)
    for i, (run, steps) in enumerate(runs):
        label = labels[i] if labels is not None else _run_label(run)
        tau = steps["tau"]
        ax.hist(tau, bins=edges, histtype="step", linewidth=1.2,
                label=f"{label}: mean {tau.mean():.1f}, max {int(tau.max())}")
    ax.set_yscale("log")
    ax.set_xlabel("delay τ = k − prev (server steps)")
    ax.set_ylabel("gradients applied")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_png)


def plot_server_loss(runs: Sequence[Run], out_png: str | Path, time_key: str | None = None,
                     offset: float = 0.0, labels: Sequence[str] | None = None) -> Path:
    fig = Figure(figsize=(11.0, 4.0))
    by_grad, by_time = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    styles = _styles(runs)
    keys = set()
    lows, firsts = [], []
    for i, run in enumerate(runs):
        label = labels[i] if labels is not None else _run_label(run)
        ev = run.evaluations
        y = ev["train_loss"].astype(np.float64) - offset
        tk = resolve_time_key(run, time_key)
        keys.add(tk)
        good = np.isfinite(y) & (y > 0)
        if good.any():
            lows.append(float(y[good].min()))
            firsts.append(float(y[good][0]))
        if good.any() and (not np.isfinite(y[-1]) or y[-1] > 10 * y[good][0]):
            label += " (diverges)"
        for ax, x in ((by_grad, ev["gradients"].astype(np.float64)), (by_time, ev[tk])):
            ok = np.isfinite(x) & good
            if ok.any():
                ax.plot(x[ok], y[ok], label=label, linewidth=1.2, **styles[i])
    what = "F(x) − F*" if offset else "training loss"
    for ax, xlabel in ((by_grad, "gradients computed"), (by_time, schema.time_label(sorted(keys)[0])
                                                           if len(keys) == 1 else "time")):
        ax.set_yscale("log")
        if lows:  # diverging runs would squash the others: clip at 10× the largest starting value
            ax.set_ylim(0.5 * min(lows), 10 * max(firsts))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    by_grad.legend(fontsize=7)
    return _save(fig, out_png)


def server_figures(runs: Sequence[Run], out: Path, time_key: str | None) -> dict[str, Path]:
    """The report's parameter-server figures, when some run recorded server steps (else none)."""
    recorded = server_runs(runs)
    if not recorded:
        return {}
    return {"delays": plot_delay_histogram(recorded, out / "delays.png"),
            "server_loss": plot_server_loss(runs, out / "server_loss.png", time_key)}
