"""What every algorithm module provides, and the registry that finds it by name."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hpcasync.algorithms.transport import OpGenerator, Transport


@dataclass(frozen=True)
class StepSize:
    """α_k = α · decay^k (decay = 1: constant), the schedules the seeds use."""

    alpha: float
    decay: float = 1.0

    def __call__(self, k: int) -> float:
        return self.alpha if self.decay == 1.0 else self.alpha * self.decay**k


@dataclass(frozen=True)
class AgentSetup:
    """Everything an agent's algorithm needs to start.

    ``weights`` is row i of the mixing matrix as a ``{rank: weight}`` dict
    including i itself (BlueFog's convention); ``out_weights`` is column i,
    ``{j: w_ji}``, what this agent sends to each out-neighbour.
    """

    rank: int
    n: int
    x0: np.ndarray
    weights: dict[int, float]
    out_weights: dict[int, float]
    step: StepSize
    beta: float = 1.0
    #: AD-PSGD: this agent is on the active side of the graph's bipartition
    active: bool = True


class Algorithm(abc.ABC):
    """One agent's state and update loop.

    ``run(t)`` is a generator that loops forever; the engine stops it when the
    budget is spent. After each gradient step it bumps ``iteration`` and sets
    ``last_loss`` so engines can log without knowing the algorithm.
    ``model`` is the agent's current x_i (what the average-model monitor reads).
    """

    name: ClassVar[str]
    synchronous: ClassVar[bool] = False
    #: "model" (push_model/latest), "delta" (push_delta/drain_into) or "none"
    payload: ClassVar[str] = "model"
    #: models of size d held per agent, as a function of the in-degree (for memory reports)
    memory_models: ClassVar[str] = "deg + 2"

    def __init__(self, setup: AgentSetup) -> None:
        self.setup = setup
        self.rank = setup.rank
        self.x = setup.x0.astype(np.float64, copy=True)
        self.iteration = 0

    @property
    def model(self) -> np.ndarray:
        return self.x

    def initial_message(self) -> np.ndarray:
        """What neighbours hold for this agent before its first ``push_model`` (x0 by default)."""
        return self.x

    def alpha(self) -> float:
        return self.setup.step(self.iteration)

    @abc.abstractmethod
    def run(self, t: Transport) -> OpGenerator:
        """The agent's update loop (a generator of blocking ops, see transport.py)."""

    def finish(self, t: Transport) -> None:  # noqa: B027 - optional hook
        """Called once after the engine stopped the loop (flush state, nothing by default)."""


_REGISTRY: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Algorithm]:
    """The algorithm class called ``name`` (importing all algorithm modules on first use)."""
    from hpcasync.algorithms import load_all

    load_all()
    if name not in _REGISTRY:
        from hpcasync.errors import UserError

        raise UserError(f"unknown algorithm {name!r}; expected one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def names() -> list[str]:
    from hpcasync.algorithms import load_all

    load_all()
    return sorted(_REGISTRY)
