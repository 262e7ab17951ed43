"""Runs that differ only in their seed: grouping, mean ± standard deviation, "k/m reached", mean curves.

Seeds are an axis of a sweep like any other (``"run.seed" = [0, 7, 13]``,
see :mod:`hpcasync.sweep`). ``run.seed`` sets the initial model, the data
partition, the sampling and every delay, so one seed is one sample of an
experiment, not its result. Two runs are *replicates* when every setting
(all config fields outside [run], [eval], [budget] and [mpi], the
algorithm's included) is equal: they differ in the seed (and their name).

Statistics over the m replicates of a setting: the sample mean and the
sample standard deviation (ddof = 1; NaN for a single value). Time to target
is averaged over the k seeds that reached the target, reported as
"mean ± std, k/m reached" — with k < m the mean is over the lucky seeds only
and a lower bound of the expected time. The ratio to ADSGD is formed per
seed (the run ÷ ADSGD with the *same* seed, same setting) and then averaged
over the seeds where both reached it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hpcasync.results.grouping import run_settings
from hpcasync.results.reader import Run

AGGREGATE_COLUMNS = (
    "series", "algorithm", "case", "setting", "seeds", "n_seeds", "reached", "target",
    "time_to_target_mean", "time_to_target_std", "time_to_target_min", "time_to_target_max",
    "ratio_to_adsgd_mean", "ratio_to_adsgd_std", "ratio_seeds",
    "final_train_loss_mean", "final_train_loss_std", "final_test_accuracy_mean", "final_test_accuracy_std",
    "best_test_accuracy_mean", "best_test_accuracy_std", "names",
)


def seed_of(run: Run) -> int:
    """The run's ``run.seed`` (0, the default, when its config does not say)."""
    return int(run.config.get("run", {}).get("seed", 0))


def replicate_key(run: Run) -> tuple:
    """Equal for runs that differ only outside the settings (seed, name, budget, evaluation)."""
    return tuple(sorted((k, repr(v)) for k, v in run_settings(run).items()))


def replicate_groups(runs: Sequence[Run]) -> list[list[int]]:
    """Indices of ``runs`` grouped by :func:`replicate_key`, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(replicate_key(run), []).append(i)
    return list(groups.values())


def has_replicates(runs: Sequence[Run]) -> bool:
    """Whether some setting was run with more than one seed."""
    return any(len(g) > 1 for g in replicate_groups(runs))


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float]:
    """Mean and sample standard deviation (ddof = 1) of the values that are not None / NaN.

    ``(None, nan)`` when there are none; the std is NaN for a single value.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None, float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def aggregate_table(table: Sequence[dict[str, Any]], runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per setting (``AGGREGATE_COLUMNS``) from the per-run ``table`` of
    :func:`~hpcasync.results.analysis.summary_table` (row i belongs to ``runs[i]``)."""
    out = []
    for members in replicate_groups(runs):
        rows = [table[i] for i in members]
        first = rows[0]
        times = [r["time_to_target"] for r in rows]
        ratios = [r["ratio_to_adsgd"] for r in rows]
        reached = [t for t in times if t is not None]
        agg: dict[str, Any] = {
            "series": first.get("series") or first["algorithm"], "algorithm": first["algorithm"],
            "case": first["case"], "setting": first["setting"], "target": first["target"],
            "seeds": " ".join(str(seed_of(runs[i])) for i in members), "n_seeds": len(members),
            "reached": len(reached),
            "time_to_target_min": min(reached) if reached else None,
            "time_to_target_max": max(reached) if reached else None,
            "ratio_seeds": sum(r is not None for r in ratios),
            "names": " ".join(r["name"] for r in rows),
        }
        agg["time_to_target_mean"], agg["time_to_target_std"] = mean_std(times)
        agg["ratio_to_adsgd_mean"], agg["ratio_to_adsgd_std"] = mean_std(ratios)
        for col in ("final_train_loss", "final_test_accuracy", "best_test_accuracy"):
            agg[f"{col}_mean"], agg[f"{col}_std"] = mean_std([r[col] for r in rows])
        # the per-run names of the means, so the bar figures and pivot tables take these rows as they are
        agg.update(time_to_target=agg["time_to_target_mean"], ratio_to_adsgd=agg["ratio_to_adsgd_mean"],
                   ratio_std=agg["ratio_to_adsgd_std"], best_test_accuracy=agg["best_test_accuracy_mean"])
        out.append(agg)
    return out


SEEDS_NOTE = ("Over seeds: mean ± sample standard deviation; k/m = seeds that reached the target out of "
              "those run; the time is the mean over the k that reached it, the ratio the mean of per-seed "
              "ratios to ADSGD of the same seed.")


def aggregate_markdown(rows: Sequence[dict[str, Any]], smooth: int = 1) -> str:
    """One line per setting: time to target, ratio to ADSGD, final loss and accuracy, mean ± std over seeds."""
    target = rows[0]["target"] if rows else float("nan")
    how = f" (accuracy averaged over {smooth} consecutive evaluations)" if smooth > 1 else ""
    lines = [f"Time to {target:g} test accuracy{how} and final numbers by setting. {SEEDS_NOTE}", "",
             "| algorithm | case | setting | seeds | reached | time to target | ratio to ADSGD | final train loss "
             "| final test accuracy | best test accuracy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join([
            str(r["series"]), str(r["case"]), r["setting"] or "–", r["seeds"], f"{r['reached']}/{r['n_seeds']}",
            _pm(r["time_to_target_mean"], r["time_to_target_std"], "time") if r["reached"] else "not reached",
            _pm(r["ratio_to_adsgd_mean"], r["ratio_to_adsgd_std"], ".2f"),
            _pm(r["final_train_loss_mean"], r["final_train_loss_std"], ".4g"),
            _pm(r["final_test_accuracy_mean"], r["final_test_accuracy_std"], ".4f"),
            _pm(r["best_test_accuracy_mean"], r["best_test_accuracy_std"], ".4f")]) + " |")
    return "\n".join(lines) + "\n"


def _pm(mean: float | None, std: float, fmt: str) -> str:
    """``"7400 ± 850"``; the mean alone when there is no spread to give (one value)."""
    if mean is None:
        return "–"
    text = _num(mean, fmt)
    return text if math.isnan(std) else f"{text} ± {_num(std, fmt)}"


def _num(x: float, fmt: str) -> str:
    if fmt == "time":
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return f"{x:{fmt}}"


def aggregate_cell(row: dict[str, Any]) -> str:
    """A pivot-table cell: ``"7400 ± 850 (2.45 ± 0.31) 3/3"``, or ``"0/3 (best 0.886 ± 0.004)"``."""
    m, k = row["n_seeds"], row["reached"]
    if k == 0:
        best = _pm(row["best_test_accuracy_mean"], row["best_test_accuracy_std"], ".3f")
        return f"0/{m} reached (best {best})"
    cell = _pm(row["time_to_target_mean"], row["time_to_target_std"], "time")
    if row["ratio_to_adsgd_mean"] is not None:
        cell += f" ({_pm(row['ratio_to_adsgd_mean'], row['ratio_to_adsgd_std'], '.2f')})"
    else:
        cell += " (–)"
    return f"{cell} {k}/{m}"


def mean_curve(runs: Sequence[Run], key: str, time_key: str, xmax: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, mean and sample std (ddof = 1) of ``key`` over ``runs`` on the first run's evaluation times
    up to the earliest end (linear interpolation where the runs' times differ; NaNs skipped)."""
    curves = []
    for run in runs:
        t, y = run.evaluations[time_key], run.evaluations[key].astype(np.float64)
        ok = np.isfinite(t) & np.isfinite(y)
        if ok.any():
            curves.append((t[ok], y[ok]))
    if not curves:
        return np.empty(0), np.empty(0), np.empty(0)
    end = min(t[-1] for t, _ in curves)
    if xmax is not None:
        end = min(end, xmax)
    grid = curves[0][0][curves[0][0] <= end]
    ys = np.stack([np.interp(grid, t, y) for t, y in curves])
    std = ys.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(grid.size)
    return grid, ys.mean(axis=0), std


def aggregate_staleness(rows: Sequence[dict[str, Any]], runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Staleness rows (:func:`~hpcasync.results.analysis.staleness_table`) merged over seeds: the mean of
    the seeds' means and worst-agent means, the largest max."""
    out = []
    for members in replicate_groups(runs):
        sub = [rows[i] for i in members]
        row = dict(sub[0])
        if not row.get("note"):
            for col in ("mean", "worst_agent_mean", "gradients_per_time", "pair_mean"):
                row[col] = mean_std([r[col] for r in sub])[0] if any(math.isfinite(r[col]) for r in sub) \
                    else float("nan")
            maxima = [r["max"] for r in sub if math.isfinite(r["max"])]
            row["max"] = max(maxima) if maxima else float("nan")
            pair_maxima = [r["pair_max"] for r in sub if math.isfinite(r.get("pair_max", math.nan))]
            row["pair_max"] = max(pair_maxima) if pair_maxima else float("nan")
        row["name"] = " ".join(r["name"] for r in sub)
        out.append(row)
    return out
