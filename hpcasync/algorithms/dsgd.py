"""Synchronous decentralized SGD (DSGD), the baseline of Zhou & Pu 2025 §5.

Round k waits for every neighbour's round-k model::

    x_i^{k+1} = Σ_j w_ij·x_j^k − α·∇f_i(x_i^k; ξ)

It is ADSGD's update (β = 1) with fresh instead of latest models, so with zero
delays and equal computation times the two produce the same iterates.
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import adsgd_step


@register
class DSGD(Algorithm):
    name = "dsgd"
    synchronous = True
    payload = "none"
    requires = frozenset({"neighbor_exchange"})
    mixes_stale_copies = False
    staleness_note = "synchronous rounds: mixes round-k models only"
    memory_models = "deg + 2"
    #: between the two yields of a round the gradient is kept, and where the round is
    checkpoint_state = (*Algorithm.checkpoint_state, "g", "exchanging")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.w_self = setup.weights[setup.rank]
        self.g = np.zeros_like(self.x)
        self.exchanging = False  # True while waiting in the round's exchange (a resume point)

    def run(self, t: Transport) -> OpGenerator:
        w_nbrs = np.array([self.setup.weights[j] for j in t.in_neighbors], dtype=np.float64)
        while True:
            if not self.exchanging:  # a resumed agent may restart in the exchange
                self.g = yield from t.gradient(self.x)
                self.exchanging = True
            nbrs = yield from t.neighbor_exchange(self.x)
            self.exchanging = False
            adsgd_step(self.x, self.g, nbrs, w_nbrs, self.w_self, self.alpha(), 1.0)
            self.iteration += 1
