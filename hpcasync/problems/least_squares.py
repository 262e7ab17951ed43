"""Mishchenko et al. 2022 §experiments (Fig. 1, App. A): least squares on random data.

    f_i(x) = (1/2m_i) Σ_{r ∈ S_i} (a_r^T x − b_r)²,   ∇f_i(x) = (1/m_i) A_S^T (A_S x − b_S),

and the global objective f(x) = (1/2N) ‖A x − b‖². No regulariser
(``problem.lam`` is ignored). The minibatch gradient gathers the batch rows
into a preallocated block and uses two BLAS matrix-vector products.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcasync.data.dataset import Dataset
from hpcasync.problems.base import Oracle, Problem, ShardSampler, oracle_rng, register_problem


class LeastSquaresOracle(Oracle):
    """Minibatch gradient (1/B) A_B^T (A_B x − b_B) over one agent's rows."""

    def __init__(self, problem: LeastSquaresProblem, shard: np.ndarray, batch_size: int,
                 rng: np.random.Generator) -> None:
        self.problem = problem
        self.dim = problem.dim
        self.sampler = ShardSampler(shard, batch_size, rng)
        bs = self.sampler.batch_size
        self._A = np.empty((bs, self.dim))
        self._b = np.empty(bs)
        self._r = np.empty(bs)
        self._g = np.empty(self.dim)

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        idx = self.sampler.next()
        np.take(self.problem.A, idx, axis=0, out=self._A)
        np.take(self.problem.b, idx, out=self._b)
        np.matmul(self._A, x, out=self._r)
        self._r -= self._b
        loss = 0.5 * float(self._r @ self._r) / len(idx)
        np.matmul(self._r, self._A, out=self._g)
        self._g /= len(idx)
        return self._g, loss


@register_problem
class LeastSquaresProblem(Problem):
    """min_x (1/2N) ‖A x − b‖² with rows split among agents."""

    name = "least-squares"
    data_kind = "regression"
    suggest_for = {"classification": "softmax"}

    @classmethod
    def from_dataset(cls, dataset: Dataset, shards: list[np.ndarray], cfg: Any) -> LeastSquaresProblem:
        return cls(dataset, shards, cfg.algorithm.batch_size)

    def __init__(self, data: Dataset, shards: list[np.ndarray], batch_size: int) -> None:
        if data.is_classification:
            raise ValueError(f"least squares needs regression data, {data.name} has classes")
        if any(len(s) == 0 for s in shards):
            raise ValueError("every agent needs a non-empty shard")
        self.data = data
        self.A, self.b = data.X_train, data.y_train
        self.shards = [np.ascontiguousarray(s, dtype=np.int64) for s in shards]
        self.n_agents = len(shards)
        self.batch_size = batch_size
        self.dim = data.num_features

    def init_params(self, seed: int) -> np.ndarray:
        # Zeros, as in Mishchenko et al.'s (2022) experiment; seed unused.
        return np.zeros(self.dim, self.dtype)

    def oracle(self, agent: int, seed: int) -> LeastSquaresOracle:
        self._check_agent(agent)
        return LeastSquaresOracle(self, self.shards[agent], self.batch_size, oracle_rng(seed, agent))

    @staticmethod
    def _loss(A: np.ndarray, b: np.ndarray, x: np.ndarray) -> float:
        if len(A) == 0:
            return math.nan
        r = A @ x - b
        return 0.5 * float(r @ r) / len(b)

    def full_gradient(self, x: np.ndarray) -> np.ndarray:
        return (self.A @ x - self.b) @ self.A / len(self.b)

    def local_full_gradient(self, agent: int, x: np.ndarray) -> np.ndarray:
        self._check_agent(agent)
        A, b = self.A[self.shards[agent]], self.b[self.shards[agent]]
        return (A @ x - b) @ A / len(b)

    def optimum(self) -> np.ndarray:
        """argmin of the global train objective (least-squares solution, for tests/analysis)."""
        return np.linalg.lstsq(self.A, self.b, rcond=None)[0]

    def evaluate(self, x: np.ndarray) -> dict[str, float]:
        """Train and held-out (1/2N)‖Ax − b‖²; accuracy is nan (regression)."""
        x = np.asarray(x, dtype=np.float64)
        return {"train_loss": self._loss(self.A, self.b, x),
                "test_loss": self._loss(self.data.X_test, self.data.y_test, x),
                "test_accuracy": math.nan}
