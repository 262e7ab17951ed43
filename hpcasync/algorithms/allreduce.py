"""AllReduce SGD (Zhou & Pu 2025 §5 baseline; Assran et al. 2020 §"AllReduce SGD"): exact averaging each round.

    x^{k+1} = x^k − α·(1/n)·Σ_i ∇f_i(x^k; ξ_i)

Every agent holds the same x; a round waits for the slowest agent.
"""

from __future__ import annotations

from hpcasync.algorithms.base import Algorithm, register
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

    def run(self, t: Transport) -> OpGenerator:
        while True:
            g = yield from t.gradient(self.x)
            gbar = yield from t.allreduce_mean(g)
            axpy(self.x, -self.alpha(), gbar)
            self.iteration += 1
