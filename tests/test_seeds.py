"""Seeds as an axis: runs that differ only in run.seed are aggregated (mean ± std, k/m reached, bands)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from hpcasync.config import Config
from hpcasync.results import analysis, plots, replicates
from hpcasync.results.reader import open_run
from hpcasync.results.report import make_report
from hpcasync.results.writer import AgentWriter, RunWriter, software_versions
from hpcasync.sweep import load_sweep

T = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def write_run(out: Path, *, algorithm: str, seed: int, case: int = 1, reach: float | None,
              loss: list[float] | None = None, n: int = 2) -> None:
    """A finished 2-agent run whose accuracy first reaches 0.9 at ``reach`` (never when None)."""
    cfg = Config()
    cfg.run.name, cfg.run.seed = out.name, seed
    cfg.algorithm.name = algorithm
    cfg.delays.case = case
    cfg.topology.name, cfg.topology.n, cfg.topology.shape = "ring", n, []
    A = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    run = RunWriter(out, config_toml=cfg.to_toml(), engine="sim", n_agents=n, adjacency=A, weights=np.eye(n),
                    versions=software_versions())
    for r in range(n):
        w = AgentWriter(out, r, attrs={"algorithm": algorithm})
        w.append(0.0, 60.0, 30, 1.0, 1.0, 100, 1, 1.0 + r + seed)
        w.close(complete=True)
    loss = loss or [2.0 / (k + 1) for k in range(len(T))]
    for k, t in enumerate(T):
        acc = 0.95 if reach is not None and t >= reach else 0.5
        run.append_eval(virtual_time=t, wall_time=t, gradients=k * 10, train_loss=loss[k], test_loss=loss[k],
                        test_accuracy=acc, consensus_distance=0.0)
    run.set_summary(gradients=60, virtual_time=60.0)
    run.close(complete=True)


#: (algorithm, case) -> time to 0.9 per seed 0, 1, 2 (None: never)
REACH = {
    ("adsgd", 1): [10, 20, 20],
    ("dsgd", 1): [20, 60, 40],
    ("adpsgd", 1): [30, None, 10],
    ("adsgd", 3): [20, 20, 20],
    ("dsgd", 3): [None, None, None],
    ("adpsgd", 3): [40, 40, 40],
}


@pytest.fixture
def seeded(tmp_path) -> Path:
    root = tmp_path / "seeds"
    for (alg, case), times in REACH.items():
        for seed, reach in enumerate(times):
            write_run(root / f"{alg}-case{case}-seed{seed}", algorithm=alg, case=case, seed=seed, reach=reach)
    return root


def _runs(root: Path):
    return [open_run(p) for p in sorted(root.iterdir()) if (p / "run.h5").exists()]


def _aggregate(root: Path) -> dict[tuple[str, str], dict]:
    runs = _runs(root)
    table = analysis.summary_table(runs, 0.9)
    return {(r["algorithm"], str(r["case"])): r for r in replicates.aggregate_table(table, runs)}


def test_ratios_pair_runs_of_the_same_seed(seeded):
    table = {r["name"]: r for r in analysis.summary_table(_runs(seeded), 0.9)}
    assert table["dsgd-case1-seed0"]["ratio_to_adsgd"] == 2.0  # 20 / 10
    assert table["dsgd-case1-seed1"]["ratio_to_adsgd"] == 3.0  # 60 / 20, not 60 / 10 (seed 0's ADSGD)
    assert table["dsgd-case1-seed2"]["ratio_to_adsgd"] == 2.0  # 40 / 20


def test_aggregation_against_a_hand_computation(seeded):
    agg = _aggregate(seeded)
    dsgd = agg[("dsgd", "1")]
    assert (dsgd["n_seeds"], dsgd["reached"], dsgd["seeds"]) == (3, 3, "0 1 2")
    # times 20, 60, 40: mean 40, sample std sqrt(((-20)² + 20² + 0²) / 2) = 20
    assert dsgd["time_to_target_mean"] == pytest.approx(40.0)
    assert dsgd["time_to_target_std"] == pytest.approx(20.0)
    # per-seed ratios 2, 3, 2: mean 7/3, std sqrt((1/9 + 4/9 + 1/9) / 2) = sqrt(1/3)
    assert dsgd["ratio_to_adsgd_mean"] == pytest.approx(7 / 3)
    assert dsgd["ratio_to_adsgd_std"] == pytest.approx(np.sqrt(1 / 3))
    # AD-PSGD reached it with seeds 0 and 2 only (30, 10): mean 20, std sqrt(200); ratios 3 and 0.5
    adpsgd = agg[("adpsgd", "1")]
    assert (adpsgd["reached"], adpsgd["n_seeds"], adpsgd["ratio_seeds"]) == (2, 3, 2)
    assert adpsgd["time_to_target_mean"] == pytest.approx(20.0)
    assert adpsgd["time_to_target_std"] == pytest.approx(np.sqrt(200.0))
    assert adpsgd["ratio_to_adsgd_mean"] == pytest.approx(1.75)
    assert replicates.aggregate_cell(adpsgd) == "20 ± 14.1 (1.75 ± 1.77) 2/3"
    # nobody reached it: 0/3 and the best accuracy
    none = agg[("dsgd", "3")]
    assert none["reached"] == 0 and none["time_to_target_mean"] is None
    assert replicates.aggregate_cell(none) == "0/3 reached (best 0.500 ± 0.000)"
    # identical seeds: std 0, shown
    assert replicates.aggregate_cell(agg[("adpsgd", "3")]) == "40 ± 0 (2.00 ± 0.00) 3/3"


def test_mean_std_of_one_value_has_no_spread():
    assert replicates.mean_std([5.0])[0] == 5.0 and np.isnan(replicates.mean_std([5.0])[1])
    assert replicates.mean_std([None, float("nan")])[0] is None
    assert replicates.mean_std([1.0, None, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))


def test_report_aggregates_seeds(seeded, tmp_path):
    out = tmp_path / "rep"
    result = make_report([seeded], out, target=0.9, echo=False)
    assert result["seeds"] is not None and len(result["seeds"]) == 6
    pivot = (out / "time_to_target.md").read_text()
    assert "| dsgd | 40 ± 20 (2.33 ± 0.58) 3/3 | 0/3 reached (best 0.500 ± 0.000) |" in pivot
    assert "| adsgd | 16.7 ± 5.77 (1.00 ± 0.00) 3/3 | 20 ± 0 (1.00 ± 0.00) 3/3 |" in pivot
    with open(out / "seeds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == replicates.AGGREGATE_COLUMNS
    adpsgd = next(r for r in rows if r["algorithm"] == "adpsgd" and r["case"] == "1")
    assert (adpsgd["reached"], adpsgd["n_seeds"]) == ("2", "3")
    assert float(adpsgd["time_to_target_std"]) == pytest.approx(np.sqrt(200.0))
    with open(out / "time_to_target.csv") as fh:
        wide = {r["algorithm"]: r for r in csv.DictReader(fh)}
    assert {"case1_time_to_target_mean", "case1_time_to_target_std", "case1_reached", "case1_n_seeds",
            "case1_ratio_to_adsgd_mean", "case1_ratio_to_adsgd_std"} <= set(wide["dsgd"])
    assert float(wide["dsgd"]["case1_time_to_target_mean"]) == pytest.approx(40.0)
    assert wide["dsgd"]["case3_time_to_target_mean"] == "" and wide["dsgd"]["case3_reached"] == "0"
    # table.md / table.csv stay one row per run
    assert (out / "table.csv").read_text().count("\n") == 1 + 18
    assert "0 1 2" in (out / "seeds.md").read_text()


def test_single_seed_reports_have_no_seed_outputs(tmp_path):
    root = tmp_path / "one"
    for alg, reach in (("adsgd", 10), ("dsgd", 20)):
        for case in (1, 3):
            write_run(root / f"{alg}-case{case}", algorithm=alg, case=case, seed=0, reach=reach)
    result = make_report([root], tmp_path / "rep", target=0.9, echo=False)
    assert result["seeds"] is None and not (tmp_path / "rep" / "seeds.md").exists()
    assert "| dsgd | 20 (2.00) | 20 (2.00) |" in result["time_to_target_markdown"]
    with open(tmp_path / "rep" / "time_to_target.csv") as fh:
        assert next(csv.reader(fh))[:4] == ["setting", "algorithm", "case1_time_to_target", "case1_ratio_to_adsgd"]


def test_mean_curve_and_band(tmp_path):
    losses = {0: [2.0, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3], 1: [2.0, 1.2, 1.0, 0.8, 0.7, 0.6, 0.5]}
    for seed, loss in losses.items():
        write_run(tmp_path / f"a-seed{seed}", algorithm="adsgd", seed=seed, reach=10, loss=loss)
    write_run(tmp_path / "b", algorithm="dsgd", seed=0, reach=20)
    runs = _runs(tmp_path)
    t, mean, std = replicates.mean_curve(runs[:2], "train_loss", "virtual_time")
    np.testing.assert_allclose(t, T)
    np.testing.assert_allclose(mean, (np.array(losses[0]) + losses[1]) / 2)
    np.testing.assert_allclose(std, np.abs(np.array(losses[0]) - losses[1]) / np.sqrt(2))
    fig = Figure()
    ax = fig.add_subplot()
    plotted, _ = plots._draw_curves(ax, runs, "train_loss", "virtual_time",
                                    [{"color": "C0"}, {"color": "C0"}, {"color": "C1"}],
                                    ["adsgd", "adsgd", "dsgd"], None)
    assert plotted == 2  # the two seeds are one line
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # only the replicated series gets a band
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["adsgd (mean ± std, 2 seeds)", "dsgd"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), mean)
    # the band spans mean ± std
    verts = np.concatenate([p.vertices for p in bands[0].get_paths()])
    assert verts[:, 1].max() == pytest.approx(float((mean + std).max()))


def test_seed_axis_in_a_sweep(tmp_path):
    (tmp_path / "s.toml").write_text(
        '[base.algorithm]\nname = "adsgd"\n[sweep]\n"delays.case" = [1, 2]\n"run.seed" = [0, 7, 13]\n'
        '[sweep.options]\nname = "case{delays.case}-seed{run.seed}"\n')
    sweep = load_sweep(tmp_path / "s.toml", out=str(tmp_path / "out"))
    assert [r.name for r in sweep.runs][:3] == ["case1-seed0", "case1-seed7", "case1-seed13"]
    assert [r.config.run.seed for r in sweep.runs] == [0, 7, 13, 0, 7, 13]
