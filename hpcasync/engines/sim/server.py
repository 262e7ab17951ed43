"""The simulator's parameter server (``ServerStep``, async-sgd and hogwild): x, its version k, a log of steps.

A worker's gradient travels to the server (one sample of the worker's
communication delay), is applied there at that instant — x ← x − γ(k, τ)·g,
τ = k − prev, k ← k + 1, so no step is ever seen half done — and the new x
travels back (a second sample) before the worker resumes. The server itself
takes no time: it is not an agent. Hogwild!'s non-atomic adds also land at
one instant here (see ``algorithms/hogwild.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcasync.algorithms.transport import ServerStep
from hpcasync.kernels import axpy
from hpcasync.results.schema import SERVER_STEPS, row_dtype


class SimServer:
    """x (a copy of x0), the version k, and per worker the rows of ``schema.SERVER_STEPS``."""

    def __init__(self, x0: np.ndarray, workers: int) -> None:
        self.x = np.array(x0, copy=True)
        self.k = 0
        self._rows: list[list[tuple[int, int, float, float]]] = [[] for _ in range(workers)]

    def apply(self, worker: int, op: ServerStep, now: float, wall: float) -> tuple[int, int]:
        """Apply worker's gradient now; write the new x into ``op.out``; return (k, τ)."""
        tau = self.k - op.version
        gamma = op.rule(self.k, tau)
        axpy(self.x, -gamma, op.g)
        self._rows[worker].append((self.k, tau, wall, now))
        self.k += 1
        np.copyto(op.out, self.x)
        return self.k, tau

    def read(self, out: np.ndarray) -> int:
        np.copyto(out, self.x)
        return self.k

    def state_dict(self) -> dict[str, Any]:
        """x, k and every worker's rows so far (the simulator's checkpoint)."""
        return {"x": self.x.copy(), "k": int(self.k),
                "rows": [np.array(r, np.float64).reshape(-1, 4) for r in self._rows]}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.x[...] = s["x"]
        self.k = int(s["k"])
        self._rows = [[(int(k), int(tau), float(w), float(v)) for k, tau, w, v in r] for r in s["rows"]]

    def steps(self, worker: int) -> np.ndarray:
        """Worker's applied gradients as structured rows (step, tau, wall_time, virtual_time)."""
        return np.array(self._rows[worker], dtype=row_dtype(SERVER_STEPS))
