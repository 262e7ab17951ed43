"""AGP, Asynchronous Gradient Push (Assran & Rabbat 2020; Assran, Aytekin, Feyzmahdavian, Johansson & Rabbat
2020, §5.1 eq. (11)–(12)): push-sum SGD with no synchronisation at all.

Each agent loops at its own pace, with its own iteration count k_i choosing
the round of the period (P(k_i mod L), hpcasync/algorithms/_pushsum.py)::

    g ← ∇f_i(z_i; ξ);   w_i ← w_i − α·g      (z_i moves α/φ_i, capped at step_cap·α)
    for each out-neighbour j of round k_i:  push_delta(j, p_ji·(w_i, φ_i));  (w_i, φ_i) −= p_ji·(w_i, φ_i)
    (w_i, φ_i) += everything that arrived (drain_into)
    z_i ← w_i/φ_i

Messages are summed into the receiver's accumulator (d + 1 numbers), so
they commute: late, reordered or bunched arrivals lose no mass and
Σ_i φ_i = n once nothing is in flight. A fast agent gives its mass away
faster than it receives, so its φ_i shrinks and its gradients weigh less:
AGP minimises Σ_i p_i f_i with p_i ∝ Σ_k α·δ_i^(k) (the survey's eq. (13)),
like AD-PSGD's update-frequency bias.
"""

from __future__ import annotations

from hpcasync.algorithms._pushsum import PushSumAgent
from hpcasync.algorithms.base import register
from hpcasync.algorithms.transport import OpGenerator, Transport


@register
class AGP(PushSumAgent):
    name = "agp"
    payload = "delta"
    requires = frozenset({"push_delta"})
    memory_models = "deg + 4"

    def run(self, t: Transport) -> OpGenerator:
        period = self.schedule.period
        while True:
            g = yield from t.gradient(self.x)
            self.gradient_step(g)
            self.push_shares(t, self.iteration % period)
            t.drain_into(self.m)
            self.debias()
            self.iteration += 1
