"""Numba mixing kernels against numpy references (Zhou & Pu 2025 Alg. 2 and 3, docs/design.md §4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hpcasync.kernels import (
    add_and_zero,
    adsgd_delta_step,
    adsgd_delta_step_inbox,
    adsgd_step,
    adsgd_step_blocked,
    axpy,
    consensus_distance,
    copy_into,
    mean_rows_into,
    scale_into,
    warmup,
    weighted_sum_into,
)

DIMS = [1, 2, 7, 1023, 1024, 1025, 3001]
DEGS = [0, 1, 2, 3, 5]
TOL = dict(rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warmup()


def _state(d: int, deg: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng([d, deg, seed])
    x, g = rng.standard_normal(d), rng.standard_normal(d)
    nbrs = rng.standard_normal((deg, d))
    w = rng.random(deg + 1)
    w /= w.sum()
    return x, g, nbrs, w[1:].copy(), float(w[0])


def _adsgd_ref(x, g, nbrs, w_nbrs, w_self, alpha, beta):
    """Zhou & Pu 2025 eq. (7): x ← (1−β)x + β(w_ii x + Σ_j w_ij x̃_j) − αg."""
    return (1 - beta) * x + beta * (w_self * x + w_nbrs @ nbrs) - alpha * g


@pytest.mark.parametrize("kernel", [adsgd_step, adsgd_step_blocked])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("deg", DEGS)
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_adsgd_step_matches_numpy(kernel, d: int, deg: int, beta: float) -> None:
    x, g, nbrs, w_nbrs, w_self = _state(d, deg)
    expected = _adsgd_ref(x, g, nbrs, w_nbrs, w_self, 0.05, beta)
    nbrs0, g0, buf = nbrs.copy(), g.copy(), x
    assert kernel(x, g, nbrs, w_nbrs, w_self, 0.05, beta) is None
    assert x is buf  # updated in place, inputs untouched
    np.testing.assert_allclose(x, expected, **TOL)
    np.testing.assert_array_equal(nbrs, nbrs0)
    np.testing.assert_array_equal(g, g0)


def test_adsgd_step_beta_one_is_plain_mixing() -> None:
    # Consensus: equal models and g = 0 stay where they are (W doubly stochastic).
    d, deg = 17, 3
    x = np.full(d, 2.5)
    nbrs = np.full((deg, d), 2.5)
    adsgd_step(x, np.zeros(d), nbrs, np.full(deg, 0.25), 0.25, 0.1, 1.0)
    np.testing.assert_allclose(x, 2.5, rtol=0, atol=1e-15)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_adsgd_delta_step(d: int, beta: float) -> None:
    rng = np.random.default_rng(d)
    x, s, g = rng.standard_normal((3, d))
    delta = np.full(d, np.nan)  # must be overwritten entirely
    w_self, alpha = 0.4, 0.03
    exp_delta = (1 - beta) * x + beta * (w_self * x + s) - alpha * g - x
    exp_x = x + exp_delta
    s0 = s.copy()
    adsgd_delta_step(x, s, g, delta, w_self, alpha, beta)
    np.testing.assert_allclose(delta, exp_delta, **TOL)
    np.testing.assert_allclose(x, exp_x, **TOL)
    np.testing.assert_array_equal(s, s0)


@pytest.mark.parametrize("d", DIMS)
def test_adsgd_delta_step_inbox_fuses_drain(d: int) -> None:
    rng = np.random.default_rng(d + 1)
    x, s, inbox, g = rng.standard_normal((4, d))
    x2, s2, g2 = x.copy(), s.copy(), g.copy()
    inbox2 = inbox.copy()
    delta, delta2 = np.empty(d), np.empty(d)
    adsgd_delta_step_inbox(x, s, inbox, g, delta, 0.3, 0.02, 0.7)
    # Reference: drain then step, the unfused Alg. 3 loop.
    add_and_zero(s2, inbox2)
    adsgd_delta_step(x2, s2, g2, delta2, 0.3, 0.02, 0.7)
    np.testing.assert_allclose(s, s2, **TOL)
    np.testing.assert_allclose(x, x2, **TOL)
    np.testing.assert_allclose(delta, delta2, **TOL)
    assert not inbox.any()


def test_alg2_and_alg3_give_the_same_iterates() -> None:
    """docs/design.md §4: with the same (here: immediate) arrivals Alg. 2 and Alg. 3 agree to rounding."""
    rng = np.random.default_rng(7)
    n, d, alpha, beta = 4, 33, 0.05, 0.8
    W = np.array([[0.5, 0.25, 0, 0.25], [0.25, 0.5, 0.25, 0], [0, 0.25, 0.5, 0.25], [0.25, 0, 0.25, 0.5]])
    x0 = rng.standard_normal((n, d))
    xa = x0.copy()
    xb = x0.copy()
    s = W @ x0 - np.diag(W)[:, None] * x0  # s_i = Σ_{j≠i} w_ij x_j
    inbox = np.zeros((n, d))
    delta = np.empty(d)
    for _ in range(5):
        grads = rng.standard_normal((n, d))
        snapshot = xa.copy()  # Alg. 2: everybody mixes the models of the previous round
        for i in range(n):
            nb = [j for j in range(n) if j != i and W[i, j] > 0]
            xi = snapshot[i].copy()
            nbrs = np.ascontiguousarray(snapshot[nb])
            adsgd_step(xi, grads[i], nbrs, W[i, nb].copy(), W[i, i], alpha, beta)
            xa[i] = xi
        deltas = np.empty((n, d))
        for i in range(n):
            adsgd_delta_step_inbox(xb[i], s[i], inbox[i], grads[i], delta, W[i, i], alpha, beta)
            deltas[i] = delta
        for i in range(n):  # deliver w_ji Δ_i to every out-neighbour j
            for j in range(n):
                if j != i and W[j, i] > 0:
                    axpy(inbox[j], W[j, i], deltas[i])
        np.testing.assert_allclose(xb, xa, rtol=0, atol=1e-12)
    add_and_zero(s[0], inbox[0])
    np.testing.assert_allclose(s[0], W[0, 1:] @ xb[1:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", DIMS)
def test_small_kernels(d: int) -> None:
    rng = np.random.default_rng(d + 2)
    y, x, s, inbox = rng.standard_normal((4, d))
    exp = y + 0.7 * x
    axpy(y, 0.7, x)
    np.testing.assert_allclose(y, exp, **TOL)
    exp = s + inbox
    add_and_zero(s, inbox)
    np.testing.assert_allclose(s, exp, **TOL)
    assert not inbox.any()
    out = np.full(d, np.nan)
    scale_into(out, -1.5, x)
    np.testing.assert_allclose(out, -1.5 * x, **TOL)
    copy_into(out, y)
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("m", [0, 1, 2, 5])
def test_weighted_sum_into(d: int, m: int) -> None:
    rng = np.random.default_rng([d, m])
    rows = rng.standard_normal((m, d))
    w = rng.random(m)
    out = np.full(d, np.nan)
    weighted_sum_into(out, rows, w)
    np.testing.assert_allclose(out, w @ rows, **TOL)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", [1, 2, 9])
def test_mean_and_consensus_distance(d: int, n: int) -> None:
    rng = np.random.default_rng([d, n, 3])
    rows = rng.standard_normal((n, d))
    mean = np.full(d, np.nan)
    mean_rows_into(mean, rows)
    np.testing.assert_allclose(mean, rows.mean(axis=0), **TOL)
    got = consensus_distance(rows, mean)
    expected = np.sum((rows - rows.mean(axis=0)) ** 2) / n
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_mismatched_lengths_raise_instead_of_reading_out_of_bounds() -> None:
    x, g = np.zeros(5), np.zeros(4)
    with pytest.raises(ValueError, match="length"):
        adsgd_step(x, g, np.zeros((2, 5)), np.zeros(2), 0.5, 0.1, 1.0)
    with pytest.raises(ValueError, match="length"):
        adsgd_step(x, np.zeros(5), np.zeros((2, 6)), np.zeros(2), 0.5, 0.1, 1.0)
    with pytest.raises(ValueError, match="weight"):
        adsgd_step(x, np.zeros(5), np.zeros((2, 5)), np.zeros(3), 0.5, 0.1, 1.0)
    with pytest.raises(ValueError, match="length"):
        adsgd_delta_step(x, np.zeros(5), np.zeros(5), np.zeros(4), 0.5, 0.1, 1.0)
    with pytest.raises(ValueError, match="length"):
        axpy(x, 1.0, g)
    with pytest.raises(ValueError, match="zero rows"):
        mean_rows_into(x, np.zeros((0, 5)))


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    d=st.integers(1, 70),
    deg=st.integers(0, 5),
    alpha=st.floats(0, 1),
    beta=st.floats(0.01, 1),
)
def test_adsgd_step_property(data, d: int, deg: int, alpha: float, beta: float) -> None:
    x = data.draw(hnp.arrays(np.float64, d, elements=finite))
    g = data.draw(hnp.arrays(np.float64, d, elements=finite))
    nbrs = data.draw(hnp.arrays(np.float64, (deg, d), elements=finite))
    w = data.draw(hnp.arrays(np.float64, deg + 1, elements=st.floats(0.01, 1)))
    w /= w.sum()
    expected = _adsgd_ref(x, g, nbrs, w[1:], w[0], alpha, beta)
    adsgd_step(x, g, nbrs, w[1:].copy(), float(w[0]), alpha, beta)
    np.testing.assert_allclose(x, expected, rtol=1e-12, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), d=st.integers(1, 70), alpha=st.floats(0, 1), beta=st.floats(0.01, 1))
def test_delta_step_property(data, d: int, alpha: float, beta: float) -> None:
    """x_new − x_old equals the Δ written out, and the Δ matches Zhou & Pu 2025 Alg. 3."""
    x, s, g = (data.draw(hnp.arrays(np.float64, d, elements=finite)) for _ in range(3))
    x_old = x.copy()
    delta = np.empty(d)
    adsgd_delta_step(x, s, g, delta, 0.5, alpha, beta)
    np.testing.assert_allclose(delta, (1 - beta) * x_old + beta * (0.5 * x_old + s) - alpha * g - x_old,
                               rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(x, x_old + delta, rtol=0, atol=0)
