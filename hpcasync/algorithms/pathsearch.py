"""Pathsearch's bookkeeping (Xiong et al. 2023, §5 and App. B, Alg. 3) and DSGD-AAU's mixing weights.

Each worker keeps its copy of the spanning structure G' = (V, P) of the
current epoch: P the edges established so far, V their end points. An edge
(j, i) ∈ E is *new* when it is not in P and it grows G': one end is not in
V, or its ends lie in different components of (V, P). The epoch ends — P
and V are reset to ∅ and the epoch number grows — exactly when G' spans all
n workers and is connected (undirected: "strongly connected" in the paper).

Where the paper is ambiguous, this is what we chose (docs/algorithms.md §10):

* App. B adds an edge only when one end is not yet in V. Taken literally
  this can deadlock an epoch: once V = N with P in two components no edge
  can ever be added and the reset never comes. Its own Figure 2 adds (2, 4)
  with both ends in V, joining two components. We add an edge when it adds
  a node *or joins two components*, so P grows as a spanning forest and an
  epoch has at most n − 1 edges.
* Alg. 3 line 6 takes "two workers in N_j(k)"; the text's first case and
  the definition "an edge is established when i and j successfully exchange
  their local updates" take edges (j, i) between the waiting worker and a
  neighbour whose update it received. Only j's own exchanges are known to
  j, so we take edges incident to j; every new one found at once is added.
* Edges are announced with their epoch (flooded, engines' feature ``flood``).
  A worker adds every announced edge of its epoch not yet in its P (even one
  that closes a cycle in its copy: the announcer found it new in its own),
  drops announcements of an epoch it has left and keeps those of a later one
  until it gets there. Copies agree once the announcements have spread.
"""

from __future__ import annotations

import numpy as np


class PathState:
    """One worker's copy of (P, V) for epoch ``epoch`` over ``n`` workers."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.epoch = 0
        self.edges: set[tuple[int, int]] = set()
        self._parent = list(range(n))
        self.nodes: set[int] = set()
        self.resets = 0
        self._later: list[tuple[int, int, int]] = []  # announcements of later epochs

    def _find(self, a: int) -> int:
        p = self._parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def is_new(self, a: int, b: int) -> bool:
        """Would edge (a, b) grow G' (not in P; adds a node or joins two components)?"""
        e = (min(a, b), max(a, b))
        if a == b or e in self.edges:
            return False
        return a not in self.nodes or b not in self.nodes or self._find(a) != self._find(b)

    def spanning_connected(self) -> bool:
        return len(self.nodes) == self.n and len({self._find(v) for v in self.nodes}) == 1

    def add(self, a: int, b: int) -> bool:
        """Add edge (a, b) to the current epoch; True if that completed it (P, V reset; buffered
        announcements of the next epoch are then taken in)."""
        self.edges.add((min(a, b), max(a, b)))
        self.nodes.update((a, b))
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[ra] = rb
        if not self.spanning_connected():
            return False
        self.epoch += 1
        self.resets += 1
        self.edges = set()
        self.nodes = set()
        self._parent = list(range(self.n))
        now = [x for x in self._later if x[0] == self.epoch]
        self._later = [x for x in self._later if x[0] > self.epoch]
        for _, c, d in now:
            if (min(c, d), max(c, d)) not in self.edges:
                self.add(c, d)
        return True

    def announced(self, epoch: int, a: int, b: int) -> bool:
        """An edge announced by another worker; True if (P, V) changed here."""
        if epoch < self.epoch or (epoch == self.epoch and (min(a, b), max(a, b)) in self.edges):
            return False
        if epoch > self.epoch:
            self._later.append((epoch, a, b))
            return False
        self.add(a, b)
        return True


def metropolis(adjacency: np.ndarray) -> np.ndarray:
    """Metropolis weights on an undirected graph (Xiong et al. 2023 eq. (6)): P_ij = 1/(1 + max(p_i, p_j))
    on edges, p = degrees, P_ii = 1 − Σ_j P_ij. Symmetric and doubly stochastic."""
    a = np.asarray(adjacency, bool)
    deg = a.sum(axis=1)
    p = np.where(a, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    np.fill_diagonal(p, 0.0)
    np.fill_diagonal(p, 1.0 - p.sum(axis=1))
    return p


def star_weights(active: int) -> tuple[float, float]:
    """(w_jj, w_ji) of worker j averaging with ``active`` − 1 neighbours: Metropolis on the star of its
    exchanges, p_j = active − 1, p_i = 1, so every weight is 1/active (1 alone)."""
    if active <= 1:
        return 1.0, 0.0
    w = 1.0 / (1.0 + max(active - 1, 1))
    return 1.0 - (active - 1) * w, w
