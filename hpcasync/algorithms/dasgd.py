"""DASGD: decentralized asynchronous SGD that exchanges gradients, Tosi & Theobald 2023 (Alg. 1).

Agents exchange gradients, not models: every gradient is applied once by
every model. Agent i keeps its model x_i and a vector clock c_i, c_i[o] = the
number of gradients of origin o applied to x_i (c_i[i] = its own count k_i)::

    loop: for each flooded gradient (o, s, g) that arrived:  x_i ← x_i − α_{s−1}·g;  c_i[o] ← s
          while k_i − min_o c_i[o] ≥ B: wait for flooded gradients, apply them   # staleness bound
          g ← ∇f_i(x_i; ξ);  x_i ← x_i − α_{k_i}·g;  k_i ← k_i + 1;  flood(g)

``flood`` sends (i, k_i, g) to every agent over the graph: an agent forwards
a gradient it sees first to its other neighbours and drops copies it has
seen, de-duplicated by (origin, sequence number); per-link FIFO keeps each
origin's gradients in sequence order. A gradient is applied with the step
size of its origin's index, so with every gradient delivered all models are
equal (x0 is common).

Staleness (Tosi & Theobald 2023 §3): between agents i and j, the size of the
symmetric difference of their applied-gradient sets; with per-origin FIFO the
sets are prefixes, so S_ij = Σ_o |c_i[o] − c_j[o]| (:func:`pairwise_staleness`).
The ``staleness`` column of agent i is S_i = Σ_o (k_o − c_i[o]), the
gradients computed anywhere that x_i has not applied yet: the symmetric
difference with the set of all gradients, so S_ij ≤ S_i + S_j.

Bounded memory (``algorithm.max_staleness`` = B; 0 turns it off): agent i
computes gradient k_i + 1 only while k_i − c_i[o] < B for every origin o.
Then k_i − c_i[o] ≤ B always, and since c_o[i] ≤ k_i, k_o ≤ k_i + B: no agent
runs more than B gradients ahead of any other, a 100× straggler throttles
the rest to its pace (+ B), and S_i ≤ 2B·(n − 1) — so at most 2B·(n − 1)
gradients are anywhere in flight or queued for agent i. The analysis needs
bounded staleness (its step size is η ≤ 1/(4L·S_avg)); without the bound a
slow agent's backlog grows with the speed ratio. There is no deadlock: the
agent with the fewest gradients waits only for gradients that exist.
Memory: x, g and the gradients in flight (≤ 2B·(n − 1) with the bound).
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import axpy


def pairwise_staleness(clocks: np.ndarray) -> tuple[float, float]:
    """(S_avg, S_max) over all pairs i < j of S_ij = Σ_o |c_i[o] − c_j[o]| (``clocks``: (n, n))."""
    n = clocks.shape[0]
    if n < 2:
        return 0.0, 0.0
    c = clocks.astype(np.int64)
    s = np.abs(c[:, None, :] - c[None, :, :]).sum(axis=2)
    upper = s[np.triu_indices(n, 1)]
    return float(upper.mean()), float(upper.max())


@register
class DASGD(Algorithm):
    name = "dasgd"
    payload = "none"
    requires = frozenset({"flood"})
    needs_lossless = True
    own_staleness = True
    vector_clock = True
    memory_models = "2 + in-flight gradients (≤ 2B·(n−1))"
    #: ``phase``: where the loop is suspended ("read": at no op yet, "wait": in wait_flooded,
    #: "gradient": in the gradient), so a resumed run re-enters at the same op
    checkpoint_state = (*Algorithm.checkpoint_state, "clock", "waits", "phase")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.clock = np.zeros(setup.n, np.int64)  # c_i
        self.bound = int(setup.max_staleness)
        self.waits = 0  # times the staleness bound held this agent back
        self.phase = "read"

    def staleness_of(self, iterations: np.ndarray) -> float:
        return float(np.sum(iterations - self.clock))

    def apply(self, items: list[tuple[int, int, np.ndarray]]) -> None:
        for origin, seq, g in items:
            if seq != self.clock[origin] + 1:  # the transport promises per-origin order
                raise RuntimeError(f"dasgd agent {self.rank}: gradient {seq} of agent {origin} after "
                                   f"{self.clock[origin]}")
            axpy(self.x, -self.setup.step(seq - 1), g)
            self.clock[origin] = seq

    def run(self, t: Transport) -> OpGenerator:
        rank = self.rank
        while True:
            if self.phase == "wait":
                yield from t.wait_flooded()
            if self.phase != "gradient":
                self.apply(t.flooded())
                if self.bound and self.iteration - int(self.clock.min()) >= self.bound:
                    self.waits += 1
                    self.phase = "wait"
                    continue
                self.phase = "gradient"
            g = yield from t.gradient(self.x)
            axpy(self.x, -self.alpha(), g)
            self.iteration += 1
            self.clock[rank] = self.iteration
            self.phase = "read"
            t.flood(g)

    def finish(self, t: Transport) -> None:
        """Take in every gradient still travelling (all models then equal)."""
        t.quiesce_flood()
        self.apply(t.flooded())
