"""AllReduce SGD (Zhou & Pu 2025 §5 baseline; Assran et al. 2020 §"AllReduce SGD"): exact averaging each round.

    x^{k+1} = x^k − α·(1/n)·Σ_i ∇f_i(x^k; ξ_i)

Every agent holds the same x; a round waits for the slowest agent.
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import axpy


@register
class AllReduceSGD(Algorithm):
    name = "allreduce"
    synchronous = True
    payload = "none"
    requires = frozenset({"allreduce"})
    mixes_stale_copies = False
    staleness_note = "synchronous: averages current gradients"
    memory_models = "3"
    #: between the two yields of a round the gradient is kept, and where the round is
    checkpoint_state = (*Algorithm.checkpoint_state, "g", "reducing")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.g = np.zeros_like(self.x)
        self.reducing = False  # True while waiting in the round's allreduce (a resume point)

    def run(self, t: Transport) -> OpGenerator:
        while True:
            if not self.reducing:  # a resumed agent may restart in the allreduce
                self.g = yield from t.gradient(self.x)
                self.reducing = True
            gbar = yield from t.allreduce_mean(self.g)
            self.reducing = False
            axpy(self.x, -self.alpha(), gbar)
            self.iteration += 1
