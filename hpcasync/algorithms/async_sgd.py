"""Asynchronous SGD with a parameter server (Mishchenko, Bach, Even & Woodworth 2022, Alg. 1).

A server holds x and its version k (steps applied so far). Every worker m
computes a gradient at the model it last received, of version prev, and hands
it to the server, which applies it at once with delay τ = k − prev::

    x ← x − γ(k, τ)·∇f(x_prev; ξ),   k ← k + 1,   worker m restarts from the new x

Workers never wait for each other. Each step is atomic (the paper's model:
nobody reads half a step); the engines keep it so (the simulator applies it
at one instant, the MPI engine under a seqlock on rank 0's window,
``engines/mpi/server.py``). γ(k, τ) is the configured step rule
(``algorithm.step_rule``, :mod:`hpcasync.algorithms.step_rules`): constant,
the authors' delay-adaptive γ·M/max(M, τ), or Theorem 3.1's
min{1/(4L(τ+1)), 1/(4ML), α}. ``topology.n`` is the number of workers M;
the server is not an agent (the topology's edges are not used). Every applied
gradient's τ, worker and time are recorded (``/server_steps`` of the rank files).

The agent's ``x`` is the model it last received; after the run :meth:`finish`
reads the server's final x into it, so every worker ends with the server's model.
"""

from __future__ import annotations

from typing import ClassVar

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.step_rules import delay_rule
from hpcasync.algorithms.transport import OpGenerator, Transport


@register
class AsyncSGD(Algorithm):
    name = "async-sgd"
    payload = "none"
    requires = frozenset({"server"})
    mixes_stale_copies = False
    staleness_note = "parameter server: the delay τ of every applied gradient is recorded instead"
    memory_models = "2"  # the model last received and the gradient; the server's x lives on rank 0 only
    checkpoint_state = (*Algorithm.checkpoint_state, "version")
    #: every server step is indivisible (False: Hogwild!'s lock-free element-wise adds)
    atomic: ClassVar[bool] = True

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        opts = setup.options
        rule = getattr(opts, "step_rule", "constant")
        self.rule = delay_rule(rule, setup.step, setup.n, float(getattr(opts, "smoothness", 0.0)))
        self.version = 0  # the server's version of self.x (every worker starts from x0 = version 0)

    def run(self, t: Transport) -> OpGenerator:
        while True:
            g = yield from t.gradient(self.x)
            self.version, _ = yield from t.server_step(g, self.version, self.rule, self.x, self.atomic)
            self.iteration += 1

    def finish(self, t: Transport) -> None:
        self.version = t.read_server(self.x)
