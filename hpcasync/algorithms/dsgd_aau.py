"""DSGD-AAU: decentralized SGD with adaptive asynchronous updates, Xiong et al. 2023 (Alg. 2, Pathsearch Alg. 3).

Worker j, with its copy of the epoch's spanning structure (P, V) (:class:`PathState` below)::

    loop: w̃_j ← w_j − η·∇f_j(w_j; ξ);  push_model([w̃_j, c_j])          c_j: its update count
          take in announced edges
          A ← {j};  wait until (a) or (b):                                 Pathsearch (Alg. 3)
             A ← {j} ∪ {neighbours i whose w̃_i arrived since j last used one of theirs}
             (a) some (j, i), i ∈ A, is a new edge of (P, V): add it (every such edge), announce it
             (b) (P, V) changed by an announcement heard while waiting
          w_j ← Σ_{i∈A} P_ij·w̃_i,  Metropolis weights on the star of j's exchanges (1/|A| each)

(P, V) is reset when it spans every worker and is connected. A worker waits
for *some* neighbour's update or for *any* new edge anywhere, never for a
particular worker: the agent never deadlocks while (P, V) is not complete
(the graph is connected, so some edge grows it, and of its two ends at least
one receives a fresh update of the other while waiting or before). But an
epoch needs every worker in V, so it lasts at least one gradient of the
slowest worker, and with at most n − 1 edges per epoch each worker averages
at most n − 1 times per epoch. Edge announcements are flooded as small
items (epoch, a, b) of three int64 (feature ``flood``); models travel as in
ADSGD, plus one version word.

The active graph of j's averaging is the star of its exchanges j–i, i ∈ A:
its Metropolis matrix (eq. (6), p_j = |A| − 1, p_i = 1) is symmetric and
doubly stochastic, and row j gives every member weight 1/|A|. (Eq. (6)'s
p_i is the number of neighbours *i* waited for, which j cannot know when it
averages; docs/algorithms.md §11.)

Pathsearch's bookkeeping (:class:`PathState`). Each worker keeps its copy of the spanning structure G' = (V, P) of the
current epoch: P the edges established so far, V their end points. An edge
(j, i) ∈ E is *new* when it is not in P and it grows G': one end is not in
V, or its ends lie in different components of (V, P). The epoch ends — P
and V are reset to ∅ and the epoch number grows — exactly when G' spans all
n workers and is connected (undirected: "strongly connected" in the paper).

Where the paper (App. B) is ambiguous, this is what we chose (docs/algorithms.md §11):

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

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import axpy


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

    def packed(self) -> np.ndarray:
        """The whole state as one int64 vector (checkpoints): epoch, resets, the union-find parents,
        then the counts and entries of nodes, edges and buffered later announcements."""
        edges = sorted(self.edges)
        return np.array([self.epoch, self.resets, *self._parent, len(self.nodes), *sorted(self.nodes),
                         len(edges), *(v for e in edges for v in e),
                         len(self._later), *(v for x in self._later for v in x)], np.int64)

    def unpack(self, v: np.ndarray) -> None:
        """Take back what :meth:`packed` gave (for the same n)."""
        w = [int(a) for a in v]
        n = self.n
        self.epoch, self.resets, self._parent = w[0], w[1], w[2:2 + n]
        k = 2 + n
        self.nodes = set(w[k + 1:k + 1 + w[k]])
        k += 1 + w[k]
        self.edges = {(w[k + 1 + 2 * e], w[k + 2 + 2 * e]) for e in range(w[k])}
        k += 1 + 2 * w[k]
        self._later = [(w[k + 1 + 3 * e], w[k + 2 + 3 * e], w[k + 3 + 3 * e]) for e in range(w[k])]

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


@register
class DSGDAAU(Algorithm):
    name = "dsgd-aau"
    payload = "model"
    requires = frozenset({"push_model", "flood", "wait_arrival"})
    needs_lossless = True
    memory_models = "deg + 3"
    #: ``pathsearch``: (P, V) packed; ``phase``: the op the loop is suspended at ("gradient", "wait":
    #: wait_arrival, "settle"), so a resumed run re-enters there
    checkpoint_state = (*Algorithm.checkpoint_state, "message", "used", "pathsearch", "edges_found", "phase")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        d = self.x.size
        self.message = np.zeros(d + 1, self.x.dtype)  # [w̃_j, c_j]
        self.message[:d] = self.x
        self.path = PathState(setup.n)
        self.used = np.zeros(0)  # per in-neighbour: the update count of the w̃ last averaged in
        self.active_sizes: list[int] = []  # |A| of every averaging (tests, reports)
        self.edges_found = 0  # edges this worker established (and announced)
        self.phase = "gradient"

    @property
    def pathsearch(self) -> np.ndarray:
        return self.path.packed()

    @pathsearch.setter
    def pathsearch(self, v: np.ndarray) -> None:
        self.path.unpack(v)

    def initial_message(self) -> np.ndarray:
        return self.message

    def _hear(self, t: Transport) -> bool:
        changed = False
        for _, _, item in t.flooded():
            epoch, a, b = (int(v) for v in item)
            changed |= self.path.announced(epoch, a, b)
        return changed

    def run(self, t: Transport) -> OpGenerator:
        d = self.x.size
        nbrs = list(t.in_neighbors)
        if self.used.shape != (len(nbrs),):
            self.used = np.zeros(len(nbrs))
        j = self.rank
        while True:
            if self.phase == "gradient":
                g = yield from t.gradient(self.x)
                wt = self.message[:d]
                np.copyto(wt, self.x)
                axpy(wt, -self.alpha(), g)
                self.message[d] = self.iteration + 1
                t.push_model(self.message)
                self._hear(t)  # edges established while j computed belong to iterations it missed
            elif self.phase == "wait":
                yield from t.wait_arrival()
                self.phase = "settle"
            if self.phase == "settle":
                yield from t.settle()  # take in everything landing at this instant, not just the first
            wt = self.message[:d]
            rows = t.latest_models()
            fresh = np.flatnonzero(rows[:, d] > self.used)
            found = [nbrs[k] for k in fresh if self.path.is_new(j, nbrs[k])]
            if found:
                epoch = self.path.epoch
                for i in found:
                    if self.path.epoch == epoch and self.path.is_new(j, i):
                        self.path.add(j, i)
                        t.flood(np.array([epoch, j, i], np.int64))
                        self.edges_found += 1
            elif not self._hear(t):  # no new edge yet: wait for some neighbour's progress
                self.phase = "wait"
                continue
            w_self, w_nbr = star_weights(1 + fresh.size)
            self.x *= 0.0
            axpy(self.x, w_self, wt)
            for k in fresh:
                axpy(self.x, w_nbr, rows[k, :d])
            self.used[fresh] = rows[fresh, d]
            self.active_sizes.append(1 + int(fresh.size))
            self.iteration += 1
            self.phase = "gradient"

    def finish(self, t: Transport) -> None:
        """Take in the announcements still travelling (on MPI: so that no message is left in flight)."""
        t.quiesce_flood()
        self._hear(t)
