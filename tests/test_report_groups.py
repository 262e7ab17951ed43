"""Report of a sweep: per-setting and per-case figures, ratios within a setting, pivot, staleness, scaling."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from hpcasync.config import Config
from hpcasync.results import analysis
from hpcasync.results.reader import open_run
from hpcasync.results.report import make_report
from hpcasync.results.tables import time_to_target_markdown
from hpcasync.results.writer import AgentWriter, RunWriter, software_versions


def write_run(out: Path, *, algorithm: str = "adsgd", case: int = 1, rho: float = 0.0, n: int = 2,
              beta: float = 1.0, engine: str = "sim", times: list[float], accuracies: list[float],
              staleness: float = 1.0, gradients_per_time: float = 1.0) -> None:
    """A finished run with hand-made evaluations; agent ``r`` logs staleness ``staleness * (r + 1)``."""
    cfg = Config()
    cfg.run.name = out.name
    cfg.algorithm.name = algorithm
    cfg.algorithm.beta = beta
    cfg.delays.case = case
    cfg.data.partition = "heterogeneity"
    cfg.data.rho = rho
    cfg.topology.name = "ring"
    cfg.topology.n = n
    cfg.topology.shape = []
    cfg.eval.target_accuracy = 0.9
    A = np.zeros((n, n), dtype=np.uint8)
    for i in range(n):
        A[i, (i + 1) % n] = A[(i + 1) % n, i] = 1
    np.fill_diagonal(A, 0)
    W = np.eye(n)
    run = RunWriter(out, config_toml=cfg.to_toml(), engine=engine, n_agents=n, adjacency=A, weights=W,
                    versions=software_versions())
    end = times[-1]
    for r in range(n):
        w = AgentWriter(out, r, attrs={"algorithm": algorithm})
        iters = max(int(end * gradients_per_time / n), 1)
        for k in range(1, 4):
            t = end * k / 3
            w.append(t if engine == "mpi" else 0.0, t, iters * k // 3, 1.0, 1.0, 100 * k, k,
                     staleness * (r + 1))
        w.close(complete=True)
    for k, (t, a) in enumerate(zip(times, accuracies, strict=True)):
        run.append_eval(virtual_time=t if engine == "sim" else np.nan, wall_time=t, gradients=k * 10,
                        train_loss=2.0 / (k + 1), test_loss=2.0 / (k + 1), test_accuracy=a, consensus_distance=0.0)
    run.set_summary(gradients=int(end * gradients_per_time), virtual_time=end)
    run.close(complete=True)


T = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def ramp(reach: float | None) -> list[float]:
    """Accuracies that first reach 0.9 at time ``reach`` (never when None)."""
    return [0.95 if reach is not None and t >= reach else 0.5 for t in T]


@pytest.fixture
def grid(tmp_path) -> Path:
    """2 ρ × 2 cases × 3 algorithms. Times to 0.9 are chosen so that ratios differ between the ρ."""
    reach = {  # (rho, case): {algorithm: time}
        (0.0, 1): {"adsgd": 10, "dsgd": 20, "adpsgd": 30},
        (0.0, 3): {"adsgd": 20, "dsgd": None, "adpsgd": 10},
        (1.0, 1): {"adsgd": 20, "dsgd": 40, "adpsgd": None},
        (1.0, 3): {"adsgd": None, "dsgd": 60, "adpsgd": 30},
    }
    root = tmp_path / "grid"
    for (rho, case), algs in reach.items():
        for alg, t in algs.items():
            write_run(root / f"{alg}-case{case}-rho{rho:g}", algorithm=alg, case=case, rho=rho,
                      times=T, accuracies=ramp(t), staleness=1.0 + case)
    return root


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_ratios_are_formed_within_a_setting(grid):
    runs = [open_run(p) for p in sorted(grid.iterdir())]
    table = by_name(analysis.summary_table(runs, 0.9))
    assert table["dsgd-case1-rho0"]["ratio_to_adsgd"] == 2.0
    assert table["dsgd-case1-rho1"]["ratio_to_adsgd"] == 2.0  # 40 / 20, not 40 / 10 (ρ = 0's ADSGD)
    assert table["adpsgd-case3-rho0"]["ratio_to_adsgd"] == 0.5
    assert table["adpsgd-case3-rho1"]["ratio_to_adsgd"] is None  # ADSGD never reached it there
    assert table["adpsgd-case3-rho1"]["time_to_target"] == 30.0
    assert table["dsgd-case1-rho1"]["setting"] == "data.rho=1"
    assert table["dsgd-case1-rho1"]["series"] == "dsgd"
    assert analysis.varying_settings(runs) == ["algorithm.name", "data.rho", "delays.case"]


def test_report_of_a_grid(grid, tmp_path):
    out = tmp_path / "rep"
    result = make_report([grid], out, target=0.9, echo=False)
    for name in ("loss.png", "accuracy.png", "time_to_target.png", "table.csv", "table.md",
                 "loss_rho0.png", "loss_rho1.png", "accuracy_rho0.png", "accuracy_rho1.png",
                 "time_to_target_rho0.png", "time_to_target_rho1.png", "time_to_target.md", "time_to_target.csv",
                 "staleness.md", "staleness.csv", "cases/loss_case1_rho0.png", "cases/accuracy_case3_rho1.png"):
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "scaling.png").exists()  # n does not vary
    pivot = (out / "time_to_target.md").read_text()
    assert pivot == result["time_to_target_markdown"]
    assert "**data.rho=0**" in pivot and "**data.rho=1**" in pivot
    assert "| adsgd | 10 (1.00) | 20 (1.00) |" in pivot
    assert "| dsgd | 20 (2.00) | not reached (0.500) |" in pivot
    assert "| adpsgd | not reached (0.500) | 30 (–) |" in pivot  # ρ = 1: ADSGD missed case 3
    # rows: ADSGD first, then the others alphabetically
    rho0 = pivot.split("**data.rho=1**")[0]
    assert rho0.index("| adsgd |") < rho0.index("| adpsgd |") < rho0.index("| dsgd |")
    with open(out / "time_to_target.csv") as fh:
        wide = {(r["setting"], r["algorithm"]): r for r in csv.DictReader(fh)}
    assert float(wide[("data.rho=1", "dsgd")]["case3_time_to_target"]) == 60.0
    assert wide[("data.rho=1", "dsgd")]["case3_ratio_to_adsgd"] == ""
    assert float(wide[("data.rho=0", "adpsgd")]["case3_ratio_to_adsgd"]) == 0.5


def test_staleness_table(grid, tmp_path):
    runs = [open_run(p) for p in sorted(grid.iterdir())]
    rows = by_name(analysis.staleness_table(runs))
    r = rows["adsgd-case3-rho0"]
    # agents log 4·1 and 4·2 (three rows each)
    assert r["mean"] == pytest.approx(6.0) and r["max"] == 8.0
    assert r["worst_agent"] == 1 and r["worst_agent_mean"] == 8.0 and r["count"] == 6
    make_report([grid], tmp_path / "rep", target=0.9, echo=False)
    md = (tmp_path / "rep" / "staleness.md").read_text()
    assert "| adsgd | 3.00 / 4 (4.00) | 6.00 / 8 (8.00) |" in md
    # synchronous and pairwise-averaging algorithms never mix an old copy: no staleness to speak of
    assert "| dsgd | n/a | n/a |" in md and "n/a: dsgd never mixes an old copy" in md
    assert np.isnan(rows["dsgd-case1-rho0"]["mean"]) and rows["dsgd-case1-rho0"]["note"]
    with open(tmp_path / "rep" / "staleness.csv") as fh:
        assert set(csv.DictReader(fh).fieldnames) == set(analysis.STALENESS_COLUMNS)


def test_smoothing_ignores_a_single_lucky_evaluation():
    t = np.arange(10.0)
    a = np.array([0.5, 0.95, 0.5, 0.5, 0.5, 0.9, 0.92, 0.93, 0.95, 0.95])
    assert analysis.time_to_target(t, a, 0.9) == 1.0
    assert analysis.time_to_target(t, a, 0.9, smooth=3) == 6.0
    assert analysis.time_to_target(t, a, 0.99, smooth=3) is None
    np.testing.assert_allclose(analysis.smooth_centered(np.array([1.0, 2.0, 6.0]), 3), [1.5, 3.0, 4.0])
    with pytest.raises(ValueError, match="odd"):
        analysis.time_to_target(t, a, 0.9, smooth=2)


def test_scaling(tmp_path):
    root = tmp_path / "ring"
    reach = {"adsgd": {1: 40, 2: 20, 4: 10, 8: None}, "dsgd": {2: 40, 4: 30}}
    for alg, by_n in reach.items():
        for n, t in by_n.items():
            write_run(root / f"{alg}-n{n}", algorithm=alg, n=n, times=T, accuracies=ramp(t),
                      gradients_per_time=float(n) if alg == "adsgd" else n / 2)
    runs = [open_run(p) for p in sorted(root.iterdir())]
    rows = {(r["algorithm"], r["n"]): r for r in analysis.scaling_table(runs, 0.9, loss_target=0.5)}
    # training loss 2/(k+1) at T[k]: <= 0.5 from k = 3, t = 30, for every run
    assert rows[("adsgd", 4)]["time_to_loss"] == 30.0 and rows[("dsgd", 4)]["loss_speedup"] == 1.0
    assert rows[("adsgd", 1)]["speedup"] == 1.0 and rows[("adsgd", 4)]["speedup"] == 4.0
    assert rows[("adsgd", 8)]["speedup"] is None and rows[("adsgd", 8)]["throughput_speedup"] == 8.0
    # every algorithm is measured against sequential SGD (1-agent ADSGD)
    assert rows[("dsgd", 2)]["reference"] == "adsgd n=1" and rows[("dsgd", 2)]["speedup"] == 1.0
    assert rows[("dsgd", 4)]["throughput_speedup"] == 2.0
    out = tmp_path / "rep"
    result = make_report([root], out, target=0.9, echo=False, loss_target=0.5)
    for name in ("scaling.png", "scaling.md", "scaling.csv", "scaling_loss.png", "scaling_accuracy.png"):
        assert (out / name).is_file(), name
    md = (out / "scaling.md").read_text()
    assert "adsgd n=1 (one agent, no communication: sequential SGD)" in md and "training loss ≤ 0.5" in md
    assert "| adsgd |  | 8 | not reached | – | 30 | 1.00 | 8 | 8.00 |" in md
    assert len(result["scaling"]) == 6


def test_scaling_without_a_one_agent_run_uses_the_smallest(tmp_path):
    root = tmp_path / "ring"
    for n, t in ((2, 40), (4, 20)):
        write_run(root / f"dsgd-n{n}", algorithm="dsgd", n=n, times=T, accuracies=ramp(t))
    rows = analysis.scaling_table([open_run(p) for p in sorted(root.iterdir())], 0.9)
    assert [(r["n"], r["speedup"], r["reference"]) for r in rows] == [(2, 1.0, "dsgd n=2"), (4, 2.0, "dsgd n=2")]


def test_algorithm_variants_are_separate_series(tmp_path):
    root = tmp_path / "beta"
    for beta, t in ((1.0, 20), (0.5, 10)):
        for case in (1, 2):
            write_run(root / f"adsgd-beta{beta:g}-case{case}", beta=beta, case=case, times=T, accuracies=ramp(t))
    result = make_report([root], tmp_path / "rep", target=0.9, echo=False)
    table = by_name(result["table"])
    assert table["adsgd-beta0.5-case2"]["series"] == "adsgd beta=0.5"
    assert table["adsgd-beta0.5-case2"]["ratio_to_adsgd"] == 0.5  # against the default: β = 1, though listed later
    pivot = time_to_target_markdown(result["table"])
    assert "| adsgd beta=0.5 | 10 (0.50) | 10 (0.50) |" in pivot and "| adsgd beta=1 | 20 (1.00) | 20 (1.00) |" in pivot
    assert (tmp_path / "rep" / "loss_all.png").is_file()


def test_mpi_runs_are_grouped_on_wall_time(tmp_path):
    root = tmp_path / "mpi"
    for alg, t in (("adsgd", 10), ("dsgd", 30)):
        for case in (1, 5):
            write_run(root / f"{alg}-case{case}", algorithm=alg, case=case, engine="mpi", times=T,
                      accuracies=ramp(t))
    result = make_report([root], tmp_path / "rep", target=0.9, echo=False)
    assert result["time_key"] == "wall_time"
    assert {r["time_key"] for r in result["table"]} == {"wall_time"}
    assert by_name(result["table"])["dsgd-case5"]["ratio_to_adsgd"] == 3.0
    assert (tmp_path / "rep" / "accuracy_all.png").is_file()
