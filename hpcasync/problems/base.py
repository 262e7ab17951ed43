"""What a problem gives the algorithms: per-agent stochastic gradient oracles on a flat vector.

An agent's local objective is f_i(x) = (1/m_i) Σ_{r ∈ S_i} ℓ(x; r) (+ regulariser)
over its shard S_i (Zhou & Pu 2025 eq. (1): min (1/n) Σ_i f_i). ``Oracle.gradient``
returns an unbiased minibatch estimate of ∇f_i.
"""

from __future__ import annotations

import abc
import inspect
import json
from typing import Any, ClassVar

import numpy as np

from hpcasync.errors import UserError
from hpcasync.registry import Registry

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
    """Agent i's stochastic gradient of f_i on a flat parameter vector of length ``dim`` (``Problem.dtype``)."""

    dim: int

    @abc.abstractmethod
    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """(g, loss): a minibatch gradient of f_i at x and the minibatch loss (incl. regulariser).

        ``g`` is an internal buffer owned by the oracle and overwritten by the
        next call (no allocation per gradient); copy it to keep it. ``x`` is
        only read.
        """

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The oracle's sampling state for an exact resume: every numpy or torch random generator
        and :class:`ShardSampler` among its attributes (an oracle with other state overrides this)."""
        state: dict[str, Any] = {}
        for key, value in vars(self).items():
            if isinstance(value, np.random.Generator):
                state[key] = json.dumps(value.bit_generator.state)
            elif isinstance(value, ShardSampler):
                state[key] = {"rng": json.dumps(value.rng.bit_generator.state), "order": value.order.copy(),
                              "pos": int(value.pos)}
            elif type(value).__name__ == "Generator" and hasattr(value, "get_state"):  # torch.Generator
                state[key] = value.get_state().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        for key, saved in state.items():
            value = getattr(self, key)
            if isinstance(value, np.random.Generator):
                value.bit_generator.state = json.loads(saved)
            elif isinstance(value, ShardSampler):
                value.rng.bit_generator.state = json.loads(saved["rng"])
                value.order[...] = saved["order"]
                value.pos = int(saved["pos"])
            else:
                import torch

                value.set_state(torch.from_numpy(np.asarray(saved, dtype=np.uint8)))


class Problem(abc.ABC):
    """The global problem min_x (1/N) Σ_r ℓ(x; r) (+ regulariser) split over ``n_agents`` shards.

    A problem is built from the config by :meth:`from_config`. The default loads
    ``data.name``, checks that its kind is :attr:`data_kind`, partitions it with
    ``[data]`` and calls :meth:`from_dataset`; a problem that makes its own data
    (``data_kind = "generated"``) overrides :meth:`from_config` instead.
    """

    #: the config name (``problem.name``); a plug-in run by "module:Class" may leave it empty
    name: ClassVar[str] = ""
    #: the data it needs: "classification", "regression" or "generated" (see ``hpcasync.data.DATA_KINDS``)
    data_kind: ClassVar[str] = "classification"
    #: the problem.name to suggest for data of another kind (the error message's hint)
    suggest_for: ClassVar[dict[str, str]] = {}

    dim: int
    n_agents: int
    #: dtype of x (and of every model buffer the engines allocate): float64 unless configured
    dtype: np.dtype = np.dtype(np.float64)

    @classmethod  # noqa: B027 - an optional hook
    def check_config(cls, cfg: Any) -> None:
        """Raise a one-line :class:`UserError` for config fields this problem needs and ``cfg`` lacks
        (called by config validation, before anything is loaded; nothing by default)."""

    @classmethod
    def from_config(cls, cfg: Any, n_agents: int) -> Problem:
        """The problem of config ``cfg`` split among ``n_agents`` agents (seed ``cfg.run.seed``)."""
        from hpcasync import data
        from hpcasync.data.partition import partition

        pname, dname, seed = cfg.problem.name, cfg.data.name, cfg.run.seed
        loader = data.DATASETS.get(dname)
        kind = data.dataset_kind(loader)
        # check the pairing by name before loading: reading MNIST/CIFAR takes seconds
        if kind is not None and kind != cls.data_kind:
            _mismatch(pname, dname, cls.data_kind, kind, cls.suggest_for.get(kind))
        dataset = data.load(cfg.data, seed)
        found = None if dataset is None else ("classification" if dataset.is_classification else "regression")
        if found != cls.data_kind:
            raise UserError(f"config field problem.name {pname!r} does not fit data.name {dname!r}")
        shards = partition(cfg.data, dataset.y_train, n_agents, seed)
        return cls.from_dataset(dataset, shards, cfg)

    @classmethod
    def from_dataset(cls, dataset: Any, shards: list[np.ndarray], cfg: Any) -> Problem:
        """The problem on ``dataset`` with agent i's rows ``shards[i]`` (used by :meth:`from_config`)."""
        raise NotImplementedError(f"{cls.__name__} builds itself in from_config")

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


def _mismatch(pname: str, dname: str, needs: str, kind: str, suggest: str | None) -> None:
    if "generated" in (needs, kind):
        raise UserError(f"config field problem.name {pname!r} does not fit data.name {dname!r}: "
                        f"the {pname if needs == 'generated' else dname} data is generated by its own problem; "
                        "the two only go together")
    hint = f"; use problem.name = {suggest!r}" if suggest else ""
    raise UserError(f"config field problem.name {pname!r} needs {needs} data, but data.name {dname!r} is "
                    f"{kind}{hint}")


def _not_a_problem(obj: Any) -> str | None:
    if not (isinstance(obj, type) and issubclass(obj, Problem)):
        return f"expected a subclass of hpcasync.problems.Problem, got {obj!r}"
    if inspect.isabstract(obj):
        return f"{obj.__name__} leaves abstract methods unimplemented"
    return None


#: every problem by ``problem.name``: this package's modules, entry points, "module:Class" plug-ins
PROBLEMS: Registry[type[Problem]] = Registry("problem", "problem.name", package="hpcasync.problems",
                                            group="hpcasync.problems", check=_not_a_problem, plugins=True)


def register_problem(cls: type[Problem]) -> type[Problem]:
    """Class decorator: make ``cls`` available as ``problem.name = cls.name``."""
    problem = _not_a_problem(cls)
    if problem is not None:
        raise TypeError(problem)
    PROBLEMS.add(cls.name, cls)
    return cls
