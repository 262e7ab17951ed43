"""The Python API: configs, simulations, MPI runs, run directories and sweeps from a script.

    import hpcasync
    cfg = hpcasync.load_config("configs/digits-grid/case5-adsgd.toml", overrides={"budget.time": 50})
    res = hpcasync.simulate(cfg)                 # in memory; out="runs/x" also writes HDF5
    res.evaluations["test_accuracy"], res.models  # numpy arrays
    run = hpcasync.open_run("runs/x")            # a run directory, read back

``hpcasync.run(cfg, out=...)`` is the MPI engine for ``mpiexec -n N python script.py``
(every rank calls it). Everything heavy is imported on first use, so ``import
hpcasync`` stays cheap and never imports torch or mpi4py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcasync import config as config_mod
from hpcasync.config import Config
from hpcasync.errors import UserError
from hpcasync.results.frames import columns_of, to_frame, updates_frame
from hpcasync.results.schema import EVALUATIONS, UPDATES

if TYPE_CHECKING:
    from hpcasync.results.reader import Run
    from hpcasync.sweep import SweepResult

ConfigSource = str | Path | Mapping[str, Any] | Config


def _parsed(overrides: Iterable[str] | Mapping[str, Any] | None) -> list[tuple[str, str, Any]]:
    """(section, field, value) triples from ``"section.field=value"`` strings or a mapping."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        out = []
        for key, value in overrides.items():
            section, dot, name = str(key).partition(".")
            if not dot or not section or not name:
                raise UserError(f"override {key!r}: expected a key 'section.field'")
            out.append((section, name, value))
        return out
    return [config_mod.parse_override(text) for text in ([overrides] if isinstance(overrides, str) else overrides)]


def _override_list(overrides: Iterable[str] | Mapping[str, Any] | None) -> list[str]:
    """Overrides as ``--set`` strings (TOML values), for the functions that take those."""
    return [f"{s}.{n}={config_mod.toml_value(v)}" for s, n, v in _parsed(overrides)]


def load_config(source: ConfigSource, overrides: Iterable[str] | Mapping[str, Any] | None = None) -> Config:
    """A validated :class:`Config` from a TOML file, a nested dict or a Config built in Python.

    ``overrides`` are ``"section.field=value"`` strings (as ``--set``) or a
    mapping ``{"algorithm.alpha": 0.02}``. A Config object is checked exactly
    like a file (types, ranges, registered names): a copy is returned.
    """
    changes = _parsed(overrides)
    if isinstance(source, str | Path):
        return config_mod.load(source, _override_list(overrides))
    if isinstance(source, Config):
        raw: dict[str, Any] = source.to_dict()
        where = "config object"
    elif isinstance(source, Mapping):
        raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in source.items()}
        where = "config dict"
    else:
        raise UserError(f"load_config: expected a path, a dict or a Config, got {type(source).__name__}")
    for section, name, value in changes:
        if not isinstance(raw.setdefault(section, {}), dict):
            raise UserError(f"{where}: [{section}] must be a table")
        raw[section][name] = value
    return config_mod.from_dict(raw, source=where)


@dataclass
class Result:
    """What a run produced, in memory.

    ``evaluations``: one array per evaluation column (``virtual_time``,
    ``train_loss``, ``test_accuracy``…) of the average model. ``updates``: per
    agent, one array per update column (``loss``, ``staleness``…). ``models``:
    the final models, one row per agent this process ran (all of them in the
    simulator; on MPI this rank's own, none on the monitor), ``agents`` their ranks.
    """

    config: Config
    engine: str
    evaluations: dict[str, np.ndarray]
    updates: list[dict[str, np.ndarray]]
    models: np.ndarray
    agents: list[int]
    summary: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None

    @property
    def average_model(self) -> np.ndarray:
        return self.models.mean(axis=0)

    def to_pandas(self) -> Any:
        """The evaluations as a pandas DataFrame (pandas must be installed)."""
        return to_frame(self.evaluations)

    def updates_frame(self) -> Any:
        """Every agent's updates in one DataFrame with an ``agent`` column."""
        return updates_frame(self.updates, self.agents)


def simulate(cfg: ConfigSource, out: str | Path | None = None, *,
             progress: Callable[[float], None] | None = None) -> Result:
    """Run ``cfg`` in the discrete-event simulator and return its :class:`Result`.

    Nothing is written unless ``out`` is given; then ``out`` is a run directory
    (the HDF5 layout of ``hpcasync simulate``, readable with :func:`open_run`).
    """
    from hpcasync.engines.sim.runner import MemoryRecorder, build_simulator
    from hpcasync.engines.sim.runner import simulate as simulate_to

    cfg = load_config(cfg)
    memory = MemoryRecorder(cfg.topology.n)
    if out is None:
        sim = build_simulator(cfg, memory, progress)
        sim.run()
    else:
        sim = simulate_to(cfg, Path(out), progress, tee=memory)
    return Result(
        config=cfg, engine="sim", evaluations=columns_of(sim.evaluations, EVALUATIONS),
        updates=[columns_of(rows, UPDATES) for rows in memory.rows],
        models=np.stack([np.array(a.model) for a in sim.agents]), agents=list(range(sim.n)),
        summary={"virtual_time": sim.now, "gradients": sim.gradients, "events": sim.events, "wall_s": sim.wall()},
        out=None if out is None else Path(out))


def run(cfg: ConfigSource, out: str | Path, *, comm: Any = None, quiet: bool = True) -> Result:
    """This rank's part of an MPI run of ``cfg`` into run directory ``out``; call it on every rank
    (``mpiexec -n N python script.py``). Collective over ``comm`` (default ``COMM_WORLD``).

    A config error on any rank raises the same :class:`UserError` on every rank.
    The evaluations are those of the evaluating rank (the monitor, else rank 0),
    empty elsewhere; :func:`open_run` on ``out`` afterwards gives the whole run.
    """
    from mpi4py import MPI

    from hpcasync import threads
    from hpcasync.engines.mpi.runner import run_rank
    from hpcasync.engines.mpi.world import agree, describe

    comm = MPI.COMM_WORLD if comm is None else comm
    error, loaded = None, None
    try:
        loaded = load_config(cfg)
    except UserError as exc:
        error = describe(exc)
    agree(comm, error)  # every rank raises if any rank failed: nobody is left waiting
    assert loaded is not None
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    n_threads, _ = threads.configure(local.Get_size())
    local.Free()
    res = run_rank(loaded, out, comm, source="python", threads=n_threads, quiet=quiet)
    models = np.empty((0, 0)) if res.agent is None else np.array(res.agent.model)[None, :]  # none on the monitor
    return Result(
        config=loaded, engine="mpi", evaluations=columns_of(res.evaluations, EVALUATIONS), updates=[],
        models=models, agents=[] if res.agent is None else [res.rank],
        summary={"rank": res.rank, "role": res.role, "gradients": res.gradients, "wall_s": res.wall_s,
                 **res.final}, out=Path(out))


def open_run(run_dir: str | Path) -> Run:
    """A run directory, read: ``.evaluations`` (numpy arrays), ``.agent(i)`` / ``.updates(i)`` per-agent
    series, ``.final_models()``, ``.to_pandas()`` and ``.updates_frame()`` (with pandas)."""
    from hpcasync.results.reader import open_run as _open

    return _open(run_dir)


def sweep(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] | None = None, *,
          out: str | Path | None = None, jobs: int | None = None, only: Iterable[str] = (), force: bool = False,
          echo: Callable[[str], None] = print) -> SweepResult:
    """Run the sweep file ``path`` (as ``hpcasync sweep``): unfinished runs only unless ``force``;
    returns which runs were done, skipped and failed."""
    from hpcasync.sweep import load_sweep, run_sweep

    spec = load_sweep(path, _override_list(overrides), out=None if out is None else str(out), jobs=jobs,
                      only=only)
    return run_sweep(spec, force=force, echo=echo, progress=False)
