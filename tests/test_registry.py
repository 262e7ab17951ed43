"""Registries and plug-ins: each algorithm declares what engines, reports and checkpoints need; names
are discovered and validated; a researcher's own classes run by "module:Object" on the simulator."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hpcasync import algorithms
from hpcasync.algorithms import ALGORITHMS, FEATURES, Algorithm
from hpcasync.data import DATASETS
from hpcasync.delays import DELAY_MODELS
from hpcasync.engines.build import check_supported, step_size
from hpcasync.engines.sim.runner import build_simulator
from hpcasync.engines.sim.transport import SimTransport
from hpcasync.errors import UserError
from hpcasync.problems import PROBLEMS
from hpcasync.registry import Registry
from hpcasync.topology import TOPOLOGIES
from tests.conftest import make_config

PLUGINS = Path(__file__).parent / "plugins"
TOY = "hpcasync_toy_plugin"
BUILT_IN = ["adpsgd", "adsgd", "adsgd-delta", "allreduce", "dsgd", "rfast"]


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))


# -- declared capabilities ---------------------------------------------------------------------------


def test_every_algorithm_module_is_discovered() -> None:
    found = {p.stem.replace("_", "-") for p in Path(algorithms.__file__).parent.glob("*.py")
             if p.stem not in ("__init__", "base", "transport") and not p.stem.startswith("_")}
    assert set(algorithms.names()) == found
    assert set(BUILT_IN) <= found


@pytest.mark.parametrize("name", BUILT_IN)
def test_declarations_are_consistent(name: str) -> None:
    cls = algorithms.get(name)
    assert cls.name == name
    assert cls.requires and set(cls.requires) <= set(FEATURES)
    assert cls.payload in ("model", "delta", "none")
    # the payload is the transport state the required features stand for
    assert (cls.payload == "model") == ("push_model" in cls.requires)
    assert (cls.payload == "delta") == ("push_delta" in cls.requires)
    assert cls.mixes_stale_copies or cls.staleness_note
    assert cls.checkpoint_state[:2] == ("x", "iteration")
    check_supported(cls, SimTransport.features, "sim", name)  # the simulator runs everything


def test_capabilities_replace_name_checks() -> None:
    assert algorithms.reference_algorithms() == ("adsgd", "adsgd-delta")
    assert not algorithms.get("dsgd").mixes_stale_copies and algorithms.get("adsgd").mixes_stale_copies
    assert algorithms.get("adpsgd").needs_bipartite and not algorithms.get("adsgd").needs_bipartite
    assert algorithms.get("adsgd-delta").plot_linestyle == "--"
    for name in BUILT_IN:
        cfg = make_config(algorithm={"name": name, "alpha": 0.3})
        expected = 0.3 / 9 if name == "rfast" else 0.3
        assert step_size(cfg, 9).alpha == expected
    cfg = make_config(algorithm={"name": "rfast", "alpha": 0.3, "scale_alpha_by_n": False})
    assert step_size(cfg, 9).alpha == 0.3


def test_engine_refuses_a_missing_feature() -> None:
    from hpcasync.engines.mpi.transport import MpiTransport

    cls = ALGORITHMS.get(f"{TOY}:NeedsControlChannel")
    check_supported(cls, SimTransport.features, "sim", "x")
    with pytest.raises(UserError, match=r"needs transport feature\(s\) send_small, which the mpi engine"):
        check_supported(cls, MpiTransport.features, "mpi", f"{TOY}:NeedsControlChannel")


# -- checkpoint state ----------------------------------------------------------------------------------


def _agents(name: str, budget: float) -> list[Algorithm]:
    """Agents after ``budget`` time units in the simulator (0: as built, before their first step)."""
    sim = build_simulator(make_config(algorithm={"name": name}, budget={"time": max(budget, 1.0)}))
    if budget > 0:
        sim.run()
    return sim.agents


def _equal(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", BUILT_IN)
def test_state_dict_round_trips(name: str) -> None:
    ran = _agents(name, 40.0)  # the straggler (agent 4, 10× slower) steps too
    fresh = _agents(name, 0)
    for a, b in zip(ran, fresh, strict=True):
        state = a.state_dict()
        assert set(state) == set(type(a).checkpoint_state)
        assert all(isinstance(v, np.ndarray | bool | int | float | str | np.generic) for v in state.values())
        b_x = b.x
        b.load_state_dict(state)
        assert b.x is b_x  # restored in place: engine bindings of x survive
        again = b.state_dict()
        assert all(_equal(state[k], again[k]) for k in state), name
        assert a.iteration > 0 and b.iteration == a.iteration
        # copies, not views: the saved state does not follow the running agent
        a.x += 1.0
        assert not np.array_equal(state["x"], a.x)
    if name == "rfast":  # v and σ stay views of the message after a load
        b = fresh[0]
        assert np.shares_memory(b.v, b.message) and np.shares_memory(b.sigma, b.message)
    if name == "adpsgd":  # the random peer choices continue where they were
        assert fresh[0].rng.integers(1 << 30) == ran[0].rng.integers(1 << 30)


def test_load_state_dict_names_what_is_missing() -> None:
    agent = _agents("adsgd-delta", 0)[0]
    with pytest.raises(KeyError, match="lacks s"):
        agent.load_state_dict({"x": agent.x, "iteration": 0})


# -- names and plug-ins --------------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "field", "registry"), [
    ("algorithm", "name", ALGORITHMS), ("problem", "name", PROBLEMS), ("data", "name", DATASETS),
    ("topology", "name", TOPOLOGIES), ("delays", "model", DELAY_MODELS)])
def test_validation_lists_the_registered_names(section: str, field: str, registry: Registry) -> None:
    with pytest.raises(UserError) as err:
        make_config(**{section: {field: "no-such-thing"}})
    message = str(err.value)
    assert message.startswith(f"config field {section}.{field}: unknown name 'no-such-thing'; expected one of ")
    assert "\n" not in message
    assert all(name in message for name in registry.names())


@pytest.mark.parametrize(("spec", "match"), [
    ("no_such_module_xyz:Alg", r"cannot import module 'no_such_module_xyz' \(ModuleNotFoundError"),
    (f"{TOY}:Missing", rf"module '{TOY}' has no attribute 'Missing'"),
    (f"{TOY}:NOT_A_CLASS", r"is not an algorithm \(expected a subclass of hpcasync.algorithms.Algorithm"),
    (f"{TOY}:ToyMeans", r"is not an algorithm"),
    (f"{TOY}:", r"not of the form 'package.module:Object'"),
])
def test_bad_plugins_are_one_line_user_errors(spec: str, match: str) -> None:
    with pytest.raises(UserError, match=match) as err:
        make_config(algorithm={"name": spec})
    assert "\n" not in str(err.value)


def test_a_plugin_module_that_raises_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_plugin_xyz.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"cannot import module 'broken_plugin_xyz' \(RuntimeError: boom\)"):
        make_config(problem={"name": "broken_plugin_xyz:P"})


def test_plugin_problem_and_dataset_checks() -> None:
    with pytest.raises(UserError, match=r"problem.name: .* is not a problem"):
        make_config(problem={"name": f"{TOY}:ToyGossip"})
    with pytest.raises(UserError, match=r"data.name: .* is not a dataset \(expected a function"):
        make_config(data={"name": f"{TOY}:NOT_A_CLASS"})


def test_plugin_algorithm_matches_the_built_in_it_restates() -> None:
    """ToyGossip restates ADSGD (β = 1) in numpy: same events, same iterates up to rounding."""
    runs = {}
    for name in ("adsgd", f"{TOY}:ToyGossip"):
        sim = build_simulator(make_config(algorithm={"name": name}, budget={"time": 15.0}))
        sim.run()
        runs[name] = sim
    a, b = runs["adsgd"], runs[f"{TOY}:ToyGossip"]
    assert a.gradients == b.gradients > 0
    for x, y in zip(a.agents, b.agents, strict=True):
        np.testing.assert_allclose(y.model, x.model, rtol=0, atol=1e-10)


def test_plugin_problem_runs_in_the_simulator() -> None:
    cfg = make_config(algorithm={"name": f"{TOY}:ToyGossip", "alpha": 0.1},
                      problem={"name": f"{TOY}:ToyMeans"}, data={"name": "quadratic", "dim": 4},
                      delays={"model": "none"}, budget={"time": 300.0}, eval={"interval": 50.0})
    sim = build_simulator(cfg)
    sim.run()
    x_star = sim.problem.centers.mean(axis=0)
    mean = np.mean([a.model for a in sim.agents], axis=0)
    # DGD with a constant step keeps the average on the exact gradient flow of the mean objective
    np.testing.assert_allclose(mean, x_star, atol=1e-8)
    assert sim.evaluations[-1]["train_loss"] < sim.evaluations[0]["train_loss"]


def test_plugin_dataset_with_a_built_in_problem() -> None:
    cfg = make_config(data={"name": f"{TOY}:toy_blobs"}, budget={"time": 20.0})
    sim = build_simulator(cfg)
    sim.run()
    assert sim.evaluations[-1]["test_accuracy"] > 0.8


def test_entry_points_register_installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "toy_plugin_dist-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin-dist\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [hpcasync.algorithms]
        toy-gossip = {TOY}:ToyGossip
        broken = {TOY}:NOT_A_CLASS
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from hpcasync.algorithms.base import _not_an_algorithm

    reg = Registry("algorithm", "algorithm.name", package="hpcasync.algorithms", group="hpcasync.algorithms",
                   check=_not_an_algorithm, plugins=True)
    assert reg.names() == ["toy-gossip", "broken"]  # (the built-ins registered themselves in ALGORITHMS)
    assert reg.get("toy-gossip").__name__ == "ToyGossip"
    with pytest.raises(UserError, match="entry point 'broken'"):
        reg.get("broken")


def test_cli_reports_a_bad_plugin_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpcasync.cli.main import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[algorithm]\nname = "no_such_module_xyz:Alg"\n')
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "algorithm.name: cannot import module 'no_such_module_xyz'" in err and "\n" not in err
    assert sys.modules.get("no_such_module_xyz") is None


def test_a_module_with_a_missing_optional_dependency_is_skipped(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "fake_algos_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "needs_torch.py").write_text("import torch_is_not_installed_xyz\n")
    (pkg / "fine.py").write_text("VALUE = 1\n")
    (pkg / "buggy.py").write_text("import hpcasync.no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[object] = Registry("thing", "x.name", package="fake_algos_pkg")
    with pytest.raises(ModuleNotFoundError, match="hpcasync.no_such_module_xyz"):
        reg.names()  # a broken hpcasync import is a bug: loud
    (pkg / "buggy.py").unlink()
    reg = Registry("thing", "x.name", package="fake_algos_pkg")
    reg.add("a", 1)
    assert reg.names() == ["a"]
    with pytest.raises(UserError, match=r"not loaded: needs_torch \(needs torch_is_not_installed_xyz"):
        reg.get("b")


def test_the_console_script_finds_a_plugin_in_the_current_directory(tmp_path: Path) -> None:
    import shutil
    import subprocess

    shutil.copy(PLUGINS / f"{TOY}.py", tmp_path / "my_cwd_plugin.py")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[algorithm]\nname = "my_cwd_plugin:ToyGossip"\n[budget]\ntime = 3.0\n')
    script = Path(sys.executable).parent / "hpcasync"
    out = subprocess.run([str(script), "check", str(cfg)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "my_cwd_plugin:ToyGossip on grid" in out.stdout
