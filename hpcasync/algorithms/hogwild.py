"""Hogwild! (Recht, Ré, Wright & Niu 2011; Assran et al. 2020 §3): lock-free parameter-server SGD.

**Not atomic, on purpose.** Like ``async-sgd`` every worker computes a
gradient at the model it last read and the server's model takes the step, but
with no lock: the worker adds −γ·g into the shared x element by element
(``Get_accumulate`` with SUM on MPI, atomic per element only), and reads x
while other workers' adds are half done. So a model read may mix parts of
several steps, and two steps may interleave: exactly the inconsistency
Hogwild! accepts for sparse problems. The version counter is bumped with an
atomic fetch-and-add, so τ = k − prev is still recorded per gradient.

In the simulator every add lands at one instant, so no read is ever torn there
and ``hogwild`` takes the same steps as ``async-sgd`` with the same step rule;
the difference only shows on MPI.
"""

from __future__ import annotations

from hpcasync.algorithms.async_sgd import AsyncSGD
from hpcasync.algorithms.base import register


@register
class Hogwild(AsyncSGD):
    name = "hogwild"
    atomic = False
    staleness_note = "lock-free shared model: reads may mix partial steps; τ recorded per gradient"
    plot_linestyle = ":"
