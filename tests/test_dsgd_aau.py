"""DSGD-AAU (Xiong et al. 2023) with Pathsearch in the simulator: (P, V) resets exactly when it spans and is
connected, the mixing weights are doubly stochastic over every active set, and it never deadlocks."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from hpcasync.algorithms.dsgd_aau import PathState, metropolis, star_weights
from hpcasync.engines.sim.runner import build_simulator
from tests.conftest import make_config


def test_reset_exactly_when_spanning_and_connected() -> None:
    """Random edge sequences on random connected graphs, against networkx on the union of P."""
    rng = np.random.default_rng(1)
    for trial in range(40):
        n = int(rng.integers(2, 12))
        g = nx.connected_watts_strogatz_graph(n, 2 if n < 4 else 3, 0.5, seed=trial) if n > 2 else nx.path_graph(n)
        edges = list(g.edges())
        state = PathState(n)
        union: set[tuple[int, int]] = set()
        for _ in range(6 * n):
            a, b = edges[int(rng.integers(len(edges)))]
            new = state.is_new(a, b)
            h = nx.Graph(list(union))
            expect_new = (min(a, b), max(a, b)) not in union and not (
                h.has_node(a) and h.has_node(b) and nx.has_path(h, a, b))
            assert new == expect_new
            if not new:
                continue
            union.add((min(a, b), max(a, b)))
            h = nx.Graph(list(union))
            spans = h.number_of_nodes() == n and nx.is_connected(h)
            epoch = state.epoch
            assert state.add(a, b) == spans
            if spans:
                assert state.epoch == epoch + 1 and not state.edges and not state.nodes
                union = set()
            else:
                assert state.edges == union and len(state.edges) <= n - 1  # a spanning forest


def test_announcements_follow_epochs() -> None:
    s = PathState(3)
    assert s.announced(1, 0, 1) is False  # a later epoch: kept for later
    assert s.announced(0, 0, 1) is True
    assert s.announced(0, 0, 1) is False  # already in P
    assert s.announced(0, 1, 2) is True  # spans: epoch 1, and the buffered (0, 1) of epoch 1 comes in
    assert s.epoch == 1 and s.edges == {(0, 1)}
    assert s.announced(0, 0, 2) is False  # an epoch this worker has left


@pytest.mark.parametrize("n", range(2, 12))
def test_weights_are_doubly_stochastic_over_every_active_set(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        a = rng.random((n, n)) < 0.4
        a = np.triu(a, 1)
        a = a | a.T
        p = metropolis(a)
        assert (p >= 0).all()
        np.testing.assert_allclose(p.sum(axis=0), 1.0)
        np.testing.assert_allclose(p.sum(axis=1), 1.0)
        np.testing.assert_allclose(p, p.T)
    star = np.zeros((n, n), bool)
    star[0, 1:] = star[1:, 0] = True
    w_self, w_nbr = star_weights(n)
    row = metropolis(star)[0]
    assert row[0] == pytest.approx(w_self) and np.allclose(row[1:], w_nbr)
    assert w_self + (n - 1) * w_nbr == pytest.approx(1.0)


def run(**sections):
    sim = build_simulator(make_config(**sections))
    sim.run()
    return sim


@pytest.mark.parametrize("seed", range(12))
def test_never_deadlocks(seed: int) -> None:
    """Random connected graphs of 4–64 agents, random stragglers (10× with probability 10 % per step, or a
    fixed 10× / 100× straggler): every run spends its whole time budget and every agent keeps updating."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([4, 7, 16, 33, 64]))
    kind = seed % 3
    delays = ({"model": "random-stragglers", "p": 0.1, "s": 10.0} if kind == 0 else
              {"model": "case", "case": 3 if kind == 1 else 5, "straggler": int(rng.integers(n)),
               "slowdown": 10.0 if seed % 2 else 100.0})
    budget = 120.0 if n <= 16 else 40.0
    sim = run(algorithm={"name": "dsgd-aau", "alpha": 0.05},
              topology={"name": "random", "n": n, "degree": 3, "seed": seed, "shape": []},
              delays=delays, budget={"time": budget}, eval={"interval": budget})
    assert sim.now >= budget, f"stopped at {sim.now}: every agent blocked"
    slow = delays.get("straggler", -1)  # a 100× straggler may not finish one gradient within the budget
    assert min(a.iteration for a in sim.agents if a.rank != slow) >= 1
    for agent in sim.agents:
        assert all(1 <= k <= 1 + len(sim.topology.neighbors(agent.rank)) for k in agent.active_sizes)


def test_zero_delays_one_epoch_per_round_and_equal_progress() -> None:
    """Unit computation, instant communication: all finish together, each sees every neighbour's update and
    adds its edges at once, so (P, V) spans in every round; every agent updates once per time unit."""
    sim = run(algorithm={"name": "dsgd-aau", "alpha": 0.05}, delays={"model": "none"}, budget={"time": 30.0})
    assert [a.iteration for a in sim.agents] == [30] * 9
    assert all(a.path.resets == 30 for a in sim.agents)
    sizes = {a.rank: set(a.active_sizes) for a in sim.agents}
    assert all(sizes[i] == {1 + len(sim.topology.neighbors(i))} for i in sizes)
    assert sim.evaluations[-1]["train_loss"] < 0.9 * sim.evaluations[0]["train_loss"]


def test_control_bytes_per_update_are_small() -> None:
    """Edge announcements: 40 bytes (3 int64 + a 16-byte header) per link they cross; a model is 5208."""
    sim = run(algorithm={"name": "dsgd-aau", "alpha": 0.05}, delays={"case": 5, "straggler": 4})
    control = sum(t.flood_bytes for t in sim.transports)
    total = sum(t.bytes_sent for t in sim.transports)
    assert control % 40 == 0 and 0 < control < 0.05 * total
