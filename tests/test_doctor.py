"""``mpi.progress`` and ``hpcasync doctor``: the config field, the probe's pairing, the verdicts
(pure functions, no MPI job), and the doctor end to end under the venv's mpiexec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpcasync.config import from_dict
from hpcasync.engines.mpi.doctor import Diagnosis, family, library_version, one_sided_component, verdict
from hpcasync.engines.mpi.probe import Measurement, probe_pairs
from hpcasync.errors import UserError

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
HPCASYNC = BIN / "hpcasync"
needs_mpiexec = pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to this Python")

OMPI = "Open MPI v4.1.4, package: Debian OpenMPI, ident: 4.1.4, repo rev: v4.1.4, May 26, 2022\x00"
MPICH = "MPICH Version:      5.0.2\nMPICH Release date: unreleased\nMPICH Device:       ch4:ofi\n"


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "off", "thread"])
def test_progress_modes_are_accepted(mode: str) -> None:
    assert from_dict({"mpi": {"progress": mode}}).mpi.progress == mode


def test_progress_default_is_auto() -> None:
    assert from_dict({}).mpi.progress == "auto"


@pytest.mark.parametrize("bad", ["threads", "", 1, True])
def test_bad_progress_is_a_user_error_naming_the_field(bad: object) -> None:
    from hpcasync.config import validate

    with pytest.raises(UserError, match="mpi.progress"):
        validate(from_dict({"mpi": {"progress": bad}}))


# -- the probe's pairing -----------------------------------------------------------------------


@pytest.mark.parametrize("size", range(2, 12))
def test_probe_pairs_make_every_rank_a_target_and_an_origin(size: int) -> None:
    targets_seen: set[int] = set()
    origins_seen: set[int] = set()
    for phase in (0, 1):
        pairs = probe_pairs(size, phase)
        targets = {t for ts in pairs.values() for t in ts}
        assert targets == {r for r in range(size) if r % 2 == phase}  # every sleeper is probed
        for origin, ts in pairs.items():
            assert origin % 2 != phase and ts  # a target never pushes in its phase
            assert all(abs(origin - t) == 1 for t in ts)
        origins_seen |= set(pairs)
        targets_seen |= targets
    assert origins_seen == targets_seen == set(range(size))


# -- identification and verdicts -----------------------------------------------------------------


def test_library_version_drops_the_nul_byte() -> None:
    assert library_version(OMPI).endswith("2022") and "\x00" not in library_version(OMPI)


def test_component_from_the_environment() -> None:
    assert family(OMPI) == "openmpi" and family(MPICH) == "mpich"
    assert one_sided_component(OMPI, {"OMPI_MCA_osc": "ucx"}).startswith("osc ucx")
    assert one_sided_component(OMPI, {}).startswith("osc default")
    assert one_sided_component(MPICH, {}) == "ch4:ofi"
    assert "NOLOCAL" in one_sided_component(MPICH, {"MPIR_CVAR_NOLOCAL": "1"})


def _m(publish_ms: float, thread: bool = False, lost: int = 0) -> Measurement:
    return Measurement(publish_s=publish_ms / 1e3, accumulate_s=1e-5, drain_s=1e-5, push_total_s=publish_ms / 1e3,
                       sleep_s=0.5, ops=20, lost=lost, progress_thread=thread)


def _d(off: Measurement, thread: Measurement | None, version: str = OMPI, progress: str | None = None) -> Diagnosis:
    return Diagnosis(version=version, component="x", thread_level="MPI_THREAD_MULTIPLE", multiple=thread is not None,
                     size=2, off=off, thread=thread, config_progress=progress)


def test_verdict_ok_when_nothing_waits() -> None:
    v, fix = verdict(_d(_m(0.1), _m(0.1, True)))
    assert v.startswith("OK") and "none needed" in fix


def test_verdict_names_the_thread_when_it_fixes_the_wait() -> None:
    v, fix = verdict(_d(_m(480.0), _m(0.2, True)))
    assert v.startswith("WAITS") and 'mpi.progress = "thread"' in fix and "--mca osc sm" in fix
    _, fix = verdict(_d(_m(480.0), _m(0.2, True), version=MPICH, progress="off"))
    assert fix.startswith('your config has mpi.progress = "off"') and "--mca" not in fix


def test_verdict_without_thread_multiple_or_when_the_thread_does_not_help() -> None:
    v, fix = verdict(_d(_m(480.0), None))
    assert "MPI_THREAD_SERIALIZED" in v and "MPI4PY_RC_THREAD_LEVEL" in fix and "--mca osc sm" in fix
    v, fix = verdict(_d(_m(480.0), _m(470.0, True), version=MPICH))
    assert "does not fix" in v and "MPIR_CVAR_ASYNC_PROGRESS" in fix


def test_verdict_on_lost_values() -> None:
    assert verdict(_d(_m(0.1, lost=1), _m(0.1, True)))[0].startswith("BROKEN")


# -- the command ------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    import os

    e = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        e[var] = "1"
    return e


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


@needs_mpiexec
def test_doctor_under_mpiexec_ends_with_a_verdict_and_a_fix(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mpi]\nprogress = "thread"\n')
    p = _run([str(MPIEXEC), "-n", "2", str(HPCASYNC), "doctor", str(cfg), "--sleep", "0.1", "--ops", "3"])
    lines = p.stdout.splitlines()
    assert p.returncode in (0, 1), p.stderr
    assert lines[0].startswith("MPI library:") and "\x00" not in p.stdout
    assert any(line.startswith("thread level:") for line in lines)
    assert any(line.lstrip().startswith("off ") for line in lines)
    assert lines[-2].startswith("verdict: ") and lines[-1].startswith("fix: ")
    assert p.stdout.count("verdict:") == 1  # rank 0 alone prints


@pytest.mark.parametrize("args, needle", [
    (["--sleep", "nan"], "--sleep"),
    (["--sleep", "0"], "--sleep"),
    (["--ops", "0"], "--ops"),
    (["--set", "mpi.progress=\"off\""], "--set needs a CONFIG"),
])
def test_doctor_bad_arguments_are_one_line_errors(args: list[str], needle: str) -> None:
    p = _run([str(HPCASYNC), "doctor", *args], timeout=60)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_doctor_on_one_rank_says_how_to_start_it() -> None:
    p = _run([str(HPCASYNC), "doctor"], timeout=60)
    assert p.returncode == 2 and "at least 2 ranks" in p.stderr and "Traceback" not in p.stderr


def test_doctor_bad_config_progress_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mpi]\nprogress = "sometimes"\n')
    p = _run([str(HPCASYNC), "doctor", str(cfg)], timeout=60)
    assert p.returncode == 2 and "mpi.progress" in p.stderr and "Traceback" not in p.stderr


RUN_CONFIG = """
[run]
name = "progress"
seed = 1
[algorithm]
name = "{alg}"
alpha = 0.05
batch_size = 32
[topology]
name = "ring"
n = 2
[data]
name = "digits"
[problem]
name = "softmax"
[delays]
model = "case"
case = 5
straggler = 1
[budget]
time = 1.0
[eval]
interval = 0.2
[mpi]
time_unit = 0.002
monitor = true
flush_interval = 0.25
progress = "{progress}"
"""


@needs_mpiexec
@pytest.mark.parametrize("alg, progress", [("adsgd", "thread"), ("adsgd-delta", "auto")])
def test_run_with_the_progress_thread_ends_cleanly(tmp_path: Path, alg: str, progress: str) -> None:
    """2 agents + monitor with the thread on every rank: exit 0, every file complete, no hang at finalize."""
    from hpcasync.results.reader import open_run

    cfg = tmp_path / "c.toml"
    cfg.write_text(RUN_CONFIG.format(alg=alg, progress=progress))
    p = _run([str(MPIEXEC), "-n", "3", str(HPCASYNC), "run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    assert p.returncode == 0, p.stderr
    m = open_run(tmp_path / "out")
    assert m.complete and "\x00" not in m.versions["mpi_library"]
    for a in m.agents():
        assert a["status"] == "complete" and a["iteration"].size > 0


def test_verdict_when_no_window_can_be_created() -> None:
    d = _d(_m(0.1), None)
    d.off, d.error = None, "MPI_ERR_WIN: invalid window"
    v, fix = verdict(d)
    assert v.startswith("BROKEN") and "MPI_ERR_WIN" in v and "MPI4PY_RC_THREAD_LEVEL=serialized" in fix
