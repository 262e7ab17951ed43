"""Which settings runs differ in, labels for them, and groups of runs that are compared with each other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpcasync.results.reader import Run

#: Config sections that do not define a run's *setting*: naming, evaluation, budget and launcher
#: details. Two runs whose remaining fields agree (apart from the algorithm) are compared.
NON_SETTING_SECTIONS = ("run", "eval", "budget", "mpi")

#: Short names for the settings that sweeps usually vary (figure titles, file names).
SHORT_NAMES = {"data.rho": "rho", "delays.case": "case", "topology.n": "n", "algorithm.name": "",
               "data.partition": "", "topology.name": "", "delays.model": "", "run.seed": "seed"}


def hashable(value: Any) -> Any:
    return tuple(hashable(v) for v in value) if isinstance(value, list) else value


def run_settings(run: Run) -> dict[str, Any]:
    """The run's config as ``{"section.field": value}`` without the non-setting sections (lists → tuples)."""
    out = {}
    for section, values in run.config.items():
        if section in NON_SETTING_SECTIONS or not isinstance(values, dict):
            continue
        for name, value in values.items():
            out[f"{section}.{name}"] = hashable(value)
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
