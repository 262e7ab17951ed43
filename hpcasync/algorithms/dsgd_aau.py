"""DSGD-AAU: decentralized SGD with adaptive asynchronous updates, Xiong et al. 2023 (Alg. 2, Pathsearch Alg. 3).

Worker j, with its copy of the epoch's spanning structure (P, V) (pathsearch.py)::

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
averages; docs/algorithms.md §10.)
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.pathsearch import PathState, star_weights
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.kernels import axpy


@register
class DSGDAAU(Algorithm):
    name = "dsgd-aau"
    payload = "model"
    requires = frozenset({"push_model", "flood", "wait_arrival"})
    memory_models = "deg + 3"
    checkpoint_state = (*Algorithm.checkpoint_state, "message", "used")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        d = self.x.size
        self.message = np.zeros(d + 1, self.x.dtype)  # [w̃_j, c_j]
        self.message[:d] = self.x
        self.path = PathState(setup.n)
        self.used = np.zeros(0)  # per in-neighbour: the update count of the w̃ last averaged in
        self.active_sizes: list[int] = []  # |A| of every averaging (tests, reports)
        self.edges_found = 0  # edges this worker established (and announced)

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
            g = yield from t.gradient(self.x)
            wt = self.message[:d]
            np.copyto(wt, self.x)
            axpy(wt, -self.alpha(), g)
            self.message[d] = self.iteration + 1
            t.push_model(self.message)
            self._hear(t)  # edges established while j computed belong to iterations it missed
            while True:
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
                    break
                if self._hear(t):
                    break
                yield from t.wait_arrival()
                yield from t.settle()  # take in everything landing at this instant, not just the first
            rows = t.latest_models()
            fresh = np.flatnonzero(rows[:, d] > self.used)
            w_self, w_nbr = star_weights(1 + fresh.size)
            self.x *= 0.0
            axpy(self.x, w_self, wt)
            for k in fresh:
                axpy(self.x, w_nbr, rows[k, :d])
            self.used[fresh] = rows[fresh, d]
            self.active_sizes.append(1 + int(fresh.size))
            self.iteration += 1

    def finish(self, t: Transport) -> None:
        """Take in the announcements still travelling (on MPI: so that no message is left in flight)."""
        t.quiesce_flood()
        self._hear(t)
