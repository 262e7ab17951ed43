"""What a problem gives the algorithms: per-agent stochastic gradient oracles on a flat vector.

An agent's local objective is f_i(x) = (1/m_i) Σ_{r ∈ S_i} ℓ(x; r) (+ regulariser)
over its shard S_i (seed 000 eq. (1): min (1/n) Σ_i f_i). ``Oracle.gradient``
returns an unbiased minibatch estimate of ∇f_i.
"""

from __future__ import annotations

import abc

import numpy as np

#: Tag mixed into oracle seeds: engines also seed per-agent streams (delays)
#: from (seed, agent), and identical streams would correlate the batches an
#: agent draws with its delays.
ORACLE_STREAM = 0x6F7261636C  # "oracl"


def oracle_rng(seed: int, agent: int) -> np.random.Generator:
    """The generator of agent ``agent``'s oracle: SeedSequence([seed, agent, ORACLE_STREAM])."""
    return np.random.default_rng(np.random.SeedSequence([seed, agent, ORACLE_STREAM]))


class ShardSampler:
    """Minibatches drawn without replacement from one shard, epoch by epoch.

    The shard is shuffled once per epoch and cut into consecutive batches of
    ``batch_size``; a tail shorter than a batch is dropped and the shard
    reshuffled (every sample stays equally likely). Within a batch, and within
    an epoch, no sample repeats. ``batch_size >= len(shard)`` gives the full
    shard every time (deterministic full-batch gradients, handy in tests).
    ``next()`` returns a view that is valid until the following call.
    """

    def __init__(self, shard: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        if len(shard) == 0:
            raise ValueError("empty shard")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rng = rng
        self.order = np.array(shard, dtype=np.int64)  # own copy: shuffled in place
        self.full = batch_size >= len(self.order)
        self.batch_size = len(self.order) if self.full else batch_size
        self.pos = len(self.order)  # forces a shuffle on the first draw

    def next(self) -> np.ndarray:
        if self.full:
            return self.order
        if self.pos + self.batch_size > len(self.order):
            self.rng.shuffle(self.order)
            self.pos = 0
        start = self.pos
        self.pos += self.batch_size
        return self.order[start:self.pos]


class Oracle(abc.ABC):
    """Agent i's stochastic gradient of f_i on a flat float64 parameter vector of length ``dim``."""

    dim: int

    @abc.abstractmethod
    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """(g, loss): a minibatch gradient of f_i at x and the minibatch loss (incl. regulariser).

        ``g`` is an internal buffer owned by the oracle and overwritten by the
        next call (no allocation per gradient); copy it to keep it. ``x`` is
        only read.
        """


class Problem(abc.ABC):
    """The global problem min_x (1/N) Σ_r ℓ(x; r) (+ regulariser) split over ``n_agents`` shards."""

    dim: int
    n_agents: int

    @abc.abstractmethod
    def init_params(self, seed: int) -> np.ndarray:
        """The common starting point x0 of every agent (a fresh array)."""

    @abc.abstractmethod
    def oracle(self, agent: int, seed: int) -> Oracle:
        """Agent ``agent``'s oracle of f_i over its shard, sampling with :func:`oracle_rng` (seed, agent)."""

    @abc.abstractmethod
    def evaluate(self, x: np.ndarray) -> dict[str, float]:
        """{"train_loss", "test_loss", "test_accuracy"} at x; accuracy is nan for regression."""

    @abc.abstractmethod
    def full_gradient(self, x: np.ndarray) -> np.ndarray:
        """∇ of the global objective (mean over the whole train set, incl. regulariser); fresh array."""

    @abc.abstractmethod
    def local_full_gradient(self, agent: int, x: np.ndarray) -> np.ndarray:
        """∇f_i(x) over agent i's whole shard; fresh array."""

    def _check_agent(self, agent: int) -> None:
        if not 0 <= agent < self.n_agents:
            raise IndexError(f"agent {agent} out of range 0..{self.n_agents - 1}")
