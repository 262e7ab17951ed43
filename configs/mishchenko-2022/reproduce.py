"""Mishchenko et al. (2022) Fig. 1 and the straggler claim in the simulator; writes docs/figures/mishchenko_*.

Run: ``.venv/bin/python configs/mishchenko-2022/reproduce.py [--quick]`` (about 2 min on 2 cores).
Every run is an ordinary ``hpcasync simulate`` of fig1.toml with overrides; runs land in
runs/mishchenko-2022/<name>/ (``hpcasync report`` works on them), the figures and the table in docs/figures/.
F* is the least-squares optimum of the training rows (numpy's lstsq).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # BLAS threads only fight over the 2 cores here

import numpy as np  # noqa: E402

from hpcasync import config  # noqa: E402
from hpcasync.engines.sim.runner import simulate  # noqa: E402
from hpcasync.results.reader import open_run  # noqa: E402
from hpcasync.results.server_plots import plot_delay_histogram, plot_server_loss  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIGS = ROOT / "docs" / "figures"

#: (name, overrides): the paper's three methods with its tuned steps, Theorem 3.1's rule, and the largest
#: asynchronous step of the grid 0.43, 0.3, 0.2, 0.15, 0.1, 0.05 that converges here (0.15; 0.2 diverges)
METHODS = {
    "minibatch-0.19": ["algorithm.name=minibatch-sgd", "algorithm.alpha=0.19", "algorithm.reduce=sum"],
    "async-0.43": ["algorithm.step_rule=constant", "algorithm.alpha=0.43"],
    "adaptive-0.43": ["algorithm.step_rule=adaptive", "algorithm.alpha=0.43"],
    "theorem": ["algorithm.step_rule=theorem", "algorithm.alpha=0.43", "algorithm.smoothness={L}"],
    "async-0.15": ["algorithm.step_rule=constant", "algorithm.alpha=0.15"],
    "adaptive-0.15": ["algorithm.step_rule=adaptive", "algorithm.alpha=0.15"],
}
#: the F − F* of the time-to-target table (F(x0) − F* ≈ 0.29; minibatch ends at ≈ 3e-3, async 0.15 at ≈ 5e-3)
TARGET = 1e-2
SLOWDOWNS = (1.0, 10.0, 100.0)


REUSE = False  # --reuse: keep finished runs (redraw figures and tables only)


def run(name: str, overrides: list[str], out: Path, slowdown: float = 1.0) -> Path:
    # a minibatch round lasts as long as the slowest worker: evaluate about every round, not every 2 units
    every = 2.0 * slowdown if "algorithm.name=minibatch-sgd" in overrides else 2.0
    cfg = config.load(HERE / "fig1.toml", [*overrides, f"run.name={name}", f"eval.interval={every}"])
    d = out / name
    if REUSE and (d / "run.h5").exists() and open_run(d).complete:
        return d
    shutil.rmtree(d, ignore_errors=True)
    simulate(cfg, d)
    return d


def objective(L_out: dict[str, float]) -> tuple[float, float]:
    """(F*, L) of the training set of fig1.toml."""
    from hpcasync import problems

    cfg = config.load(HERE / "fig1.toml")
    p = problems.build(cfg, cfg.topology.n)
    A = p.A
    f_star = p.evaluate(p.optimum())["train_loss"]
    L = float(np.linalg.eigvalsh(A.T @ A / len(A))[-1])
    L_out.update(f_star=f_star, L=L)
    return f_star, L


def first_time(run_dir: Path, f_star: float, target: float) -> tuple[float, float]:
    """(virtual time, gradients) when F − F* first reached ``target`` (inf if never)."""
    ev = open_run(run_dir).evaluations
    gap = ev["train_loss"] - f_star
    hit = np.flatnonzero(np.isfinite(gap) & (gap <= target))
    return (float(ev["virtual_time"][hit[0]]), float(ev["gradients"][hit[0]])) if hit.size else (np.inf, np.inf)


def mpi_figures(folder: Path) -> int:
    """Figures and numbers of configs/mishchenko-2022/mpi.sh's runs (40 ranks on this machine's cores)."""
    f_star, _ = objective({})
    rows = {}
    for prefix in ("mpi-", "mpi-bad-"):
        names = [f"{prefix}{m}" for m in ("minibatch-0.19", "async-0.43", "adaptive-0.43", "adaptive-0.15")]
        runs = [open_run(folder / n) for n in names if (folder / n / "run.h5").exists()]
        tag = prefix.strip("-").replace("-", "_")
        rows.update(_mpi_setting(runs, tag, prefix, f_star))
    (FIGS / "mishchenko_mpi_results.json").write_text(json.dumps({"target": TARGET, "runs": rows}, indent=1) + "\n")
    return 0


def _mpi_setting(runs: list, tag: str, prefix: str, f_star: float) -> dict[str, dict]:
    labels = [r.name.removeprefix(prefix) for r in runs]
    plot_server_loss(runs, FIGS / f"mishchenko_{tag}_loss.png", "wall_time", offset=f_star, labels=labels)
    recorded = [(r, s) for r in runs if (s := r.server_steps()) is not None]
    plot_delay_histogram(recorded, FIGS / f"mishchenko_{tag}_delays.png",
                         labels=[r.name.removeprefix(prefix) for r, _ in recorded])
    rows = {}
    for r, label in zip(runs, labels, strict=True):
        ev, s = r.evaluations, r.server_steps()
        gap = ev["train_loss"] - f_star
        hit = np.flatnonzero(gap <= TARGET)
        row = {"final_gap": float(gap[-1]), "wall_s": float(r.summary["wall_s"]), "gradients": int(ev["gradients"][-1]),
               "time_to_target_s": float(ev["wall_time"][hit[0]]) if hit.size else None}
        if s is not None:
            t = s["tau"]
            row.update(tau_mean=float(t.mean()), tau_median=float(np.median(t)), tau_p99=float(np.percentile(t, 99)),
                       tau_max=int(t.max()), share_tau_le_1=float((t <= 1).mean()),
                       steps_per_s=len(t) / float(r.summary["wall_s"]))
        rows[f"{prefix}{label}"] = row
        print(prefix + label, row, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "runs" / "mishchenko-2022"))
    ap.add_argument("--quick", action="store_true", help="a tenth of the budget (a smoke test)")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs; redraw figures and tables")
    ap.add_argument("--mpi", default="", help="draw the figures of the runs of mpi.sh in this folder instead")
    args = ap.parse_args()
    if args.mpi:
        return mpi_figures(Path(args.mpi))
    global REUSE
    REUSE = args.reuse
    out = Path(args.out)
    t0 = time.perf_counter()
    consts: dict[str, float] = {}
    f_star, L = objective(consts)
    budget = ["budget.gradients=3200"] if args.quick else []
    results: dict[str, dict] = {"F_star": f_star, "L": L, "runs": {}}
    settings = {"equal": ["delays.case=1"], "bad-worker": ["delays.case=3", "delays.slowdown=100"]}
    for setting, extra in settings.items():
        dirs, labels = [], []
        for method, ov in METHODS.items():
            name = f"{setting}-{method}"
            ov = [o.format(L=L) for o in ov]
            dirs.append(run(name, [*ov, *extra, *budget], out, 100.0 if setting == "bad-worker" else 1.0))
            labels.append(method)
            ev = open_run(dirs[-1]).evaluations
            gap = ev["train_loss"] - f_star
            steps = open_run(dirs[-1]).server_steps()
            results["runs"][name] = {
                "final_gap": float(gap[-1]), "min_gap": float(np.nanmin(gap)), "time": float(ev["virtual_time"][-1]),
                "gradients": int(ev["gradients"][-1]),
                "tau_mean": None if steps is None else float(steps["tau"].mean()),
                "tau_max": None if steps is None else int(steps["tau"].max()),
                "tau_p50": None if steps is None else float(np.median(steps["tau"])),
            }
            print(f"{name:32s} F-F* {gap[-1]:.3e} (min {np.nanmin(gap):.3e}) t={ev['virtual_time'][-1]:.0f}",
                  flush=True)
        runs = [open_run(d) for d in dirs]
        plot_server_loss(runs, FIGS / f"mishchenko_{setting}_loss.png", "virtual_time", offset=f_star, labels=labels)
        recorded = [(r, s) for r, lab in zip(runs, labels, strict=True)
                    if (s := r.server_steps()) is not None and lab in ("adaptive-0.43", "adaptive-0.15")]
        plot_delay_histogram(recorded, FIGS / f"mishchenko_{setting}_delays.png",
                             labels=[lab for lab in labels if lab in ("adaptive-0.43", "adaptive-0.15")])
    # time to F − F* ≤ TARGET: minibatch 0.19 against the asynchronous runs, per slowdown of one worker
    target = TARGET
    ratios = []
    for s in SLOWDOWNS:
        extra = ["delays.case=1"] if s == 1.0 else ["delays.case=3", f"delays.slowdown={s}"]
        row = {"slowdown": s}
        for method in ("minibatch-0.19", "adaptive-0.43", "adaptive-0.15", "async-0.15"):
            name = f"slow{s:g}-{method}"
            d = run(name, [*[o.format(L=L) for o in METHODS[method]], *extra, *budget], out, s)
            row[method] = first_time(d, f_star, target)
        ratios.append(row)
        print(row, flush=True)
    results["target"] = target
    results["time_to_target"] = ratios
    results["wall_s"] = time.perf_counter() - t0
    (FIGS / "mishchenko_results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"done in {results['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
