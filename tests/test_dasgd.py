"""DASGD (Tosi & Theobald 2023) in the simulator: every gradient applied exactly once everywhere, equal
models, the staleness metric against brute-force sets, and the staleness bound under a 100× straggler."""

from __future__ import annotations

import numpy as np
import pytest

import hpcasync
from hpcasync.algorithms.dasgd import DASGD, pairwise_staleness
from hpcasync.engines.sim.runner import build_simulator
from hpcasync.errors import UserError
from tests.conftest import make_config


class Tracker:
    """Records, per agent, the set of (origin, seq) applied — brute force next to the vector clocks."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.sets: list[set[tuple[int, int]]] = [set() for _ in sim.agents]
        self.count: list[dict[tuple[int, int], int]] = [{} for _ in sim.agents]
        self.rows: list[tuple[int, float, float]] = []  # (agent, staleness column, brute force)
        self.evals: list[tuple[float, float, float, int]] = []  # (S_avg, S_max columns, brute force of each)
        for i, agent in enumerate(sim.agents):
            self._wrap(i, agent)

    def _wrap(self, i: int, agent: DASGD) -> None:
        inner = agent.apply
        own = agent.run

        def apply(items, i=i, inner=inner):
            for o, s, _ in items:
                self._saw(i, (o, s))
            inner(items)

        def run(t, i=i, own=own, agent=agent):
            gen = own(t)
            value = None
            while True:
                before = agent.iteration
                op = gen.send(value)
                if agent.iteration > before:
                    self._saw(i, (i, agent.iteration))
                value = yield op

        agent.apply = apply
        agent.run = run

    def _saw(self, i: int, key: tuple[int, int]) -> None:
        self.sets[i].add(key)
        self.count[i][key] = self.count[i].get(key, 0) + 1

    def all_computed(self) -> set[tuple[int, int]]:
        return {(o, s) for o, a in enumerate(self.sim.agents) for s in range(1, a.iteration + 1)}

    # recorder protocol
    def update(self, agent: int, row: dict[str, float]) -> None:
        brute = len(self.all_computed() ^ self.sets[agent])
        self.rows.append((agent, row["staleness"], brute))

    def evaluation(self, row: dict[str, float]) -> None:
        n = len(self.sets)
        pairs = [len(self.sets[i] ^ self.sets[j]) for i in range(n) for j in range(i + 1, n)]
        self.evals.append((row["staleness_avg"], row["staleness_max"], float(np.mean(pairs)), max(pairs)))


def watch_backlog(sim, agent: int) -> list[int]:
    """[peak] of the gradients that arrived at ``agent`` and wait to be applied (updated as they land)."""
    fs = sim.transports[agent].flood_state
    inner, peak = fs.arrive, [0]

    def arrive(*args):
        out = inner(*args)
        peak[0] = max(peak[0], len(fs.pending) + len(fs.early))
        return out

    fs.arrive = arrive
    sim.peak_backlog = peak
    return peak


def backlog(sim) -> int:
    return sim.peak_backlog[0]


def simulate(**sections):
    sim = build_simulator(make_config(**sections))
    watch_backlog(sim, 4)
    tracker = Tracker(sim)
    sim.gens = [a.run(t) for a, t in zip(sim.agents, sim.transports, strict=True)]
    sim.recorder = tracker
    sim.run()
    return sim, tracker


def check_everything_applied_once(sim, tracker) -> None:
    everything = tracker.all_computed()
    assert 0 < len(everything) <= sim.gradients
    for i, agent in enumerate(sim.agents):
        assert tracker.sets[i] == everything, f"agent {i} misses {len(everything ^ tracker.sets[i])} gradients"
        assert set(tracker.count[i].values()) == {1}, f"agent {i} applied a gradient twice"
        np.testing.assert_array_equal(agent.clock, [a.iteration for a in sim.agents])


@pytest.mark.parametrize("delays", [{"model": "none"}, {"model": "case", "case": 5, "straggler": 4}])
def test_every_gradient_applied_exactly_once_and_models_equal(delays) -> None:
    sim, tracker = simulate(algorithm={"name": "dasgd", "alpha": 0.05}, delays=delays)
    assert sim.gradients > 100
    check_everything_applied_once(sim, tracker)
    X = np.stack([a.x for a in sim.agents])
    assert np.linalg.norm(X[0] - sim.problem.init_params(3)) > 0.1
    np.testing.assert_allclose(X, np.broadcast_to(X[0], X.shape), rtol=1e-10, atol=1e-12)
    dups = sum(t.flood_state.duplicates for t in sim.transports)
    assert dups > 0  # the grid has cycles: flooding does deliver copies, and they are dropped


def test_zero_delay_gradient_counts() -> None:
    """Unit computation, instant communication, no bound in the way: every agent computes one gradient
    per time unit, and every gradient of every origin is applied at every agent."""
    sim, tracker = simulate(algorithm={"name": "dasgd", "max_staleness": 0}, delays={"model": "none"},
                            budget={"time": 20.0})
    assert [a.iteration for a in sim.agents] == [20] * 9
    check_everything_applied_once(sim, tracker)
    assert sum(len(s) for s in tracker.sets) == 9 * 9 * 20


def test_staleness_column_equals_brute_force_sets() -> None:
    sim, tracker = simulate(algorithm={"name": "dasgd", "max_staleness": 0},
                            delays={"model": "case", "case": 2, "straggler": 4})
    assert len(tracker.rows) > 100
    assert max(b for _, _, b in tracker.rows) > 5  # not vacuous: there is staleness
    for _, column, brute in tracker.rows:
        assert column == brute


@pytest.mark.parametrize("case", [1, 3])
def test_evaluation_columns_are_the_pairwise_staleness_of_the_applied_sets(case: int) -> None:
    """S_avg / S_max of every evaluation row = mean / max over pairs of |A_i Δ A_j|, from the brute-force sets."""
    sim, tracker = simulate(algorithm={"name": "dasgd", "max_staleness": 0}, delays={"case": case},
                            budget={"time": 400.0}, eval={"interval": 20.0})
    assert len(tracker.evals) >= 20
    for avg, mx, brute_avg, brute_max in tracker.evals:
        assert avg == pytest.approx(brute_avg) and mx == brute_max
    assert max(mx for _, mx, _, _ in tracker.evals) > 0


def test_staleness_columns_reach_run_h5_and_are_nan_without_vector_clocks(tmp_path) -> None:
    from hpcasync.results.reader import open_run

    for name in ("dasgd", "adsgd"):
        simulate_to = tmp_path / name
        hpcasync.simulate(make_config(algorithm={"name": name}, budget={"time": 100.0}), simulate_to)
        ev = open_run(simulate_to).evaluations
        assert ev["staleness_avg"].size >= 5
        if name == "dasgd":
            assert np.isfinite(ev["staleness_avg"]).all() and (ev["staleness_max"] >= ev["staleness_avg"]).all()
            assert ev["staleness_max"].max() > 0
        else:
            assert np.isnan(ev["staleness_avg"]).all() and np.isnan(ev["staleness_max"]).all()


def test_pairwise_staleness_equals_symmetric_differences_on_random_histories() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 8))
        clocks = rng.integers(0, 6, size=(n, n))
        sets = [{(o, s) for o in range(n) for s in range(1, clocks[i, o] + 1)} for i in range(n)]
        pairs = [len(sets[i] ^ sets[j]) for i in range(n) for j in range(i + 1, n)]
        avg, mx = pairwise_staleness(clocks)
        assert avg == pytest.approx(np.mean(pairs)) and mx == max(pairs)


@pytest.mark.parametrize("bound", [2, 6])
def test_staleness_bound_holds_under_a_100x_straggler(bound: int) -> None:
    """Agent 4 computes 100× slower. With B = max_staleness no agent gets more than B gradients ahead of
    any other and S_i ≤ 2B·(n − 1) at every record (what is unapplied, so in flight or queued, at agent
    i); without the bound the counts drift apart and the straggler's backlog grows with the speed ratio."""
    n = 9
    sections = {"delays": {"model": "case", "case": 3, "straggler": 4, "slowdown": 100.0},
                "budget": {"time": 2000.0}, "eval": {"interval": 500.0}}
    sim, tracker = simulate(algorithm={"name": "dasgd", "max_staleness": bound}, **sections)
    iters = [a.iteration for a in sim.agents]
    assert max(iters) - min(iters) <= bound
    assert iters[4] >= 10
    worst = max(column for _, column, _ in tracker.rows)
    assert worst <= 2 * bound * (n - 1)
    assert sum(a.waits for a in sim.agents) > 0
    check_everything_applied_once(sim, tracker)
    assert backlog(sim) <= 2 * bound * (n - 1)
    free = build_simulator(make_config(algorithm={"name": "dasgd", "max_staleness": 0}, **sections))
    peak = watch_backlog(free, 4)
    free.run()
    free_iters = [a.iteration for a in free.agents]
    assert max(free_iters) - min(free_iters) > 50 * bound  # what the bound prevents
    assert peak[0] > 50 * (n - 1)  # ~ (n − 1) × the speed ratio gradients wait at the straggler


@pytest.mark.parametrize("name", ["dasgd", "dsgd-aau"])
def test_message_loss_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(UserError, match=rf"^config field delays.drop: algorithm {name} needs every message"):
        build_simulator(make_config(algorithm={"name": name}, delays={"drop": 0.1}))
