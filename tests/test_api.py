"""The Python API: load_config, simulate (in memory or to HDF5), open_run, sweep, and the example script."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hpcasync
from hpcasync.config import Config
from hpcasync.errors import UserError
from tests.conftest import SMALL

ROOT = Path(__file__).resolve().parents[1]
SHORT = {**SMALL, "budget": {"time": 12.0}, "eval": {"interval": 3.0}}


def _same_except_wall(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for key in a:
        if key != "wall_time":
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key], equal_nan=True), key


def test_import_is_cheap() -> None:
    code = ("import sys, hpcasync; hpcasync.__version__; "
            "print(sorted(m for m in ('numba', 'mpi4py', 'torch', 'h5py', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_load_config_from_dict_file_and_object(tmp_path: Path) -> None:
    from_dict = hpcasync.load_config(SHORT, overrides={"algorithm.alpha": 0.02, "topology.shape": [3, 3]})
    path = tmp_path / "c.toml"
    path.write_text(from_dict.to_toml())
    from_file = hpcasync.load_config(path)
    from_strings = hpcasync.load_config(SHORT, overrides=["algorithm.alpha=0.02", "topology.shape=[3, 3]"])
    assert from_dict.to_dict() == from_file.to_dict() == from_strings.to_dict()
    assert from_dict.algorithm.alpha == 0.02
    assert hpcasync.load_config(path, overrides={"run.name": "x y"}).run.name == "x y"
    copy = hpcasync.load_config(from_dict)
    assert copy is not from_dict and copy.to_dict() == from_dict.to_dict()


@pytest.mark.parametrize(("section", "field", "value", "match"), [
    ("algorithm", "alpha", -1.0, "algorithm.alpha: expected > 0, got -1.0"),
    ("algorithm", "alpha", "big", "algorithm.alpha: expected a number"),
    ("algorithm", "name", "nope", "algorithm.name: unknown name 'nope'"),
    ("topology", "n", 0, "topology.n: expected >= 1"),
])
def test_a_config_built_in_python_is_validated_like_toml(section: str, field: str, value: object,
                                                         match: str) -> None:
    cfg = Config()
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(UserError, match=match):
        hpcasync.load_config(cfg)
    with pytest.raises(UserError, match=match):
        hpcasync.simulate(cfg)  # simulate validates what it is given


def test_bad_overrides() -> None:
    with pytest.raises(UserError, match="expected a key 'section.field'"):
        hpcasync.load_config(SHORT, overrides={"alpha": 1})
    with pytest.raises(UserError, match="unknown field algorithm.alfa"):
        hpcasync.load_config(SHORT, overrides={"algorithm.alfa": 1})


def test_simulate_in_memory_writes_nothing_and_matches_the_files(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = hpcasync.load_config(SHORT)
    mem = hpcasync.simulate(cfg)
    assert list(tmp_path.iterdir()) == [] and mem.out is None
    disk = hpcasync.simulate(cfg, out=tmp_path / "run")
    assert disk.out == tmp_path / "run"
    _same_except_wall(mem.evaluations, disk.evaluations)
    assert np.array_equal(mem.models, disk.models) and mem.models.shape == (9, 650)
    assert mem.summary["gradients"] == disk.summary["gradients"] > 0
    run = hpcasync.open_run(tmp_path / "run")
    _same_except_wall(mem.evaluations, run.evaluations)
    assert np.array_equal(run.final_models(), mem.models)
    for i in range(9):
        assert len(mem.updates[i]["loss"]) > 0
        _same_except_wall(mem.updates[i], run.updates(i))
    np.testing.assert_allclose(mem.average_model, mem.models.mean(axis=0))


def test_dataframes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = hpcasync.simulate(SHORT, out=tmp_path / "run")
    run = hpcasync.open_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(UserError, match="pandas is not installed"):
        run.to_pandas()
    monkeypatch.undo()
    pd = pytest.importorskip("pandas")
    frame = run.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert np.array_equal(frame["train_loss"].to_numpy(), run.evaluations["train_loss"])
    updates = res.updates_frame()
    assert list(updates.columns[:2]) == ["agent", "wall_time"]
    assert len(updates) == sum(len(u["loss"]) for u in res.updates)
    assert sorted(set(updates["agent"])) == list(range(9))
    assert len(run.updates_frame()) == len(updates)


def test_sweep(tmp_path: Path) -> None:
    base = hpcasync.load_config(SHORT, overrides={"budget.time": 6.0})
    (tmp_path / "base.toml").write_text(base.to_toml())
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent("""\
        [base]
        config = "base.toml"
        [sweep]
        "algorithm.name" = ["adsgd", "dsgd"]
        """))
    import hpcasync.sweep as module  # the submodule is the package attribute once imported: it stays callable

    assert hpcasync.sweep is module
    result = hpcasync.sweep(path, out=tmp_path / "runs", echo=lambda _: None)
    assert result.ok and len(result.done) == 2
    again = hpcasync.sweep(path, out=tmp_path / "runs", echo=lambda _: None)
    assert len(again.skipped) == 2 and not again.done
    names = sorted(hpcasync.open_run(p.parent).algorithm for p in (tmp_path / "runs").rglob("run.h5"))
    assert names == ["adsgd", "dsgd"]


def test_example_script_runs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "api_quickstart.py"), "--time", "10",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "LocalSGDWithAveraging: test_accuracy" in out.stdout
    assert hpcasync.open_run(tmp_path / "run").algorithm == "adsgd"
