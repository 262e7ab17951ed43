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

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcasync.results import analysis, plots, replicates, server_plots
from hpcasync.results.reader import find_runs, open_run
from hpcasync.results.writer import ensure_output_dir

TIME_ALIASES = {"wall": "wall_time", "virtual": "virtual_time", "wall_time": "wall_time",
                "virtual_time": "virtual_time"}


def _fmt(value: Any) -> str:
    """Markdown cell text."""
    if value is None:
        return "not reached"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(table: Sequence[dict[str, Any]]) -> str:
    """The table as GitHub-flavoured Markdown (``None`` time or ratio shows as "not reached")."""
    cols = analysis.TABLE_COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table:
        cells = []
        for c in cols:
            value = row[c]
            if c == "ratio_to_adsgd" and value is None and row["time_to_target"] is not None:
                cells.append("–")  # reached, but no ADSGD run to compare with
            else:
                cells.append(_fmt(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(table: Sequence[dict[str, Any]], path: Path) -> Path:
    """The table as CSV; None (not reached / no reference) is an empty cell."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(analysis.TABLE_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in table:
            writer.writerow({c: "" if row[c] is None else row[c] for c in analysis.TABLE_COLUMNS})
    return path


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
    settings = sorted(dict.fromkeys(r["setting"] for r in table), key=_setting_order)
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
    files["staleness_csv"] = _write_rows(stale, analysis.STALENESS_COLUMNS, out / "staleness.csv")
    files["staleness"] = _write_text(out / "staleness.md", staleness_markdown(
        stale if seeds is None else replicates.aggregate_staleness(stale, runs)))
    if seeds is not None:
        files["seeds_csv"] = _write_rows(seeds, replicates.AGGREGATE_COLUMNS, out / "seeds.csv")
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


def _setting_order(label: str) -> tuple:
    """Settings sorted by their numbers where they have some (ρ = 0 < 0.5 < 1, n = 2 < 16)."""
    parts = []
    for piece in label.split(", "):
        value = piece.split("=", 1)[-1]
        try:
            parts.append((0, float(value), ""))
        except ValueError:
            parts.append((1, 0.0, value))
    return tuple(parts)


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
    out.sort(key=lambda g: _setting_order(g[0]))
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
    files = {"scaling": plots.plot_scaling(rows, out / "scaling.png"),
             "scaling_csv": _write_rows(rows, analysis.SCALING_COLUMNS, out / "scaling.csv")}
    files["scaling_md"] = _write_text(out / "scaling.md", scaling_markdown(rows))
    algorithms = sorted({r.algorithm for r in runs}, key=lambda a: (a not in analysis.reference_algorithms(), a))
    for key, what in (("train_loss", "loss"), ("test_accuracy", "accuracy")):
        panels = []
        for alg in algorithms:
            members = sorted((r for r in runs if r.algorithm == alg), key=lambda r: r.n_agents)
            panels.append((alg, members))
        files[f"scaling_{what}"] = plots.plot_scaling_curves(
            panels, key, out / f"scaling_{what}.png", time_key, target if key == "test_accuracy" else None,
            xmax=xmax)
    return files


# --------------------------------------------------------------------------- tables


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return path


def _cases_of(table: Sequence[dict[str, Any]]) -> list[str]:
    return sorted(dict.fromkeys(str(r["case"]) for r in table), key=plots.case_order)


def _series_of(row: dict[str, Any]) -> str:
    return str(row.get("series") or row["algorithm"])


def _algorithms_of(table: Sequence[dict[str, Any]]) -> list[str]:
    """The series (algorithm, or algorithm + varied algorithm fields) of the rows, ADSGD first."""
    first = {}
    for r in table:
        first.setdefault(_series_of(r), r["algorithm"])
    return sorted(first, key=lambda s: (first[s] not in analysis.reference_algorithms(),
                                        analysis.reference_algorithms().index(first[s])
                                        if first[s] in analysis.reference_algorithms() else 0, s))


def _time(t: float) -> str:
    """A time for a table cell: whole units from 100 up (29200, not 2.92e+04), else 3 digits."""
    return f"{t:.0f}" if abs(t) >= 100 else f"{t:.3g}"


def time_to_target_markdown(table: Sequence[dict[str, Any]], smooth: int = 1) -> str:
    """Per setting, algorithm × case: time to target and, in brackets, its ratio to ADSGD's."""
    target = table[0]["target"] if table else float("nan")
    how = f"; accuracy averaged over {smooth} consecutive evaluations" if smooth > 1 else ""
    lines = [f"Time to {target:g} test accuracy (ratio to ADSGD in brackets, (–) where ADSGD did not reach "
             f"it; 'not reached (0.xxx)' gives the best accuracy reached{how}).", ""]
    if table and "n_seeds" in table[0]:
        lines[0] = lines[0][:-2] + "). " + replicates.SEEDS_NOTE
        lines.append("")
    cases = _cases_of(table)
    for setting in sorted(dict.fromkeys(r["setting"] for r in table), key=_setting_order):
        rows = [r for r in table if r["setting"] == setting]
        if setting:
            lines += [f"**{setting}**", ""]
        lines.append("| algorithm | " + " | ".join(f"case {c}" if c.isdigit() else c for c in cases) + " |")
        lines.append("|---|" + "---|" * len(cases))
        for alg in _algorithms_of(rows):
            cells = []
            for c in cases:
                hit = [r for r in rows if _series_of(r) == alg and str(r["case"]) == c]
                if not hit:
                    cells.append("")
                    continue
                r = hit[0]
                if "n_seeds" in r:
                    cells.append(replicates.aggregate_cell(r))
                elif r["time_to_target"] is None:
                    best = r["best_test_accuracy"]
                    cells.append(f"not reached ({best:.3f})" if not math.isnan(best) else "not reached")
                else:
                    ratio = f" ({r['ratio_to_adsgd']:.2f})" if r["ratio_to_adsgd"] is not None else " (–)"
                    cells.append(f"{_time(r['time_to_target'])}{ratio}")
            lines.append(f"| {alg} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


_WIDE = ("time_to_target", "ratio_to_adsgd", "best_test_accuracy")
_WIDE_SEEDS = ("time_to_target_mean", "time_to_target_std", "reached", "n_seeds", "ratio_to_adsgd_mean",
               "ratio_to_adsgd_std", "best_test_accuracy_mean", "best_test_accuracy_std")


def write_wide_csv(table: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per (setting, algorithm); per case its time to target and ratio (empty: not reached).
    Rows aggregated over seeds give per case mean, std, reached / seeds of both."""
    cases = _cases_of(table)
    columns = ["setting", "algorithm"]
    stats = _WIDE_SEEDS if table and "n_seeds" in table[0] else _WIDE
    for c in cases:
        columns += [f"case{c}_{col}" for col in stats]
    rows = []
    for setting in sorted(dict.fromkeys(r["setting"] for r in table), key=_setting_order):
        sub = [r for r in table if r["setting"] == setting]
        for alg in _algorithms_of(sub):
            row: dict[str, Any] = {"setting": setting, "algorithm": alg}
            for r in sub:
                if _series_of(r) == alg:
                    row.update({f"case{r['case']}_{col}": r[col] for col in stats})
            rows.append(row)
    return _write_rows(rows, columns, path)


def staleness_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Per setting, algorithm × case: mean / max staleness (iterations) of the models mixed in."""
    lines = ["Staleness of the neighbour models an agent mixes in, in iterations of the sender: "
             "mean / max over all logged updates; worst agent's mean in brackets.", ""]
    notes: dict[str, str] = {}
    cases = _cases_of(rows)
    for setting in sorted(dict.fromkeys(r["setting"] for r in rows), key=_setting_order):
        sub = [r for r in rows if r["setting"] == setting]
        if setting:
            lines += [f"**{setting}**", ""]
        lines.append("| algorithm | " + " | ".join(f"case {c}" if c.isdigit() else c for c in cases) + " |")
        lines.append("|---|" + "---|" * len(cases))
        for alg in _algorithms_of(sub):
            cells = []
            for c in cases:
                hit = [r for r in sub if _series_of(r) == alg and str(r["case"]) == c]
                if hit and hit[0].get("note"):
                    cells.append("n/a")
                    notes.setdefault(alg, hit[0]["note"])
                    continue
                if not hit or math.isnan(hit[0]["mean"]):
                    cells.append("–")
                    continue
                r = hit[0]
                cells.append(f"{r['mean']:.2f} / {r['max']:.0f} ({r['worst_agent_mean']:.2f})")
            lines.append(f"| {alg} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"n/a: {alg} never mixes an old copy of a neighbour's model ({note})." for alg, note in notes.items()]
    return "\n".join(lines) + "\n"


def scaling_markdown(rows: Sequence[dict[str, Any]]) -> str:
    refs = sorted({r["reference"] for r in rows})
    what = " (one agent, no communication: sequential SGD)" if refs and all(x.endswith(" n=1") for x in refs) else ""
    loss_target = next((r["loss_target"] for r in rows if r.get("loss_target") is not None), None)
    acc = next((r["target_accuracy"] for r in rows if r.get("target_accuracy") is not None), None)
    lines = [f"Speedup = time to target of the reference ({', '.join(refs) or '?'}{what}) ÷ the run's; "
             "throughput speedup = gradients per time unit ÷ the reference's."
             + (f" Targets: test accuracy {acc:g}" if acc is not None else "")
             + (f", training loss ≤ {loss_target:g}." if loss_target is not None else "."), ""]
    head = ["algorithm", "setting", "n", "time to accuracy", "speedup"]
    if loss_target is not None:
        head += ["time to loss", "loss speedup"]
    head += ["gradients / time", "throughput speedup", "final loss", "final accuracy"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(value: float | None, fmt: str) -> str:
        return "not reached" if value is None and fmt == "time" else (
            "–" if value is None else (_time(value) if fmt == "time" else f"{value:{fmt}}"))

    for r in rows:
        cells = [r["algorithm"], r["setting"], str(r["n"]), cell(r["time_to_target"], "time"),
                 cell(r["speedup"], ".2f")]
        if loss_target is not None:
            cells += [cell(r["time_to_loss"], "time"), cell(r["loss_speedup"], ".2f")]
        cells += [f"{r['gradients_per_time']:.3g}", cell(r["throughput_speedup"], ".2f"),
                  f"{r['final_train_loss']:.4g}", f"{r['final_test_accuracy']:.4g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
