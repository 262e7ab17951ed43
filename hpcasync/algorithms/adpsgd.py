"""AD-PSGD (Lian et al. 2018), a baseline of Zhou & Pu 2025 §5.

The graph must be bipartite; one side is *active*. Every agent computes a
gradient at a snapshot of x_i and applies it to its current model::

    g ← ∇f_i(x̂_i; ξ);   x_i ← x_i − α·g

and after each gradient an active agent picks a uniformly random neighbour j
and atomically sets x_i, x_j ← (x_i + x_j)/2, waiting while j is busy in
another exchange. Averaging preserves Σ_i x_i, so the average model drifts
by −α Σ_i p_i ∇f_i where p_i is agent i's update frequency: AD-PSGD
converges to a stationary point of Σ_i p_i f_i, not of Σ_i f_i (the bias
Zhou & Pu 2025 shows under stragglers).
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import axpy


@register
class ADPSGD(Algorithm):
    name = "adpsgd"
    payload = "none"
    needs_bipartite = True
    requires = frozenset({"pair_average"})
    mixes_stale_copies = False
    staleness_note = "atomic pairwise averaging of current models"
    memory_models = "3"
    #: the role is saved to check it: it follows from the topology's 2-colouring
    checkpoint_state = (*Algorithm.checkpoint_state, "rng", "active", "peer")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.rng = np.random.default_rng([setup.n, setup.rank, 0xAD])
        self.active = setup.active
        self.peer = -1  # the neighbour of the exchange in progress (a resume point), -1 if none

    def run(self, t: Transport) -> OpGenerator:
        nbrs = list(t.out_neighbors)
        while True:
            if self.peer < 0:  # a resumed agent may restart in its pair exchange
                g = yield from t.gradient(self.x)
                axpy(self.x, -self.alpha(), g)
                self.iteration += 1
                if not (self.active and nbrs):
                    continue
                self.peer = nbrs[int(self.rng.integers(len(nbrs)))]
            yield from t.pair_average(self.peer, self.x)
            self.peer = -1
