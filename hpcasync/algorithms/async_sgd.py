"""Asynchronous SGD with a parameter server (Mishchenko, Bach, Even & Woodworth 2022, Alg. 1).

A server holds x and its version k (steps applied so far). Every worker m
computes a gradient at the model it last received, of version prev, and hands
it to the server, which applies it at once with delay τ = k − prev::

    x ← x − γ(k, τ)·∇f(x_prev; ξ),   k ← k + 1,   worker m restarts from the new x

Workers never wait for each other. Each step is atomic (the paper's model:
nobody reads half a step); the engines keep it so (the simulator applies it
at one instant, the MPI engine under a seqlock on rank 0's window,
``engines/mpi/server.py``). γ(k, τ) is the configured step rule
(``algorithm.step_rule``, :func:`delay_rule` below): constant,
the authors' delay-adaptive γ·M/max(M, τ), or Theorem 3.1's
min{1/(4L(τ+1)), 1/(4ML), α}. ``topology.n`` is the number of workers M;
the server is not an agent (the topology's edges are not used). Every applied
gradient's τ, worker and time are recorded (``/server_steps`` of the rank files).

The agent's ``x`` is the model it last received; after the run :meth:`finish`
reads the server's final x into it, so every worker ends with the server's model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, StepSize, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.errors import UserError

#: ``algorithm.step_rule``: the step as a function of the delay τ (see :func:`delay_rule`)
RULES = ("constant", "adaptive", "theorem")


def delay_rule(name: str, step: StepSize, workers: int, smoothness: float = 0.0) -> Callable[[int, int], float]:
    """γ(k, τ) for rule ``name``: k is the server's version, τ = k − prev the delay of the gradient
    (steps applied since its worker read the model: 0 for a gradient of the current model).

    * ``constant``: γ_k = γ (Alg. 1 with a fixed step; Theorems 1 and 2).
    * ``adaptive``: γ_k = γ·M / max(M, τ), the rule of the authors' public code (the Fig. 1
      notebook): the full step while τ ≤ M, shrinking as 1/τ beyond.
    * ``theorem``: Mishchenko et al. 2022, Theorem 3.1 (convex F, L-smooth):
      γ_k = min{1/(4L·τ(k)), 1/(4ML), B/(σ√K)}. The paper counts the step itself (its x_k is the
      iterate after the step), so its τ(k) is our τ + 1. The third cap (B, σ and K are rarely
      known) is the configured α; L is ``algorithm.smoothness``. (Theorem 3.3, non-convex, has
      1/(2ML) as its second cap; we implement 3.1.)

    γ is the configured step of the schedule (``algorithm.alpha``, times decay^k with the
    exponential schedule, k the server's version).
    """
    m = max(int(workers), 1)
    if name == "constant":
        return lambda k, tau: step(k)
    if name == "adaptive":
        return lambda k, tau: step(k) * m / max(m, tau)
    if name == "theorem":
        if not smoothness > 0:
            raise UserError('config field algorithm.smoothness: step_rule = "theorem" needs the smoothness L > 0')
        cap = 1.0 / (4.0 * m * smoothness)
        return lambda k, tau: min(1.0 / (4.0 * smoothness * (tau + 1)), cap, step(k))
    raise UserError(f"config field algorithm.step_rule: unknown name {name!r}; expected one of {', '.join(RULES)}")


@register
class AsyncSGD(Algorithm):
    name = "async-sgd"
    payload = "none"
    requires = frozenset({"server"})
    mixes_stale_copies = False
    staleness_note = "parameter server: the delay τ of every applied gradient is recorded instead"
    memory_models = "2"  # the model last received and the gradient; the server's x lives on rank 0 only
    #: between the two yields of a step the gradient is kept, and where the step is
    checkpoint_state = (*Algorithm.checkpoint_state, "version", "g", "stepping")
    #: every server step is indivisible (False: Hogwild!'s lock-free element-wise adds)
    atomic: ClassVar[bool] = True

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        opts = setup.section
        rule = getattr(opts, "step_rule", "constant")
        self.rule = delay_rule(rule, setup.step, setup.n, float(getattr(opts, "smoothness", 0.0)))
        self.version = 0  # the server's version of self.x (every worker starts from x0 = version 0)
        self.g = np.zeros_like(self.x)
        self.stepping = False  # True while the gradient travels to the server and the model back (a resume point)

    def run(self, t: Transport) -> OpGenerator:
        while True:
            if not self.stepping:  # a resumed worker may restart in its server step
                self.g = yield from t.gradient(self.x)
                self.stepping = True
            self.version, _ = yield from t.server_step(self.g, self.version, self.rule, self.x, self.atomic)
            self.stepping = False
            self.iteration += 1

    def finish(self, t: Transport) -> None:
        self.version = t.read_server(self.x)
