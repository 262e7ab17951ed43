"""ASBCD: asynchronous stochastic block coordinate descent, Zhou & Pu 2025 Alg. 1 (eq. (3)).

The d coordinates are split into n contiguous blocks B_1..B_n (sizes ⌊d/n⌋ or
⌈d/n⌉); agent i owns block B_i. Each agent keeps a buffer x̂_i, the whole model
assembled from its own block and the newest copy of every other block it has
received::

    loop: x̂_i ← own block + newest received copy of every other block
          g ← ∇f_i(x̂_i; ξ)                       # read *before* the gradient (unlike ADSGD)
          x̂_i[B_i] ← x̂_i[B_i] − α·g[B_i]          # eq. (3): only the owned block moves
          push x̂_i[B_i]

A message is the sender's whole buffer plus one version number per block,
``[x̂_j (d), v_j (n)]``, sent with ``push_model`` (a full-length vector): the
receiver takes block b from whichever in-neighbour's copy carries the highest
v[b]. On a complete graph (the paper's setting: every block talks to every
other) this is exactly Alg. 1 — the owner's own copy, or a fresher relayed
one; on any other connected graph blocks are relayed hop by hop, which adds
the hops to the delay τ of the analysis. Bytes per update: (d + n) values to
each of the deg neighbours, n× more than a block-only message on a complete
graph (the transport's model slots are fixed-length; a block-only channel
would be a new feature).

With zero communication delay and equal computation times every agent reads
the same model x^k (``settle`` lets the blocks pushed at that instant land
first), so the iterates are *Jacobi-style* (parallel) block gradient descent,
x^{k+1}[B_i] = x^k[B_i] − α·∇_{B_i} f_i(x^k; ξ_i^k) for all i at once
(tests/test_asbcd.py checks this iterate for iterate).

The analysis assumes an unbiased estimate of the block gradient of f = (1/n)Σ_j f_j;
agent i samples its own shard, which is unbiased for ∇_{B_i} f only under an
i.i.d. partition. (The oracle computes the full gradient and the agent keeps
its block: the problems offer no block gradients.) Versions are counted in
the model's dtype: exact up to 2^53 updates (float64), 2^24 (float32).
Memory: deg slots of d + n, the buffer, the gradient.
"""

from __future__ import annotations

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport


def block_bounds(d: int, n: int) -> np.ndarray:
    """Offsets of the n contiguous blocks of d coordinates: block b is [bounds[b], bounds[b+1])."""
    sizes = np.full(n, d // n, dtype=np.int64)
    sizes[: d % n] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


@register
class ASBCD(Algorithm):
    name = "asbcd"
    payload = "model"
    requires = frozenset({"push_model"})
    memory_models = "deg + 2"
    #: the message holds the buffer x̂_i (x is a view of it) and the block versions; ``assembled``
    #: says whether the suspended op is the gradient (True) or the read before it (False)
    checkpoint_state = (*Algorithm.checkpoint_state, "message", "assembled")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        d, n = self.x.size, setup.n
        self.bounds = block_bounds(d, n)
        self.lo, self.hi = int(self.bounds[setup.rank]), int(self.bounds[setup.rank + 1])
        self.message = np.zeros(d + n, self.x.dtype)  # [x̂_i, v_i]
        self.message[:d] = self.x
        self.x = self.message[:d]
        self.versions = self.message[d:]  # v_i[b]: the update count of block b's copy in x̂_i
        self.assembled = False

    def initial_message(self) -> np.ndarray:
        return self.message

    def assemble(self, rows: np.ndarray) -> None:
        """x̂_i[B_b] ← the newest copy of block b among the neighbours' messages, if newer than ours."""
        if rows.shape[0] == 0:
            return
        d = self.x.size
        theirs = rows[:, d:]
        best = theirs.argmax(axis=0)
        newest = theirs[best, np.arange(theirs.shape[1])]
        newer = np.flatnonzero(newest > self.versions)
        b = self.bounds
        for blk in newer:
            if blk == self.rank:  # only the owner moves its block
                continue
            lo, hi = b[blk], b[blk + 1]
            self.x[lo:hi] = rows[best[blk], lo:hi]
            self.versions[blk] = newest[blk]

    def run(self, t: Transport) -> OpGenerator:
        lo, hi = self.lo, self.hi
        while True:
            # a resumed run re-enters at the op it was suspended at: the read, or the gradient after it
            if not self.assembled:
                yield from t.settle()
                self.assemble(t.latest_models())
                self.assembled = True
            g = yield from t.gradient(self.x)
            self.x[lo:hi] -= self.alpha() * g[lo:hi]
            self.iteration += 1
            self.versions[self.rank] = self.iteration
            self.assembled = False
            t.push_model(self.message)
