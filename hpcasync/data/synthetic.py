"""Synthetic problem data: Mishchenko et al.'s (2022) random least squares and per-agent quadratics."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcasync.data.dataset import Dataset, register_dataset
from hpcasync.errors import require

# Stream tags keep these generators independent of every other (seed, ...) stream.
_LSQ_STREAM = 0x6C7371  # "lsq"
_QUAD_STREAM = 0x71756164  # "quad"


def least_squares(n: int = 10000, d: int = 400, noise: float = 0.1, seed: int = 0,
                  n_test: int | None = None) -> Dataset:
    """Random least squares of Mishchenko et al. 2022 §experiments (Fig. 1, App. A).

    A ~ N(0, 1)^{n×d}, x* ~ N(0, 1)^d, b = A x* + noise · ε, ε ~ N(0, 1)^n.
    The n rows are the training set. A held-out test set of ``n_test`` rows
    (default n // 5, at least 1) is drawn from the same model with the same x*,
    so test loss measures generalisation. ``extras['x_star']`` is x*.
    """
    require(n >= 1, f"config field data.samples: expected >= 1, got {n}")
    require(d >= 1, f"config field data.dim: expected >= 1, got {d}")
    require(noise >= 0, f"config field data.noise: expected >= 0, got {noise}")
    n_test = max(1, n // 5) if n_test is None else n_test
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LSQ_STREAM]))
    x_star = rng.standard_normal(d)
    A = rng.standard_normal((n + n_test, d))
    b = A @ x_star + noise * rng.standard_normal(n + n_test)
    return Dataset("least-squares", A[:n], b[:n], A[n:], b[n:], num_classes=0,
                   extras={"x_star": x_star})


def least_squares_uniform(n: int = 10000, d: int = 400, noise: float = 1e-5, seed: int = 0,
                          n_test: int | None = None) -> Dataset:
    """The random least squares of Mishchenko et al.'s (2022) public Fig. 1 notebook.

    A ~ U[0, 1)^{n×d} / √d, x* ~ N(0, 1)^d, b = A x* + noise · ε, ε ~ N(0, 1)^n
    (the notebook's noise is 1e-5). The test set (default n // 5 rows, at least 1)
    follows the same model with the same x*. ``extras['x_star']`` is x*.
    With d = 400 the objective (1/2n)‖Ax − b‖² has L = λ_max(AᵀA/n) ≈ d/4 · 1/d = 0.25.
    """
    require(n >= 1, f"config field data.samples: expected >= 1, got {n}")
    require(d >= 1, f"config field data.dim: expected >= 1, got {d}")
    require(noise >= 0, f"config field data.noise: expected >= 0, got {noise}")
    n_test = max(1, n // 5) if n_test is None else n_test
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LSQ_STREAM, 1]))
    A = rng.random((n + n_test, d)) / np.sqrt(d)
    x_star = rng.standard_normal(d)
    b = A @ x_star + noise * rng.standard_normal(n + n_test)
    return Dataset("least-squares-uniform", A[:n], b[:n], A[n:], b[n:], num_classes=0,
                   extras={"x_star": x_star})


def quadratic_centers(n_agents: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Data of the per-agent quadratics f_i(x) = ½ h_i ‖x − c_i‖² (problems/quadratic.py).

    Centers c_i ~ N(0, 1)^d, curvatures h_i = 1. Returns (centers (n, d), curvatures (n,)).
    """
    require(d >= 1, f"config field data.dim: expected >= 1, got {d}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _QUAD_STREAM]))
    return rng.standard_normal((n_agents, d)), np.ones(n_agents)


@register_dataset("least-squares", kind="regression")
def _least_squares(cfg: Any, seed: int) -> Dataset:
    return least_squares(cfg.samples, cfg.dim, cfg.noise, seed)


@register_dataset("least-squares-uniform", kind="regression")
def _least_squares_uniform(cfg: Any, seed: int) -> Dataset:
    return least_squares_uniform(cfg.samples, cfg.dim, cfg.noise, seed)


@register_dataset("quadratic", kind="generated")
def _quadratic(cfg: Any, seed: int) -> None:
    """The quadratic problem has no samples: its per-agent centers depend on the number of agents,
    so the problem generates them itself (:func:`quadratic_centers`)."""
    return None
