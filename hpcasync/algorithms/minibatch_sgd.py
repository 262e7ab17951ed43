"""Minibatch SGD with a parameter server (the baseline of Mishchenko et al. 2022, §1.2).

The server waits for all M workers' gradients at the same x, then steps::

    x^{r+1} = x^r − γ·Σ_m ∇f(x^r; ξ_m)        (algorithm.reduce = "sum", the authors' code)
    x^{r+1} = x^r − γ·(1/M)·Σ_m ∇f(x^r; ξ_m)  (algorithm.reduce = "mean")

so a round lasts as long as the slowest worker. The gather-step-broadcast of
the server is carried out as an allreduce of the gradients, after which every
worker holds the server's x^{r+1} (the same bits on every rank): the same
iterates, without a server rank. In the simulator a round therefore lasts
until the slowest gradient has travelled (one communication delay), not two.
Every gradient of a round is applied with delay τ = 0.
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import axpy


@register
class MinibatchSGD(Algorithm):
    name = "minibatch-sgd"
    synchronous = True
    payload = "none"
    requires = frozenset({"allreduce"})
    mixes_stale_copies = False
    staleness_note = "synchronous: the server steps with the M current gradients"
    memory_models = "3"
    #: between the two yields of a round the gradient is kept, and where the round is
    checkpoint_state = (*Algorithm.checkpoint_state, "g", "reducing")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        reduce = getattr(setup.section, "reduce", "sum")
        self.scale = float(setup.n) if reduce == "sum" else 1.0
        self.g = np.zeros_like(self.x)
        self.reducing = False  # True while waiting in the round's allreduce (a resume point)

    def run(self, t: Transport) -> OpGenerator:
        while True:
            if not self.reducing:  # a resumed agent may restart in the allreduce
                self.g = yield from t.gradient(self.x)
                self.reducing = True
            gbar = yield from t.allreduce_mean(self.g)
            self.reducing = False
            axpy(self.x, -self.alpha() * self.scale, gbar)
            self.iteration += 1
