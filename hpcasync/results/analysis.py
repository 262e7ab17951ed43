"""Numbers from runs: time to a target accuracy, staleness, gradient rates, bytes per update, tables.

Time axes. Each run is measured on one time column of its evaluations:
``virtual_time`` (delay units) or ``wall_time`` (seconds). ``resolve_time_key``
picks it: the requested one if the run has finite values in it, else the
other; with no request, the run's native axis (virtual for the simulator,
wall for MPI). Ratios between runs are only formed on the same axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hpcasync.results.reader import Run

REFERENCE_ALGORITHMS = ("adsgd", "adsgd-delta")  # ratio baseline, first found wins

TABLE_COLUMNS = (
    "name", "engine", "algorithm", "case", "time_key", "final_train_loss", "final_test_accuracy",
    "best_test_accuracy", "target", "time_to_target", "ratio_to_adsgd", "total_gradients", "complete",
)


def time_to_target(times: Sequence[float] | np.ndarray, accuracies: Sequence[float] | np.ndarray,
                   target: float, *, interpolate: bool = False) -> float | None:
    """First time at which accuracy ≥ ``target``; None if never reached.

    Without ``interpolate`` this is the time of the first evaluation at or
    above the target: what a monitor that evaluates every Δt observes, and
    what the seed papers plot. With ``interpolate`` the crossing is placed by
    linear interpolation between that evaluation and the one before it (an
    estimate finer than the evaluation interval). NaN accuracies are skipped.
    """
    t = np.asarray(times, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if t.shape != a.shape:
        raise ValueError(f"times {t.shape} and accuracies {a.shape} differ in shape")
    ok = np.isfinite(t) & np.isfinite(a)
    t, a = t[ok], a[ok]
    hits = np.flatnonzero(a >= target)
    if hits.size == 0:
        return None
    k = int(hits[0])
    if not interpolate or k == 0 or a[k] == a[k - 1]:
        return float(t[k])
    frac = (target - a[k - 1]) / (a[k] - a[k - 1])
    return float(t[k - 1] + frac * (t[k] - t[k - 1]))


def resolve_time_key(run: Run, time_key: str | None = None) -> str:
    """The time column to measure ``run`` on (see the module docstring)."""
    native = "virtual_time" if run.engine == "sim" else "wall_time"
    wanted = time_key or native
    if wanted not in ("virtual_time", "wall_time"):
        raise ValueError(f"time_key must be virtual_time or wall_time, got {wanted!r}")
    if np.isfinite(run.evaluations[wanted]).any() or run.evaluations[wanted].size == 0:
        return wanted
    other = "wall_time" if wanted == "virtual_time" else "virtual_time"
    return other if np.isfinite(run.evaluations[other]).any() else wanted


def _last_finite(x: np.ndarray) -> float:
    finite = np.flatnonzero(np.isfinite(x))
    return float(x[finite[-1]]) if finite.size else float("nan")


def staleness_summary(run: Run) -> dict[str, Any]:
    """Mean and max staleness over all recorded updates of all agents, plus per-agent values (NaN if none)."""
    per_mean = np.full(run.n_agents, np.nan)
    per_max = np.full(run.n_agents, np.nan)
    values = []
    for agent in run.agents():
        s = agent["staleness"][np.isfinite(agent["staleness"])]
        if s.size:
            per_mean[agent["rank"]] = s.mean()
            per_max[agent["rank"]] = s.max()
            values.append(s)
    every = np.concatenate(values) if values else np.empty(0)
    return {
        "mean": float(every.mean()) if every.size else float("nan"),
        "max": float(every.max()) if every.size else float("nan"),
        "count": int(every.size),
        "per_agent_mean": per_mean,
        "per_agent_max": per_max,
        "units": "iterations",
    }


def gradient_rates(run: Run, time_key: str = "wall_time") -> dict[str, Any]:
    """Gradients per unit time of each agent (last logged iteration ÷ its time) and their sum.

    ``time_key="wall_time"`` gives gradients/s, ``"virtual_time"`` gradients per time unit.
    """
    rates = np.full(run.n_agents, np.nan)
    for agent in run.agents():
        t, it = agent[time_key], agent["iteration"]
        ok = np.isfinite(t) & (it >= 0)
        if ok.any():
            last = np.flatnonzero(ok)[-1]
            if t[last] > 0:
                rates[agent["rank"]] = it[last] / t[last]
    return {
        "per_agent": rates,
        "total": float(np.nansum(rates)),
        "units": "gradients/s" if time_key == "wall_time" else "gradients/time unit",
    }


def bytes_per_update(run: Run) -> dict[str, Any]:
    """Bytes and messages each agent sent per gradient (its last logged cumulative counts)."""
    per = np.full(run.n_agents, np.nan)
    total_bytes = total_messages = total_iterations = 0
    for agent in run.agents():
        if agent["iteration"].size == 0:
            continue
        b, m, it = (int(agent[k][-1]) for k in ("bytes_sent", "messages_sent", "iteration"))
        total_bytes += b
        total_messages += m
        total_iterations += it
        if it > 0:
            per[agent["rank"]] = b / it
    return {
        "per_agent": per,
        "mean": float(total_bytes / total_iterations) if total_iterations else float("nan"),
        "messages_per_update": float(total_messages / total_iterations) if total_iterations else float("nan"),
        "total_bytes": total_bytes,
        "total_messages": total_messages,
        "units": "bytes/gradient",
    }


def total_gradients(run: Run) -> int:
    """Gradients of the whole run: the summary's ``gradients`` if set, else the last evaluation's count."""
    if "gradients" in run.summary:
        return int(run.summary["gradients"])
    g = run.evaluations["gradients"]
    g = g[g >= 0]
    return int(g[-1]) if g.size else 0


def run_row(run: Run, target: float, time_key: str | None = None) -> dict[str, Any]:
    """One table row for ``run`` (without the ratio, which needs the other runs)."""
    ev = run.evaluations
    key = resolve_time_key(run, time_key)
    acc = ev["test_accuracy"]
    return {
        "name": run.name,
        "engine": run.engine,
        "algorithm": run.algorithm,
        "case": run.case,
        "time_key": key,
        "final_train_loss": _last_finite(ev["train_loss"]),
        "final_test_accuracy": _last_finite(acc),
        "best_test_accuracy": float(np.nanmax(acc)) if np.isfinite(acc).any() else float("nan"),
        "target": float(target),
        "time_to_target": time_to_target(ev[key], acc, target),
        "ratio_to_adsgd": None,
        "total_gradients": total_gradients(run),
        "complete": run.complete,
    }


def default_target(runs: Sequence[Run]) -> float:
    """The first run's ``eval.target_accuracy``, else 0.9."""
    for run in runs:
        if run.target_accuracy is not None:
            return run.target_accuracy
    return 0.9


def summary_table(runs: Sequence[Run], target: float | None = None,
                  time_key: str | None = "virtual_time") -> list[dict[str, Any]]:
    """One row per run (``TABLE_COLUMNS``), in the order given.

    ``target`` defaults to :func:`default_target`. ``ratio_to_adsgd`` is
    time_to_target ÷ that of the first ADSGD run (``adsgd``, else
    ``adsgd-delta``) with the same ``case`` measured on the same time axis;
    None when either never reached the target or there is no such run.
    ``time_key`` None measures each run on its native axis.
    """
    if target is None:
        target = default_target(runs)
    rows = [run_row(run, target, time_key) for run in runs]
    for row in rows:
        ref = _reference(rows, row)
        if ref is not None and row["time_to_target"] is not None and ref["time_to_target"]:
            row["ratio_to_adsgd"] = row["time_to_target"] / ref["time_to_target"]
    return rows


def _reference(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    for algorithm in REFERENCE_ALGORITHMS:
        for ref in rows:
            if (ref["algorithm"], ref["case"], ref["time_key"]) == (algorithm, row["case"], row["time_key"]):
                return ref
    return None
