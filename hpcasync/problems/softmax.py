"""Zhou & Pu 2025 §4.1: logistic regression with a non-convex regulariser.

    f(x) = (1/N) Σ_r [ logsumexp_c(z_rc) − z_{r,y_r} ] + λ Σ_k x_k² / (1 + x_k²),
    z_r = W^T a_r + b,

x = [vec(W) (p×C, row-major), b (C)] flattened, so dim = p·C + C; the
regulariser runs over every entry of x, bias included. Its gradient is
2λ x_k / (1 + x_k²)². The softmax gradient of sample r is
a_r (softmax(z_r) − e_{y_r})^T for W and softmax(z_r) − e_{y_r} for b.

Minibatch gradients run in one numba kernel (gather, logits, log-sum-exp,
outer-product accumulation, regulariser) with no allocation; the
simulator calls it ~10^5 times on tiny batches, where numpy's per-call
overhead would dominate. Full-set evaluation uses BLAS matmuls instead.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from hpcasync.data.dataset import Dataset
from hpcasync.problems.base import Oracle, Problem, ShardSampler, oracle_rng, register_problem


@numba.njit(cache=True, nogil=True)
def softmax_grad_kernel(X: np.ndarray, y: np.ndarray, idx: np.ndarray, x: np.ndarray, C: int,
                        lam: float, g: np.ndarray, z: np.ndarray) -> float:  # pragma: no cover - jitted
    """g ← ∇ of the objective over rows ``idx``; returns that loss (cross-entropy mean + regulariser).

    ``z`` is a scratch of length C. Zero features are skipped: half of the
    digits pixels and most MNIST pixels are 0.
    """
    p = X.shape[1]
    D = p * C
    B = idx.shape[0]
    inv_b = 1.0 / B
    for j in range(D + C):
        g[j] = 0.0
    loss = 0.0
    for r in range(B):
        i = idx[r]
        for c in range(C):
            z[c] = x[D + c]
        for k in range(p):
            v = X[i, k]
            if v != 0.0:
                base = k * C
                for c in range(C):
                    z[c] += v * x[base + c]
        m = z[0]
        for c in range(1, C):
            if z[c] > m:
                m = z[c]
        label = y[i]
        z_label = z[label]
        s = 0.0
        for c in range(C):
            z[c] = math.exp(z[c] - m)
            s += z[c]
        loss += math.log(s) + m - z_label
        scale = inv_b / s
        for c in range(C):
            z[c] *= scale
        z[label] -= inv_b
        for c in range(C):
            g[D + c] += z[c]
        for k in range(p):
            v = X[i, k]
            if v != 0.0:
                base = k * C
                for c in range(C):
                    g[base + c] += v * z[c]
    reg = 0.0
    two_lam = 2.0 * lam
    for j in range(D + C):
        t = x[j] * x[j]
        d = 1.0 + t
        reg += t / d
        g[j] += two_lam * x[j] / (d * d)
    return loss * inv_b + lam * reg


@numba.njit(cache=True, nogil=True)
def cross_entropy_rows(logits: np.ndarray, b: np.ndarray,
                       y: np.ndarray) -> tuple[float, int]:  # pragma: no cover - jitted
    """(Σ_r logsumexp(z_r) − z_{r,y_r}, #{r: argmax z_r = y_r}) for z_r = logits_r + b.

    One pass without temporaries; numpy's short-axis reductions cost more
    than the matmul on small sets. Ties in argmax go to the lowest class.
    """
    N, C = logits.shape
    total = 0.0
    correct = 0
    for r in range(N):
        m = logits[r, 0] + b[0]
        best = 0
        for c in range(1, C):
            v = logits[r, c] + b[c]
            if v > m:
                m = v
                best = c
        s = 0.0
        for c in range(C):
            s += math.exp(logits[r, c] + b[c] - m)
        label = y[r]
        total += math.log(s) + m - (logits[r, label] + b[label])
        if best == label:
            correct += 1
    return total, correct


def regulariser(x: np.ndarray, lam: float) -> float:
    """λ Σ_k x_k² / (1 + x_k²)."""
    t = x * x
    return float(lam * np.sum(t / (1.0 + t)))


class SoftmaxOracle(Oracle):
    """Minibatch gradient of f_i over one agent's shard (see module docstring)."""

    def __init__(self, problem: SoftmaxProblem, shard: np.ndarray, batch_size: int,
                 rng: np.random.Generator) -> None:
        self.problem = problem
        self.dim = problem.dim
        self.sampler = ShardSampler(shard, batch_size, rng)
        self._g = np.zeros(self.dim)
        self._z = np.zeros(problem.num_classes)

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        pb = self.problem
        if x.shape != (self.dim,):  # the kernel does no bounds checks
            raise ValueError(f"x has shape {x.shape}, expected ({self.dim},)")
        loss = softmax_grad_kernel(pb.X, pb.y, self.sampler.next(), x, pb.num_classes, pb.lam,
                                   self._g, self._z)
        return self._g, loss


@register_problem
class SoftmaxProblem(Problem):
    """Non-convex regularised multinomial logistic regression (Zhou & Pu 2025 §4.1) over agent shards."""

    name = "softmax"
    data_kind = "classification"
    suggest_for = {"regression": "least-squares"}

    @classmethod
    def from_dataset(cls, dataset: Dataset, shards: list[np.ndarray], cfg: Any) -> SoftmaxProblem:
        return cls(dataset, shards, cfg.algorithm.batch_size, cfg.problem.lam)

    def __init__(self, data: Dataset, shards: list[np.ndarray], batch_size: int, lam: float) -> None:
        if not data.is_classification:
            raise ValueError(f"softmax needs classification data, {data.name} is regression")
        if any(len(s) == 0 for s in shards):
            raise ValueError("every agent needs a non-empty shard")
        if any(s.min() < 0 or s.max() >= data.n_train for s in shards):
            raise ValueError(f"shard indices outside 0..{data.n_train - 1}")
        for y in (data.y_train, data.y_test):
            # the kernels index by label without bounds checks
            if len(y) and (y.min() < 0 or y.max() >= data.num_classes):
                raise ValueError(f"{data.name}: labels outside 0..{data.num_classes - 1}")
        self.data = data
        self.X, self.y = data.X_train, data.y_train
        self.shards = [np.ascontiguousarray(s, dtype=np.int64) for s in shards]
        self.n_agents = len(shards)
        self.batch_size = batch_size
        self.lam = float(lam)
        self.num_features = data.num_features
        self.num_classes = data.num_classes
        self.dim = self.num_features * self.num_classes + self.num_classes
        self._all = np.arange(data.n_train, dtype=np.int64)
        # Evaluation buffers, reused by every evaluate() call.
        self._train_logits = np.empty((data.n_train, self.num_classes))
        self._test_logits = np.empty((data.n_test, self.num_classes))

    def unflatten(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views (W (p×C), b (C)) into x."""
        D = self.num_features * self.num_classes
        return x[:D].reshape(self.num_features, self.num_classes), x[D:]

    def init_params(self, seed: int) -> np.ndarray:
        # Zeros: the usual logistic-regression start (uniform softmax, loss log C); seed unused.
        return np.zeros(self.dim, self.dtype)

    def oracle(self, agent: int, seed: int) -> SoftmaxOracle:
        self._check_agent(agent)
        return SoftmaxOracle(self, self.shards[agent], self.batch_size, oracle_rng(seed, agent))

    def _grad_over(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        g = np.zeros(self.dim)
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"x has shape {x.shape}, expected ({self.dim},)")
        softmax_grad_kernel(self.X, self.y, idx, x,
                            self.num_classes, self.lam, g, np.zeros(self.num_classes))
        return g

    def full_gradient(self, x: np.ndarray) -> np.ndarray:
        return self._grad_over(self._all, x)

    def local_full_gradient(self, agent: int, x: np.ndarray) -> np.ndarray:
        self._check_agent(agent)
        return self._grad_over(self.shards[agent], x)

    def _cross_entropy(self, X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray,
                       logits: np.ndarray) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of the rows of X; ``logits`` is the (N, C) scratch."""
        if len(X) == 0:
            return math.nan, math.nan
        np.matmul(X, W, out=logits)  # BLAS: the bulk of the work on large sets
        total, correct = cross_entropy_rows(logits, b, y)
        return total / len(y), correct / len(y)

    def evaluate(self, x: np.ndarray) -> dict[str, float]:
        """Full train objective (incl. regulariser), test cross-entropy (+ regulariser), test accuracy."""
        W, b = self.unflatten(np.asarray(x, dtype=np.float64))
        reg = regulariser(x, self.lam)
        train_ce, _ = self._cross_entropy(self.X, self.y, W, b, self._train_logits)
        test_ce, test_acc = self._cross_entropy(self.data.X_test, self.data.y_test, W, b, self._test_logits)
        return {"train_loss": train_ce + reg, "test_loss": test_ce + reg, "test_accuracy": test_acc}
