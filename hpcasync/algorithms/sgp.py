"""SGP, Stochastic Gradient Push (Assran, Loizou, Ballas & Rabbat 2019, Alg. 1): synchronous push-sum SGD.

Round k, with the column-stochastic P(k) of the topology (hpcasync/algorithms/_pushsum.py)::

    g ← ∇f_i(z_i; ξ)                                   z_i = w_i/φ_i
    w_i ← w_i − α·g                                        (w_i^{k+1/2}; capped, _pushsum.py)
    (w_i, φ_i) ← Σ_j p_ij(k)·(w_j^{k+1/2}, φ_j)        j = i and the round's in-neighbours
    z_i ← w_i/φ_i

A round waits for every in-neighbour's round-k message (``neighbor_exchange``
of the d + 1 numbers (w, φ) over the union graph of the period; the receiver
applies its row of P(k), so on a time-varying graph an in-neighbour that does
not push to i in round k has weight 0 and its message is sent for nothing —
``osgp`` and ``agp`` push to the round's peers only).

Equivalences (tests/test_pushsum.py): with a doubly-stochastic W, φ_i stays 1
and the iterates are adapt-then-combine DSGD, x^{k+1} = W·(x^k − α·G(x^k));
on the complete graph with W = 11ᵀ/n they are AllReduce SGD's.
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms._pushsum import PushSumAgent
from hpcasync.algorithms.base import AgentSetup, register
from hpcasync.algorithms.transport import OpGenerator, Transport


@register
class SGP(PushSumAgent):
    name = "sgp"
    synchronous = True
    payload = "none"
    requires = frozenset({"neighbor_exchange"})
    staleness_note = "synchronous rounds: mixes round-k push-sum messages only"
    memory_models = "deg + 4"
    #: where the round is: between its two yields the step is already in m
    checkpoint_state = (*PushSumAgent.checkpoint_state, "exchanging")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.exchanging = False  # True while waiting in the round's exchange (a resume point)

    def run(self, t: Transport) -> OpGenerator:
        sched = self.schedule
        order = [sched.in_list.index(j) for j in t.in_neighbors]  # the exchange's row order
        rows_w = [np.ascontiguousarray(row[order]) for row in sched.in_rows]
        keep = sched.keep
        while True:
            if not self.exchanging:  # a resumed agent may restart in the exchange
                g = yield from t.gradient(self.x)
                self.gradient_step(g)
                self.exchanging = True
            rows = yield from t.neighbor_exchange(self.m)
            self.exchanging = False
            r = self.iteration % sched.period
            self.m *= keep[r]
            if rows.shape[0]:
                self.m += rows_w[r] @ rows
            self.debias()
            self.iteration += 1
