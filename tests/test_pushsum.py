"""Push-sum (sgp, osgp, agp) in the simulator: conservation, the exact equivalences, out-of-order arrival.

The equivalences tested exactly (to 1e-12):

* sgp on a static doubly-stochastic W keeps φ_i = 1 and produces the
  adapt-then-combine DSGD iterates X^{k+1} = W·(X^k − α·G(X^k)), computed
  here from the same oracles (Assran et al. 2019, Alg. 1 with P = W);
* sgp on the complete graph (Metropolis weights: W = 11ᵀ/n) produces
  AllReduce SGD's iterates;
* osgp with an overlap larger than any run's length never waits and produces
  agp's iterates under the same delays (the counters change nothing else).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hpcasync import problems
from hpcasync.algorithms.agp import AGP
from hpcasync.algorithms.base import AgentSetup, StepSize
from hpcasync.algorithms.transport import Compute, Transport
from hpcasync.engines.build import build_topology
from hpcasync.engines.sim.runner import build_simulator
from tests.conftest import make_config

GRID = {"name": "grid", "n": 9, "shape": [3, 3]}
TVEXP = {"name": "time-varying-exponential", "n": 8, "shape": []}
DRANDOM = {"name": "directed-random", "n": 8, "shape": [], "degree": 2, "seed": 1}
DRING = {"name": "directed-ring", "n": 6, "shape": []}


def run(**sections: dict[str, Any]):
    sim = build_simulator(make_config(**sections))
    sim.run()
    return sim


def models(sim) -> np.ndarray:
    return np.stack([a.x for a in sim.agents])


def check_conservation(sim) -> None:
    """Σ_i φ_i = n and Σ_i w_i = Σ_i x_i(0) − Σ applied steps (nothing in flight after the run)."""
    n = sim.n
    phis = np.array([a.phi for a in sim.agents])
    assert abs(phis.sum() - n) <= 1e-12, phis.sum() - n
    w = sum(a.w for a in sim.agents)
    expected = sum(a.setup.x0 for a in sim.agents) - sum(a.applied for a in sim.agents)
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12 * max(1.0, float(np.abs(expected).max())))
    assert all(np.allclose(a.x, a.w / a.phi, rtol=1e-15, atol=0) for a in sim.agents)


@pytest.mark.parametrize("algorithm", ["osgp", "agp"])
@pytest.mark.parametrize("topology", [GRID, TVEXP, DRANDOM, DRING])
@pytest.mark.parametrize("case", [1, 4, 5])
def test_async_conservation(algorithm: str, topology: dict, case: int) -> None:
    sim = run(algorithm={"name": algorithm, "overlap": 2}, topology=topology,
              delays={"case": case, "straggler": 1})
    assert sim.gradients > 5 * sim.n
    check_conservation(sim)


@pytest.mark.parametrize("topology", [GRID, TVEXP, DRANDOM, DRING])
def test_sgp_conservation_at_round_ends(topology: dict) -> None:
    """Zero delays: every agent ends on a round boundary; φ is conserved, on directed graphs not all 1."""
    sim = run(algorithm={"name": "sgp"}, topology=topology, delays={"model": "none"}, budget={"time": 20.0})
    assert {a.iteration for a in sim.agents} == {20}
    check_conservation(sim)
    phis = np.array([a.phi for a in sim.agents])
    if topology is DRANDOM:  # column- but not row-stochastic: the weights must move
        assert np.ptp(phis) > 1e-3


def test_mass_is_not_trivially_conserved() -> None:
    """The check above can fail: a run stopped mid-flight (drained nowhere) misses the mass in flight."""
    sim = build_simulator(make_config(algorithm={"name": "agp"}, topology=GRID, delays={"case": 2}))
    sim.run()
    # undo what finish() took in: the last drain adds the in-flight mass back
    total = sum(a.phi for a in sim.agents)
    assert abs(total - sim.n) <= 1e-12
    sim2 = build_simulator(make_config(algorithm={"name": "agp"}, topology=GRID, delays={"case": 2}))
    sim2.quiesce = lambda: None  # type: ignore[method-assign]  # leave messages in flight
    sim2.run()
    assert abs(sum(a.phi for a in sim2.agents) - sim2.n) > 1e-6


def _reference_atc(cfg, rounds: int) -> np.ndarray:
    """X^{k+1} = W·(X^k − α·G(X^k)) with the simulator's oracles (agent i samples with its own stream)."""
    topo = build_topology(cfg)
    problem = problems.build(cfg, topo.n)
    x0 = problem.init_params(cfg.run.seed)
    oracles = [problem.oracle(i, cfg.run.seed) for i in range(topo.n)]
    X = np.tile(x0, (topo.n, 1))
    for _ in range(rounds):
        half = np.stack([X[i] - cfg.algorithm.alpha * oracles[i].gradient(X[i])[0] for i in range(topo.n)])
        X = topo.W @ half
    return X


@pytest.mark.parametrize("topology", [GRID, {"name": "ring", "n": 6, "shape": []}])
def test_sgp_doubly_stochastic_is_atc_dsgd(topology: dict) -> None:
    sections = dict(algorithm={"name": "sgp"}, topology=topology, delays={"case": 5, "straggler": 1},
                    budget={"time": 0.0, "gradients": 10**9})
    cfg = make_config(**sections)
    sim = build_simulator(cfg)
    sim.budget_time = 60.0
    sim.run()
    rounds = {a.iteration for a in sim.agents}
    assert len(rounds) == 1 or max(rounds) - min(rounds) <= 1
    k = min(rounds)
    assert k >= 4
    ref = _reference_atc(cfg, k)
    for i, a in enumerate(sim.agents):
        if a.iteration == k:
            assert abs(a.phi - 1.0) <= 1e-12
            np.testing.assert_allclose(a.x, ref[i], rtol=1e-12, atol=1e-13)


def test_sgp_on_the_complete_graph_is_allreduce() -> None:
    topo = {"name": "complete", "n": 5, "shape": []}
    s = run(algorithm={"name": "sgp"}, topology=topo, delays={"model": "none"}, budget={"time": 30.0})
    a = run(algorithm={"name": "allreduce"}, topology=topo, delays={"model": "none"}, budget={"time": 30.0})
    assert s.gradients == a.gradients > 100
    np.testing.assert_allclose(models(s), models(a), rtol=1e-12, atol=1e-14)


def test_sgp_on_a_grid_is_not_allreduce() -> None:
    """The equivalence above is not vacuous."""
    s = run(algorithm={"name": "sgp"}, topology=GRID, delays={"model": "none"}, budget={"time": 30.0})
    a = run(algorithm={"name": "allreduce"}, topology=GRID, delays={"model": "none"}, budget={"time": 30.0})
    assert not np.allclose(models(s), models(a), rtol=1e-6)


@pytest.mark.parametrize("topology", [GRID, TVEXP])
def test_osgp_without_a_bound_is_agp(topology: dict) -> None:
    sections = dict(topology=topology, delays={"case": 4, "straggler": 2})
    o = run(algorithm={"name": "osgp", "overlap": 10**6}, **sections)
    a = run(algorithm={"name": "agp"}, **sections)
    assert o.gradients == a.gradients and sum(x.waits for x in o.agents) == 0
    np.testing.assert_allclose(models(o), models(a), rtol=1e-13, atol=1e-15)


def test_osgp_waits_under_a_comm_straggler() -> None:
    """τ = 1 with agent 2's messages ten times slower: its out-neighbours wait, and the iterates leave agp's."""
    sections = dict(topology=GRID, delays={"case": 4, "straggler": 2})
    o = run(algorithm={"name": "osgp", "overlap": 1}, **sections)
    a = run(algorithm={"name": "agp"}, **sections)
    assert sum(x.waits for x in o.agents) > 0
    assert o.gradients < a.gradients
    check_conservation(o)
    # a larger overlap waits less
    o4 = run(algorithm={"name": "osgp", "overlap": 4}, **sections)
    assert o4.gradients > o.gradients


# --------------------------------------------------------------------------- out-of-order arrival


class ShuffledTransport(Transport):
    """Deltas held in one pool and delivered in a random order, at random later drains (never in send order)."""

    features = frozenset({"push_delta"})

    def __init__(self, pool: list[tuple[int, np.ndarray]], rank: int, n: int, outs: list[int],
                 rng: np.random.Generator) -> None:
        self.pool = pool
        self.rank, self.n = rank, n
        self.in_neighbors = []
        self.out_neighbors = outs
        self.rng = rng
        self.bytes_sent = self.messages_sent = 0

    def push_model(self, v: np.ndarray) -> None:
        raise AssertionError("agp sends deltas only: push_model must not be called")

    def latest_models(self) -> np.ndarray:
        raise AssertionError("agp sends deltas only: latest_models must not be called")

    def push_delta(self, j: int, delta: np.ndarray, scale: float = 1.0) -> None:
        self.pool.append((j, scale * delta))

    def drain_into(self, s: np.ndarray) -> None:
        mine = [k for k, (j, _) in enumerate(self.pool) if j == self.rank]
        self.rng.shuffle(mine)
        take = sorted(mine[: int(self.rng.integers(0, len(mine) + 1))], reverse=True)
        for k in take:  # newest first among those taken; the rest stays for later drains
            s += self.pool.pop(k)[1]

    def flush_all(self, s: np.ndarray) -> None:
        for k in sorted((k for k, (j, _) in enumerate(self.pool) if j == self.rank), reverse=True):
            s += self.pool.pop(k)[1]


def _agents(topology: dict, x0s: np.ndarray, alpha: float) -> tuple[list[AGP], list[ShuffledTransport], list]:
    cfg = make_config(algorithm={"name": "agp"}, topology=topology)
    topo = build_topology(cfg)
    pool: list[tuple[int, np.ndarray]] = []
    rng = np.random.default_rng(11)
    agents, transports = [], []
    for i in range(topo.n):
        setup = AgentSetup(rank=i, n=topo.n, x0=x0s[i], weights=topo.weights(i), out_weights=topo.out_weights(i),
                           step=StepSize(alpha), mixing=topo.mixing_period())
        agents.append(AGP(setup))
        transports.append(ShuffledTransport(pool, i, topo.n, topo.out_neighbors(i), rng))
    return agents, transports, pool


@pytest.mark.parametrize("topology", [DRANDOM, TVEXP])
def test_agp_tolerates_out_of_order_arrival(topology: dict) -> None:
    """Consensus (α = 0) from different starts with deliveries reordered, delayed and bunched:
    every z_i → mean_i x_i(0), and no mass is lost."""
    n, d = topology["n"], 5
    x0s = np.random.default_rng(3).normal(size=(n, d))
    agents, transports, pool = _agents(topology, x0s, alpha=0.0)
    gens = [a.run(t) for a, t in zip(agents, transports, strict=True)]
    order = np.random.default_rng(5)
    ops = [next(g) for g in gens]
    for _ in range(400 * n):  # agents step at random: some far more often than others
        i = int(order.integers(n))
        assert isinstance(ops[i], Compute)
        ops[i] = gens[i].send(np.zeros(d))
    for a, t in zip(agents, transports, strict=True):
        t.flush_all(a.m)
        a.debias()
    assert not pool
    assert abs(sum(a.phi for a in agents) - n) <= 1e-12
    np.testing.assert_allclose(sum(a.w for a in agents), x0s.sum(axis=0), rtol=0, atol=1e-12)
    for a in agents:
        np.testing.assert_allclose(a.x, x0s.mean(axis=0), rtol=0, atol=1e-8)
    assert len({a.iteration for a in agents}) > 1


def test_agp_out_of_order_with_steps_conserves_mass() -> None:
    n, d = 8, 4
    x0s = np.zeros((n, d))
    agents, transports, pool = _agents(TVEXP, x0s, alpha=0.1)
    gens = [a.run(t) for a, t in zip(agents, transports, strict=True)]
    rng = np.random.default_rng(8)
    ops = [next(g) for g in gens]
    target = np.arange(d, dtype=float)
    for _ in range(300 * n):
        i = int(rng.integers(n))
        ops[i] = gens[i].send(ops[i].x - target + 0.01 * rng.normal(size=d))  # ∇ of ½‖x − target‖² + noise
    for a, t in zip(agents, transports, strict=True):
        t.flush_all(a.m)
        a.debias()
    assert abs(sum(a.phi for a in agents) - n) <= 1e-12
    np.testing.assert_allclose(sum(a.w for a in agents), -sum(a.applied for a in agents), rtol=0, atol=1e-11)
    for a in agents:
        np.testing.assert_allclose(a.x, target, atol=0.1)


def test_step_cap_bounds_the_step_of_a_starved_agent() -> None:
    """Alg. 1's w-step moves z_i by α/φ_i; with φ_i collapsed the cap K bounds it at K·α, else it is untouched."""
    topo = build_topology(make_config(algorithm={"name": "agp"}, topology=TVEXP))
    x0 = np.zeros(3)
    g = np.ones(3)
    for phi, cap, expected in [(1e-4, 10.0, 10 * 0.1), (0.5, 10.0, 0.1 / 0.5), (1e-4, 1e9, 0.1 / 1e-4)]:
        cfg = make_config(algorithm={"name": "agp", "step_cap": cap}, topology=TVEXP)
        setup = AgentSetup(rank=0, n=topo.n, x0=x0, weights=topo.weights(0), out_weights=topo.out_weights(0),
                           step=StepSize(0.1), mixing=topo.mixing_period(), section=cfg.algorithm)
        a = AGP(setup)
        a.m[:3] *= phi
        a.m[3] = phi
        a.gradient_step(g)
        a.debias()
        np.testing.assert_allclose(-a.x, expected, rtol=1e-12)


def test_an_agent_without_mass_keeps_its_estimate() -> None:
    """φ_i = 0 (all mass given away, underflowed): z_i stays the last finite estimate (no 0/0), the
    step applies nothing, and mass arriving later makes z_i = w_i/φ_i again."""
    topo = build_topology(make_config(algorithm={"name": "agp"}, topology=TVEXP))
    setup = AgentSetup(rank=0, n=topo.n, x0=np.full(3, 2.0), weights=topo.weights(0),
                       out_weights=topo.out_weights(0), step=StepSize(0.1), mixing=topo.mixing_period())
    a = AGP(setup)
    a.m[:] = 0.0
    with np.errstate(all="raise"):  # a 0/0 would raise here
        a.gradient_step(np.ones(3))
        a.debias()
    np.testing.assert_array_equal(a.x, 2.0)
    np.testing.assert_array_equal(a.applied, 0.0)
    a.m[:3], a.m[3] = 1.5, 0.5
    a.debias()
    np.testing.assert_array_equal(a.x, 3.0)


# --------------------------------------------------------------------------- configuration


def test_undirected_algorithms_refuse_directed_topologies() -> None:
    from hpcasync.errors import UserError

    with pytest.raises(UserError, match="topology.name.*directed.*sgp"):
        build_simulator(make_config(algorithm={"name": "adsgd"}, topology=TVEXP))
