"""Live progress of MPI runs (hpcasync/engines/mpi/status.py): the reporter alone, then real runs."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

from hpcasync.engines.mpi.status import StatusReporter, mean_staleness, status_line
from tests.test_mpi_cli import mpirun, needs_mpiexec, write_config

LINE = re.compile(r"^hpcasync: (\d+\.\d) s, (\d+) gradients \((\d+)/s\)(, test accuracy (0\.\d{4}))?"
                  r"(, staleness (\d+\.\d\d))?$")


def test_status_line_leaves_out_unknown_figures() -> None:
    assert status_line(60.0, 48213, 803.5, 0.91214, 1.4249) == (
        "hpcasync: 60.0 s, 48213 gradients (804/s), test accuracy 0.9121, staleness 1.42")
    assert status_line(2.0, 10, 5.0, None, math.nan) == "hpcasync: 2.0 s, 10 gradients (5/s)"
    assert mean_staleness([1.0, math.nan, 3.0]) == 2.0 and math.isnan(mean_staleness([math.nan]))


def test_batch_log_gets_one_line_per_interval() -> None:
    out = io.StringIO()
    rep = StatusReporter(10.0, 100.0, 0, "x", stream=out, tty=False)
    for wall in [0.5, 9.9, 10.0, 10.5, 19.0, 45.0, 46.0]:  # due at 10, 20 (late: 45), then 50
        rep.update(wall, 100 * wall, 0.5, 1.0)
    rep.close()
    lines = out.getvalue().splitlines()
    assert [LINE.match(ln).group(1) for ln in lines] == ["10.0", "45.0"]  # type: ignore[union-attr]
    assert rep.lines == 2


def test_interval_zero_is_silent_and_a_terminal_gets_a_bar() -> None:
    out = io.StringIO()
    rep = StatusReporter(0.0, 100.0, 0, "x", stream=out, tty=False)
    rep.update(50.0, 10, 0.5, 1.0)
    assert out.getvalue() == ""
    bar = io.StringIO()
    rep = StatusReporter(1.0, 10.0, 0, "demo [adsgd]", stream=bar, tty=True)
    rep.update(5.0, 200, 0.75, 0.5)
    rep.close()
    text = bar.getvalue()
    assert "demo [adsgd]" in text and "acc=0.7500" in text and "hpcasync:" not in text


def _status_lines(stderr: str) -> list[re.Match[str]]:
    found = [LINE.match(ln) for ln in stderr.splitlines() if ln.startswith("hpcasync: ")]
    assert all(m is not None for m in found), stderr
    return [m for m in found if m is not None]


@needs_mpiexec
def test_monitor_reports_accuracy_and_staleness(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", budget={"time": 3.0}, mpi={"status_interval": 0.5})
    res = mpirun(5, str(cfg), "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    lines = _status_lines(res.stderr)
    assert len(lines) >= 3, res.stderr
    grads = [int(m.group(2)) for m in lines]
    assert grads == sorted(grads) and grads[-1] > 0
    assert all(m.group(5) is not None for m in lines)  # test accuracy of the average model
    stale = [float(m.group(7)) for m in lines if m.group(7) is not None]
    assert stale and all(0.0 <= s < 100 for s in stale)  # ADSGD mixes stale copies


@needs_mpiexec
def test_rank0_reports_without_monitor_and_quiet_silences(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", budget={"time": 2.0},
                       mpi={"status_interval": 0.5, "monitor": False})
    res = mpirun(4, str(cfg), "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    lines = _status_lines(res.stderr)
    assert len(lines) >= 2 and all(m.group(5) is None for m in lines), res.stderr  # no average-model eval
    quiet = mpirun(4, str(cfg), "--out", str(tmp_path / "q"), "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith("hpcasync: ")], quiet.stderr
