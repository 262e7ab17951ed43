"""Tables over runs: the summary (time to target, ratio to ADSGD), staleness, scaling.

The numbers of one run are in :mod:`.metrics`, the grouping of runs in
:mod:`.grouping`; both are re-exported here.

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
from hpcasync.results.grouping import (
    NON_SETTING_SECTIONS,
    SHORT_NAMES,
    algorithm_variants,
    comparison_key,
    group_runs,
    run_settings,
    series_label,
    setting_label,
    varying_settings,
)
from hpcasync.results.metrics import (
    bytes_per_update,
    gradient_rates,
    last_finite,
    resolve_time_key,
    smooth_centered,
    staleness_summary,
    throughput,
    time_to_loss,
    time_to_target,
    total_gradients,
)
from hpcasync.results.reader import Run
from hpcasync.results.replicates import seed_of

__all__ = [
    "NON_SETTING_SECTIONS", "SCALING_COLUMNS", "SCALING_KEYS", "SHORT_NAMES",
    "STALENESS_COLUMNS", "TABLE_COLUMNS", "algorithm_variants", "bytes_per_update", "comparison_key",
    "default_target", "gradient_rates", "group_runs", "no_stale_mixing_note",
    "reference_algorithms", "resolve_time_key", "run_row", "run_settings",
    "scaling_table", "series_label", "setting_label", "smooth_centered", "staleness_summary", "staleness_table",
    "summary_table", "time_to_loss", "time_to_target", "total_gradients", "varying_settings",
]


def reference_algorithms() -> tuple[str, ...]:
    """The ratio baselines, preferred first (each algorithm's ``reference_rank``; first found wins)."""
    from hpcasync.algorithms import reference_algorithms as declared

    return declared()


TABLE_COLUMNS = (
    "name", "engine", "algorithm", "case", "setting", "time_key", "final_train_loss", "final_test_accuracy",
    "best_test_accuracy", "target", "time_to_target", "ratio_to_adsgd", "total_gradients", "complete",
)


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
        "final_train_loss": last_finite(ev["train_loss"]),
        "final_test_accuracy": last_finite(acc),
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
    reached the target or there is no such run. With several seeds the
    reference has the run's own ``run.seed``. ``setting`` names the fields
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
    # Ratios pair runs of the same seed: with several seeds per setting each is its own sample.
    keys = [(comparison_key(run), seed_of(run)) for run in runs]
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
    for algorithm in reference_algorithms():
        found = [j for j, (ref, key) in enumerate(zip(rows, keys, strict=True))
                 if ref["algorithm"] == algorithm and key == keys[i] and ref["time_key"] == rows[i]["time_key"]]
        if found:
            return rows[min(found, key=lambda j: unusual[j])]
    return None


# --------------------------------------------------------------------------- staleness and scaling tables

STALENESS_COLUMNS = ("name", "algorithm", "case", "setting", "mean", "max", "worst_agent_mean", "worst_agent",
                     "pair_mean", "pair_max", "gradients_per_time", "count", "note")


def _pairwise(run: Run) -> dict[str, float]:
    """Tosi & Theobald's S_avg (mean over evaluations) and S_max (max) from the evaluation columns; NaN
    for algorithms without vector clocks."""
    avg = run.evaluations["staleness_avg"]
    mx = run.evaluations["staleness_max"]
    avg, mx = avg[np.isfinite(avg)], mx[np.isfinite(mx)]
    return {"pair_mean": float(avg.mean()) if avg.size else float("nan"),
            "pair_max": float(mx.max()) if mx.size else float("nan")}


def no_stale_mixing_note(algorithm: str) -> str | None:
    """Why the staleness column means nothing for ``algorithm`` (one that never mixes a received,
    possibly old copy of a neighbour's model: ``Algorithm.mixes_stale_copies`` is False), else None."""
    from hpcasync.algorithms import lookup

    cls = lookup(algorithm)
    if cls is None or cls.mixes_stale_copies:
        return None
    return cls.staleness_note or "does not mix stale copies"


SCALING_KEYS = ("topology.n", "topology.shape")
SCALING_COLUMNS = ("algorithm", "setting", "n", "time_to_target", "speedup", "time_to_loss", "loss_speedup",
                   "gradients_per_time", "throughput_speedup", "final_train_loss", "final_test_accuracy", "reference",
                   "name")


def staleness_table(runs: Sequence[Run], time_key: str | None = "virtual_time") -> list[dict[str, Any]]:
    """Per run: staleness (iterations a neighbour's model lags when it is mixed in) over every logged
    update, mean / max, the agent with the largest mean, and the total gradient rate. Algorithms in
    that mix no stale copies (:func:`no_stale_mixing_note`) get NaN and a ``note`` saying why."""
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
            **_pairwise(run),
        }
        note = no_stale_mixing_note(run.algorithm)
        if note is not None:
            row.update(mean=float("nan"), max=float("nan"), worst_agent_mean=float("nan"), worst_agent=-1,
                       note=note)
        rows.append(row)
    return rows


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
            "gradients_per_time": throughput(run, key),
        })
    rows = []
    for item in info:
        run = item["run"]
        peers = [o for o in info if o["rest"] == item["rest"] and o["key"] == item["key"]]
        ref = next((o for alg in reference_algorithms() for o in peers
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
            "final_train_loss": last_finite(run.evaluations["train_loss"]),
            "final_test_accuracy": last_finite(run.evaluations["test_accuracy"]),
            "reference": f"{ref['run'].algorithm} n={ref['n']}", "name": run.name,
        })
    refs = reference_algorithms()
    rows.sort(key=lambda r: (r["setting"], r["algorithm"] not in refs, r["algorithm"], r["n"]))
    return rows
