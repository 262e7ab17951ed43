"""Delay models (docs/design.md §6): means under control, per-agent streams, the five cases, stragglers."""

from __future__ import annotations

import numpy as np
import pytest

from hpcasync import delays
from hpcasync.config import DelaySection


def sample_means(model: delays.DelayModel, k: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    comp = np.array([[model.compute(i) for _ in range(k)] for i in range(model.n)]).mean(axis=1)
    comm = np.array([[model.comm(i) for _ in range(k)] for i in range(model.n)]).mean(axis=1)
    return comp, comm


@pytest.mark.parametrize("case, comp_slow, comm_all, comm_slow", [
    (1, 1, 1, 1), (2, 1, 10, 10), (3, 10, 1, 1), (4, 1, 1, 10), (5, 10, 1, 10)])
def test_case_means(case: int, comp_slow: float, comm_all: float, comm_slow: float) -> None:
    model = delays.build(DelaySection(model="case", case=case, straggler=2), n=4, seed=1)
    comp, comm = sample_means(model)
    np.testing.assert_allclose(comp[[0, 1, 3]], 1.0, rtol=0.05)
    np.testing.assert_allclose(comp[2], comp_slow, rtol=0.05)
    np.testing.assert_allclose(comm[[0, 1, 3]], comm_all, rtol=0.12)
    np.testing.assert_allclose(comm[2], comm_slow, rtol=0.12)


def test_distributions_have_the_configured_spread() -> None:
    model = delays.build(DelaySection(model="case", case=1, compute_shape=10.0, comm_cv=1.0), n=1, seed=0)
    comp = np.array([model.compute(0) for _ in range(20000)])
    comm = np.array([model.comm(0) for _ in range(20000)])
    assert comp.std() / comp.mean() == pytest.approx(1 / np.sqrt(10), rel=0.05)  # gamma: cv = 1/√k
    assert comm.std() / comm.mean() == pytest.approx(1.0, rel=0.15)
    assert comp.min() > 0 and comm.min() > 0


def test_streams_are_per_agent_and_seeded() -> None:
    cfg = DelaySection(model="case", case=1)
    a, b = delays.build(cfg, 3, seed=7), delays.build(cfg, 3, seed=7)
    # drawing from agent 0 must not shift agent 1's stream
    for _ in range(5):
        a.compute(0)
    assert [a.compute(1) for _ in range(5)] == [b.compute(1) for _ in range(5)]
    c = delays.build(cfg, 3, seed=8)
    assert a.comm(2) != c.comm(2)


def test_comm_from_follows_the_peers_distribution_without_touching_its_stream() -> None:
    """The MPI engine's AD-PSGD response leg: rank 0 samples agent 2's comm delay (case 4, agent 2
    10× slower) from its own peer stream; agent 2's own samples are unchanged."""
    cfg = DelaySection(model="case", case=4, straggler=2)
    a, b = delays.build(cfg, 3, seed=7), delays.build(cfg, 3, seed=7)
    rng = delays.peer_comm_stream(7, 0)
    peer = np.array([a.comm_from(2, rng) for _ in range(4000)])
    assert peer.mean() == pytest.approx(10.0, rel=0.12)
    assert [a.comm(2) for _ in range(5)] == [b.comm(2) for _ in range(5)]


def test_random_stragglers_slow_a_fraction_p_of_iterations() -> None:
    model = delays.build(DelaySection(model="random-stragglers", p=0.1, s=10.0, compute_dist="constant"),
                         n=1, seed=0)
    comp = np.array([model.compute(0) for _ in range(20000)])
    assert set(np.unique(comp)) == {1.0, 10.0}
    assert (comp == 10.0).mean() == pytest.approx(0.1, abs=0.01)


def test_sleeping_stragglers_add_a_fixed_sleep_to_a_fraction_p_of_iterations() -> None:
    """Xiong et al. 2023's sleep variant: +sleep × mean (additive), not ×s; the same draws as the ×s variant."""
    cfg = DelaySection(model="sleeping-stragglers", p=0.1, sleep=6.0, compute_mean=2.0, compute_dist="constant")
    model = delays.build(cfg, n=2, seed=0)
    comp = np.array([model.compute(1) for _ in range(20000)])
    assert set(np.unique(comp)) == {2.0, 14.0}
    assert (comp == 14.0).mean() == pytest.approx(0.1, abs=0.01)
    times = delays.build(DelaySection(model="random-stragglers", p=0.1, s=7.0, compute_mean=2.0,
                                      compute_dist="constant"), n=2, seed=0)
    assert np.array_equal(comp, [times.compute(1) for _ in range(20000)])  # 1 + 6 = 7: same iterations slowed
    gamma = delays.build(DelaySection(model="sleeping-stragglers", p=0.1, sleep=6.0), n=1, seed=3)
    assert np.mean([gamma.compute(0) for _ in range(40000)]) == pytest.approx(1.0 + 0.1 * 6.0, rel=0.02)


def test_none_is_unit_compute_and_instant_comm() -> None:
    model = delays.build(DelaySection(model="none"), n=2, seed=0)
    assert (model.compute(0), model.comm(1), model.enabled) == (1.0, 0.0, False)
