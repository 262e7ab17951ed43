"""Read a run directory written by :mod:`hpcasync.results.writer`, finished, running or killed.

Files are opened with ``swmr=True``: that reads a run that is still being
written, and it is the only way HDF5 opens a file whose SWMR writer was
killed (its superblock still says "open for writing"). Columns are cut at
the group's ``committed_rows`` (and at the shortest column), so a reader
never sees rows the writer had not finished publishing.

An agent file that is missing, unreadable or was not closed cleanly does not
stop the reader: ``Run.agent(rank)["status"]`` says which.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcasync.errors import UserError
from hpcasync.results import schema
from hpcasync.results.h5check import BrokenFileError, check_file, open_error
from hpcasync.results.h5io import open_h5
from hpcasync.results.schema import COMMITTED, EVALUATIONS, UPDATES, Column

# Agent status values, from best to worst.
COMPLETE, PARTIAL, MISSING, UNREADABLE = "complete", "partial", "missing", "unreadable"

# Readers retry only briefly on a locked file: the writers hold it for milliseconds.
READ_LOCK_TIMEOUT_S = 2.0


def _attr(value: Any) -> Any:
    """HDF5 attribute → plain Python (str, bool, int, float, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attrs(obj: h5py.HLObject) -> dict[str, Any]:
    return {k: _attr(v) for k, v in obj.attrs.items()}


def _read_columns(group: h5py.Group | None, columns: tuple[Column, ...]) -> dict[str, np.ndarray]:
    """The group's columns, all cut to the committed length; empty arrays where absent."""
    if group is None:
        return {c.name: np.empty(0, dtype=c.dtype) for c in columns}
    present = [c for c in columns if c.name in group]
    lengths = [group[c.name].shape[0] for c in present]
    n = min(lengths) if lengths else 0
    if COMMITTED in group:
        n = min(n, int(group[COMMITTED][()]))
    out = {}
    for c in columns:
        out[c.name] = group[c.name][:n] if c in present else np.full(n, c.fill, dtype=c.dtype)
    return out


def _empty_agent(rank: int, status: str, error: str | None) -> dict[str, Any]:
    agent: dict[str, Any] = _read_columns(None, UPDATES)
    agent.update(rank=rank, status=status, error=error, attrs={}, timings={}, final_model=None)
    return agent


def read_agent_file(path: Path, rank: int) -> dict[str, Any]:
    """One agent file as a dict: the /updates columns (numpy arrays) plus ``rank``, ``status``
    (complete | partial | missing | unreadable), ``error`` (why, or None), ``attrs``, ``timings``
    ({name: float}) and ``final_model`` (array or None)."""
    if not path.exists():
        return _empty_agent(rank, MISSING, f"{path.name} does not exist")
    try:
        check_file(path)  # a truncated file would hang h5py's SWMR reader
    except (BrokenFileError, OSError) as exc:
        return _empty_agent(rank, UNREADABLE, f"{path.name}: {exc}")
    try:
        with open_h5(path, "r", swmr=True, timeout=READ_LOCK_TIMEOUT_S) as f:
            agent: dict[str, Any] = _read_columns(f.get(schema.UPDATES_GROUP), UPDATES)
            attrs = _attrs(f)
            timings = {}
            if schema.TIMINGS_GROUP in f:
                timings = {k: float(ds[()]) for k, ds in f[schema.TIMINGS_GROUP].items()}
            final = f[schema.FINAL_MODEL][()] if schema.FINAL_MODEL in f else None
            steps = f.get(schema.SERVER_STEPS_GROUP)
            server_steps = None if steps is None else {c.name: steps[c.name][()] for c in schema.SERVER_STEPS
                                                       if c.name in steps}
    except (OSError, KeyError, ValueError) as exc:
        return _empty_agent(rank, UNREADABLE, f"{path.name}: {open_error(exc)}")
    complete = bool(attrs.get("complete", False))
    agent.update(rank=rank, status=COMPLETE if complete else PARTIAL,
                 error=None if complete else f"{path.name} was not closed cleanly",
                 attrs=attrs, timings=timings, final_model=final, server_steps=server_steps)
    return agent


@dataclass
class Run:
    """One run directory, read. ``evaluations`` maps each ``schema.EVALUATIONS`` name to an array."""

    path: Path
    name: str
    config: dict[str, Any]
    config_toml: str
    engine: str
    complete: bool
    n_agents: int
    created: str
    hpcasync_version: str
    evaluations: dict[str, np.ndarray]
    summary: dict[str, Any]
    adjacency: np.ndarray
    weights: np.ndarray
    versions: dict[str, Any]
    hosts: list[str] | None
    agent_files: list[str]
    _agents: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def algorithm(self) -> str:
        """The algorithm from the config (``algorithm.name``)."""
        return str(self.config.get("algorithm", {}).get("name", "?"))

    @property
    def case(self) -> str:
        """Delay setting: the Zhou & Pu 2025 case number under ``delays.model = "case"``, else the model name."""
        delays = self.config.get("delays", {})
        model = delays.get("model", "case")
        return str(delays.get("case", "?")) if model == "case" else str(model)

    @property
    def target_accuracy(self) -> float | None:
        value = self.config.get("eval", {}).get("target_accuracy")
        return None if value is None else float(value)

    def agent_path(self, rank: int) -> Path:
        return self.path / self.agent_files[rank]

    def agent(self, rank: int, *, refresh: bool = False) -> dict[str, Any]:
        """Agent ``rank``'s updates, timings and final model (see :func:`read_agent_file`); cached."""
        if not 0 <= rank < self.n_agents:
            raise IndexError(f"rank {rank} out of range 0..{self.n_agents - 1}")
        if refresh or rank not in self._agents:
            self._agents[rank] = read_agent_file(self.agent_path(rank), rank)
        return self._agents[rank]

    def agents(self) -> list[dict[str, Any]]:
        """All agents, in rank order."""
        return [self.agent(r) for r in range(self.n_agents)]

    def agent_status(self) -> dict[int, str]:
        """rank → complete | partial | missing | unreadable."""
        return {r: self.agent(r)["status"] for r in range(self.n_agents)}

    def updates(self, rank: int) -> dict[str, np.ndarray]:
        """Agent ``rank``'s per-update series (one numpy array per ``schema.UPDATES`` column)."""
        agent = self.agent(rank)
        return {c.name: agent[c.name] for c in UPDATES}

    def server_steps(self) -> dict[str, np.ndarray] | None:
        """Every gradient the parameter server applied (async-sgd, hogwild), all workers together in
        the order of the server's version: ``schema.SERVER_STEPS`` columns plus ``worker``; None if none."""
        parts = [(r, a["server_steps"]) for r in range(self.n_agents) if (a := self.agent(r)).get("server_steps")]
        if not parts:
            return None
        out = {name: np.concatenate([p[name] for _, p in parts]) for name in parts[0][1]}
        out["worker"] = np.concatenate([np.full(len(p["step"]), r, np.int64) for r, p in parts])
        order = np.argsort(out["step"], kind="stable")
        return {k: v[order] for k, v in out.items()}

    def final_models(self) -> np.ndarray:
        """The agents' final models, one row per agent (NaN rows for agents without one)."""
        models = [self.agent(r)["final_model"] for r in range(self.n_agents)]
        d = next((m.size for m in models if m is not None), 0)
        return np.stack([np.full(d, np.nan) if m is None else m for m in models]) if models else np.empty((0, 0))

    def to_pandas(self) -> Any:
        """The evaluations as a pandas DataFrame (pandas must be installed)."""
        from hpcasync.results.frames import to_frame

        return to_frame(self.evaluations)

    def updates_frame(self) -> Any:
        """Every agent's updates in one DataFrame with an ``agent`` column (pandas must be installed)."""
        from hpcasync.results.frames import updates_frame

        return updates_frame([self.updates(r) for r in range(self.n_agents)], list(range(self.n_agents)))

    def agent_problems(self) -> list[str]:
        """One line per agent file that is missing or unreadable (why), empty when all can be read."""
        return [f"agent {a['rank']} {a['status']}: {a['error']}" for a in self.agents()
                if a["status"] in (MISSING, UNREADABLE)]


def is_run_dir(path: Path) -> bool:
    return (Path(path) / schema.RUN_FILENAME).is_file()


def open_run(path: str | Path) -> Run:
    """Read the run in directory ``path`` (or its ``run.h5``); agents are read on demand.

    Raises UserError when ``path`` does not exist, holds no run.h5, or run.h5 cannot be read.
    """
    path = Path(path)
    if path.is_file() and path.name == schema.RUN_FILENAME:
        path = path.parent
    if not path.exists():
        raise UserError(f"run directory {path}: does not exist")
    if not path.is_dir():
        raise UserError(f"run directory {path}: not a directory (expected a directory holding run.h5)")
    run_file = path / schema.RUN_FILENAME
    if not run_file.is_file():
        raise UserError(f"run directory {path}: not a run (no {schema.RUN_FILENAME} in it)")
    try:
        check_file(run_file)  # a truncated file would hang h5py's SWMR reader
        with open_h5(run_file, "r", swmr=True, timeout=READ_LOCK_TIMEOUT_S) as f:
            return _read_run(path, f)
    except BrokenFileError as exc:
        raise UserError(f"run file {run_file}: cannot be read: {exc}") from None
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"run file {run_file}: cannot be read ({open_error(exc)})") from None


def _read_run(path: Path, f: h5py.File) -> Run:
    attrs = _attrs(f)
    toml_text = str(_attr(f[schema.CONFIG_GROUP].attrs.get("toml", "")))
    try:
        config = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        where = path / schema.RUN_FILENAME
        raise UserError(f"run file {where}: /config toml does not parse ({exc})") from exc
    n = int(attrs.get("n_agents", 0))
    files = []
    agents = f.get(schema.AGENTS_GROUP)
    for rank in range(n):
        link = agents.get(schema.agent_link_name(rank), getlink=True) if agents is not None else None
        # The link names the file; fall back to the standard name if it is absent.
        files.append(link.filename if isinstance(link, h5py.ExternalLink) else schema.agent_filename(rank))
    hosts = None
    if schema.HOSTS in f:
        hosts = [h.decode() if isinstance(h, bytes) else str(h) for h in f[schema.HOSTS][()]]
    summary = _attrs(f[schema.SUMMARY_GROUP]) if schema.SUMMARY_GROUP in f else {}
    return Run(
        path=path, name=path.resolve().name, config=config, config_toml=toml_text,
        engine=str(attrs.get("engine", "?")), complete=bool(attrs.get("complete", False)), n_agents=n,
        created=str(attrs.get("created", "")), hpcasync_version=str(attrs.get("hpcasync_version", "")),
        evaluations=_read_columns(f.get(schema.EVALUATIONS_GROUP), EVALUATIONS), summary=summary,
        adjacency=f[f"{schema.TOPOLOGY_GROUP}/adjacency"][()],
        weights=f[f"{schema.TOPOLOGY_GROUP}/weights"][()],
        versions=_attrs(f[schema.VERSIONS_GROUP]) if schema.VERSIONS_GROUP in f else {},
        hosts=hosts, agent_files=files,
    )


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each is a run directory or a folder with runs below it.

    Subfolders are searched recursively but not below a run directory. Order:
    as given, and sorted within a folder; duplicates dropped. UserError when a
    path does not exist or holds no run.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"run directory {p}: does not exist")
        if p.is_file() and p.name == schema.RUN_FILENAME:
            p = p.parent
        if not p.is_dir():
            raise UserError(f"run directory {p}: not a directory "
                            "(expected a run directory or a folder of runs)")
        if is_run_dir(p):
            found.append(p)
            continue
        below = _runs_below(p)
        if not below:
            raise UserError(f"run directory {p}: not a run "
                            f"(no {schema.RUN_FILENAME} in it or its subdirectories)")
        found.extend(below)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _runs_below(folder: Path) -> list[Path]:
    runs = []
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            runs.extend([child] if is_run_dir(child) else _runs_below(child))
    return runs
