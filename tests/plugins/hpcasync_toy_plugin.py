"""A researcher's own algorithm, problem and dataset, outside the hpcasync package and never registered.

The tests put this folder on ``sys.path`` and run them as
``algorithm.name = "hpcasync_toy_plugin:ToyGossip"``,
``problem.name = "hpcasync_toy_plugin:ToyMeans"`` and
``data.name = "hpcasync_toy_plugin:toy_blobs"``, on the simulator and on MPI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcasync.algorithms import AgentSetup, Algorithm, OpGenerator, Transport
from hpcasync.data import Dataset
from hpcasync.problems import Oracle, Problem


class ToyGossip(Algorithm):
    """Asynchronous gossip SGD written with plain numpy (ADSGD's update with β = 1)::

        g ← ∇f_i(x_i);  x_i ← w_ii·x_i + Σ_j w_ij·x̃_ij − α·g;  push_model(x_i)
    """

    requires = frozenset({"push_model"})

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.w_self = setup.weights[setup.rank]

    def run(self, t: Transport) -> OpGenerator:
        w = np.array([self.setup.weights[j] for j in t.in_neighbors])
        while True:
            g = yield from t.gradient(self.x)
            mixed = self.w_self * self.x + w @ t.latest_models()
            self.x[:] = mixed - self.alpha() * g
            self.iteration += 1
            t.push_model(self.x)


class NeedsControlChannel(ToyGossip):
    """Declares a transport feature the MPI engine lacks (to test that the engine refuses it)."""

    requires = frozenset({"push_model", "send_small"})


class _MeanOracle(Oracle):
    def __init__(self, center: np.ndarray) -> None:
        self.center = center
        self.dim = center.size
        self._g = np.empty(self.dim)

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        np.subtract(x, self.center, out=self._g)
        return self._g, 0.5 * float(self._g @ self._g)


class ToyMeans(Problem):
    """f_i(x) = ½‖x − c_i‖² with c_i ~ N(0, I) from the run seed; the optimum is the mean of the c_i.
    It makes its own data (``data_kind = "generated"``), so it overrides ``from_config``."""

    data_kind = "generated"

    @classmethod
    def from_config(cls, cfg: Any, n_agents: int) -> ToyMeans:
        return cls(np.random.default_rng([cfg.run.seed, 77]).standard_normal((n_agents, cfg.data.dim)))

    def __init__(self, centers: np.ndarray) -> None:
        self.centers = centers
        self.n_agents, self.dim = centers.shape

    def init_params(self, seed: int) -> np.ndarray:
        return np.zeros(self.dim)

    def oracle(self, agent: int, seed: int) -> Oracle:
        return _MeanOracle(self.centers[agent])

    def evaluate(self, x: np.ndarray) -> dict[str, float]:
        loss = 0.5 * float(np.mean(np.sum((x - self.centers) ** 2, axis=1)))
        return {"train_loss": loss, "test_loss": loss, "test_accuracy": float("nan")}

    def full_gradient(self, x: np.ndarray) -> np.ndarray:
        return x - self.centers.mean(axis=0)

    def local_full_gradient(self, agent: int, x: np.ndarray) -> np.ndarray:
        return x - self.centers[agent]


def toy_blobs(cfg: Any, seed: int) -> Dataset:
    """Three Gaussian blobs in 5 dimensions (a data.name plug-in: ``(data_section, seed) -> Dataset``)."""
    rng = np.random.default_rng([seed, 78])
    means = 3.0 * rng.standard_normal((3, 5))
    y = rng.integers(0, 3, size=600)
    X = means[y] + rng.standard_normal((600, 5))
    return Dataset("toy-blobs", X[:480], y[:480], X[480:], y[480:], num_classes=3)


toy_blobs.kind = "classification"  # type: ignore[attr-defined]

NOT_A_CLASS = 42
