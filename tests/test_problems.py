"""Gradient oracles: finite differences, unbiasedness, evaluation, build()."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from hpcasync import problems
from hpcasync.config import Config
from hpcasync.data.dataset import Dataset
from hpcasync.data.digits import load_digits
from hpcasync.data.partition import iid
from hpcasync.data.synthetic import least_squares
from hpcasync.errors import UserError
from hpcasync.problems.least_squares import LeastSquaresProblem
from hpcasync.problems.quadratic import QuadraticProblem
from hpcasync.problems.softmax import SoftmaxProblem, regulariser


def objective(problem, x: np.ndarray) -> float:
    return problem.evaluate(x)["train_loss"]


def central_fd(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    g = np.empty_like(x)
    for k in range(len(x)):
        e = np.zeros_like(x)
        e[k] = h
        g[k] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def small_classification(n: int = 60, p: int = 5, C: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset("toy", rng.random((n, p)), rng.integers(0, C, n), rng.random((20, p)),
                   rng.integers(0, C, 20), num_classes=C)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits(0.2, 0)


# ---------------------------------------------------------------- softmax


def test_softmax_gradient_matches_finite_differences() -> None:
    ds = small_classification()
    pb = SoftmaxProblem(ds, iid(ds.y_train, 3, 0), batch_size=8, lam=0.1)
    x = np.random.default_rng(1).standard_normal(pb.dim)
    assert pb.dim == 5 * 3 + 3
    assert rel_err(pb.full_gradient(x), central_fd(lambda v: objective(pb, v), x)) < 1e-6
    # local objective of agent 1 = evaluate on a problem that holds only its shard
    shard = pb.shards[1]
    local = SoftmaxProblem(Dataset("s", ds.X_train[shard], ds.y_train[shard], ds.X_test, ds.y_test, 3),
                           [np.arange(len(shard))], batch_size=8, lam=0.1)
    assert rel_err(pb.local_full_gradient(1, x), central_fd(lambda v: objective(local, v), x)) < 1e-6


def test_softmax_full_batch_oracle_and_loss() -> None:
    ds = small_classification()
    pb = SoftmaxProblem(ds, [np.arange(ds.n_train)], batch_size=10_000, lam=0.05)
    x = np.random.default_rng(2).standard_normal(pb.dim)
    g, loss = pb.oracle(0, 0).gradient(x)
    np.testing.assert_allclose(g, pb.full_gradient(x), rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(pb.evaluate(x)["train_loss"], rel=1e-12)


def test_softmax_matches_numpy_reference(digits: Dataset) -> None:
    pb = SoftmaxProblem(digits, iid(digits.y_train, 9, 0), batch_size=32, lam=1e-3)
    x = np.random.default_rng(3).standard_normal(pb.dim) * 0.1
    idx = np.arange(100)
    W, b = pb.unflatten(x)
    Z = digits.X_train[idx] @ W + b
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(100), digits.y_train[idx]] -= 1.0
    P /= 100
    ref = np.concatenate([(digits.X_train[idx].T @ P).ravel(), P.sum(axis=0)])
    ref += 2e-3 * x / (1 + x * x) ** 2
    np.testing.assert_allclose(pb._grad_over(idx, x), ref, rtol=1e-10, atol=1e-13)


def test_softmax_evaluate_at_zero(digits: Dataset) -> None:
    pb = SoftmaxProblem(digits, iid(digits.y_train, 9, 0), batch_size=32, lam=1e-4)
    x0 = pb.init_params(0)
    assert x0.shape == (pb.dim,) and not x0.any()
    ev = pb.evaluate(x0)
    assert set(ev) == {"train_loss", "test_loss", "test_accuracy"}
    assert ev["train_loss"] == pytest.approx(math.log(10), rel=1e-12)
    assert ev["test_loss"] == pytest.approx(math.log(10), rel=1e-12)
    assert 0.0 <= ev["test_accuracy"] <= 1.0
    x = np.random.default_rng(0).standard_normal(pb.dim)
    assert regulariser(x, 1e-4) > 0
    assert 0.0 <= pb.evaluate(x)["test_accuracy"] <= 1.0


def test_softmax_training_learns(digits: Dataset) -> None:
    pb = SoftmaxProblem(digits, [np.arange(digits.n_train)], batch_size=32, lam=1e-4)
    oracle, x = pb.oracle(0, 0), pb.init_params(0)
    for _ in range(1500):
        g, _ = oracle.gradient(x)
        x -= 0.5 * g
    assert pb.evaluate(x)["test_accuracy"] > 0.85


def test_mean_of_local_gradients_is_full_gradient(digits: Dataset) -> None:
    n = 9
    usable = np.arange(digits.n_train - digits.n_train % n)  # equal shard sizes
    shards = [usable[i::n] for i in range(n)]
    ds = Dataset("d", digits.X_train[usable], digits.y_train[usable], digits.X_test, digits.y_test, 10)
    pb = SoftmaxProblem(ds, shards, batch_size=32, lam=1e-2)
    x = np.random.default_rng(4).standard_normal(pb.dim) * 0.1
    mean_local = np.mean([pb.local_full_gradient(i, x) for i in range(n)], axis=0)
    np.testing.assert_allclose(mean_local, pb.full_gradient(x), rtol=1e-10, atol=1e-13)


def test_minibatches_of_one_epoch_average_to_local_gradient(digits: Dataset) -> None:
    shard = np.arange(160)
    pb = SoftmaxProblem(digits, [shard, np.arange(160, digits.n_train)], batch_size=32, lam=1e-2)
    x = np.random.default_rng(5).standard_normal(pb.dim) * 0.1
    oracle = pb.oracle(0, seed=7)
    grads = [oracle.gradient(x)[0].copy() for _ in range(5)]  # 160 / 32 = one epoch
    np.testing.assert_allclose(np.mean(grads, axis=0), pb.local_full_gradient(0, x), rtol=1e-10, atol=1e-13)
    assert not np.allclose(grads[0], grads[1])  # the batches do differ


def test_oracle_buffer_reuse_and_determinism(digits: Dataset) -> None:
    pb = SoftmaxProblem(digits, iid(digits.y_train, 3, 0), batch_size=32, lam=1e-4)
    x = np.random.default_rng(6).standard_normal(pb.dim) * 0.1
    a, b, c = pb.oracle(1, 5), pb.oracle(1, 5), pb.oracle(2, 5)
    ga, _ = a.gradient(x)
    ga2, _ = a.gradient(x)
    assert ga is ga2  # documented: one reused buffer
    b.gradient(x)
    np.testing.assert_array_equal(b.gradient(x)[0], ga2)
    assert not np.allclose(c.gradient(x)[0], ga2)
    with pytest.raises(IndexError):
        pb.oracle(3, 0)


# ---------------------------------------------------------------- least squares


def test_least_squares_gradients() -> None:
    ds = least_squares(n=40, d=6, noise=0.1, seed=0)
    pb = LeastSquaresProblem(ds, iid(ds.y_train, 4, 0), batch_size=5)
    x = np.random.default_rng(1).standard_normal(pb.dim)
    assert rel_err(pb.full_gradient(x), central_fd(lambda v: objective(pb, v), x)) < 1e-6
    mean_local = np.mean([pb.local_full_gradient(i, x) for i in range(4)], axis=0)
    np.testing.assert_allclose(mean_local, pb.full_gradient(x), rtol=1e-12)
    oracle = pb.oracle(2, 0)
    grads = [oracle.gradient(x)[0].copy() for _ in range(2)]  # shard of 10, batch 5: one epoch
    np.testing.assert_allclose(np.mean(grads, axis=0), pb.local_full_gradient(2, x), rtol=1e-12)
    full = LeastSquaresProblem(ds, [np.arange(40)], batch_size=100)
    g, loss = full.oracle(0, 0).gradient(x)
    np.testing.assert_allclose(g, pb.full_gradient(x), rtol=1e-12)
    assert loss == pytest.approx(pb.evaluate(x)["train_loss"])
    ev = pb.evaluate(pb.optimum())
    assert math.isnan(ev["test_accuracy"]) and ev["train_loss"] < 0.01
    assert np.linalg.norm(pb.full_gradient(pb.optimum())) < 1e-10


# ---------------------------------------------------------------- quadratic


def two_quadratics(sigma: float = 0.0) -> QuadraticProblem:
    return QuadraticProblem(np.array([[0.0, 0.0], [3.0, 6.0]]), np.array([1.0, 2.0]), sigma=sigma)


def test_quadratic_optimum_closed_form() -> None:
    pb = two_quadratics()
    np.testing.assert_allclose(pb.optimum(), [2.0, 4.0])  # (1·0 + 2·c2) / 3
    p = np.array([3.0, 1.0])
    x_star = pb.optimum(p)
    np.testing.assert_allclose(x_star, np.array([3.0, 6.0]) * 2 / 5)
    weighted = sum(p[i] * pb.local_full_gradient(i, x_star) for i in range(2))
    np.testing.assert_allclose(weighted, 0.0, atol=1e-12)
    np.testing.assert_allclose(pb.full_gradient(pb.optimum()), 0.0, atol=1e-12)


def test_quadratic_gradients_and_evaluate() -> None:
    pb = two_quadratics()
    x = np.array([0.3, -1.2])
    assert rel_err(pb.full_gradient(x), central_fd(lambda v: objective(pb, v), x)) < 1e-6
    g, loss = pb.oracle(1, 0).gradient(x)
    np.testing.assert_allclose(g, pb.local_full_gradient(1, x))
    assert loss == pytest.approx(0.5 * 2.0 * np.sum((x - [3.0, 6.0]) ** 2))
    ev = pb.evaluate(x)
    assert math.isnan(ev["test_accuracy"]) and ev["test_loss"] == ev["train_loss"]


def test_quadratic_noise_is_unbiased() -> None:
    pb = two_quadratics(sigma=0.5)
    x = np.array([1.0, 1.0])
    oracle = pb.oracle(0, 3)
    grads = np.array([oracle.gradient(x)[0].copy() for _ in range(4000)])
    np.testing.assert_allclose(grads.mean(axis=0), pb.local_full_gradient(0, x), atol=0.05)
    assert grads.std(axis=0) == pytest.approx([0.5, 0.5], rel=0.1)


# ---------------------------------------------------------------- build()


def config(**sections: dict) -> Config:
    cfg = Config()
    for name, values in sections.items():
        for key, value in values.items():
            setattr(getattr(cfg, name), key, value)
    return cfg


def test_build_default_softmax_on_digits() -> None:
    cfg = config(data={"partition": "heterogeneity", "rho": 1.0}, algorithm={"batch_size": 16},
                 problem={"lam": 1e-3})
    pb = problems.build(cfg, 9)
    assert isinstance(pb, SoftmaxProblem) and pb.n_agents == 9 and pb.dim == 650
    assert pb.batch_size == 16 and pb.lam == 1e-3
    assert all(len(np.unique(pb.y[s])) <= 3 for s in pb.shards)


def test_build_least_squares_and_quadratic() -> None:
    cfg = config(data={"name": "least-squares", "samples": 90, "dim": 4}, problem={"name": "least-squares"})
    pb = problems.build(cfg, 3)
    assert isinstance(pb, LeastSquaresProblem) and pb.dim == 4
    cfg = config(data={"name": "quadratic", "dim": 5}, problem={"name": "quadratic"}, run={"seed": 2})
    pb = problems.build(cfg, 4)
    assert isinstance(pb, QuadraticProblem) and pb.centers.shape == (4, 5)
    np.testing.assert_array_equal(pb.centers, problems.build(cfg, 4).centers)


@pytest.mark.parametrize(("problem", "dataset"), [("softmax", "least-squares"), ("least-squares", "digits"),
                                                  ("quadratic", "digits"), ("softmax", "quadratic")])
def test_build_mismatch(problem: str, dataset: str) -> None:
    cfg = config(data={"name": dataset}, problem={"name": problem})
    with pytest.raises(UserError, match=rf"problem.name '{problem}'.*data.name '{dataset}'"):
        problems.build(cfg, 3)
