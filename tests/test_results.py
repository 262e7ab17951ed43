"""Results layer: HDF5 writer/reader round trips, SWMR, crash safety, analysis, report and its CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcasync.cli.main import main
from hpcasync.config import Config
from hpcasync.errors import UserError
from hpcasync.results import analysis, schema
from hpcasync.results.reader import find_runs, open_run, read_agent_file
from hpcasync.results.report import make_report
from hpcasync.results.writer import AgentWriter, RunWriter, software_versions

# --------------------------------------------------------------------------- helpers


def ring(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Adjacency and Metropolis weights of a ring (a path for n = 2)."""
    A = np.zeros((n, n), dtype=np.uint8)
    for i in range(n):
        A[i, (i + 1) % n] = A[(i + 1) % n, i] = 1
    np.fill_diagonal(A, 0)
    deg = A.sum(1)
    W = np.zeros((n, n))
    for i, j in zip(*np.nonzero(A), strict=True):
        W[i, j] = 1.0 / (1 + max(deg[i], deg[j]))
    W[np.diag_indices(n)] = 1.0 - W.sum(1)
    return A, W


def agent_rows(rank: int, n: int) -> list[tuple]:
    """Distinct, exactly representable rows for agent ``rank``."""
    return [(0.5 * k + rank, 0.25 * k, k + 1, 1.0 / (k + 1), 2.0 + rank, 100 * (k + 1), 2 * (k + 1),
             float(k % 3)) for k in range(n)]


def make_run(out: Path, *, algorithm: str = "adsgd", case: int = 1, engine: str = "sim", n_agents: int = 3,
             times: list[float] | None = None, accuracies: list[float] | None = None, rows: int = 20,
             keep_open: bool = False, buffer_rows: int = 7, hosts: list[str] | None = None) -> Config:
    """Write a complete synthetic run to ``out`` with hand-made evaluation curves."""
    cfg = Config()
    cfg.run.name = out.name
    cfg.algorithm.name = algorithm
    cfg.delays.case = case
    cfg.eval.target_accuracy = 0.9
    times = times if times is not None else [0.0, 1.0, 2.0]
    accuracies = accuracies if accuracies is not None else [0.1, 0.5, 0.95]
    A, W = ring(n_agents)
    run = RunWriter(out, config_toml=cfg.to_toml(), engine=engine, n_agents=n_agents, adjacency=A, weights=W,
                    versions=software_versions("Test MPI 1.0"), hosts=hosts)
    for r in range(n_agents):
        w = AgentWriter(out, r, attrs={"algorithm": algorithm, "seed": 7}, keep_open=keep_open,
                        buffer_rows=buffer_rows)
        for row in agent_rows(r, rows):
            w.append(*row)
        w.write_timings(compute_s=1.5 + r, mix_s=0.25, communicate_s=0.5, idle_s=0.0, compute_units=10.0)
        w.write_final_model(np.arange(4.0) + r)
        w.close(complete=True)
    for k, (t, a) in enumerate(zip(times, accuracies, strict=True)):
        vt = t if engine == "sim" else np.nan
        run.append_eval(virtual_time=vt, wall_time=t if engine == "mpi" else 0.01 * t, gradients=10 * k,
                        train_loss=1.0 / (k + 1), test_loss=1.5 / (k + 1), test_accuracy=a,
                        consensus_distance=0.1)
    run.set_summary(gradients=10 * len(times), virtual_time=times[-1], wall_s=0.5)
    run.close(complete=True)
    return cfg


def run_python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=60, **kwargs)


# --------------------------------------------------------------------------- schema


def test_schema_names():
    assert schema.agent_filename(3) == "rank-00003.h5"
    assert schema.agent_link_name(1023) == "rank-01023"
    assert [c.name for c in schema.UPDATES] == ["wall_time", "virtual_time", "iteration", "loss", "grad_norm",
                                                "bytes_sent", "messages_sent", "staleness"]
    units = {c.name: c.units for c in schema.UPDATES}
    assert units["staleness"] == "iterations" and units["wall_time"] == "s"
    assert schema.value_units("compute_s") == "s" and schema.value_units("idle_units") == "time units"


# --------------------------------------------------------------------------- round trips


def test_version_strings_with_nul_are_stored(tmp_path):
    """Open MPI's MPI.Get_library_version() ends in a NUL, which HDF5 strings cannot hold."""
    ompi = "Open MPI v5.0.11, package: Open MPI user@localhost Distribution, ident: 5.0.11\n\0"
    versions = software_versions(ompi)
    assert versions["mpi_library"] == "Open MPI v5.0.11, package: Open MPI user@localhost Distribution, ident: 5.0.11"
    A, W = ring(2)
    versions["other"] = "a\0b"  # NULs anywhere in any stored string
    with RunWriter(tmp_path / "r", config_toml="", engine="mpi", n_agents=2, adjacency=A, weights=W,
                   versions=versions) as run:
        run.close(complete=True)
    run = open_run(tmp_path / "r")
    assert run.versions["mpi_library"] == versions["mpi_library"] and run.versions["other"] == "ab"


def test_round_trip_simulator_style(tmp_path):
    out = tmp_path / "sim-run"
    n = 12
    hosts = [f"node{i}" for i in range(n)]
    cfg = make_run(out, n_agents=n, rows=23, keep_open=False, buffer_rows=5, hosts=hosts)
    run = open_run(out)
    assert run.name == "sim-run" and run.engine == "sim" and run.complete and run.n_agents == n
    assert run.config == cfg.to_dict() and run.config_toml == cfg.to_toml()
    assert run.algorithm == "adsgd" and run.case == "1" and run.target_accuracy == 0.9
    A, W = ring(n)
    np.testing.assert_array_equal(run.adjacency, A)
    np.testing.assert_array_equal(run.weights, W)
    assert run.versions["mpi_library"] == "Test MPI 1.0"
    assert "numpy" in run.versions and "h5py" in run.versions
    assert run.hosts == hosts
    assert run.summary == {"gradients": 30, "virtual_time": 2.0, "wall_s": 0.5}
    np.testing.assert_array_equal(run.evaluations["test_accuracy"], [0.1, 0.5, 0.95])
    np.testing.assert_array_equal(run.evaluations["gradients"], [0, 10, 20])
    assert run.evaluations["gradients"].dtype == np.int64
    for r in range(n):
        agent = run.agent(r)
        assert agent["status"] == "complete" and agent["error"] is None
        expected = np.array(agent_rows(r, 23), dtype=schema.row_dtype(schema.UPDATES))
        for c in schema.UPDATES:
            np.testing.assert_array_equal(agent[c.name], expected[c.name])
            assert agent[c.name].dtype == np.dtype(c.dtype)
        assert agent["timings"] == {"compute_s": 1.5 + r, "mix_s": 0.25, "communicate_s": 0.5, "idle_s": 0.0,
                                    "compute_units": 10.0}
        np.testing.assert_array_equal(agent["final_model"], np.arange(4.0) + r)
        assert agent["attrs"]["algorithm"] == "adsgd" and agent["attrs"]["rank"] == r
        assert agent["attrs"]["seed"] == 7
    with h5py.File(out / "rank-00002.h5", "r") as f:  # closed cleanly: plain read works too
        assert f["updates/staleness"].attrs["units"] == "iterations"
        assert f["timings/compute_s"].attrs["units"] == "s"
        assert f["timings/compute_units"].attrs["units"] == "time units"
        assert all("units" in f["updates"][c.name].attrs for c in schema.UPDATES)


def test_external_links_resolve(tmp_path):
    make_run(tmp_path / "r", n_agents=3, rows=4)
    with h5py.File(tmp_path / "r" / "run.h5", "r", swmr=True) as f:
        assert set(f["agents"]) == {"rank-00000", "rank-00001", "rank-00002"}
        link = f["agents"].get("rank-00001", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == "rank-00001.h5"
        np.testing.assert_array_equal(f["agents/rank-00001/updates/iteration"][()], [1, 2, 3, 4])
        assert f["evaluations/test_accuracy"].attrs["units"] == "fraction"
        assert f["config"].attrs["toml"].startswith("[run]")


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def test_identical_inputs_identical_datasets(tmp_path):
    make_run(tmp_path / "a" / "same", n_agents=2, rows=9)
    make_run(tmp_path / "b" / "same", n_agents=2, rows=9)
    for name in ("run.h5", "rank-00000.h5", "rank-00001.h5"):
        a, b = _datasets(tmp_path / "a" / "same" / name), _datasets(tmp_path / "b" / "same" / name)
        assert a.keys() == b.keys() and a
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")


def test_writer_buffering_flush_and_close(tmp_path):
    w = AgentWriter(tmp_path / "x.h5", 0, attrs={"algorithm": "dsgd"}, keep_open=True, buffer_rows=4)
    for row in agent_rows(0, 6):
        w.append(*row)
    assert read_agent_file(w.path, 0)["iteration"].tolist() == [1, 2, 3, 4]  # one full buffer written
    w.flush()
    agent = read_agent_file(w.path, 0)
    assert agent["iteration"].tolist() == [1, 2, 3, 4, 5, 6] and agent["status"] == "partial"
    w.close(complete=True)
    w.close(complete=False)  # idempotent: the first close wins
    assert read_agent_file(w.path, 0)["status"] == "complete"
    with pytest.raises(RuntimeError):
        w.append(*agent_rows(0, 1)[0])


def test_keyword_append_matches_schema(tmp_path):
    """The simulator calls append(**row) and append_eval(**row) with the schema's names."""
    w = AgentWriter(tmp_path / "k.h5", 0, attrs={"algorithm": "adsgd"}, keep_open=False)
    w.append(**dict(zip(schema.UPDATE_NAMES, agent_rows(0, 1)[0], strict=True)))
    w.close(complete=True)
    assert read_agent_file(tmp_path / "k.h5", 0)["bytes_sent"].tolist() == [100]


def test_agent_writer_before_run_writer(tmp_path):
    """An MPI rank may open its file before rank 0 has created the run directory."""
    out = tmp_path / "not-yet" / "run"
    w = AgentWriter(out, 3, attrs={"algorithm": "adsgd"})
    assert w.path == out / "rank-00003.h5" and w.path.exists()
    w.close(complete=True)


# --------------------------------------------------------------------------- live reading and crashes

LIVE_WRITER = """
    import sys
    from pathlib import Path
    import numpy as np
    from hpcasync.results.writer import AgentWriter, RunWriter
    out = Path(sys.argv[1])
    run = RunWriter(out, config_toml='[run]\\nname = "live"\\n', engine="mpi", n_agents=1,
                    adjacency=np.zeros((1, 1)), weights=np.ones((1, 1)), versions={})
    w = AgentWriter(out, 0, attrs={"algorithm": "adsgd"}, keep_open=True, buffer_rows=1000)
    for step in range(3):
        for k in range(10):
            i = 10 * step + k
            w.append(float(i), float("nan"), i, 0.5, 1.0, 8 * i, i, 0.0)
        w.flush()
        run.append_eval(wall_time=float(step), gradients=10 * (step + 1), test_accuracy=0.3 * step)
        print(step, flush=True)
        sys.stdin.readline()
    w.close(complete=True)
    run.close(complete=True)
"""


def test_swmr_reader_follows_running_writer(tmp_path):
    out = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LIVE_WRITER), str(out)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for step in range(3):
            assert proc.stdout.readline().strip() == str(step)
            run = open_run(out)  # both files are open for SWMR writing right now
            assert not run.complete and run.engine == "mpi"
            assert run.evaluations["gradients"].tolist() == [10 * (s + 1) for s in range(step + 1)]
            agent = run.agent(0)
            assert agent["status"] == "partial"
            assert agent["iteration"].tolist() == list(range(10 * (step + 1)))
            assert np.isnan(agent["virtual_time"]).all()
            proc.stdin.write("\n")
            proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    run = open_run(out)
    assert run.complete and run.agent(0)["status"] == "complete" and run.agent(0)["iteration"].size == 30


KILLED_WRITER = """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from hpcasync.results.writer import AgentWriter, RunWriter
    out, keep_open = Path(sys.argv[1]), sys.argv[2] == "1"
    run = RunWriter(out, config_toml="", engine="mpi", n_agents=2, adjacency=np.ones((2, 2)) - np.eye(2),
                    weights=np.full((2, 2), 0.5), versions={})
    w = AgentWriter(out, 0, attrs={"algorithm": "adsgd"}, keep_open=keep_open, buffer_rows=64)
    for i in range(100):
        w.append(0.1 * i, float(i), i, 1.0, 1.0, i, i, 0.0)
    w.flush()
    run.append_eval(wall_time=1.0, gradients=100, test_accuracy=0.5)
    for i in range(100, 105):
        w.append(0.1 * i, float(i), i, 1.0, 1.0, i, i, 0.0)  # buffered only: lost on kill
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("keep_open", [True, False])
def test_sigkill_leaves_readable_files(tmp_path, keep_open):
    out = tmp_path / "killed"
    proc = run_python(KILLED_WRITER, str(out), "1" if keep_open else "0")
    assert proc.returncode == -9, proc.stderr
    run = open_run(out)
    assert not run.complete
    assert run.evaluations["gradients"].tolist() == [100]
    agent = run.agent(0)
    assert agent["status"] == "partial" and "not closed cleanly" in agent["error"]
    assert agent["iteration"].tolist() == list(range(100))
    np.testing.assert_array_equal(agent["wall_time"], 0.1 * np.arange(100))
    assert run.agent(1)["status"] == "missing" and run.agent(1)["iteration"].size == 0
    # analysis copes with the partial run
    assert analysis.staleness_summary(run)["count"] == 100
    assert analysis.bytes_per_update(run)["per_agent"][0] == pytest.approx(99 / 99)


# --------------------------------------------------------------------------- errors


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=rf"output directory {blocker}/run: not writable"):
        RunWriter(blocker / "run", config_toml="", engine="sim", n_agents=1, adjacency=np.zeros((1, 1)),
                  weights=np.ones((1, 1)), versions={})
    with pytest.raises(UserError, match="exists and is not a directory"):
        AgentWriter(blocker / "rank-00000.h5", 0, attrs={"algorithm": "x"})


def test_open_run_errors(tmp_path):
    with pytest.raises(UserError, match=rf"run directory {tmp_path}/nope: does not exist"):
        open_run(tmp_path / "nope")
    with pytest.raises(UserError, match="not a run"):
        open_run(tmp_path)
    (tmp_path / "run.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="cannot be read"):
        open_run(tmp_path)


def test_refuses_overwrite_when_asked(tmp_path):
    make_run(tmp_path / "r", n_agents=2, rows=1)
    with pytest.raises(UserError, match="already holds a run"):
        RunWriter(tmp_path / "r", config_toml="", engine="sim", n_agents=1, adjacency=np.zeros((1, 1)),
                  weights=np.ones((1, 1)), versions={}, overwrite=False)


# --------------------------------------------------------------------------- analysis


def test_time_to_target():
    t, a = [0, 2, 4, 6, 8], [0.1, 0.5, 0.8, 0.95, 0.97]
    assert analysis.time_to_target(t, a, 0.9) == 6.0
    assert analysis.time_to_target(t, a, 0.9, interpolate=True) == pytest.approx(4 + 2 * 0.1 / 0.15)
    assert analysis.time_to_target(t, a, 0.1, interpolate=True) == 0.0
    assert analysis.time_to_target(t, a, 0.99) is None
    assert analysis.time_to_target([0, 1, 2], [np.nan, 0.95, 0.2], 0.9) == 1.0
    assert analysis.time_to_target([], [], 0.9) is None


def test_staleness_rates_bytes(tmp_path):
    make_run(tmp_path / "r", n_agents=2, rows=6, engine="mpi", times=[0, 1], accuracies=[0.1, 0.2])
    run = open_run(tmp_path / "r")
    st = analysis.staleness_summary(run)
    assert st["count"] == 12 and st["max"] == 2.0 and st["mean"] == pytest.approx(1.0)
    rates = analysis.gradient_rates(run, "wall_time")
    # agent r's last row: iteration 6 at wall time 2.5 + r
    np.testing.assert_allclose(rates["per_agent"], [6 / 2.5, 6 / 3.5])
    assert rates["units"] == "gradients/s"
    b = analysis.bytes_per_update(run)
    np.testing.assert_allclose(b["per_agent"], [100.0, 100.0])
    assert b["mean"] == 100.0 and b["messages_per_update"] == 2.0 and b["total_bytes"] == 1200


# --------------------------------------------------------------------------- report

CURVES = {  # name: (algorithm, case, times, accuracies); target 0.9 is reached at the marked time
    "adsgd-c1": ("adsgd", 1, [0, 2, 4, 6, 8], [0.1, 0.5, 0.8, 0.95, 0.97]),  # 6
    "dsgd-c1": ("dsgd", 1, [0, 3, 6, 9, 12, 15], [0.1, 0.3, 0.6, 0.85, 0.92, 0.93]),  # 12 -> ratio 2
    "rfast-c1": ("rfast", 1, [0, 5, 10], [0.1, 0.2, 0.3]),  # never
    "adsgd-c3": ("adsgd", 3, [0, 4, 8], [0.2, 0.91, 0.99]),  # 4
    "adpsgd-c3": ("adpsgd", 3, [0, 1, 2, 3], [0.2, 0.5, 0.7, 0.9]),  # 3 -> ratio 0.75
}


@pytest.fixture
def sweep(tmp_path) -> Path:
    parent = tmp_path / "sweep"
    for name, (alg, case, t, a) in CURVES.items():
        make_run(parent / name, algorithm=alg, case=case, times=t, accuracies=a, n_agents=2, rows=3)
    return parent


def test_report_two_runs(tmp_path, capsys):
    for name in ("adsgd-c1", "dsgd-c1"):
        alg, case, t, a = CURVES[name]
        make_run(tmp_path / name, algorithm=alg, case=case, times=t, accuracies=a, n_agents=2, rows=3)
    out = tmp_path / "report"
    result = make_report([tmp_path / "adsgd-c1", tmp_path / "dsgd-c1"], out, target=None, time_key=None)
    assert result["target"] == 0.9 and result["time_key"] == "virtual_time"
    for png in ("loss.png", "accuracy.png", "time_to_target.png"):
        assert (out / png).stat().st_size > 1000 and (out / png).read_bytes()[:4] == b"\x89PNG"
    with open(out / "table.csv") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert float(rows["adsgd-c1"]["time_to_target"]) == 6.0
    assert float(rows["adsgd-c1"]["ratio_to_adsgd"]) == 1.0
    assert float(rows["dsgd-c1"]["time_to_target"]) == 12.0
    assert float(rows["dsgd-c1"]["ratio_to_adsgd"]) == 2.0
    assert float(rows["dsgd-c1"]["final_test_accuracy"]) == 0.93
    assert float(rows["dsgd-c1"]["final_train_loss"]) == pytest.approx(1 / 6)
    assert rows["dsgd-c1"]["total_gradients"] == "60"
    md = (out / "table.md").read_text()
    assert md.startswith("| name |") and md in capsys.readouterr().out


def test_report_folder_of_runs_with_unreached_target(sweep, tmp_path):
    assert [p.name for p in find_runs([sweep])] == sorted(CURVES)
    result = make_report([sweep], tmp_path / "rep", target=0.9, time_key="virtual", echo=False)
    by_name = {r["name"]: r for r in result["table"]}
    assert by_name["rfast-c1"]["time_to_target"] is None and by_name["rfast-c1"]["ratio_to_adsgd"] is None
    assert by_name["adpsgd-c3"]["ratio_to_adsgd"] == pytest.approx(0.75)
    assert by_name["adsgd-c3"]["case"] == "3"
    assert "not reached" in result["markdown"]
    assert (tmp_path / "rep" / "time_to_target.png").exists()


def test_report_mixed_engines_uses_each_runs_axis(tmp_path):
    make_run(tmp_path / "sim", times=[0, 10, 20], accuracies=[0.1, 0.5, 0.95])
    make_run(tmp_path / "mpi", engine="mpi", times=[0, 1, 2], accuracies=[0.1, 0.95, 0.99])
    result = make_report([tmp_path / "sim", tmp_path / "mpi"], tmp_path / "rep", echo=False)
    by_name = {r["name"]: r for r in result["table"]}
    assert by_name["sim"]["time_key"] == "virtual_time" and by_name["sim"]["time_to_target"] == 20.0
    assert by_name["mpi"]["time_key"] == "wall_time" and by_name["mpi"]["time_to_target"] == 1.0
    # each is its own ADSGD reference: different axes are never compared
    assert by_name["sim"]["ratio_to_adsgd"] == 1.0 and by_name["mpi"]["ratio_to_adsgd"] == 1.0


def test_report_missing_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        make_report([tmp_path / "missing"], tmp_path / "out", target=0.9, time_key=None)
    with pytest.raises(UserError, match="not a run"):
        make_report([tmp_path], tmp_path / "out", target=0.9, time_key=None)


# --------------------------------------------------------------------------- CLI


def test_cli_report_bad_path(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and err.startswith("hpcasync report: error:")


def test_cli_report(sweep, tmp_path, capsys):
    out = tmp_path / "cli-out"
    assert main(["report", str(sweep), "--out", str(out), "--target", "0.9", "--time", "virtual"]) == 0
    assert (out / "table.csv").exists() and (out / "loss.png").exists()
    assert "| adsgd-c1 |" in capsys.readouterr().out
    assert main(["report", str(sweep / "adsgd-c1")]) == 0  # default --out: RUN_DIR/report
    assert (sweep / "adsgd-c1" / "report" / "accuracy.png").exists()
    assert main(["report", str(sweep), "--out", str(out), "--target", "1.5"]) == 2


def test_cli_report_unwritable_out(sweep, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", str(sweep), "--out", str(blocker / "x")]) == 2
    assert f"output directory {blocker}/x: not writable" in capsys.readouterr().err


def test_missing_agent_file_is_marked(tmp_path):
    make_run(tmp_path / "r", n_agents=3, rows=5)
    os.remove(tmp_path / "r" / "rank-00001.h5")
    run = open_run(tmp_path / "r")
    assert run.agent_status() == {0: "complete", 1: "missing", 2: "complete"}
    assert np.isnan(analysis.gradient_rates(run)["per_agent"][1])
    assert analysis.staleness_summary(run)["count"] == 10
