"""ASBCD (Zhou & Pu 2025 Alg. 1) in the simulator: zero delays ≡ Jacobi block gradient descent, blocks are
relayed hop by hop on sparse graphs, and only the owner moves its block."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from hpcasync import problems
from hpcasync.algorithms.asbcd import block_bounds
from tests.conftest import make_config
from tests.test_equivalences import run

ROUNDS = 12


def test_block_bounds_partition_every_coordinate() -> None:
    for d, n in [(650, 9), (10, 3), (7, 7), (3, 5)]:
        b = block_bounds(d, n)
        sizes = np.diff(b)
        assert b[0] == 0 and b[-1] == d and len(sizes) == n
        assert sizes.max() - sizes.min() <= 1 and (sizes >= 0).all()


def jacobi(cfg_sections: dict, n: int, rounds: int) -> tuple[np.ndarray, list[list[float]]]:
    """Direct numpy Jacobi block gradient descent with the simulator's oracles (same seeds, same draws)."""
    cfg = make_config(**cfg_sections)
    problem = problems.build(cfg, n)
    x = problem.init_params(cfg.run.seed).astype(np.float64)
    oracles = [problem.oracle(i, cfg.run.seed) for i in range(n)]
    b = block_bounds(x.size, n)
    alpha = cfg.algorithm.alpha
    losses: list[list[float]] = [[] for _ in range(n)]
    for _ in range(rounds):
        new = x.copy()
        for i in range(n):
            g, loss = oracles[i].gradient(x)
            losses[i].append(loss)
            new[b[i]:b[i + 1]] -= alpha * g[b[i]:b[i + 1]]
        x = new
    return x, losses


@pytest.mark.parametrize("n", [4, 9])
def test_zero_delay_asbcd_is_jacobi_block_descent(n: int) -> None:
    """Complete graph, unit computation, instant communication: every agent's buffer is x^k of
    x^{k+1}[B_i] = x^k[B_i] − α·∇_{B_i} f_i(x^k; ξ_i^k), iterate for iterate (the loss of every gradient)."""
    sections = {"algorithm": {"name": "asbcd", "alpha": 0.5}, "topology": {"name": "complete", "n": n, "shape": []},
                "delays": {"model": "none", "straggler": 0}, "budget": {"time": float(ROUNDS)}}
    sim, rec = run(**sections)
    x, losses = jacobi(sections, n, ROUNDS)
    for i, agent in enumerate(sim.agents):
        assert agent.iteration == ROUNDS
        np.testing.assert_allclose(agent.x, x, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(agent.versions, ROUNDS)
        got = [row["loss"] for a, row in rec.rows if a == i]  # row k: the loss of gradient k−1
        np.testing.assert_allclose(got, losses[i], rtol=1e-12)
    assert np.linalg.norm(x - sim.problem.init_params(3)) > 0.1  # the blocks did move


def test_with_delays_asbcd_is_not_jacobi() -> None:
    """Non-vacuity: with computation and communication delays the iterates differ from Jacobi's."""
    sections = {"algorithm": {"name": "asbcd", "alpha": 0.5}, "topology": {"name": "complete", "n": 4, "shape": []},
                "delays": {"model": "case", "case": 1, "straggler": 0}, "budget": {"time": float(ROUNDS)}}
    sim, _ = run(**sections)
    x, _ = jacobi(sections, 4, ROUNDS)
    assert not np.allclose(sim.agents[0].x, x)


def test_blocks_are_relayed_hop_by_hop() -> None:
    """A ring with zero delays: after K rounds agent i holds block b at version K − dist(i, b) + 1 (one round
    per extra hop), and its copy equals the owner's block of that version (checked against the owner's
    current block where the version is current)."""
    n = 6
    sim, _ = run(algorithm={"name": "asbcd", "alpha": 0.5}, topology={"name": "ring", "n": n, "shape": []},
                 delays={"model": "none", "straggler": 0}, budget={"time": float(ROUNDS)})
    dist = dict(nx.all_pairs_shortest_path_length(sim.topology.graph))
    b = sim.agents[0].bounds
    for i, agent in enumerate(sim.agents):
        for blk in range(n):
            expected = ROUNDS if blk == i else max(0, ROUNDS - dist[i][blk] + 1)
            assert agent.versions[blk] == expected, (i, blk)
            if expected == ROUNDS:
                owner = sim.agents[blk].x
                np.testing.assert_array_equal(agent.x[b[blk]:b[blk + 1]], owner[b[blk]:b[blk + 1]])


def test_only_the_owner_moves_its_block() -> None:
    """With stragglers and delays: every block of every buffer is a copy the owner held at some time —
    here checked at the end: block b of any buffer with the owner's version equals the owner's block."""
    sim, _ = run(algorithm={"name": "asbcd", "alpha": 0.5}, delays={"case": 5, "straggler": 4})
    b = sim.agents[0].bounds
    for agent in sim.agents:
        for blk, owner in enumerate(sim.agents):
            assert agent.versions[blk] <= owner.iteration
            if agent.versions[blk] == owner.iteration:
                np.testing.assert_array_equal(agent.x[b[blk]:b[blk + 1]], owner.x[b[blk]:b[blk + 1]])
    # the network drained (quiesce): every neighbour's slot holds the owner's final message
    d = b[-1]
    for i, agent in enumerate(sim.agents):
        for j in sim.topology.neighbors(i):
            slot = sim.transports[j].slots[sim.transports[j].in_index[i]]
            assert slot[d + i] == agent.iteration > 0
            np.testing.assert_array_equal(slot[b[i]:b[i + 1]], agent.x[b[i]:b[i + 1]])
