"""`hpcasync sweep`: expansion of a sweep file, validation before any run, parallel runs, resume, failures."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import h5py
import pytest

from hpcasync import config as config_mod
from hpcasync.cli.main import main
from hpcasync.errors import UserError
from hpcasync.results.reader import open_run
from hpcasync.sweep import DONE, NEW, PARTIAL, STALE, load_sweep, render_name, run_status, run_sweep

# a run of this base takes well under a second
BASE = """\
[run]
seed = 1
[algorithm]
name = "adsgd"
alpha = 0.05
batch_size = 16
[topology]
name = "grid"
n = 4
shape = [2, 2]
[data]
name = "digits"
[delays]
model = "case"
case = 1
straggler = 0
[budget]
time = 12.0
[eval]
interval = 4.0
target_accuracy = 0.5
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    (tmp_path / "base.toml").write_text(BASE)
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def sweep_file(tmp_path: Path, body: str, options: str = "") -> Path:
    return write(tmp_path, f"""\
        [base]
        config = "base.toml"
        {body}
        [sweep.options]
        out = "{tmp_path / 'runs'}"
        {options}
        """)


# --------------------------------------------------------------------------- expansion


def test_cartesian_product_names_and_configs(tmp_path):
    path = sweep_file(tmp_path, """
        [sweep]
        "algorithm.name" = ["adsgd", "dsgd"]
        delays.case = [1, 3, 5]
        """, 'name = "{algorithm.name}-c{delays.case}-a{algorithm.alpha:.2f}"')
    sweep = load_sweep(path)
    assert [r.name for r in sweep.runs] == ["adsgd-c1-a0.05", "adsgd-c3-a0.05", "adsgd-c5-a0.05",
                                            "dsgd-c1-a0.05", "dsgd-c3-a0.05", "dsgd-c5-a0.05"]
    run = sweep.runs[4]
    assert run.config.algorithm.name == "dsgd" and run.config.delays.case == 3
    assert run.config.topology.n == 4 and run.config.budget.time == 12.0  # from the base file
    assert run.config.run.name == run.name and run.out_dir == tmp_path / "runs" / run.name
    assert run.values == {"algorithm.name": "dsgd", "delays.case": 3}
    assert sweep.jobs == 2 and sweep.engine == "sim" and sweep.command is None
    assert sweep.axes == [["algorithm.name"], ["delays.case"]]


def test_zip_exclude_inline_base_and_overrides(tmp_path):
    path = write(tmp_path, f"""\
        [base]
        config = "base.toml"
        [base.budget]
        time = 8.0
        [sweep]
        "algorithm.name" = ["adsgd", "adpsgd"]
        [[sweep.zip]]
        topology.n = [2, 3, 4]
        "topology.name" = ["ring", "ring", "ring"]
        "topology.shape" = [[], [], []]
        [[sweep.exclude]]
        "algorithm.name" = "adpsgd"
        "topology.n" = [3]
        [sweep.options]
        out = "{tmp_path / 'o'}"
        jobs = 3
        """)
    sweep = load_sweep(path, ["eval.interval=2.0"])
    assert [r.name for r in sweep.runs] == ["adsgd-n2-ring-shape", "adsgd-n3-ring-shape", "adsgd-n4-ring-shape",
                                            "adpsgd-n2-ring-shape", "adpsgd-n4-ring-shape"]
    assert all(r.config.budget.time == 8.0 and r.config.eval.interval == 2.0 for r in sweep.runs)
    assert sweep.jobs == 3
    # command-line replacements
    again = load_sweep(path, out=str(tmp_path / "elsewhere"), jobs=1, only=["adpsgd-*"])
    assert [r.name for r in again.runs] == ["adpsgd-n2-ring-shape", "adpsgd-n4-ring-shape"]
    assert again.jobs == 1 and again.runs[0].out_dir.parent == tmp_path / "elsewhere"


def test_base_may_be_inline_only(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""\
        [base.topology]
        name = "ring"
        n = 3
        [sweep]
        "run.seed" = [0, 1]
        """))
    sweep = load_sweep(path)
    assert [r.name for r in sweep.runs] == ["seed0", "seed1"]
    assert sweep.out == Path("runs/s")  # default: runs/<sweep file stem>
    assert sweep.runs[1].config.run.seed == 1 and sweep.runs[1].config.topology.n == 3


def test_render_name():
    values = {"data.rho": 0.5, "algorithm.name": "adsgd-delta", "topology.shape": [3, 3]}
    assert render_name("{algorithm.name}-rho{data.rho}-{topology.shape}", values, "x") == "adsgd-delta-rho0.5-3x3"
    assert render_name("r{data.rho:.2f}/x", values, "x") == "r0.50_x"  # no path separators in a name
    with pytest.raises(UserError, match=r"name placeholder \{data.nope\}"):
        render_name("{data.nope}", values, "where")


@pytest.mark.parametrize(("body", "options", "message"), [
    ('[sweep]\n"algorithm.nme" = ["adsgd"]', "", r"\[sweep\] key 'algorithm.nme': unknown field algorithm.nme"),
    ('[sweep]\n"algo.name" = ["adsgd"]', "", r"key 'algo.name': unknown section \[algo\]"),
    ('[sweep]\nalgorithm = ["adsgd"]', "", r"key 'algorithm': expected section.field"),
    ('[sweep]\n"algorithm.name" = "adsgd"', "", r"key 'algorithm.name': expected a non-empty list"),
    ('[sweep]\n"algorithm.name" = []', "", r"key 'algorithm.name': expected a non-empty list"),
    ('[sweep]\n"run.name" = ["a"]', "", r"key 'run.name': set by the sweep"),
    ('[sweep]\n"algorithm.name" = ["adsgd", "nope"]', "",
     r"run \(algorithm.name='nope'\): config field algorithm.name"),
    ('[sweep]\n"algorithm.alpha" = [0.1, -1]', "", r"algorithm.alpha=-1.*expected > 0, got -1.0"),
    ('[[sweep.zip]]\n"delays.case" = [1, 2]\n"run.seed" = [1]', "", r"\[\[sweep.zip\]\] #1: lists differ in length"),
    ('[sweep]\n"delays.case" = [1]\n[[sweep.zip]]\n"delays.case" = [2]', "", "appears on two axes"),
    ('[sweep]\n"delays.case" = [1, 2]', 'name = "fixed"', "get the same name 'fixed'"),
    ('[sweep]\n"delays.case" = [1]', 'engine = "cloud"', r"key 'engine': expected one of sim, mpi"),
    ('[sweep]\n"delays.case" = [1]', "jobs = 0", r"key 'jobs': expected an integer >= 1"),
    ('[sweep]\n"delays.case" = [1]', "colour = 1", r"\[sweep.options\] key 'colour': unknown option"),
    ('[sweep]\n"delays.case" = [1]\n[[sweep.exclude]]\n"delays.case" = 1', "", "every combination is excluded"),
    ('[sweep]\n"algorithm.name" = ["adpsgd"]\n"topology.name" = ["ring"]\n"topology.shape" = [[]]\n'
     '"topology.n" = [3]', 'name = "x"', r"run x: algorithm adpsgd: needs a bipartite graph"),
])
def test_bad_sweep_files_fail_before_any_run(tmp_path, body, options, message):
    path = sweep_file(tmp_path, body, options)
    with pytest.raises(UserError, match=message):
        load_sweep(path)
    assert not (tmp_path / "runs").exists()


def test_bad_files_and_report_table(tmp_path):
    with pytest.raises(UserError, match="sweep file .*missing.toml: not found"):
        load_sweep(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_sweep(bad)
    path = write(tmp_path, '[base]\nconfig = "nope.toml"\n[sweep]\n"delays.case" = [1]\n')
    with pytest.raises(UserError, match=r"\[base\] config .*nope.toml: not found"):
        load_sweep(path)
    path = write(tmp_path, '[base]\nconfig = "base.toml"\n[sweeps]\n')
    with pytest.raises(UserError, match=r"unknown table\(s\) sweeps"):
        load_sweep(path)
    path = write(tmp_path, '[base]\nconfig = "base.toml"\n[report]\nsmooth = 4\n')
    with pytest.raises(UserError, match=r"\[report\] key 'smooth': expected an odd number"):
        load_sweep(path)
    path = write(tmp_path, '[base]\nconfig = "base.toml"\n[report]\ntarget = 90\n')
    with pytest.raises(UserError, match=r"\[report\] key 'target'"):
        load_sweep(path)
    path = write(tmp_path, '[base]\nconfig = "base.toml"\n[report]\nsmooth = 3\nxmax = 50\n')
    sweep = load_sweep(path, out=str(tmp_path / "o"))
    assert sweep.report == {"out": tmp_path / "o" / "report", "target": None, "smooth": 3, "xmax": 50.0,
                            "time_key": None, "loss_target": None}


def test_cli_bad_sweep_exit_2_one_line(tmp_path, capsys):
    path = sweep_file(tmp_path, '[sweep]\n"algorithm.nme" = ["adsgd"]')
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hpcasync sweep: error:") and "'algorithm.nme'" in err
    assert main(["sweep", str(path), "--jobs", "0"]) == 2


# --------------------------------------------------------------------------- running


def test_runs_in_parallel_skips_finished_and_reruns_changed(tmp_path, capsys):
    path = sweep_file(tmp_path, '[sweep]\n"algorithm.name" = ["adsgd", "dsgd", "adsgd-delta"]',
                      'name = "{algorithm.name}"\njobs = 2')
    assert main(["sweep", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 runs, 0 already done, 3 to run, 2 at a time" in out and "3 done, 0 skipped, 0 failed" in out
    sweep = load_sweep(path)
    for spec in sweep.runs:
        run = open_run(tmp_path / "runs" / spec.name)
        assert run.complete and run.algorithm == spec.name and run.config["run"]["name"] == spec.name
        # the expanded config is kept, and runs alone with `hpcasync simulate`
        assert config_mod.load(tmp_path / "runs" / "_configs" / f"{spec.name}.toml") == spec.config
    assert [run_status(s) for s in sweep.runs] == [DONE, DONE, DONE]
    # a second call runs nothing
    assert main(["sweep", str(path), "--quiet"]) == 0
    assert "3 already done, 0 to run" in capsys.readouterr().out
    # a changed base config makes every run stale; --dry-run says so and runs nothing
    assert main(["sweep", str(path), "--dry-run", "--set", "budget.time=8.0"]) == 0
    out = capsys.readouterr().out
    assert out.count("stale") == 3 and "3 with a changed config" in out
    changed = load_sweep(path, ["budget.time=8.0"])
    assert [run_status(s) for s in changed.runs] == [STALE] * 3
    result = run_sweep(changed, progress=False, echo=lambda s: None)
    assert len(result.done) == 3 and not result.skipped
    assert open_run(tmp_path / "runs" / "dsgd").config["budget"]["time"] == 8.0


def test_partial_run_is_rerun(tmp_path):
    path = sweep_file(tmp_path, '[sweep]\n"algorithm.name" = ["adsgd"]', 'name = "one"')
    sweep = load_sweep(path)
    assert run_status(sweep.runs[0]) == NEW
    run_sweep(sweep, progress=False, echo=lambda s: None)
    with h5py.File(tmp_path / "runs" / "one" / "run.h5", "r+") as f:
        f.attrs["complete"] = False  # as if killed
    assert run_status(sweep.runs[0]) == PARTIAL
    lines: list[str] = []
    result = run_sweep(sweep, progress=False, echo=lines.append)
    assert [o.name for o in result.done] == ["one"] and "rerun one: it did not finish" in lines
    assert open_run(tmp_path / "runs" / "one").complete


def test_one_failure_does_not_stop_the_others(tmp_path, capsys):
    # mnist with a directory that does not exist passes validation but fails when the run loads its data
    path = sweep_file(tmp_path, '[sweep]\n"run.seed" = [4]\n[[sweep.zip]]\n'
                                '"data.name" = ["digits", "mnist", "digits"]\n'
                                '"data.dir" = ["", "/nonexistent/mnist", "x"]\n"algorithm.alpha" = [0.05, 0.05, 0.02]',
                      'name = "{data.name}-{algorithm.alpha}"\njobs = 2')
    code = main(["sweep", str(path), "--quiet"])
    assert code == 1
    out = capsys.readouterr().out
    failed = [ln for ln in out.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and "mnist-0.05" in failed[0] and "/nonexistent/mnist" in failed[0]
    assert "1 of 3 runs failed:" in out and "2 done, 0 skipped, 1 failed" in out
    assert open_run(tmp_path / "runs" / "digits-0.05").complete
    assert open_run(tmp_path / "runs" / "digits-0.02").complete


def test_serial_and_command_engine(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(textwrap.dedent("""\
        import sys
        from pathlib import Path
        config, out = sys.argv[1], Path(sys.argv[2])
        assert Path(config).is_file()
        if "bad" in out.name:
            print("first line\\nhpcasync launch: error: something broke", file=sys.stderr)
            sys.exit(2)
        print("ran", out.name)
        """))
    path = sweep_file(tmp_path, '[sweep]\n"run.seed" = [1, 2]',
                      f'name = "{{run.seed}}"\njobs = 1\nengine = "mpi"\n'
                      f'command = ["{sys.executable}", "{script}", "{{config}}", "{{out}}"]')
    sweep = load_sweep(path)
    assert sweep.engine == "mpi" and sweep.jobs == 1
    result = run_sweep(sweep, progress=False, echo=lambda s: None)
    assert [o.message for o in result.done] == ["ran 1", "ran 2"]
    # a failing command: its last stderr line is the message
    path = sweep_file(tmp_path, '[sweep]\n"run.seed" = [1]',
                      f'name = "bad{{run.seed}}"\nengine = "mpi"\n'
                      f'command = ["{sys.executable}", "{script}", "{{config}}", "{{out}}"]')
    result = run_sweep(load_sweep(path), progress=False, echo=lambda s: None)
    assert result.failed[0].message == "exit status 2: hpcasync launch: error: something broke"


def test_default_mpi_command_is_hpcasync_launch(tmp_path):
    path = sweep_file(tmp_path, '[sweep]\n"run.seed" = [1]', 'name = "r"\nengine = "mpi"')
    sweep = load_sweep(path)
    assert sweep.jobs == 1
    assert sweep.command[1:] == ["-m", "hpcasync", "launch", "{config}", "--out", "{out}"]
    path = sweep_file(tmp_path, '[sweep]\n"run.seed" = [1]', 'name = "r"\ncommand = "hpcasync simulate {config}"')
    assert load_sweep(path).command == [sys.executable, "-m", "hpcasync", "simulate", "{config}"]


def test_report_after_the_runs_and_report_only(tmp_path, capsys):
    path = sweep_file(tmp_path, '[sweep]\n"algorithm.name" = ["adsgd", "dsgd"]\n"delays.case" = [1, 5]\n'
                                '[report]\nsmooth = 3\ntarget = 0.3',
                      'name = "{algorithm.name}-case{delays.case}"')
    assert main(["sweep", str(path), "--quiet", "--no-report"]) == 0
    assert not (tmp_path / "runs" / "report").exists()
    assert main(["sweep", str(path), "--report-only"]) == 0
    rep = tmp_path / "runs" / "report"
    for name in ("table.csv", "time_to_target.md", "loss_all.png", "accuracy_all.png", "staleness.md",
                 "cases/loss_case5_all.png"):
        assert (rep / name).exists(), name
    assert "report: 4 runs" in capsys.readouterr().out
    nothing = sweep_file(tmp_path, '[sweep]\n"run.seed" = [1]')
    assert main(["sweep", str(nothing), "--report-only"]) == 2


# -- Ctrl-C (SIGINT to the sweep's process group, as a terminal sends it) ------------------------------


def _interrupt_sweep(tmp_path: Path, after: float, wait_for_runs: int,
                     axis: tuple[str, str] = ("run.seed", "[1, 2, 3]"),
                     finished: int = 0) -> tuple[int, str, float, Path]:
    import os
    import signal
    import subprocess
    import time

    (tmp_path / "base.toml").write_text(BASE.replace("time = 12.0", "time = 1e6"))
    (tmp_path / "s.toml").write_text(textwrap.dedent(f"""\
        [base]
        config = "base.toml"
        [sweep]
        "{axis[0]}" = {axis[1]}
        [sweep.options]
        name = "s{{{axis[0]}}}"
        out = "{tmp_path / 'out'}"
        jobs = 2
        """))
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "hpcasync", "sweep", str(tmp_path / "s.toml")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "sweep …: 3 runs, …": the pool starts now
        assert "to run" in first, first
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "out").glob("*/run.h5"))) < wait_for_runs and time.monotonic() < deadline:
            time.sleep(0.05)
        while finished and time.monotonic() < deadline:  # until that many runs' lines are printed
            if "done" in proc.stdout.readline():
                finished -= 1
        time.sleep(after)
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        ended = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err, ended, tmp_path / "out"


@pytest.mark.parametrize(("after", "runs"), [(1.0, 2), (0.0, 0)])
def test_ctrl_c_ends_a_parallel_sweep_cleanly(tmp_path: Path, after: float, runs: int) -> None:
    """Ctrl-C while two runs compute (files marked interrupted, closed) and while the workers start:
    exit 130 within seconds, one line."""
    rc, err, ended, out = _interrupt_sweep(tmp_path, after, runs)
    assert rc == 130 and ended < 30, (rc, ended, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "hpcasync sweep: interrupted", err
    files = list(out.glob("*/*.h5"))
    assert len(files) >= (5 * runs)  # run.h5 + 4 agent files per run that had started
    for p in files:
        with h5py.File(p, "r") as f:  # closed: opens plainly
            assert not bool(f.attrs["complete"]) and f.attrs["interrupted"] == "SIGINT", p


def test_ctrl_c_with_an_idle_worker_prints_no_traceback(tmp_path: Path) -> None:
    """One run finished, its worker waits for work that will not come, the other run computes: the idle
    worker leaves quietly (multiprocessing printed a KeyboardInterrupt traceback), the busy one closes its
    files."""
    rc, err, ended, out = _interrupt_sweep(tmp_path, 0.5, 2, axis=("budget.time", "[12.0, 1e6]"),
                                           finished=1)
    assert rc == 130 and ended < 30, (rc, ended, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "hpcasync sweep: interrupted", err
    runs = {p.parent.name: open_run(p.parent) for p in out.glob("*/run.h5")}
    assert sorted(r.complete for r in runs.values()) == [False, True], err


def test_a_parallel_sweep_runs_from_a_thread(tmp_path: Path) -> None:
    """Only the main thread may install signal handlers: a sweep started from another thread (a notebook's
    worker, a GUI) must not try to."""
    import threading

    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "s.toml").write_text(textwrap.dedent(f"""\
        [base]
        config = "base.toml"
        [sweep]
        "run.seed" = [1, 2]
        [sweep.options]
        name = "s{{run.seed}}"
        out = "{tmp_path / 'out'}"
        jobs = 2
        """))
    result: dict[str, object] = {}

    def go() -> None:
        try:
            result["sweep"] = run_sweep(load_sweep(tmp_path / "s.toml"), echo=lambda s: None, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    t.join(timeout=120)
    assert "error" not in result, result.get("error")
    sweep = result["sweep"]
    assert len(sweep.done) == 2 and not sweep.failed  # type: ignore[attr-defined]
