"""Per-agent quadratics: a problem whose optimum is known in closed form.

    f_i(x) = ½ h_i ‖x − c_i‖²,   ∇f_i(x) = h_i (x − c_i) (+ σ ξ, ξ ~ N(0, I) if σ > 0).

The minimiser of Σ_i p_i f_i is x* = Σ_i p_i h_i c_i / Σ_i p_i h_i. With
p_i = update frequencies this is where a frequency-biased method such as
AD-PSGD lands (docs/design.md §4), so tests can measure the bias exactly. The global
objective is the plain mean (1/n) Σ_i f_i.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcasync.errors import UserError
from hpcasync.problems.base import Oracle, Problem, oracle_rng, register_problem


class QuadraticOracle(Oracle):
    """Exact (σ = 0) or Gaussian-noised gradient of one agent's quadratic."""

    def __init__(self, center: np.ndarray, curvature: float, sigma: float, rng: np.random.Generator) -> None:
        self.center = center
        self.h = float(curvature)
        self.sigma = float(sigma)
        self.rng = rng
        self.dim = len(center)
        self._g = np.empty(self.dim)
        self._noise = np.empty(self.dim) if sigma > 0 else None

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        np.subtract(x, self.center, out=self._g)
        loss = 0.5 * self.h * float(self._g @ self._g)
        self._g *= self.h
        if self._noise is not None:
            self.rng.standard_normal(out=self._noise)
            self._noise *= self.sigma
            self._g += self._noise
        return self._g, loss


@register_problem
class QuadraticProblem(Problem):
    """n quadratics with centers (n, d) and curvatures (n,) > 0; gradient noise σ ≥ 0."""

    name = "quadratic"
    data_kind = "generated"

    @classmethod
    def from_config(cls, cfg: Any, n_agents: int) -> QuadraticProblem:
        """Centers and curvatures from ``data.dim`` and the run seed; noise σ = ``data.noise``."""
        from hpcasync.data.synthetic import quadratic_centers

        if cfg.data.name != "quadratic":
            raise UserError(f"config field problem.name {cfg.problem.name!r} does not fit data.name "
                            f"{cfg.data.name!r}: the quadratic problem and the quadratic data only go together")
        centers, curvatures = quadratic_centers(n_agents, cfg.data.dim, cfg.run.seed)
        return cls(centers, curvatures, sigma=cfg.data.noise)

    def __init__(self, centers: np.ndarray, curvatures: np.ndarray, sigma: float = 0.0) -> None:
        centers = np.ascontiguousarray(centers, dtype=np.float64)
        curvatures = np.asarray(curvatures, dtype=np.float64)
        if centers.ndim != 2 or curvatures.shape != (len(centers),):
            raise ValueError("centers must be (n, d) and curvatures (n,)")
        if np.any(curvatures <= 0) or sigma < 0:
            raise ValueError("curvatures must be > 0 and sigma >= 0")
        self.centers, self.curvatures, self.sigma = centers, curvatures, float(sigma)
        self.n_agents, self.dim = centers.shape

    def init_params(self, seed: int) -> np.ndarray:
        return np.zeros(self.dim, self.dtype)

    def oracle(self, agent: int, seed: int) -> QuadraticOracle:
        self._check_agent(agent)
        return QuadraticOracle(self.centers[agent], self.curvatures[agent], self.sigma,
                               oracle_rng(seed, agent))

    def optimum(self, weights: np.ndarray | None = None) -> np.ndarray:
        """x* = Σ p_i h_i c_i / Σ p_i h_i, minimiser of Σ p_i f_i (uniform p by default)."""
        p = np.ones(self.n_agents) if weights is None else np.asarray(weights, dtype=np.float64)
        if p.shape != (self.n_agents,) or np.any(p < 0) or p.sum() <= 0:
            raise ValueError(f"weights must be {self.n_agents} non-negative numbers, not all zero")
        ph = p * self.curvatures
        return ph @ self.centers / ph.sum()

    def local_full_gradient(self, agent: int, x: np.ndarray) -> np.ndarray:
        self._check_agent(agent)
        return self.curvatures[agent] * (np.asarray(x, dtype=np.float64) - self.centers[agent])

    def full_gradient(self, x: np.ndarray) -> np.ndarray:
        """∇ (1/n) Σ_i f_i = (1/n) Σ_i h_i (x − c_i)."""
        diff = np.asarray(x, dtype=np.float64)[None, :] - self.centers
        return self.curvatures @ diff / self.n_agents

    def evaluate(self, x: np.ndarray) -> dict[str, float]:
        """train_loss = (1/n) Σ_i f_i(x); no held-out data, so test_loss repeats it; accuracy nan."""
        diff = np.asarray(x, dtype=np.float64)[None, :] - self.centers
        loss = float(np.mean(0.5 * self.curvatures * np.einsum("ij,ij->i", diff, diff)))
        return {"train_loss": loss, "test_loss": loss, "test_accuracy": math.nan}
