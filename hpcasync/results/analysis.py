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

from hpcasync.config import Config
from hpcasync.results.reader import Run

REFERENCE_ALGORITHMS = ("adsgd", "adsgd-delta")  # ratio baseline, first found wins

TABLE_COLUMNS = (
    "name", "engine", "algorithm", "case", "setting", "time_key", "final_train_loss", "final_test_accuracy",
    "best_test_accuracy", "target", "time_to_target", "ratio_to_adsgd", "total_gradients", "complete",
)


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
    what the seed papers plot. With ``interpolate`` the crossing is placed by
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


def run_row(run: Run, target: float, time_key: str | None = None, smooth: int = 1) -> dict[str, Any]:
    """One table row for ``run`` (without the ratio, which needs the other runs)."""
    ev = run.evaluations
    key = resolve_time_key(run, time_key)
    acc = ev["test_accuracy"]
    return {
        "name": run.name,
        "engine": run.engine,
        "algorithm": run.algorithm,
        "case": run.case,
        "setting": "",
        "time_key": key,
        "final_train_loss": _last_finite(ev["train_loss"]),
        "final_test_accuracy": _last_finite(acc),
        "best_test_accuracy": float(np.nanmax(acc)) if np.isfinite(acc).any() else float("nan"),
        "target": float(target),
        "time_to_target": time_to_target(ev[key], acc, target, smooth=smooth),
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
                  time_key: str | None = "virtual_time", smooth: int = 1) -> list[dict[str, Any]]:
    """One row per run (``TABLE_COLUMNS``), in the order given.

    ``target`` defaults to :func:`default_target`. ``ratio_to_adsgd`` is
    time_to_target ÷ that of the first ADSGD run (``adsgd``, else
    ``adsgd-delta``) with the same setting — every config field outside
    [algorithm], [run], [eval], [budget] and [mpi] equal, so the same case,
    ρ, topology… — measured on the same time axis; None when either never
    reached the target or there is no such run. ``setting`` names the fields
    besides the algorithm and the case that differ between the runs
    (``"data.rho=0.5"``); among several ADSGD runs of a setting (a β sweep) the
    reference is the one with the default algorithm fields. ``time_key`` None
    measures each run on its native axis;
    ``smooth``: see :func:`time_to_target`.
    """
    if target is None:
        target = default_target(runs)
    rows = [run_row(run, target, time_key, smooth) for run in runs]
    all_varying = varying_settings(runs)
    varying = [k for k in all_varying if not k.startswith("algorithm.") and k != "delays.case"]
    variants = [k for k in all_varying if k.startswith("algorithm.") and k != "algorithm.name"]
    keys = [comparison_key(run) for run in runs]
    unusual = [_unusual(run) for run in runs]
    for row, run in zip(rows, runs, strict=True):
        row["setting"] = setting_label(run, varying)
        row["series"] = series_label(run, variants)
    for i, row in enumerate(rows):
        ref = _reference(rows, keys, unusual, i)
        if ref is not None and row["time_to_target"] is not None and ref["time_to_target"]:
            row["ratio_to_adsgd"] = row["time_to_target"] / ref["time_to_target"]
    return rows


def _unusual(run: Run) -> int:
    """How many of the run's algorithm fields (besides the name) differ from the defaults."""
    default = Config().algorithm
    fields_ = run.config.get("algorithm", {})
    return sum(1 for k, v in fields_.items() if k != "name" and hasattr(default, k) and getattr(default, k) != v)


def _reference(rows: list[dict[str, Any]], keys: list[tuple], unusual: list[int], i: int) -> dict[str, Any] | None:
    """ADSGD (else ADSGD-Δ) in the same setting and time axis; among several (a β sweep…), the one
    closest to the default algorithm fields, then the first given."""
    for algorithm in REFERENCE_ALGORITHMS:
        found = [j for j, (ref, key) in enumerate(zip(rows, keys, strict=True))
                 if ref["algorithm"] == algorithm and key == keys[i] and ref["time_key"] == rows[i]["time_key"]]
        if found:
            return rows[min(found, key=lambda j: unusual[j])]
    return None


# --------------------------------------------------------------------------- groups of runs (sweeps)

#: Config sections that do not define a run's *setting*: naming, evaluation, budget and launcher
#: details. Two runs whose remaining fields agree (apart from the algorithm) are compared.
NON_SETTING_SECTIONS = ("run", "eval", "budget", "mpi")
#: Short names for the settings that sweeps usually vary (figure titles, file names).
SHORT_NAMES = {"data.rho": "rho", "delays.case": "case", "topology.n": "n", "algorithm.name": "",
               "data.partition": "", "topology.name": "", "delays.model": "", "run.seed": "seed"}


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def run_settings(run: Run) -> dict[str, Any]:
    """The run's config as ``{"section.field": value}`` without the non-setting sections (lists → tuples)."""
    out = {}
    for section, values in run.config.items():
        if section in NON_SETTING_SECTIONS or not isinstance(values, dict):
            continue
        for name, value in values.items():
            out[f"{section}.{name}"] = _hashable(value)
    return out


def varying_settings(runs: Sequence[Run]) -> list[str]:
    """Settings (``section.field``) whose value is not the same in every run, in config order."""
    settings = [run_settings(r) for r in runs]
    keys: dict[str, None] = {}
    for s in settings:
        keys.update(dict.fromkeys(s))
    missing = object()
    return [k for k in keys if len({repr(s.get(k, missing)) for s in settings}) > 1]


def setting_label(run: Run, keys: Sequence[str], *, short: bool = False) -> str:
    """``"data.rho=0.5, topology.n=16"`` (``short``: ``"rho0.5-n16"``, for file names) of ``keys``."""
    settings = run_settings(run)
    parts = []
    for key in keys:
        value = settings.get(key)
        text = f"{value:g}" if isinstance(value, float) else (
            "x".join(map(str, value)) if isinstance(value, tuple) else str(value))
        if short:
            prefix = SHORT_NAMES.get(key, key.split(".")[1])
            parts.append(f"{prefix}{text}")
        else:
            parts.append(f"{key}={text}")
    return ("-" if short else ", ").join(parts)


def series_label(run: Run, variants: Sequence[str]) -> str:
    """The algorithm, plus its fields in ``variants`` (``"adsgd beta=0.5"``): one line / bar per series."""
    if not variants:
        return run.algorithm
    return f"{run.algorithm} " + setting_label(run, variants).replace("algorithm.", "")


def algorithm_variants(runs: Sequence[Run]) -> list[str]:
    """``algorithm.*`` fields other than the name that differ between runs (e.g. an α or β sweep)."""
    return [k for k in varying_settings(runs) if k.startswith("algorithm.") and k != "algorithm.name"]


def comparison_key(run: Run) -> tuple:
    """What must agree for two runs to be compared: every setting except the algorithm's fields."""
    return tuple(sorted((k, repr(v)) for k, v in run_settings(run).items() if not k.startswith("algorithm.")))


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> dict[tuple, list[Run]]:
    """Runs grouped by their values of ``keys`` (insertion order of first appearance)."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        s = run_settings(run)
        groups.setdefault(tuple(repr(s.get(k)) for k in keys), []).append(run)
    return groups


# --------------------------------------------------------------------------- staleness and scaling tables

STALENESS_COLUMNS = ("name", "algorithm", "case", "setting", "mean", "max", "worst_agent_mean", "worst_agent",
                     "gradients_per_time", "count", "note")
#: Algorithms that never mix a received (possibly old) copy of a neighbour's model: the logged
#: staleness column (versions of pushed models not yet received) means nothing for them.
NO_STALE_MIXING = {"dsgd": "synchronous rounds: mixes round-k models only",
                   "allreduce": "synchronous: averages current gradients",
                   "adpsgd": "atomic pairwise averaging of current models"}

SCALING_KEYS = ("topology.n", "topology.shape")
SCALING_COLUMNS = ("algorithm", "setting", "n", "time_to_target", "speedup", "time_to_loss", "loss_speedup",
                   "gradients_per_time", "throughput_speedup", "final_train_loss", "final_test_accuracy", "reference",
                   "name")


def staleness_table(runs: Sequence[Run], time_key: str | None = "virtual_time") -> list[dict[str, Any]]:
    """Per run: staleness (iterations a neighbour's model lags when it is mixed in) over every logged
    update, mean / max, the agent with the largest mean, and the total gradient rate. Algorithms in
    :data:`NO_STALE_MIXING` get NaN and a ``note`` saying why."""
    varying = [k for k in varying_settings(runs) if not k.startswith("algorithm.") and k != "delays.case"]
    variants = algorithm_variants(runs)
    rows = []
    for run in runs:
        st = staleness_summary(run)
        per = st["per_agent_mean"]
        worst = int(np.nanargmax(per)) if np.isfinite(per).any() else -1
        key = resolve_time_key(run, time_key)
        rates = gradient_rates(run, key)
        row = {
            "name": run.name, "algorithm": run.algorithm, "series": series_label(run, variants), "case": run.case,
            "setting": setting_label(run, varying), "mean": st["mean"], "max": st["max"],
            "worst_agent_mean": float(per[worst]) if worst >= 0 else float("nan"), "worst_agent": worst,
            "gradients_per_time": rates["total"], "count": st["count"], "note": "",
        }
        if run.algorithm in NO_STALE_MIXING:
            row.update(mean=float("nan"), max=float("nan"), worst_agent_mean=float("nan"), worst_agent=-1,
                       note=NO_STALE_MIXING[run.algorithm])
        rows.append(row)
    return rows


def _throughput(run: Run, time_key: str) -> float:
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


def scaling_table(runs: Sequence[Run], target: float | None = None, time_key: str | None = "virtual_time",
                  smooth: int = 1, loss_target: float | None = None) -> list[dict[str, Any]]:
    """Speedup vs number of agents, for runs that differ in ``topology.n``.

    Runs are grouped by algorithm and every other setting except
    ``topology.n`` / ``topology.shape``. ``speedup`` = time to target of the
    *reference* ÷ the run's; the reference is the 1-agent ADSGD run of the same
    setting (sequential SGD: one agent, no communication) if there is one, else
    the same algorithm's run with the fewest agents. ``throughput_speedup`` =
    gradients per time unit ÷ the reference's. None where a run never reached
    the target. With ``loss_target``, ``time_to_loss`` / ``loss_speedup`` do
    the same for the first time the training loss of the average model is
    ≤ ``loss_target`` (smooth and monotone, unlike the accuracy on a small test set).
    """
    if target is None:
        target = default_target(runs)
    varying = [k for k in varying_settings(runs)
               if not k.startswith("algorithm.") and k != "delays.case" and k not in SCALING_KEYS]
    info = []
    for run in runs:
        key = resolve_time_key(run, time_key)
        settings = run_settings(run)
        rest = tuple(sorted((k, repr(v)) for k, v in settings.items()
                            if not k.startswith("algorithm.") and k not in SCALING_KEYS))
        ev = run.evaluations
        info.append({
            "run": run, "rest": rest, "key": key, "n": int(settings.get("topology.n", run.n_agents)),
            "time_to_target": time_to_target(ev[key], ev["test_accuracy"], target, smooth=smooth),
            "time_to_loss": None if loss_target is None else time_to_loss(ev[key], ev["train_loss"], loss_target),
            "gradients_per_time": _throughput(run, key),
        })
    rows = []
    for item in info:
        run = item["run"]
        peers = [o for o in info if o["rest"] == item["rest"] and o["key"] == item["key"]]
        ref = next((o for alg in REFERENCE_ALGORITHMS for o in peers
                    if o["n"] == 1 and o["run"].algorithm == alg), None)
        if ref is None:
            same = [o for o in peers if o["run"].algorithm == run.algorithm]
            ref = min(same, key=lambda o: o["n"])
        t, t_ref = item["time_to_target"], ref["time_to_target"]
        tl, tl_ref = item["time_to_loss"], ref["time_to_loss"]
        rows.append({
            "algorithm": run.algorithm, "setting": setting_label(run, varying), "n": item["n"],
            "time_to_target": t,
            "speedup": t_ref / t if t and t_ref else None,
            "time_to_loss": tl, "loss_speedup": tl_ref / tl if tl and tl_ref else None,
            "loss_target": loss_target, "target_accuracy": target,
            "gradients_per_time": item["gradients_per_time"],
            "throughput_speedup": item["gradients_per_time"] / ref["gradients_per_time"]
            if ref["gradients_per_time"] > 0 else None,
            "final_train_loss": _last_finite(run.evaluations["train_loss"]),
            "final_test_accuracy": _last_finite(run.evaluations["test_accuracy"]),
            "reference": f"{ref['run'].algorithm} n={ref['n']}", "name": run.name,
        })
    rows.sort(key=lambda r: (r["setting"], r["algorithm"] not in REFERENCE_ALGORITHMS, r["algorithm"], r["n"]))
    return rows
