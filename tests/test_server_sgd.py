"""async-sgd, hogwild and minibatch-sgd in the simulator (Mishchenko et al. 2022; Recht et al. 2011)."""

from __future__ import annotations

import numpy as np
import pytest

from hpcasync import config, problems
from hpcasync.algorithms.async_sgd import delay_rule
from hpcasync.algorithms.base import StepSize
from hpcasync.engines.sim.runner import build_simulator, simulate
from hpcasync.errors import UserError
from hpcasync.kernels import axpy
from hpcasync.results.reader import open_run
from tests.server_checks import expected_taus, lsq_sections, lsq_smoothness, tau_errors


def _sim(n: int, **changes):
    sim = build_simulator(config.from_dict(lsq_sections(n, **changes), source="test"))
    sim.run()
    return sim


def _steps(sim) -> list[dict[str, np.ndarray]]:
    return [sim.server.steps(m) for m in range(sim.n)]


@pytest.mark.parametrize("algorithm", ["async-sgd", "hogwild"])
@pytest.mark.parametrize("k", [1, 2, 7, 30])
def test_one_worker_zero_delay_is_plain_sgd(algorithm: str, k: int) -> None:
    """One worker, no delay: every gradient has τ = 0 and the server's x is SGD's iterate k."""
    changes = {"algorithm": {"name": algorithm, "batch_size": 8}, "budget": {"gradients": k}}
    sim = _sim(1, **changes)
    cfg = config.from_dict(lsq_sections(1, **changes), source="test")
    problem = problems.build(cfg, 1)
    oracle = problem.oracle(0, cfg.run.seed)
    x = problem.init_params(cfg.run.seed)
    for _ in range(k):
        g, _ = oracle.gradient(x)
        axpy(x, -cfg.algorithm.alpha, g)
    steps = sim.server.steps(0)
    assert list(steps["tau"]) == [0] * k and list(steps["step"]) == list(range(k))
    np.testing.assert_array_equal(sim.server.x, x)
    np.testing.assert_array_equal(sim.agents[0].x, x)  # finish() hands the worker the server's model


def test_tau_matches_an_independent_model_of_alg1() -> None:
    """Constructed delays (worker 1 computes 2.7× longer, constant 0.05 per leg): τ = k − prev exactly."""
    sim = _sim(2, budget={"gradients": 40}, delays={
        "model": "case", "case": 3, "straggler": 1, "slowdown": 2.7, "compute_dist": "constant",
        "comm_dist": "constant", "comm_mean": 0.05})
    applied = sim.server.k  # the budget counts gradients started: the last ones may not have arrived
    assert applied >= 38
    want = expected_taus([1.0, 2.7], 0.05, applied)
    got = [[(int(k), int(t)) for k, t in zip(s["step"], s["tau"], strict=True)] for s in _steps(sim)]
    assert got == want
    assert max(t for _, t in want[1]) >= 2  # the straggler's gradients really are stale
    assert tau_errors(_steps(sim)) == []


@pytest.mark.parametrize("algorithm", ["async-sgd", "hogwild"])
def test_tau_invariant_under_random_delays(algorithm: str) -> None:
    sim = _sim(5, algorithm={"name": algorithm, "step_rule": "adaptive"}, budget={"gradients": 300},
               delays={"model": "case", "case": 5, "straggler": 2})
    steps = _steps(sim)
    assert tau_errors(steps) == []
    assert sum(len(s) for s in steps) == sim.server.k >= 295
    assert max(int(s["tau"].max()) for s in steps) > 5


def test_tau_checker_catches_a_wrong_record() -> None:
    sim = _sim(2, budget={"gradients": 20}, delays={"model": "case", "case": 3, "straggler": 1})
    steps = _steps(sim)
    steps[1]["tau"][-1] += 1
    assert tau_errors(steps)


def test_adaptive_step_converges_where_the_constant_one_diverges() -> None:
    """γ = 1.9/L: stable without delay; a worker 20× slower returns gradients with τ ≈ 20 > M = 2,
    which the constant step applies in full (divergence) and γ·M/max(M, τ) shrinks (convergence)."""
    L = lsq_smoothness()
    final = {}
    for rule in ("constant", "adaptive", "theorem"):
        sim = _sim(2, algorithm={"step_rule": rule, "alpha": 1.9 / L, "smoothness": L}, budget={"gradients": 400},
                   delays={"model": "case", "case": 3, "straggler": 1, "slowdown": 20, "compute_dist": "constant",
                           "comm_dist": "constant", "comm_mean": 0.01}, eval={"interval": 20.0})
        first, final[rule] = sim.evaluations[0]["train_loss"], sim.evaluations[-1]["train_loss"]
        assert max(int(s["tau"].max()) for s in _steps(sim)) >= 15
    assert not final["constant"] < 1e3 * first
    assert final["adaptive"] < 1e-6 * first
    assert final["theorem"] < 0.1 * first


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_minibatch_sgd_is_sgd_with_the_m_gradients_at_the_same_x(reduce: str) -> None:
    """Each round: x ← x − γ·Σ_m g_m(x) (or the mean), the M gradients of batch b at the same x, i.e. SGD
    with batch M·b; checked against the oracles driven by hand."""
    m, rounds = 4, 6
    changes = {"algorithm": {"name": "minibatch-sgd", "batch_size": 8, "alpha": 0.1, "reduce": reduce},
               "budget": {"gradients": 0, "time": rounds + 0.5}}  # unit computations: round r ends at t = r
    sim = _sim(m, **changes)
    cfg = config.from_dict(lsq_sections(m, **changes), source="test")
    problem = problems.build(cfg, m)
    oracles = [problem.oracle(i, cfg.run.seed) for i in range(m)]
    x = problem.init_params(cfg.run.seed)
    for _ in range(rounds):
        total = sum(o.gradient(x)[0].copy() for o in oracles)
        x = x - 0.1 * (total if reduce == "sum" else total / m)
    for agent in sim.agents:
        np.testing.assert_allclose(agent.x, x, rtol=1e-12, atol=1e-15)
    assert all(a.iteration == rounds for a in sim.agents)


def test_server_steps_reach_hdf5(tmp_path) -> None:
    cfg = config.from_dict(lsq_sections(3, algorithm={"step_rule": "adaptive"}, budget={"gradients": 60},
                                        delays={"model": "case", "case": 3, "straggler": 0}, eval={"interval": 5.0}),
                           source="test")
    sim = simulate(cfg, tmp_path)
    steps = open_run(tmp_path).server_steps()
    assert steps is not None and len(steps["step"]) == sim.server.k
    assert list(steps["step"]) == list(range(sim.server.k))
    for m in range(3):
        mine = steps["worker"] == m
        np.testing.assert_array_equal(steps["tau"][mine], sim.server.steps(m)["tau"])
    assert np.all(np.diff(steps["virtual_time"]) >= 0)


def test_step_rules() -> None:
    step = StepSize(0.4)
    assert delay_rule("constant", step, 10)(5, 100) == 0.4
    adaptive = delay_rule("adaptive", step, 10)
    assert adaptive(0, 3) == 0.4 and adaptive(0, 10) == 0.4 and adaptive(0, 40) == pytest.approx(0.1)
    theorem = delay_rule("theorem", step, 10, smoothness=0.25)
    assert theorem(0, 0) == pytest.approx(0.1)  # 1/(4ML) = 0.1 caps 1/(4L·1) = 1
    assert theorem(0, 19) == pytest.approx(1 / (4 * 0.25 * 20))
    assert delay_rule("theorem", StepSize(0.01), 10, smoothness=0.25)(0, 0) == 0.01


@pytest.mark.parametrize(("field", "value", "message"), [
    ("step_rule", "fancy", "algorithm.step_rule"),
    ("reduce", "median", "algorithm.reduce"),
    ("smoothness", -1.0, "algorithm.smoothness"),
])
def test_bad_server_options_are_one_line_errors(field: str, value, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        config.from_dict(lsq_sections(2, algorithm={field: value}), source="test")
    assert "\n" not in str(err.value)


def test_theorem_rule_needs_the_smoothness() -> None:
    with pytest.raises(UserError, match="algorithm.smoothness"):
        config.from_dict(lsq_sections(2, algorithm={"step_rule": "theorem"}), source="test")


def test_report_draws_the_delay_histogram(tmp_path) -> None:
    from hpcasync.results.report import make_report

    for alg in ("async-sgd", "minibatch-sgd"):
        cfg = config.from_dict(lsq_sections(3, algorithm={"name": alg}, budget={"gradients": 60},
                                            delays={"model": "case", "case": 3}, eval={"interval": 5.0}),
                               source="test")
        simulate(cfg, tmp_path / alg)
    files = make_report([tmp_path], tmp_path / "report", echo=False)["files"]
    assert files["delays"].stat().st_size > 1000 and files["server_loss"].stat().st_size > 1000


@pytest.mark.parametrize("override", ["algorithm.step_rule=fancy", "algorithm.step_rule=theorem",
                                      "algorithm.reduce=max", "algorithm.smoothness=-1"])
def test_cli_bad_server_options_exit_2_with_one_line(tmp_path, override: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "hpcasync", "check", str(root / "configs/mishchenko-2022/fig1.toml"),
                           "--set", override], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and override.split("=")[0].split(".")[1] in lines[0] and "Traceback" not in done.stderr
