"""OSGP, Overlap Stochastic Gradient Push (Assran, Loizou, Ballas & Rabbat 2019, Alg. 2; Assran, Aytekin,
Feyzmahdavian, Johansson & Rabbat 2020, §5.1 eq. (11)): push-sum SGD with at most τ rounds of messages
outstanding.

Round k of agent i (P(k mod L), hpcasync/algorithms/_pushsum.py)::

    g ← ∇f_i(z_i; ξ);   w_i ← w_i − α·g      (z_i moves α/φ_i, capped at step_cap·α)
    push p_ji(k)·(w_i, φ_i) to each out-neighbour j of round k, keep the rest
    add everything that arrived; while some in-neighbour's messages of rounds ≤ k − τ
    are missing: wait (await_deltas), add what arrived
    z_i ← w_i/φ_i

τ = ``algorithm.overlap`` ≥ 1: communication of the last τ rounds overlaps
computation (τ = 1: the message sent in round k must have arrived by the end
of round k + 1). Messages that arrive early are added at once, as in the
paper. To know what arrived, each message carries, besides (w, φ), a 1 in the
sender's slot of the receiver's in-list: the accumulator sums these into a
per-sender message count (d + 1 + max in-degree numbers per message), and
per-sender order (one serial link per agent on both engines) makes "count ≥
messages sent to i in rounds ≤ k − τ" mean "all of them arrived". On MPI an
accumulate is atomic per element, not per message, so a count may be seen one
drain before the last elements of its (w, φ): the wait bound can be early by
that much; mass is never lost or doubled.

Waiting for rounds ≤ k − τ cannot deadlock: an agent waiting in round k has
sent rounds ≤ k, so the agent of smallest round always has what it waits for
in flight.
"""

from __future__ import annotations

from typing import Any

from hpcasync.algorithms._pushsum import PushSumAgent
from hpcasync.algorithms.base import AgentSetup, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.errors import require


@register
class OSGP(PushSumAgent):
    name = "osgp"
    payload = "delta"
    requires = frozenset({"push_delta", "await_deltas"})
    counters = True
    memory_models = "deg + 4"
    #: ``waiting``: the round's gradient is applied and its shares pushed; it waits for rounds ≤ k − τ
    checkpoint_state = (*PushSumAgent.checkpoint_state, "waits", "waiting")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.overlap = self.overlap_of(setup.section)
        self.waits = 0  # await_deltas calls (rounds that found a message missing)
        self.waiting = False  # True while in the round's wait (a resume point)

    @staticmethod
    def overlap_of(section: Any) -> int:
        tau = getattr(section, "overlap", 1) if section is not None else 1
        require(isinstance(tau, int) and not isinstance(tau, bool) and tau >= 1,
                f"config field algorithm.overlap: expected an integer >= 1 (rounds of outstanding messages), "
                f"got {tau!r}")
        return int(tau)

    def run(self, t: Transport) -> OpGenerator:
        sched = self.schedule
        d = self.dim
        counts = slice(d + 1, d + 1 + len(sched.in_list))
        while True:
            if not self.waiting:  # a resumed agent may restart in the wait, its shares already pushed
                g = yield from t.gradient(self.x)
                self.gradient_step(g)
                self.push_shares(t, self.iteration % sched.period)
                self.waiting = True
            need = sched.expected(self.iteration - self.overlap)
            t.drain_into(self.m)
            while (self.m[counts] < need).any():
                self.waits += 1
                yield from t.await_deltas()
                t.drain_into(self.m)
            self.waiting = False
            self.debias()
            self.iteration += 1
