"""RFAST: robust asynchronous push–pull gradient tracking with running sums (Zhu et al. 2023),
a baseline of Zhou & Pu 2025 §5, as restated in docs/algorithms.md §6.

Pull matrix R (row stochastic), push matrix C (column stochastic); on an
undirected graph R = C = W. Agent i keeps x_i, v_i, the tracker z_i, its last
gradient g_i, the running sum σ_i of tracker mass it pushed, and per
in-neighbour j the latest v_j and ρ̃_ij, the running sum it last consumed::

    init: x_i = x0, g_i = z_i = ∇f_i(x0; ξ), σ_i = 0, ρ̃_ij = 0
    loop: v_i ← x_i − α·z_i
          x_i ← r_ii·v_i + Σ_j r_ij·v_j                     # pull latest v_j
          g' ← ∇f_i(x_i; ξ)
          z_i ← z_i + g' − g_i + Σ_j (ρ_ij − ρ̃_ij);  ρ̃_ij ← ρ_ij;  g_i ← g'
          σ_i ← σ_i + z_i;  send (v_i, σ_i)                 # receiver j uses ρ_ji = c_ji·σ_i
          z_i ← c_ii·z_i

A message is the 2d-vector [v_i, σ_i] sent with ``push_model``: both halves
are "newest wins", so a lost message only delays mass — the next one carries
the running sum — which is what makes RFAST robust to loss. Tracking
invariant: Σ_i z_i + Σ_i Σ_j (c_ji·σ_i − ρ̃_ji) = Σ_i g_i at every moment.
Twice ADSGD's traffic; memory x, v, z, g, σ, g' plus 2d per slot and d per ρ̃.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import axpy, weighted_sum_into


@register
class RFAST(Algorithm):
    name = "rfast"
    payload = "model"
    requires = frozenset({"push_model"})
    memory_models = "3·deg + 6"
    #: the message holds v_i and σ_i; z_i, g_i and ρ̃ are the trackers
    checkpoint_state = (*Algorithm.checkpoint_state, "message", "z", "g", "rho_seen", "tracking")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        d = self.x.size
        self.message = np.zeros(2 * d, self.x.dtype)  # [v_i, σ_i]
        self.message[:d] = self.x
        self.v = self.message[:d]
        self.sigma = self.message[d:]
        self.z = np.zeros(d, self.x.dtype)
        self.g = np.zeros(d, self.x.dtype)
        self.rho_seen = np.zeros((0, d), self.x.dtype)
        self.tracking = False  # the first gradient initialised g_i and z_i

    @classmethod
    def effective_alpha(cls, alpha: float, n: int, section: Any) -> float:
        """α/n with ``algorithm.scale_alpha_by_n`` (Zhou & Pu 2025 §5: "identical effective step size")."""
        return alpha / n if getattr(section, "scale_alpha_by_n", True) else alpha

    def initial_message(self) -> np.ndarray:
        """What neighbours hold before this agent's first message: v = x0, σ = 0."""
        return self.message

    def run(self, t: Transport) -> OpGenerator:
        d = self.x.size
        w = self.setup.weights
        nbrs = list(t.in_neighbors)
        r_all = np.array([w[self.rank]] + [w[j] for j in nbrs])  # R row i: self first
        c_in = np.array([w[j] for j in nbrs])  # c_ij: share of j's pushed mass meant for i (C = W)
        c_self = w[self.rank]
        dt = self.x.dtype
        if self.rho_seen.shape != (len(nbrs), d):  # a resumed agent keeps the ρ̃ it restored
            self.rho_seen = np.zeros((len(nbrs), d), dt)
        pulled = np.empty((len(nbrs) + 1, d), dt)
        rho = np.empty((len(nbrs), d), dt)

        def pull() -> None:  # v_i ← x_i − α·z_i;  x_i ← r_ii·v_i + Σ_j r_ij·v_j (latest v_j)
            self.v[:] = self.x
            axpy(self.v, -self.alpha(), self.z)
            pulled[0] = self.v
            pulled[1:] = t.latest_models()[:, :d]
            weighted_sum_into(self.x, pulled, r_all)

        # The loop is rotated so that a gradient is its top: run() restarted on the restored attributes
        # (resume) yields it first, with nothing done before. Same operations in the same order.
        if not self.tracking:
            g = yield from t.gradient(self.x)
            self.g[:] = g
            self.z[:] = g
            self.tracking = True
            pull()
        while True:
            g = yield from t.gradient(self.x)
            rows = t.latest_models()
            np.multiply(rows[:, d:], c_in[:, None], out=rho)
            self.z += g
            self.z -= self.g
            self.z += rho.sum(axis=0)
            self.z -= self.rho_seen.sum(axis=0)
            self.rho_seen[:] = rho
            self.g[:] = g
            self.iteration += 1
            self.sigma += self.z
            t.push_model(self.message)
            self.z *= c_self
            pull()
