"""Numbers from one run: time to a target, staleness, gradient rates, bytes per update.

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


def smooth_centered(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` points (odd; truncated at both ends)."""
    if window <= 1 or values.size == 0:
        return values
    half = window // 2
    c = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(values.size)
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, values.size)
    return (c[hi] - c[lo]) / (hi - lo)


def time_to_target(times: Sequence[float] | np.ndarray, accuracies: Sequence[float] | np.ndarray,
                   target: float, *, interpolate: bool = False, smooth: int = 1) -> float | None:
    """First time at which accuracy ≥ ``target``; None if never reached.

    Without ``interpolate`` this is the time of the first evaluation at or
    above the target: what a monitor that evaluates every Δt observes, and
    what the source papers plot. With ``interpolate`` the crossing is placed by
    linear interpolation between that evaluation and the one before it (an
    estimate finer than the evaluation interval). NaN accuracies are skipped.
    ``smooth`` > 1 first replaces each accuracy by the mean of the ``smooth``
    evaluations centred on it (odd; for a small, noisy test set whose single
    evaluations cross the target by chance long before the model does).
    """
    t = np.asarray(times, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if t.shape != a.shape:
        raise ValueError(f"times {t.shape} and accuracies {a.shape} differ in shape")
    if smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth must be an odd number of evaluations >= 1, got {smooth}")
    ok = np.isfinite(t) & np.isfinite(a)
    t, a = t[ok], smooth_centered(a[ok], smooth)
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


def last_finite(x: np.ndarray) -> float:
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


def throughput(run: Run, time_key: str) -> float:
    """Gradients of the whole run per unit of its time axis (from the summary or the last evaluation)."""
    ev = run.evaluations
    t = ev[time_key][np.isfinite(ev[time_key])]
    if time_key == "virtual_time" and "virtual_time" in run.summary:
        end = float(run.summary["virtual_time"])
    else:
        end = float(t[-1]) if t.size else float("nan")
    if not (end > 0):
        return float("nan")
    if time_key == "virtual_time" or "gradients" not in run.summary:
        return total_gradients(run) / end
    g = ev["gradients"][np.isfinite(ev[time_key])]
    return float(g[-1]) / end if g.size else float("nan")


def time_to_loss(times: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray,
                 target: float) -> float | None:
    """First time at which the (training) loss is ≤ ``target``; None if never."""
    return time_to_target(times, -np.asarray(losses, dtype=np.float64), -target)
