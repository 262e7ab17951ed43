"""Turn run directories into figures and tables.

Always: loss.png, accuracy.png (every run), time_to_target.png (bars, one row
per setting), table.md/csv (one row per run), staleness.md/csv.
For a sweep over delay cases and/or other settings (ρ, …): per setting
loss_SLUG.png / accuracy_SLUG.png (one panel per case), time_to_target_SLUG.png,
cases/{loss,accuracy}_caseC_SLUG.png (one figure per case and setting), and
time_to_target.md/csv (algorithm × case, time and ratio to ADSGD).
With several seeds per setting (runs that differ only in ``run.seed``, see
:mod:`.replicates`): seeds.md/csv (one row per setting, mean ± std and
"k/m reached"); the pivot tables, bars and per-setting curves aggregate the
seeds (mean ± std, a shaded ± std band); table.md/csv stay one row per run.
For runs that differ in topology.n: scaling.png, scaling.md/csv,
scaling_loss.png, scaling_accuracy.png.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcasync.results import analysis, plots, replicates, scaling_plots, server_plots
from hpcasync.results.reader import find_runs, open_run
from hpcasync.results.tables import (
    markdown_table,
    scaling_markdown,
    setting_order,
    staleness_markdown,
    time_to_target_markdown,
    write_csv,
    write_rows,
    write_wide_csv,
)
from hpcasync.results.writer import ensure_output_dir

TIME_ALIASES = {"wall": "wall_time", "virtual": "virtual_time", "wall_time": "wall_time",
                "virtual_time": "virtual_time"}


def default_time_key(engines: Sequence[str]) -> str | None:
    """virtual_time if all runs are simulated, wall_time if all are MPI, None (each run's own) if mixed."""
    kinds = set(engines)
    if kinds == {"sim"}:
        return "virtual_time"
    if kinds <= {"mpi"}:
        return "wall_time"
    return None


def make_report(run_dirs: Sequence[str | Path], out_dir: str | Path, target: float | None = None,
                time_key: str | None = None, *, echo: bool = True, smooth: int = 1,
                xmax: float | None = None, loss_target: float | None = None) -> dict[str, Any]:
    """Read the runs, write the figures and tables into ``out_dir``, return what was written.

    ``run_dirs`` may name run directories or folders holding runs (searched
    recursively). ``target`` defaults to the first run's
    ``eval.target_accuracy``. ``time_key`` is ``"virtual_time"``/``"virtual"``
    or ``"wall_time"``/``"wall"``; by default virtual time when every run is
    simulated, wall time when every run is MPI, and for a mix of both each
    run on its own axis (sim: virtual time units, MPI: wall seconds) — the
    curves are overlaid with each legend entry naming its axis, and ratios to
    ADSGD are only formed between runs on the same axis. A run lacking the
    requested axis (MPI without a delay model has no virtual time) falls back
    to the other. ``smooth`` (odd) measures time to target on the accuracy
    averaged over that many consecutive evaluations (see
    :func:`~hpcasync.results.analysis.time_to_target`); ``xmax`` cuts the
    time axis of the curve figures (not the tables); ``loss_target`` adds a
    time-to-training-loss speedup to the scaling outputs.

    Returns ``{"table": rows, "markdown": str, "files": {name: Path}, "target": float,
    "time_key": str | None}``; prints the Markdown table when ``echo``.
    """
    if time_key is not None:
        if time_key not in TIME_ALIASES:
            raise ValueError(f"time_key must be one of {sorted(TIME_ALIASES)}, got {time_key!r}")
        time_key = TIME_ALIASES[time_key]
    runs = [open_run(p) for p in find_runs(list(run_dirs))]
    problems = {str(r.path): r.agent_problems() for r in runs}
    problems = {k: v for k, v in problems.items() if v}
    for run_path, lines in problems.items():  # the tables leave these agents out: say so
        for line in lines:
            print(f"hpcasync report: warning: run {run_path}: {line}", file=sys.stderr, flush=True)
    out = ensure_output_dir(Path(out_dir))
    if time_key is None:
        time_key = default_time_key([r.engine for r in runs])
    if target is None:
        target = analysis.default_target(runs)
    table = analysis.summary_table(runs, target, time_key, smooth)
    markdown = markdown_table(table)
    # Seeds of one setting are one row / bar / line from here on: mean ± std, "k/m reached".
    seeds = replicates.aggregate_table(table, runs) if replicates.has_replicates(runs) else None
    per_setting = seeds if seeds is not None else table
    settings = sorted(dict.fromkeys(r["setting"] for r in table), key=setting_order)
    by_setting = [(s, [r for r in per_setting if r["setting"] == s]) for s in settings]
    files = {
        "loss": plots.plot_curves(runs, "train_loss", out / "loss.png", time_key, xmax=xmax),
        "accuracy": plots.plot_curves(runs, "test_accuracy", out / "accuracy.png", time_key, target, xmax=xmax),
        "time_to_target": plots.plot_time_to_target_panels(by_setting, out / "time_to_target.png")
        if len(by_setting) > 1 else plots.plot_time_to_target_bars(per_setting, out / "time_to_target.png"),
        "csv": write_csv(table, out / "table.csv"),
    }
    files["markdown"] = _write_text(out / "table.md", markdown)
    files.update(server_plots.server_figures(runs, out, time_key))  # async-sgd / hogwild: τ histogram
    stale = analysis.staleness_table(runs, time_key)
    files["staleness_csv"] = write_rows(stale, analysis.STALENESS_COLUMNS, out / "staleness.csv")
    files["staleness"] = _write_text(out / "staleness.md", staleness_markdown(
        stale if seeds is None else replicates.aggregate_staleness(stale, runs)))
    if seeds is not None:
        files["seeds_csv"] = write_rows(seeds, replicates.AGGREGATE_COLUMNS, out / "seeds.csv")
        files["seeds"] = _write_text(out / "seeds.md", replicates.aggregate_markdown(seeds, smooth))
    pivot = None
    groups = _figure_groups(runs)
    if groups is not None:
        pivot = time_to_target_markdown(per_setting, smooth)
        files["time_to_target_md"] = _write_text(out / "time_to_target.md", pivot)
        files["time_to_target_wide"] = write_wide_csv(per_setting, out / "time_to_target.csv")
        files.update(_group_figures(groups, per_setting, out, time_key, target, xmax))
    scaling = None
    if "topology.n" in analysis.varying_settings(runs):
        scaling = analysis.scaling_table(runs, target, time_key, smooth, loss_target)
        files.update(_scaling_outputs(runs, scaling, out, time_key, target, xmax))
    if echo:
        print(pivot if pivot is not None and len(table) > 30 else markdown, end="")
    return {"table": table, "markdown": markdown, "files": files, "target": target, "time_key": time_key,
            "staleness": stale, "scaling": scaling, "time_to_target_markdown": pivot,
            "agent_problems": problems, "seeds": seeds}


# --------------------------------------------------------------------------- groups (sweeps)

CASE_LABELS = {"1": "base", "2": "slow comm.", "3": "comp. straggler", "4": "comm. straggler",
               "5": "comp.+comm. straggler"}
#: Fields that never make a figure group of their own (the case is the panel, n the scaling axis).
_NOT_FIGURE_KEYS = ("delays.case", "delays.model", *analysis.SCALING_KEYS)


def _case_title(case: str) -> str:
    return f"case {case}: {CASE_LABELS[case]}" if case in CASE_LABELS else case


def _figure_groups(runs: Sequence[Any]) -> list[tuple[str, str, list[Any]]] | None:
    """[(label, slug, runs)] per setting (fields that vary besides algorithm, case and n), or None when
    the runs form a single group with a single case (the overall figures say everything)."""
    varying = analysis.varying_settings(runs)
    keys = [k for k in varying if not k.startswith("algorithm.") and k not in _NOT_FIGURE_KEYS]
    cases = {r.case for r in runs}
    if not keys and len(cases) <= 1:
        return None
    out = []
    for members in analysis.group_runs(runs, keys).values():
        label = analysis.setting_label(members[0], keys)
        slug = analysis.setting_label(members[0], keys, short=True) or "all"
        out.append((label, slug, members))
    out.sort(key=lambda g: setting_order(g[0]))
    return out


def _group_figures(groups: list[tuple[str, str, list[Any]]], table: Sequence[dict[str, Any]], out: Path,
                   time_key: str | None, target: float, xmax: float | None) -> dict[str, Path]:
    files: dict[str, Path] = {}
    per_case = out / "cases"
    per_case.mkdir(exist_ok=True)
    # a row per run, or per setting with several seeds (its "names" lists its runs)
    names = {name: r for r in table for name in str(r.get("names") or r["name"]).split(" ")}
    variants = analysis.algorithm_variants([r for _, _, members in groups for r in members])

    def series(run: Any) -> str:
        return analysis.series_label(run, variants)

    every = [r for _, _, members in groups for r in members]
    palette = plots.algorithm_colors([series(r) for r in every])
    for label, slug, members in groups:
        cases = sorted({r.case for r in members}, key=plots.case_order)
        panels = [(_case_title(c), [r for r in members if r.case == c]) for c in cases]
        suffix = f" — {label}" if label else ""
        files[f"loss_{slug}"] = plots.plot_curve_panels(
            panels, "train_loss", out / f"loss_{slug}.png", time_key, title=f"training loss{suffix}", xmax=xmax,
            series=series)
        files[f"accuracy_{slug}"] = plots.plot_curve_panels(
            panels, "test_accuracy", out / f"accuracy_{slug}.png", time_key, target,
            title=f"test accuracy{suffix}", xmax=xmax, series=series)
        rows = list({id(names[r.name]): names[r.name] for r in members if r.name in names}.values())
        files[f"time_to_target_{slug}"] = plots.plot_time_to_target_bars(
            rows, out / f"time_to_target_{slug}.png", title=label or None)
        for case, runs in panels:
            c = case.split(":")[0].replace("case ", "case")
            for key, what in (("train_loss", "loss"), ("test_accuracy", "accuracy")):
                path = per_case / f"{what}_{c}_{slug}.png"
                files[f"{what}_{c}_{slug}"] = plots.plot_curves(
                    runs, key, path, time_key, target if key == "test_accuracy" else None,
                    title=f"{case}{suffix}", xmax=xmax, labels=[series(r) for r in runs],
                    colors=[palette[series(r)] for r in runs])
    return files


def _scaling_outputs(runs: Sequence[Any], rows: list[dict[str, Any]], out: Path, time_key: str | None,
                     target: float, xmax: float | None) -> dict[str, Path]:
    files = {"scaling": scaling_plots.plot_scaling(rows, out / "scaling.png"),
             "scaling_csv": write_rows(rows, analysis.SCALING_COLUMNS, out / "scaling.csv")}
    files["scaling_md"] = _write_text(out / "scaling.md", scaling_markdown(rows))
    algorithms = sorted({r.algorithm for r in runs}, key=lambda a: (a not in analysis.reference_algorithms(), a))
    for key, what in (("train_loss", "loss"), ("test_accuracy", "accuracy")):
        panels = []
        for alg in algorithms:
            members = sorted((r for r in runs if r.algorithm == alg), key=lambda r: r.n_agents)
            panels.append((alg, members))
        files[f"scaling_{what}"] = scaling_plots.plot_scaling_curves(
            panels, key, out / f"scaling_{what}.png", time_key, target if key == "test_accuracy" else None,
            xmax=xmax)
    return files


# --------------------------------------------------------------------------- tables


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
