"""The report's tables: Markdown and CSV of runs, time to target (algorithm × case), staleness and
scaling, as :func:`hpcasync.results.report.make_report` writes them."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcasync.results import analysis, plots, replicates


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
    for setting in sorted(dict.fromkeys(r["setting"] for r in table), key=setting_order):
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
    for setting in sorted(dict.fromkeys(r["setting"] for r in table), key=setting_order):
        sub = [r for r in table if r["setting"] == setting]
        for alg in _algorithms_of(sub):
            row: dict[str, Any] = {"setting": setting, "algorithm": alg}
            for r in sub:
                if _series_of(r) == alg:
                    row.update({f"case{r['case']}_{col}": r[col] for col in stats})
            rows.append(row)
    return write_rows(rows, columns, path)


def staleness_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Per setting, algorithm × case: mean / max staleness (iterations) of the models mixed in."""
    lines = ["Staleness of the neighbour models an agent mixes in, in iterations of the sender: "
             "mean / max over all logged updates; worst agent's mean in brackets.", ""]
    notes: dict[str, str] = {}
    cases = _cases_of(rows)
    for setting in sorted(dict.fromkeys(r["setting"] for r in rows), key=setting_order):
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
                cell = f"{r['mean']:.2f} / {r['max']:.0f} ({r['worst_agent_mean']:.2f})"
                if math.isfinite(r.get("pair_mean", math.nan)):
                    cell += f"; S_avg {r['pair_mean']:.1f} / S_max {r['pair_max']:.0f}"
                cells.append(cell)
            lines.append(f"| {alg} | " + " | ".join(cells) + " |")
        lines.append("")
    if any(math.isfinite(r.get("pair_mean", math.nan)) for r in rows):
        lines.append("S_avg / S_max (vector-clock algorithms: DASGD): Tosi & Theobald 2023's pairwise staleness "
                     "|A_i Δ A_j| over all agent pairs, mean over evaluations / largest.")
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


def setting_order(label: str) -> tuple:
    """Settings sorted by their numbers where they have some (ρ = 0 < 0.5 < 1, n = 2 < 16)."""
    parts = []
    for piece in label.split(", "):
        value = piece.split("=", 1)[-1]
        try:
            parts.append((0, float(value), ""))
        except ValueError:
            parts.append((1, 0.0, value))
    return tuple(parts)


def write_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return path
