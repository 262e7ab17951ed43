"""Tables and figures of Xiong et al. 2023's straggler experiments from the runs of sweep.toml/adpsgd.toml.

    python configs/dsgd-aau-2023/analyze.py runs/dsgd-aau-2023 --out docs/figures [--at 1000] [--target 0.8]

Writes NAME.md (the tables) and NAME_{loss_time,loss_iter,speedup}.png (--name, default dsgd_aau_2023). Every metric is
of the average model (docs/design.md). Runs that differ only in run.seed are replicates: mean ± std.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hpcasync.results.metrics import smooth_centered, time_to_target  # noqa: E402
from hpcasync.results.reader import find_runs, open_run  # noqa: E402

ORDER = ["agp", "adpsgd", "prague", "dsgd", "adsgd", "dsgd-aau"]
SMOOTH = 5  # evaluations averaged (centred) before reading accuracies: the 360-image test set is noisy


def load(dirs: list[str]) -> dict[tuple[str, int], list]:
    groups: dict[tuple[str, int], list] = defaultdict(list)
    for path in find_runs(dirs):
        run = open_run(path)
        if run.complete:
            groups[(run.algorithm, run.n_agents)].append(run)
    return groups


def acc_at(run, t: float) -> float:
    e = run.evaluations
    acc = smooth_centered(np.asarray(e["test_accuracy"], float), SMOOTH)
    i = int(np.searchsorted(e["virtual_time"], t, side="right")) - 1
    return float(acc[i]) if i >= 0 else float("nan")


def loss_at(run, t: float, col: str = "train_loss") -> float:
    e = run.evaluations
    i = int(np.searchsorted(e["virtual_time"], t, side="right")) - 1
    return float(e[col][i]) if i >= 0 else float("nan")


def ttt(run, target: float, x: str = "virtual_time") -> float:
    """First time (or iteration, x="iters") at which the average model's training loss is <= target."""
    e = run.evaluations
    xs = e["virtual_time"] if x == "virtual_time" else np.asarray(e["gradients"], float) / run.n_agents
    # time_to_target finds a first value >= target: feed it -loss
    t = time_to_target(xs, -np.asarray(e["train_loss"], float), -target)
    return float("nan") if t is None else float(t)


def ms(values: list[float], fmt: str = "{:.3f}") -> str:
    v = np.asarray(values, float)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return "not reached"
    s = fmt.format(ok.mean())
    if v.size > 1:
        s += " ± " + fmt.format(ok.std())
    if ok.size < v.size:
        s += f" ({ok.size}/{v.size})"
    return s


def table(groups, ns, algos, cell) -> list[str]:
    lines = ["| n | " + " | ".join(algos) + " |", "|---" * (len(algos) + 1) + "|"]
    for n in ns:
        lines.append(f"| {n} | " + " | ".join(cell(groups.get((a, n), []), a, n) for a in algos) + " |")
    return lines


def mean_gradient_time(groups: dict[tuple[str, int], list]) -> float:
    """Mean computation time of one gradient under the runs' straggler model (compute_mean = 1)."""
    d = next(iter(groups.values()))[0].config.get("delays", {})
    m, p = float(d.get("compute_mean", 1.0)), float(d.get("p", 0.1))
    if d.get("model") == "sleeping-stragglers":
        return m * (1.0 + p * float(d.get("sleep", 6.0)))
    return m * (1.0 + p * (float(d.get("s", 10.0)) - 1.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--at", type=float, default=300.0, help="fixed time of the accuracy table")
    ap.add_argument("--loss-at", type=float, default=1000.0, help="fixed time of the training-loss table")
    ap.add_argument("--target", type=float, default=2.0, help="training loss of the speedup table")
    ap.add_argument("--name", default="dsgd_aau_2023", help="stem of the files written")
    ap.add_argument("--plot-n", type=int, default=128, help="n of the loss curves")
    args = ap.parse_args()
    groups = load(args.dirs)
    ns = sorted({n for _, n in groups})
    algos = [a for a in ORDER if any(a == g for g, _ in groups)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md: list[str] = []
    seeds = max(len(v) for v in groups.values())
    mean_g = mean_gradient_time(groups)
    md += [f"Test accuracy at t = {args.at:g} (virtual time; mean gradient time {mean_g:g} with the stragglers), "
           f"{SMOOTH}-evaluation centred average, mean ± std over {seeds} seed(s):", ""]
    md += table(groups, ns, algos, lambda rs, a, n: ms([acc_at(r, args.at) for r in rs]))
    md += ["", f"Training loss of the average model at t = {args.loss_at:g}:", ""]
    md += table(groups, ns, algos, lambda rs, a, n: ms([loss_at(r, args.loss_at) for r in rs]))
    md += ["", f"Consensus distance (1/n)·Σ‖x_i − x̄‖² at t = {args.loss_at:g}:", ""]
    md += table(groups, ns, algos,
                lambda rs, a, n: ms([loss_at(r, args.loss_at, "consensus_distance") for r in rs], "{:.2g}"))
    dsgd_runs = {n: groups.get(("dsgd", n), []) for n in ns}
    dsgd_t = {n: np.nanmean([ttt(r, args.target) for r in rs]) if rs else np.nan for n, rs in dsgd_runs.items()}
    # where DSGD never got there, its budget bounds the speedup from below
    dsgd_lb = {n: min((r.summary["virtual_time"] for r in rs), default=np.nan) for n, rs in dsgd_runs.items()}

    def speed(rs, a, n):
        t = [ttt(r, args.target) for r in rs]
        s = ms(t, "{:.0f}")
        m = np.nanmean(t) if np.isfinite(t).any() else np.nan
        if not np.isfinite(m):
            return s
        if np.isfinite(dsgd_t[n]):
            return s + f" ({dsgd_t[n] / m:.2f}×)"
        return s + (f" (≥ {dsgd_lb[n] / m:.2f}×)" if np.isfinite(dsgd_lb[n]) else "")

    md += ["", f"Virtual time to training loss <= {args.target:g} and, in brackets, the speedup over DSGD at the "
           "same n (DSGD's time / the algorithm's):", ""]
    md += table(groups, ns, algos, speed)
    md += ["", f"Iterations (gradients per worker) to training loss <= {args.target:g}:", ""]
    md += table(groups, ns, algos, lambda rs, a, n: ms([ttt(r, args.target, "iters") for r in rs], "{:.0f}"))

    def rate(rs, a, n):
        return ms([r.summary["gradients"] / n / r.summary["virtual_time"] for r in rs])

    md += ["", f"Gradients per worker per unit of virtual time (1/{mean_g:g} = {1 / mean_g:.3f} if no worker "
           "ever waits):", ""]
    md += table(groups, ns, algos, rate)

    def cost(rs, a, n):
        return ms([1e6 * r.summary["wall_s"] / r.summary["events"] for r in rs], "{:.0f}") + \
            f" / {np.mean([r.summary['wall_s'] for r in rs]):.1f} s"

    md += ["", "Simulator cost: µs per event / wall seconds per run (one core):", ""]
    md += table(groups, ns, algos, cost)
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))

    n = args.plot_n if any(k[1] == args.plot_n for k in groups) else ns[-1]
    for key, xlab, fname in (("virtual_time", "virtual time", "loss_time"),
                             ("iters", "iterations (gradients per worker)", "loss_iter")):
        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
        for a in algos:
            for i, r in enumerate(groups.get((a, n), [])[:1]):
                e = r.evaluations
                x = e["virtual_time"] if key == "virtual_time" else np.asarray(e["gradients"], float) / n
                ax.plot(x, smooth_centered(np.asarray(e["train_loss"], float), SMOOTH), label=a if i == 0 else None)
        ax.set_xlabel(xlab)
        ax.set_ylabel("training loss (average model)")
        ax.set_title(f"{n} workers, random stragglers, 2 classes/worker", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{args.name}_{fname}.png")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
    for a in algos:
        t = {m: [ttt(r, args.target) for r in groups.get((a, m), [])] for m in ns}
        y = [dsgd_t[m] / np.nanmean(t[m]) if np.isfinite(t[m]).any() else np.nan for m in ns]
        lb = [dsgd_lb[m] / np.nanmean(t[m]) if not np.isfinite(dsgd_t[m]) and np.isfinite(t[m]).any() else np.nan
              for m in ns]
        line, = ax.plot(ns, y, marker="o", label=a)
        ax.plot(ns, lb, marker="^", linestyle="none", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("workers n")
    ax.set_ylabel(f"speedup to loss {args.target:g} vs DSGD")
    ax.set_title("▲: lower bound (DSGD did not get there in its budget)", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{args.name}_speedup.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
