"""Computation and communication delay models (docs/design.md §6), shared by both engines.

The simulator advances its virtual clock by these samples; the MPI engine
stretches real computation to ``max(real, sample × time_unit)`` and releases
outgoing messages at their sampled times.

Zhou & Pu's (2025) five cases (means in time units, "slow" = ``slowdown`` × the mean):

====  ===================  =====================
case  computation          communication
====  ===================  =====================
1     all 1                all 1
2     all 1                all ``slow_comm_mean``
3     straggler slow       all 1
4     all 1                straggler slow
5     straggler slow       straggler slow
====  ===================  =====================

Computation ~ Gamma(shape k) scaled to its mean; communication ~ log-normal
with coefficient of variation ``comm_cv`` (σ² = ln(1+cv²), μ = ln m − σ²/2),
so the mean is controlled and communication has the larger variance.
Xiong et al.'s (2023, §5 and App. C) random stragglers: with probability ``p`` per
iteration an agent is a straggler, and its computation is then multiplied by ``s``
(``random-stragglers``) or followed by a sleep of ``sleep`` × the mean computation
time (``sleeping-stragglers``, "the sleep time could be 6x of the average one local
computation time"). Every agent draws from its own two streams
(computation, communication) seeded by (seed, agent), so a run is repeatable
and two algorithms fed the same events see the same delays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcasync.config import DelaySection
from hpcasync.registry import Registry

Sampler = Callable[[np.random.Generator], float]


def make_sampler(dist: str, mean: float, *, shape: float = 10.0, cv: float = 1.0) -> Sampler:
    """A sampler with the given mean: gamma(shape), log-normal(cv), exponential or constant."""
    if mean == 0.0 or dist == "constant":
        return lambda rng: mean
    if dist == "gamma":
        scale = mean / shape
        return lambda rng: float(rng.gamma(shape, scale))
    if dist == "lognormal":
        if cv == 0.0:
            return lambda rng: mean
        sigma = math.sqrt(math.log1p(cv * cv))
        mu = math.log(mean) - 0.5 * sigma * sigma
        return lambda rng: float(rng.lognormal(mu, sigma))
    if dist == "exponential":
        return lambda rng: float(rng.exponential(mean))
    raise ValueError(f"unknown distribution {dist!r}")


@dataclass
class DelayModel:
    """Per-agent delay samplers with per-agent random streams."""

    compute_samplers: list[Sampler]
    comm_samplers: list[Sampler]
    compute_rngs: list[np.random.Generator]
    comm_rngs: list[np.random.Generator]
    straggle_p: float = 0.0
    straggle_s: float = 1.0
    straggle_sleep: tuple[float, ...] = ()  # per agent: time units a straggling iteration sleeps after computing
    compute_means: tuple[float, ...] = ()
    comm_means: tuple[float, ...] = ()
    enabled: bool = True
    drop: float = 0.0
    drop_rng: np.random.Generator | None = None

    @property
    def n(self) -> int:
        return len(self.compute_samplers)

    def compute(self, i: int) -> float:
        """Duration of agent i's next gradient computation (time units)."""
        rng = self.compute_rngs[i]
        t = self.compute_samplers[i](rng)
        if self.straggle_p > 0.0 and rng.random() < self.straggle_p:
            t = t * self.straggle_s + (self.straggle_sleep[i] if self.straggle_sleep else 0.0)
        return t

    def dropped(self) -> bool:
        """Whether the next message to one receiver is lost (simulator only; probability ``drop``)."""
        assert self.drop_rng is not None
        return bool(self.drop_rng.random() < self.drop)

    def comm(self, i: int) -> float:
        """Duration of agent i's next outgoing transmission (time units)."""
        return self.comm_samplers[i](self.comm_rngs[i])

    def comm_from(self, i: int, rng: np.random.Generator) -> float:
        """One sample of agent i's communication *distribution*, drawn from ``rng``.

        For a rank that must time another agent's transfer (the MPI engine's
        AD-PSGD response leg): it follows i's distribution but neither uses
        nor advances i's own stream, so i's own samples stay as they were.
        """
        return self.comm_samplers[i](rng)


def peer_comm_stream(seed: int, i: int) -> np.random.Generator:
    """Agent i's stream for sampling *other* agents' communication delays (``comm_from``)."""
    return np.random.default_rng([seed, i, 2])


def _streams(seed: int, n: int, which: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, i, which]) for i in range(n)]


@dataclass
class DelayPlan:
    """What a delay model decides for n agents: distributions, per-agent means, random stragglers."""

    compute_dist: str
    comm_dist: str
    compute_mean: list[float]
    comm_mean: list[float]
    straggle_p: float = 0.0
    straggle_s: float = 1.0
    straggle_sleep: list[float] | None = None  # per agent; None = no sleep
    enabled: bool = True


#: delay models by ``delays.model``: ``(section, n) -> DelayPlan``
DELAY_MODELS: Registry[Callable[[DelaySection, int], DelayPlan]] = Registry("delay model", "delays.model")


def _plan(cfg: DelaySection, n: int, **changes: Any) -> DelayPlan:
    plan = DelayPlan(cfg.compute_dist, cfg.comm_dist, [cfg.compute_mean] * n, [cfg.comm_mean] * n)
    for key, value in changes.items():
        setattr(plan, key, value)
    return plan


@DELAY_MODELS.register("none")
def _none(cfg: DelaySection, n: int) -> DelayPlan:
    """Unit constant computation and instant communication in the simulator (it needs *some*
    clock), and no injected delay at all on MPI (``enabled`` is False)."""
    return _plan(cfg, n, compute_dist="constant", comm_dist="constant", compute_mean=[1.0] * n,
                 comm_mean=[0.0] * n, enabled=False)


@DELAY_MODELS.register("constant")
def _constant(cfg: DelaySection, n: int) -> DelayPlan:
    return _plan(cfg, n, compute_dist="constant", comm_dist="constant")


@DELAY_MODELS.register("case")
def _case(cfg: DelaySection, n: int) -> DelayPlan:
    """Zhou & Pu 2025's five cases (the table above)."""
    plan = _plan(cfg, n)
    slow = cfg.straggler
    if cfg.case == 2:
        plan.comm_mean = [cfg.slow_comm_mean] * n
    if cfg.case in (3, 5):
        plan.compute_mean[slow] = cfg.compute_mean * cfg.slowdown
    if cfg.case in (4, 5):
        plan.comm_mean[slow] = cfg.comm_mean * cfg.slowdown
    return plan


@DELAY_MODELS.register("random-stragglers")
def _random_stragglers(cfg: DelaySection, n: int) -> DelayPlan:
    return _plan(cfg, n, straggle_p=cfg.p, straggle_s=cfg.s)


@DELAY_MODELS.register("sleeping-stragglers")
def _sleeping_stragglers(cfg: DelaySection, n: int) -> DelayPlan:
    """Xiong et al. 2023's other straggler: with probability p an iteration's computation is followed
    by a sleep of ``sleep`` × the agent's mean computation time (additive, where ``random-stragglers``
    multiplies). On MPI the sleep is part of the padded computation: it lasts max(real, (sample + sleep) × unit)."""
    plan = _plan(cfg, n, straggle_p=cfg.p, straggle_s=1.0)
    plan.straggle_sleep = [cfg.sleep * m for m in plan.compute_mean]
    return plan


def build(cfg: DelaySection, n: int, seed: int) -> DelayModel:
    """The delay model ``cfg`` describes for ``n`` agents (``delays.model`` names a :data:`DELAY_MODELS` entry)."""
    plan = DELAY_MODELS.get(cfg.model)(cfg, n)
    return DelayModel(
        compute_samplers=[make_sampler(plan.compute_dist, m, shape=cfg.compute_shape) for m in plan.compute_mean],
        comm_samplers=[make_sampler(plan.comm_dist, m, cv=cfg.comm_cv) for m in plan.comm_mean],
        compute_rngs=_streams(seed, n, 0),
        comm_rngs=_streams(seed, n, 1),
        straggle_p=plan.straggle_p,
        straggle_s=plan.straggle_s,
        straggle_sleep=tuple(plan.straggle_sleep or [0.0] * n),
        compute_means=tuple(plan.compute_mean),
        comm_means=tuple(plan.comm_mean),
        enabled=plan.enabled,
        drop=cfg.drop,
        drop_rng=np.random.default_rng([seed, 0xD809]),
    )
