"""Step sizes of a parameter server as a function of the delay τ of the gradient it applies.

Mishchenko, Bach, Even & Woodworth (2022), "Asynchronous SGD Beats Minibatch SGD
Under Arbitrary Delays". Here τ = k − prev: the number of steps the server applied
between handing the worker its model (version prev) and receiving its gradient, so
a gradient computed on the current model has τ = 0. The paper counts the step
itself (its τ(k) = k − prev(k, m) with x_k the iterate *after* the step), so its
τ(k) is our τ + 1.

* ``constant``: γ_k = γ (Alg. 1 with a fixed step; Theorems 1 and 2).
* ``adaptive``: γ_k = γ · M / max(M, τ), the rule of the authors' public code
  (the Fig. 1 notebook): the full step while τ ≤ M, shrinking as 1/τ beyond.
* ``theorem``: Theorem 3.1 (convex F, L-smooth):
  γ_k = min{ 1/(4L·τ(k)), 1/(4ML), B/(σ√K) } with τ(k) = τ + 1. The third cap
  (B, σ and K are rarely known) is the configured α; L is ``algorithm.smoothness``.
  Theorem 3.3 (non-convex) has 1/(2ML) as the second cap; we implement 3.1.

γ is the configured step of the schedule (``algorithm.alpha``, times decay^k
with the exponential schedule, k the server's version).
"""

from __future__ import annotations

from collections.abc import Callable

from hpcasync.algorithms.base import StepSize
from hpcasync.errors import UserError

RULES = ("constant", "adaptive", "theorem")


def delay_rule(name: str, step: StepSize, workers: int, smoothness: float = 0.0) -> Callable[[int, int], float]:
    """γ(k, τ) for rule ``name``: k is the server's version, τ the delay of the gradient."""
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
