"""What every algorithm module provides, and the registry that finds it by name.

An algorithm is one module of this package: a subclass of :class:`Algorithm`
decorated with :func:`register`. It is discovered by name (no list to edit);
its class attributes tell engines, config validation, reports and
checkpoints everything they need about it.
"""

from __future__ import annotations

import abc
import inspect
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.errors import UserError
from hpcasync.registry import Registry


@dataclass(frozen=True)
class StepSize:
    """α_k = α · decay^k (decay = 1: constant), the schedules the source papers use."""

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
    #: the topology's mixing matrices of one period, P(k mod L) in round k ((W,) on a static graph)
    mixing: tuple[np.ndarray, ...] = ()
    #: the ``[algorithm]`` config section, for fields of one algorithm (osgp's ``overlap``, step rules)
    section: Any = None
    #: DASGD: the staleness bound B (``algorithm.max_staleness``; 0: none)
    max_staleness: int = 0


class Algorithm(abc.ABC):
    """One agent's state and update loop, and everything engines, config, report and checkpoint
    need to know about the algorithm (the class attributes below: the single source of them).

    ``run(t)`` is a generator that loops forever; the engine stops it when the
    budget is spent. After each gradient step it bumps ``iteration`` so engines
    can log without knowing the algorithm. ``model`` is the agent's current
    x_i (what the average-model monitor reads).
    """

    #: the config name (``algorithm.name``); a plug-in run by "module:Class" may leave it empty
    name: ClassVar[str] = ""
    #: rounds wait for other agents: every agent must stop after the same round
    synchronous: ClassVar[bool] = False
    #: "model" (push_model/latest), "delta" (push_delta/drain_into) or "none": what the transport keeps
    payload: ClassVar[str] = "model"
    #: the topology must be bipartite; ``setup.active`` then tells this agent's side (AD-PSGD)
    needs_bipartite: ClassVar[bool] = False
    #: runs on directed and time-varying topologies (column-stochastic P(k), ``setup.mixing``)
    directed_ok: ClassVar[bool] = False
    #: transport features used (an engine lacking one refuses the algorithm, see :data:`FEATURES`)
    requires: ClassVar[frozenset[str]] = frozenset()
    #: whether it mixes possibly stale copies of neighbour models (the report's staleness table)
    mixes_stale_copies: ClassVar[bool] = True
    #: when it does not: why, shown in place of the staleness figures
    staleness_note: ClassVar[str] = ""
    #: reports measure time-to-target against the present algorithm of lowest rank (None: never)
    reference_rank: ClassVar[int | None] = None
    #: every message must arrive (a lost one stalls it): refuses ``delays.drop`` > 0
    needs_lossless: ClassVar[bool] = False
    #: the ``staleness`` column is :meth:`staleness_of` (every agent's update count given), not the transport's
    own_staleness: ClassVar[bool] = False
    #: the agent keeps ``clock`` ((n,) int64: gradients of each origin applied here); evaluations then
    #: record the pairwise staleness S_avg / S_max over all agents' clocks
    vector_clock: ClassVar[bool] = False
    #: line style of its curves in plots
    plot_linestyle: ClassVar[str] = "-"
    #: models of size d held per agent, as a function of the in-degree (for memory reports)
    memory_models: ClassVar[str] = "deg + 2"
    #: attributes a checkpoint saves for an exact resume (numpy arrays, scalars, random generators);
    #: neighbour copies and accumulators are the transport's state, not the algorithm's
    checkpoint_state: ClassVar[tuple[str, ...]] = ("x", "iteration")
    #: a checkpoint resumes it exactly: ``run()`` restarted on the restored attributes first yields the
    #: op the old generator was suspended at, with no side effect before it (values kept across a
    #: yield are attributes in :attr:`checkpoint_state`); an algorithm that cannot, sets False
    resumable: ClassVar[bool] = True

    def __init__(self, setup: AgentSetup) -> None:
        self.setup = setup
        self.rank = setup.rank
        # x keeps the problem's dtype (float64, or float32 for torch models)
        self.x = setup.x0.astype(setup.x0.dtype if setup.x0.dtype.kind == "f" else np.float64, copy=True)
        self.iteration = 0

    @classmethod
    def effective_alpha(cls, alpha: float, n: int, section: Any) -> float:
        """The step size α this algorithm runs with, given the configured α, n agents and the
        ``[algorithm]`` config section (RFAST scales by 1/n)."""
        return alpha

    @property
    def model(self) -> np.ndarray:
        return self.x

    @property
    def delta_target(self) -> np.ndarray | None:
        """For ``payload = "delta"``: the array ``drain_into`` adds into (Alg. 3's s_i), which an
        engine may keep in its accumulator window instead; None if there is none."""
        return None

    def staleness_of(self, iterations: np.ndarray) -> float:
        """With :attr:`own_staleness`: this agent's staleness given ``iterations[o]``, the update
        count of every agent o (DASGD: the gradients computed anywhere not yet applied here)."""
        return float("nan")

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

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Copies of the :attr:`checkpoint_state` attributes: arrays, Python/numpy scalars, and
        random generators as their bit-generator state in JSON (a string)."""
        state: dict[str, Any] = {}
        for key in self.checkpoint_state:
            value = getattr(self, key)
            if isinstance(value, np.ndarray):
                state[key] = value.copy()
            elif isinstance(value, np.random.Generator):
                state[key] = json.dumps(value.bit_generator.state)
            elif isinstance(value, bool | int | float | str | np.generic):
                state[key] = value
            else:
                raise TypeError(f"{type(self).__name__}.{key}: cannot checkpoint a {type(value).__name__}")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved. Arrays are written in place where the shape fits,
        so views (RFAST's v, σ) and engine bindings (AD-PSGD's window-backed x) survive; a
        property (DSGD-AAU's packed Pathsearch state) is set through its setter."""
        missing = [k for k in self.checkpoint_state if k not in state]
        if missing:
            raise KeyError(f"{type(self).__name__}: checkpoint lacks {', '.join(missing)}")
        for key in self.checkpoint_state:
            current, value = getattr(self, key), state[key]
            if isinstance(getattr(type(self), key, None), property):  # computed: its setter rebuilds it
                setattr(self, key, np.asarray(value) if isinstance(current, np.ndarray) else type(current)(value))
            elif isinstance(current, np.ndarray):
                value = np.asarray(value)
                if current.shape == value.shape:
                    current[...] = value
                else:
                    setattr(self, key, value.astype(current.dtype, copy=True))
            elif isinstance(current, np.random.Generator):
                current.bit_generator.state = json.loads(value)
            else:
                setattr(self, key, type(current)(value))


#: transport features an algorithm may require (``Algorithm.requires``), by the calls they stand for
FEATURES: dict[str, str] = {
    "push_model": "push_model / latest_models / mix_latest (newest-wins model slots)",
    "push_delta": "push_delta / drain_into (commuting delta accumulators)",
    "allreduce": "allreduce_mean (blocking mean over all agents)",
    "neighbor_exchange": "neighbor_exchange (round-synchronous exchange with in-neighbours)",
    "barrier": "barrier",
    "pair_average": "pair_average (atomic pairwise averaging)",
    "send_small": "send_small / poll_small (small control messages)",
    "await_deltas": "await_deltas (block until a delta lands in this agent's accumulator)",
    "server": "server_step / read_server (a parameter server's x and version k; atomic or lock-free steps)",
    "wait_arrival": "wait_arrival (block until a model, delta or flooded item lands)",
    "flood": "flood / flooded / wait_flooded (items flooded to every agent exactly once, per-origin FIFO)",
    "group_average": "group_average (Prague's group generator and partial all-reduce in non-overlapping groups)",
}


def _not_an_algorithm(obj: Any) -> str | None:
    if not (isinstance(obj, type) and issubclass(obj, Algorithm)):
        return f"expected a subclass of hpcasync.algorithms.Algorithm, got {obj!r}"
    if inspect.isabstract(obj):
        return f"{obj.__name__} does not implement run()"
    unknown = sorted(set(obj.requires) - set(FEATURES))
    if unknown:
        return f"{obj.__name__}.requires names unknown features {', '.join(unknown)}; known: {', '.join(FEATURES)}"
    return None


#: every algorithm by config name: the modules of this package, entry points, "module:Class" plug-ins
ALGORITHMS: Registry[type[Algorithm]] = Registry(
    "algorithm", "algorithm.name", package="hpcasync.algorithms", group="hpcasync.algorithms",
    check=_not_an_algorithm, plugins=True)


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make ``cls`` available as ``algorithm.name = cls.name``."""
    problem = _not_an_algorithm(cls)
    if problem is not None:
        raise TypeError(problem)
    ALGORITHMS.add(cls.name, cls)
    return cls


def get(name: str) -> type[Algorithm]:
    """The algorithm class called ``name`` (or the plug-in ``"module:Class"``); UserError if unknown."""
    return ALGORITHMS.get(name)


def names() -> list[str]:
    """Every registered algorithm name."""
    return ALGORITHMS.names()


def lookup(name: str) -> type[Algorithm] | None:
    """Like :func:`get` but None where the name cannot be resolved (e.g. a plug-in missing where a
    report is made): callers then fall back to neutral defaults."""
    try:
        return ALGORITHMS.get(name)
    except UserError:
        return None


def reference_algorithms() -> tuple[str, ...]:
    """Names of the algorithms reports measure others against, preferred first."""
    ranked = [(cls.reference_rank, n) for n in names() if (cls := get(n)).reference_rank is not None]
    return tuple(n for _, n in sorted(ranked))
