"""ADSGD, Zhou & Pu 2025 Alg. 2 (eq. (5); double step size eq. (7)).

Agent i keeps x_i and the latest model x̃_ij pushed by each neighbour j::

    loop: g ← ∇f_i(x_i; ξ)                               # x_i is fixed while computing
          x_i ← (1−β)·x_i + β·(w_ii·x_i + Σ_j w_ij·x̃_ij) − α·g
          push_model(x_i)

β = 1 is eq. (5); β < 1 mixes with (1−β)I + βW (eq. (7)). The step size does
not depend on delays. Memory: |N_i| + 2 models (neighbour slots, x, g).
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport


@register
class ADSGD(Algorithm):
    name = "adsgd"
    payload = "model"
    requires = frozenset({"push_model"})
    reference_rank = 0  # the method the reports measure the others against
    memory_models = "deg + 2"

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.w_self = setup.weights[setup.rank]

    def run(self, t: Transport) -> OpGenerator:
        w_nbrs = np.array([self.setup.weights[j] for j in t.in_neighbors], dtype=np.float64)
        while True:
            g = yield from t.gradient(self.x)
            alpha = self.alpha()
            self.iteration += 1  # the pushed model is numbered by the new count
            t.mix_and_push(self.x, g, w_nbrs, self.w_self, alpha, self.setup.beta)
