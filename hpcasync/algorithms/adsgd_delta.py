"""Memory-efficient ADSGD, Zhou & Pu 2025 Alg. 3 (App. A.3): exchange model changes.

Agent i keeps s_i = Σ_j w_ij·x̃_ij instead of every neighbour model::

    init: s_i ← (1 − w_ii)·x0
    loop: g ← ∇f_i(x_i; ξ)
          s_i ← s_i + drain()
          Δ ← (1−β)·x_i + β·(w_ii·x_i + s_i) − α·g − x_i
          x_i ← x_i + Δ
          for j in N_i: push_delta(j, w_ji·Δ)

Memory: x, s, g, Δ = 4 models whatever the degree. Deltas commute, so
out-of-order arrival is harmless; a lost delta is not (the transports lose
none). With the same arrival order this produces Alg. 2's iterates, and once
every delta has landed s_i = Σ_j w_ij·x_j.
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import adsgd_delta_step


@register
class ADSGDDelta(Algorithm):
    name = "adsgd-delta"
    payload = "delta"
    requires = frozenset({"push_delta"})
    reference_rank = 1  # ADSGD by another route: the reference where plain ADSGD is absent
    plot_linestyle = "--"
    memory_models = "4"
    checkpoint_state = (*Algorithm.checkpoint_state, "s")  # Δ is scratch, rewritten every step

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.w_self = setup.weights[setup.rank]
        self.s = (1.0 - self.w_self) * self.x
        self.delta = np.zeros_like(self.x)

    @property
    def delta_target(self) -> np.ndarray:
        return self.s

    def run(self, t: Transport) -> OpGenerator:
        out = [(j, self.setup.out_weights[j]) for j in t.out_neighbors]
        while True:
            g = yield from t.gradient(self.x)
            t.drain_into(self.s)
            adsgd_delta_step(self.x, self.s, g, self.delta, self.w_self, self.alpha(), self.setup.beta)
            self.iteration += 1
            for j, w_ji in out:
                t.push_delta(j, self.delta, w_ji)

    def finish(self, t: Transport) -> None:
        """Take in whatever arrived after the last step, so s_i = Σ_j w_ij·x_j at quiescence."""
        t.drain_into(self.s)
