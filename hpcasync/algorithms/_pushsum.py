"""Push-sum state and schedule shared by ``sgp``, ``osgp`` and ``agp`` (docs/algorithms.md §7).

Push-sum (Kempe, Dobra & Gehrke 2003; Assran, Aytekin, Feyzmahdavian,
Johansson & Rabbat 2020, §4.3 eq. (10)): agent i keeps a numerator w_i and a
push-sum weight φ_i (φ_i(0) = 1, w_i(0) = x0) and mixes both with a
column-stochastic P(k)::

    w_i ← Σ_j p_ij(k)·w_j,   φ_i ← Σ_j p_ij(k)·φ_j,   z_i = w_i/φ_i

The gradient is taken at the de-biased z_i and applied before the mixing
(Assran, Loizou, Ballas & Rabbat 2019, Alg. 1 lines 4–5: "adapt then
combine"), w_i ← w_i − α·g, with a cap on the step of z_i, α/φ_i, for
agents whose φ_i collapsed (:meth:`PushSumAgent.gradient_step`). Column sums
of 1 conserve mass: Σ_i φ_i + (φ in flight) = n and Σ_i w_i + (w in flight)
= Σ_i x_i(0) − Σ (all applied steps) at every moment, whatever the delays or the order in which messages land.

The state is one array ``m = [w (d), φ, counters]`` so that a message is the
same layout (``push_delta`` of d + 1 entries, plus OSGP's per-sender message
counters) and the receiver's accumulator adds it into its own ``m`` in one
``drain_into``. A sender computes each share s_j = p_ji·m and keeps
m − Σ_j s_j (not p_ii·m): what leaves and what stays then add up to what was
there up to one rounding of the subtraction, whatever the rounding of P.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm
from hpcasync.algorithms.transport import Transport
from hpcasync.errors import require
from hpcasync.kernels import axpy


class PushSchedule:
    """Agent i's part of the period P(0), …, P(L−1) (``AgentSetup.mixing``; round k uses P(k mod L)).

    ``in_list``: the union in-neighbours, sorted (what the engines give as
    ``in_neighbors``); ``in_rows[r]``: row i of P(r) on them; ``out[r]``:
    ``[(j, p_ji(r))]``; ``slot_of[j]``: the position of i in j's in-list
    (OSGP's counter slot); ``slots``: the largest in-degree.
    """

    def __init__(self, setup: AgentSetup) -> None:
        i = setup.rank
        mixing = tuple(setup.mixing)
        if not mixing:  # an AgentSetup built by hand: one static round from its row and column
            n = setup.n
            P = np.zeros((n, n))
            for j, w in setup.weights.items():
                P[i, j] = w
            for j, w in setup.out_weights.items():
                P[j, i] = w
            P[i, i] = setup.weights.get(i, 1.0 - sum(setup.out_weights.values()))
            mixing = (P,)
            self.complete = False  # other agents' rows are unknown: no counter slots
        else:
            self.complete = True
        self.period = len(mixing)
        union = np.zeros(mixing[0].shape, dtype=bool)
        for P in mixing:
            union |= P > 0
        np.fill_diagonal(union, False)
        self.in_list = [int(j) for j in np.flatnonzero(union[i])]
        self.keep = [float(P[i, i]) for P in mixing]
        self.in_rows = [np.ascontiguousarray(P[i, self.in_list], dtype=np.float64) for P in mixing]
        self.out = [[(int(j), float(P[j, i])) for j in np.flatnonzero(P[:, i]) if j != i] for P in mixing]
        self.targets = sorted({j for r in self.out for j, _ in r})
        self.slots = int(union.sum(axis=1).max(initial=0)) if self.complete else 0
        self.slot_of = {j: int(np.flatnonzero(union[j]).tolist().index(i)) for j in self.targets} \
            if self.complete else {}
        active = np.array([[P[i, j] > 0 for j in self.in_list] for P in mixing], dtype=np.int64)
        self._cum = np.cumsum(active, axis=0).reshape(self.period, len(self.in_list))

    def expected(self, r: int) -> np.ndarray:
        """Messages each in-neighbour sends to i in rounds 0..r (zeros for r < 0), ordered like ``in_list``."""
        if r < 0:
            return np.zeros(len(self.in_list))
        q, rem = divmod(r, self.period)
        return (q * self._cum[-1] + self._cum[rem]).astype(np.float64)


class PushSumAgent(Algorithm):
    """What the three push-sum algorithms share: the (w, φ) state, the de-biased model, the mass split.

    ``x`` is z_i = w_i/φ_i: the model gradients are taken at, and what the
    monitor evaluates. ``applied`` is Σ α·g applied here, for the conservation
    invariant of the module docstring (one more d-vector, one more axpy).
    """

    directed_ok = True
    mixes_stale_copies = False
    staleness_note = "push-sum: mass in flight is summed into the receiver, never replaced"
    #: message counters per sender (OSGP's bound on outstanding messages)
    counters: ClassVar[bool] = False
    checkpoint_state = (*Algorithm.checkpoint_state, "m", "applied")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.schedule = PushSchedule(setup)
        if self.counters and not self.schedule.complete:
            raise ValueError(f"{type(self).__name__} needs AgentSetup.mixing (every agent's in-neighbours)")
        d = self.dim = self.x.size
        extra = self.schedule.slots if self.counters else 0
        self.m = np.zeros(d + 1 + extra, self.x.dtype)
        self.m[:d] = self.x
        self.m[d] = 1.0
        self.applied = np.zeros(d, self.x.dtype)
        cap = getattr(setup.section, "step_cap", 10.0) if setup.section is not None else 10.0
        require(isinstance(cap, int | float) and cap >= 1,
                f"config field algorithm.step_cap: expected a number >= 1, got {cap!r}")
        self.step_cap = float(cap)
        self._shares: dict[int, np.ndarray] = {}

    @property
    def w(self) -> np.ndarray:
        return self.m[:self.dim]

    @property
    def phi(self) -> float:
        return float(self.m[self.dim])

    def initial_message(self) -> np.ndarray:
        """The message layout (a push_delta carries an array like m)."""
        return self.m

    def gradient_step(self, g: np.ndarray) -> None:
        """w_i ← w_i − α·min(1, K·φ_i)·g, K = ``algorithm.step_cap`` (g taken at z_i).

        Alg. 1 of Assran et al. 2019 steps w_i by α·g, i.e. z_i by α/φ_i: what
        keeps the network average Σw/n moving by α/n per gradient. φ_i is the
        mass held *here*, and under bursty execution (ranks sharing cores) an
        agent that runs alone for a while gives its mass away geometrically
        (×p_ii per step): φ_i fell below 1e-4 within a second on 4 ranks / 2
        cores (Open MPI) and the z-step α/φ_i blew the model up (loss 1e32). The
        cap bounds the z-step at K·α and leaves Alg. 1 untouched while φ_i ≥ 1/K.
        (The authors' code steps z_i by α, about K = 1: measured 4–6× slower to
        the target on the 9-agent grid, docs/reproduction.md, because mass in
        flight keeps the φ_i an agent holds at 0.3–0.5 on average there.)"""
        a = self.alpha() * min(1.0, self.step_cap * float(self.m[self.dim]))
        axpy(self.w, -a, g)
        axpy(self.applied, a, g)

    def debias(self) -> None:
        """z_i ← w_i / φ_i, while the agent holds mass: a φ_i that reached 0 (an agent running alone
        gives its mass away ×p_ii per step, so ~650 steps underflow it; seen on MPI flat out) leaves
        z_i as it was until mass arrives, instead of 0/0."""
        phi = self.m[self.dim]
        if phi > 0.0:
            np.divide(self.w, phi, out=self.x)

    def push_shares(self, t: Transport, r: int) -> None:
        """Send s_j = p_ji(r)·(w_i, φ_i) to each out-neighbour j of round r, keep (w_i, φ_i) − Σ_j s_j.

        With counters, s_j also carries a 1 in i's slot of j's in-list."""
        head = self.dim + 1
        for j, p in self.schedule.out[r]:
            s = self._shares.get(j)
            if s is None:
                s = self._shares[j] = np.zeros_like(self.m)
            np.multiply(self.m[:head], p, out=s[:head])
            if self.counters:
                s[head:] = 0.0
                s[head + self.schedule.slot_of[j]] = 1.0
            self.m[:head] -= s[:head]
            t.push_delta(j, s, 1.0)

    def finish(self, t: Transport) -> None:
        """Take in what arrived after the last step (quiescence: nothing is left in flight)."""
        if self.payload == "delta":
            t.drain_into(self.m)
            self.debias()

    def state(self) -> dict[str, Any]:
        """(w, φ, applied) for invariant checks."""
        return {"w": self.w.copy(), "phi": self.phi, "applied": self.applied.copy()}
