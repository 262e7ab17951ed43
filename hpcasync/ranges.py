"""The allowed values of every numeric config field (``RANGES``), checked by
:func:`hpcasync.config.validate`: one line naming the field and the range for a value outside it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """The allowed values of one numeric field: ``lo`` (≤ or <) value (≤ or <) ``hi``; None = unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        lo, hi = _fmt(self.lo), _fmt(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return "any value"


def _fmt(x: float | None) -> str:
    return str(x) if isinstance(x, int | None) else f"{x:g}"


def _gt(lo: float) -> Range:
    return Range(lo=lo, lo_open=True)


def _ge(lo: float) -> Range:
    return Range(lo=lo)


_POSITIVE, _NON_NEGATIVE, _AT_LEAST_ONE = _gt(0), _ge(0), _ge(1)
_UNIT, _UNIT_OPEN_LOW = Range(0, 1), Range(0, 1, lo_open=True)
_SEED = Range(0, 2**63 - 1)  # numpy seeds are non-negative; TOML integers are 64-bit

#: Allowed values of every numeric (int or float) field, checked by :func:`validate`.
#: tests/test_bad_inputs.py fails for a numeric field missing here, so new fields declare theirs.
RANGES: dict[str, Range] = {
    "run.seed": _SEED,
    "algorithm.alpha": _POSITIVE,
    "algorithm.beta": _UNIT_OPEN_LOW,
    "algorithm.batch_size": _AT_LEAST_ONE,
    "algorithm.decay": _UNIT_OPEN_LOW,
    "algorithm.overlap": _AT_LEAST_ONE,
    "algorithm.step_cap": _ge(1),
    "algorithm.smoothness": _NON_NEGATIVE,  # and > 0 for step_rule = "theorem"
    "algorithm.max_staleness": _NON_NEGATIVE,
    "algorithm.group_size": _ge(2),
    "topology.n": _AT_LEAST_ONE,
    "topology.degree": _AT_LEAST_ONE,
    "topology.seed": _SEED,
    "data.rho": _UNIT,
    "data.classes_per_agent": _AT_LEAST_ONE,  # and <= the data's classes (data/partition.py)
    "data.dirichlet_alpha": _POSITIVE,
    "data.test_fraction": Range(0, 1, lo_open=True, hi_open=True),
    "data.samples": _AT_LEAST_ONE,
    "data.dim": _AT_LEAST_ONE,
    "data.noise": _NON_NEGATIVE,
    "problem.lam": _NON_NEGATIVE,
    "problem.eval_batch": _AT_LEAST_ONE,
    "problem.eval_train_samples": _NON_NEGATIVE,
    "problem.bn_samples": _NON_NEGATIVE,
    "delays.case": Range(1, 5),
    "delays.straggler": _NON_NEGATIVE,  # and < topology.n
    "delays.slowdown": _POSITIVE,
    "delays.compute_mean": _POSITIVE,
    "delays.comm_mean": _POSITIVE,
    "delays.slow_comm_mean": _POSITIVE,
    "delays.compute_shape": _POSITIVE,
    "delays.comm_cv": _NON_NEGATIVE,
    "delays.p": _UNIT,
    "delays.s": _POSITIVE,
    "delays.sleep": _POSITIVE,
    "delays.drop": Range(0, 1, hi_open=True),
    "budget.time": _NON_NEGATIVE,
    "budget.gradients": _NON_NEGATIVE,
    "eval.interval": _POSITIVE,
    "eval.log_every": _AT_LEAST_ONE,
    "eval.target_accuracy": _UNIT_OPEN_LOW,
    "mpi.time_unit": _POSITIVE,
    "mpi.flush_interval": _POSITIVE,
    "mpi.status_interval": _NON_NEGATIVE,
}
