"""Run configuration: TOML → validated dataclasses.

A config file has the sections below; every field has a default so a config
only states what differs. ``--set section.field=value`` overrides parse the
value as TOML (``--set algorithm.alpha=0.02``, ``--set topology.shape=[3,3]``).

Validation names the offending field and what was expected, and raises
:class:`~hpcasync.errors.UserError` (one line, exit status 2).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hpcasync.errors import UserError, require
from hpcasync.ranges import RANGES

# algorithm, topology, data, problem and delay-model names are checked against their registries
# (hpcasync.registry); the choices below belong to one field each
WEIGHTS = ("metropolis", "max-degree")
DTYPES = ("auto", "float32", "float64")
DEVICES = ("cpu", "cuda", "auto")
PARTITIONS = ("iid", "heterogeneity", "k-classes", "dirichlet", "replicated")
COMPUTE_DISTS = ("gamma", "exponential", "constant")
COMM_DISTS = ("lognormal", "exponential", "constant")
SCHEDULES = ("constant", "exponential")
STEP_RULES = ("constant", "adaptive", "theorem")
REDUCTIONS = ("sum", "mean")


@dataclass
class RunSection:
    name: str = "run"
    seed: int = 0
    out: str = "runs"


@dataclass
class AlgorithmSection:
    name: str = "adsgd"
    alpha: float = 0.01
    beta: float = 1.0
    batch_size: int = 32
    schedule: str = "constant"  # constant | exponential: alpha_k = alpha * decay**k
    decay: float = 1.0
    # rfast: divide alpha by n (Zhou & Pu 2025 "identical effective step size"; RFAST.effective_alpha)
    scale_alpha_by_n: bool = True
    # osgp: rounds of push-sum messages that may be outstanding, τ ≥ 1 (Assran et al. 2019 §3)
    overlap: int = 1
    # sgp/osgp/agp: the step on z_i = w_i/φ_i is α/φ_i (Alg. 1's w-step), capped at step_cap·α
    step_cap: float = 10.0
    # async-sgd / hogwild: the step as a function of the delay τ (algorithms/async_sgd.py: delay_rule)
    step_rule: str = "constant"  # constant | adaptive | theorem
    smoothness: float = 0.0  # L of step_rule = "theorem" (Mishchenko et al. 2022 Thm 3.1)
    # minibatch-sgd: the server steps with the sum or the mean of the M gradients
    reduce: str = "sum"  # sum | mean
    # dasgd: compute only while fewer than this many own gradients ahead of every origin's applied (0: no bound)
    max_staleness: int = 16
    # prague: workers per Partial All-Reduce group (Luo et al. 2020)
    group_size: int = 3


@dataclass
class TopologySection:
    name: str = "grid"
    n: int = 9
    shape: list[int] = field(default_factory=list)  # grid/torus rows, cols; empty = as square as possible
    weights: str = "metropolis"
    matrix: str = ""  # custom: path to a .npy or whitespace text file holding W
    degree: int = 3  # random graph: expected degree
    seed: int = 0  # random graph


@dataclass
class DataSection:
    name: str = "digits"
    dir: str = ""  # mnist / cifar10 directory
    partition: str = "iid"
    rho: float = 0.0  # heterogeneity (Zhou & Pu 2025)
    classes_per_agent: int = 2  # k-classes (Xiong et al. 2023)
    dirichlet_alpha: float = 0.5
    test_fraction: float = 0.2  # digits: held-out share
    samples: int = 10000  # synthetic problems
    dim: int = 400  # synthetic problems
    noise: float = 0.1


@dataclass
class ProblemSection:
    name: str = "softmax"
    lam: float = 1e-4  # non-convex regulariser weight λ (Zhou & Pu 2025)
    dtype: str = "auto"  # of x: auto = float64 for numpy problems, float32 for torch
    # torch problem (hpcasync/problems/nn): a built-in model or "package.module:factory"
    model: str = ""
    loss: str = "cross-entropy"
    device: str = "cpu"  # cpu | cuda | auto
    augment: bool = True  # cifar10: random crop (pad 4) + horizontal flip of training batches
    eval_batch: int = 500
    eval_train_samples: int = 10000  # train loss of the average model on this many samples (0 = all)
    bn_samples: int = 2000  # BatchNorm statistics of the average model recomputed on this many samples


@dataclass
class DelaySection:
    model: str = "case"
    case: int = 1  # Zhou & Pu 2025 cases 1–5
    straggler: int = 0  # which agent straggles in cases 3–5
    slowdown: float = 10.0  # "10×" in the cases table
    compute_mean: float = 1.0
    comm_mean: float = 1.0
    slow_comm_mean: float = 10.0  # case 2 (VGG uses 2)
    compute_dist: str = "gamma"
    compute_shape: float = 10.0
    comm_dist: str = "lognormal"
    comm_cv: float = 1.0
    p: float = 0.1  # random-stragglers: probability per iteration (Xiong et al. 2023)
    s: float = 10.0  # random-stragglers: slowdown
    sleep: float = 6.0  # sleeping-stragglers: the straggler sleeps sleep × compute_mean (Xiong et al. 2023)
    drop: float = 0.0  # probability a message to one neighbour is lost (simulator only)


@dataclass
class BudgetSection:
    time: float = 300.0  # virtual time units (sim) or wall seconds (mpi)
    gradients: int = 0  # total gradients over all agents; 0 = no limit


@dataclass
class EvalSection:
    interval: float = 5.0  # virtual time units (sim) or wall seconds (mpi)
    log_every: int = 1  # record every k-th update per agent
    target_accuracy: float = 0.9


@dataclass
class MpiSection:
    time_unit: float = 0.01  # seconds per delay unit
    monitor: bool = True
    launcher: str = "mpiexec"  # mpiexec | srun
    flush_interval: float = 2.0  # seconds between HDF5 flushes
    progress: str = "auto"  # auto | off | thread: passive-target progress thread (engines/mpi/progress.py)
    status_interval: float = 30.0  # seconds between status lines in a batch log (0: none; engines/mpi/status.py)
    shared_memory: str = "auto"  # auto | off: same-node model pushes through shared memory (shared_slots.py)


@dataclass
class Config:
    run: RunSection = field(default_factory=RunSection)
    algorithm: AlgorithmSection = field(default_factory=AlgorithmSection)
    topology: TopologySection = field(default_factory=TopologySection)
    data: DataSection = field(default_factory=DataSection)
    problem: ProblemSection = field(default_factory=ProblemSection)
    delays: DelaySection = field(default_factory=DelaySection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    eval: EvalSection = field(default_factory=EvalSection)
    mpi: MpiSection = field(default_factory=MpiSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


def _coerce(section: str, name: str, value: Any, default: Any) -> Any:
    where = f"{section}.{name}"
    if isinstance(default, bool):
        require(isinstance(value, bool), f"config field {where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        require(isinstance(value, int) and not isinstance(value, bool),
                f"config field {where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        require(isinstance(value, int | float) and not isinstance(value, bool),
                f"config field {where}: expected a number, got {value!r}")
        # inf and nan compare false with every bound (a run then "never ends" or never stops): refused here,
        # for every float field, so a new field cannot forget it
        require(math.isfinite(value), f"config field {where}: expected a finite number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        require(isinstance(value, str), f"config field {where}: expected a string, got {value!r}")
        return value
    if isinstance(default, list):
        require(isinstance(value, list), f"config field {where}: expected a list, got {value!r}")
        return value
    return value


def numeric_fields(cfg: Config | None = None) -> list[str]:
    """``section.field`` of every int or float field (bools excluded)."""
    cfg = Config() if cfg is None else cfg
    out = []
    for sec in fields(cfg):
        for f in fields(getattr(cfg, sec.name)):
            value = getattr(getattr(cfg, sec.name), f.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append(f"{sec.name}.{f.name}")
    return out


def _check_ranges(cfg: Config) -> None:
    for key in numeric_fields(cfg):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        require(math.isfinite(value), f"config field {key}: expected a finite number, got {value!r}")
        allowed = RANGES.get(key)
        if allowed is not None:
            require(value in allowed, f"config field {key}: expected {allowed.describe()}, got {value!r}")


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown sections and fields."""
    cfg = Config()
    for section, values in raw.items():
        require(hasattr(cfg, section),
                f"{source}: unknown section [{section}]; expected one of "
                f"{', '.join(f.name for f in fields(Config))}")
        require(isinstance(values, dict), f"{source}: [{section}] must be a table")
        sec = getattr(cfg, section)
        known = {f.name: f for f in fields(sec)}
        for name, value in values.items():
            require(name in known,
                    f"{source}: unknown field {section}.{name}; expected one of {', '.join(known)}")
            setattr(sec, name, _coerce(section, name, value, getattr(sec, name)))
    validate(cfg)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.field=value``; the value is TOML (bare words are strings)."""
    require("=" in text and "." in text.split("=", 1)[0],
            f"--set {text!r}: expected section.field=value")
    key, value = text.split("=", 1)
    section, name = key.strip().split(".", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return section, name, parsed


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML config, apply ``--set`` overrides, validate."""
    p = Path(path)
    require(p.is_file(), f"config file {p}: not found")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {p}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {p}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); "
                        "expected a TOML config") from None
    except OSError as exc:
        raise UserError(f"config file {p}: cannot be read ({exc.strerror or exc})") from None
    for text in overrides or []:
        section, name, value = parse_override(text)
        raw.setdefault(section, {})[name] = value
    return from_dict(raw, source=str(p))


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    require(value in allowed, f"config field {where}: unknown name {value!r}; expected one of {', '.join(allowed)}")


def validate(cfg: Config) -> None:
    """Field-level checks that need no data or graph (those happen where the object is built)."""
    from hpcasync.algorithms import ALGORITHMS
    from hpcasync.data import DATASETS
    from hpcasync.delays import DELAY_MODELS
    from hpcasync.problems import PROBLEMS
    from hpcasync.topology import TOPOLOGIES

    a, t, d, dl = cfg.algorithm, cfg.topology, cfg.data, cfg.delays
    _check_ranges(cfg)
    ALGORITHMS.validate(a.name)
    _one_of(a.schedule, SCHEDULES, "algorithm.schedule")
    _one_of(a.step_rule, STEP_RULES, "algorithm.step_rule")
    _one_of(a.reduce, REDUCTIONS, "algorithm.reduce")
    require(a.step_rule != "theorem" or a.smoothness > 0,
            "config field algorithm.smoothness: step_rule = \"theorem\" needs the smoothness L > 0")
    TOPOLOGIES.validate(t.name)
    _one_of(t.weights, WEIGHTS, "topology.weights")
    if t.shape:
        require(len(t.shape) == 2 and all(isinstance(s, int) and s >= 1 for s in t.shape),
                f"config field topology.shape: expected [rows, cols] of positive integers, got {t.shape}")
        require(t.shape[0] * t.shape[1] == t.n,
                f"config field topology.shape: {t.shape[0]}x{t.shape[1]} grid has {t.shape[0] * t.shape[1]} "
                f"nodes but topology.n = {t.n}")
    if t.name == "custom":
        require(bool(t.matrix), "config field topology.matrix: a custom topology needs the path of W")
    DATASETS.validate(d.name)
    PROBLEMS.validate(cfg.problem.name)
    pr = cfg.problem
    PROBLEMS.get(pr.name).check_config(cfg)
    _one_of(pr.dtype, DTYPES, "problem.dtype")
    _one_of(pr.device, DEVICES, "problem.device")
    _one_of(d.partition, PARTITIONS, "data.partition")
    if getattr(DATASETS.get(d.name), "needs_dir", False):
        require(bool(d.dir), f"config field data.dir: dataset {d.name!r} needs a local directory")
    DELAY_MODELS.validate(dl.model)
    _one_of(dl.compute_dist, COMPUTE_DISTS, "delays.compute_dist")
    _one_of(dl.comm_dist, COMM_DISTS, "delays.comm_dist")
    require(0 <= dl.straggler < t.n,
            f"config field delays.straggler: expected an agent in 0..{t.n - 1}, got {dl.straggler}")
    require(cfg.budget.time > 0 or cfg.budget.gradients > 0,
            "config section [budget]: a budget of zero; set budget.time > 0 or budget.gradients > 0")
    _one_of(cfg.mpi.launcher, ("mpiexec", "srun"), "mpi.launcher")
    _one_of(cfg.mpi.progress, ("auto", "off", "thread"), "mpi.progress")
    _one_of(cfg.mpi.shared_memory, ("auto", "off"), "mpi.shared_memory")


def dump_toml(data: dict[str, Any]) -> str:
    """Write nested dicts of scalars and lists as TOML (the standard library only reads it)."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (how the Python API passes overrides to :func:`load`)."""
    return _toml_value(value)
