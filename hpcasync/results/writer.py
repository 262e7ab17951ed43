"""Write a run directory: one file per agent (``AgentWriter``) and ``run.h5`` (``RunWriter``).

SWMR and the ``complete`` flag
------------------------------
Every file is written in the HDF5 1.10 format (``h5io.LIBVER``: superblock
v3, the oldest with SWMR), so HDF5 1.10's own tools (``h5dump``, ``h5ls``)
read it; ``libver="latest"`` wrote a bool attribute those tools cannot open.
A file is created under a temporary name (``.rank-00003.h5.tmp``), all its
groups, datasets and attributes are written, it is closed and renamed into
place, and only then reopened, in SWMR-write mode in a single ``H5Fopen``
(``h5io.open_swmr_write``): so a file under its real name is at every moment
either closed or open for SWMR writing, both of which a reader opens
(setting ``swmr_mode`` after a plain ``r+`` open left a window in which a
killed writer left a file that opened neither way). From then on the writer
only appends rows (resize + write + flush). The HDF5 SWMR rules forbid
creating or modifying attributes and objects in SWMR mode (h5py 3.16 / HDF5
2.0 happen not to refuse, but readers may then see an inconsistent header), so
everything that is only known at the end — ``complete``, ``finished``,
timings, the final model, the run summary — is kept in memory and written by
``close()``: it closes the SWMR handle (which also clears HDF5's "open for
writing" superblock flag), reopens the file in plain ``r+`` mode and writes
them. ``complete`` is written ``False`` at creation, so a run killed at any
moment says so.

A writer killed with SIGKILL leaves a file whose superblock still says "open
for SWMR writing": plain ``h5py.File(path, "r")`` refuses it (until
``h5clear -s``), but ``h5py.File(path, "r", swmr=True)`` opens it and sees
every row up to the last completed ``flush()`` — the reader always opens
that way.

Rows are published in two steps: write all columns, flush, then bump the
group's ``committed_rows`` scalar and flush again. Readers never read past
``committed_rows``, so they cannot see half-written rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from hpcasync import __version__
from hpcasync.errors import UserError
from hpcasync.results import schema
from hpcasync.results.h5io import (
    LIBVER,
    LOCK_TIMEOUT_S,
    append_rows,
    create_columns,
    create_file,
    ensure_output_dir,
    now_iso,
    open_h5,
    open_swmr_write,
    publish,
    reopen_for_append,
    set_attrs,
)
from hpcasync.results.provenance import software_versions
from hpcasync.results.schema import EVALUATIONS, UPDATES

if TYPE_CHECKING:
    from hpcasync.config import Config
    from hpcasync.topology import Topology

__all__ = ["LOCK_TIMEOUT_S", "AgentWriter", "RunWriter", "close_writers", "ensure_output_dir", "now_iso",
           "open_h5", "open_run_writer", "software_versions"]


def _closed_append(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("append() on a closed AgentWriter")


class AgentWriter:
    """Streams one agent's updates into its own ``rank-NNNNN.h5``.

    ``path`` is the file if it ends in ``.h5``, else the run directory (the
    file is then ``path / agent_filename(rank)``; the directory is created if
    needed, so ranks need not wait for the one that writes run.h5). ``attrs`` become root attributes; give at
    least ``algorithm``. ``append`` only copies a row into a preallocated
    buffer (``buffer_rows`` × 64 bytes); a full buffer, ``flush()`` and
    ``close()`` write it.

    ``keep_open=True`` (MPI, one writer per process): the file stays open in
    SWMR mode, so a reader can follow the run live. ``keep_open=False``
    (simulator, up to 1024 agents in one process, which would exhaust file
    handles): the file is opened only while rows are written, and in SWMR
    mode during that time too, so a crash mid-write cannot corrupt it.
    """

    def __init__(self, path: str | Path, rank: int, *, attrs: dict[str, Any] | None = None,
                 keep_open: bool = True, buffer_rows: int = 4096, chunk_rows: int | None = None) -> None:
        if buffer_rows < 1:
            raise ValueError(f"buffer_rows must be >= 1, got {buffer_rows}")
        path = Path(path)
        if path.suffix != ".h5":
            path = path / schema.agent_filename(rank)
        ensure_output_dir(path.parent)
        self.path = path
        self.rank = int(rank)
        self.keep_open = keep_open
        self._capacity = int(buffer_rows)
        self._buf: np.ndarray = np.empty(self._capacity, dtype=schema.row_dtype(UPDATES))
        self._n = 0
        self._written = 0
        self._timings: dict[str, float] = {}
        self._final_model: np.ndarray | None = None
        self._server_steps: np.ndarray | None = None
        self._final_attrs: dict[str, Any] = {}
        self._closed = False
        # Small chunks: the simulator's 1024 agents each allocate at least one chunk per column.
        chunk = int(chunk_rows or min(self._capacity, 512))

        attrs = dict(attrs or {})
        f = create_file(path)
        try:
            set_attrs(f, {"format": schema.FORMAT_VERSION, "rank": self.rank,
                           "algorithm": attrs.pop("algorithm", ""), "complete": False,
                           "created": now_iso(), "hpcasync_version": __version__, **attrs})
            create_columns(f.create_group(schema.UPDATES_GROUP), UPDATES, chunk)
        except BaseException:
            f.close()
            raise
        self._file: h5py.File | None = publish(f, path, swmr=keep_open)

    # -- hot path ------------------------------------------------------------------------------
    def append(self, wall_time: float, virtual_time: float, iteration: int, loss: float, grad_norm: float,
               bytes_sent: int, messages_sent: int, staleness: float) -> None:
        """Record one update (units in ``schema.UPDATES``); writes to disk only when the buffer is full."""
        n = self._n
        self._buf[n] = (wall_time, virtual_time, iteration, loss, grad_norm, bytes_sent, messages_sent,
                        staleness)
        n += 1
        self._n = n
        if n == self._capacity:
            self._write_buffer()

    # -- writing -------------------------------------------------------------------------------
    def _write_buffer(self) -> None:
        n = self._n
        if n == 0:
            return
        rows = self._buf[:n]
        if self._file is not None:
            f = self._file
            self._written = append_rows(f, f[schema.UPDATES_GROUP], UPDATES, self._written, rows)
        else:
            with open_swmr_write(self.path) as f:
                self._written = append_rows(f, f[schema.UPDATES_GROUP], UPDATES, self._written, rows)
        self._n = 0

    @property
    def rows(self) -> int:
        """Rows appended so far (written or buffered)."""
        return self._written + self._n

    def flush(self) -> None:
        """Write the buffered rows and flush the file, so readers (and a post-mortem) see them."""
        if self._closed:
            return
        self._write_buffer()

    def write_timings(self, **values: float) -> None:
        """Per-run totals, e.g. ``compute_s``, ``mix_s``, ``communicate_s``, ``idle_s``, ``compute_units``.

        Units follow the name: ``*_s`` seconds (wall), ``*_units`` delay time units. Written by ``close()``.
        """
        self._timings.update({k: float(v) for k, v in values.items()})

    def set_final_attrs(self, **attrs: Any) -> None:
        """Root attributes written by ``close()`` (e.g. ``interrupted = "SIGINT"``)."""
        self._final_attrs.update(attrs)

    def write_final_model(self, x: np.ndarray) -> None:
        """This agent's final model (copied now, written by ``close()`` to ``/final/model``)."""
        # the run's dtype (float32 for torch models, float64 otherwise)
        x = np.asarray(x)
        self._final_model = np.array(x, dtype=x.dtype if x.dtype.kind == "f" else np.float64, copy=True)

    def write_server_steps(self, rows: np.ndarray) -> None:
        """The parameter server's steps for this worker (structured rows of ``schema.SERVER_STEPS``),
        written by ``close()`` to ``/server_steps``."""
        self._server_steps = np.array(rows, dtype=schema.row_dtype(schema.SERVER_STEPS), copy=True)

    def close(self, complete: bool) -> None:
        """Write everything, set ``complete`` and close. Idempotent; a later ``append`` raises."""
        if self._closed:
            return
        self._closed = True
        self.append = _closed_append  # type: ignore[method-assign]
        try:
            self._write_buffer()
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._buf = self._buf[:0]  # release the buffer: the simulator holds 1024 writers
        self._finalize(complete)

    def _finalize(self, complete: bool) -> None:
        try:
            f = open_h5(self.path, "r+", libver=LIBVER)
        except OSError as exc:
            # Rows are safe on disk; only the end-of-run attributes are lost. Never crash a rank here.
            warnings.warn(f"{self.path}: could not reopen to mark it complete ({exc})", stacklevel=3)
            return
        with f:
            if self._timings:
                grp = f.require_group(schema.TIMINGS_GROUP)
                for key, value in self._timings.items():
                    if key in grp:
                        del grp[key]
                    grp.create_dataset(key, data=np.float64(value)).attrs["units"] = schema.value_units(key)
            if self._final_model is not None:
                if schema.FINAL_MODEL in f:
                    del f[schema.FINAL_MODEL]
                f.create_dataset(schema.FINAL_MODEL, data=self._final_model).attrs["units"] = "1"
            if self._server_steps is not None:
                if schema.SERVER_STEPS_GROUP in f:
                    del f[schema.SERVER_STEPS_GROUP]
                grp = f.create_group(schema.SERVER_STEPS_GROUP)
                for c in schema.SERVER_STEPS:
                    ds = grp.create_dataset(c.name, data=self._server_steps[c.name])
                    ds.attrs.update(units=c.units, description=c.description)
            set_attrs(f, self._final_attrs)
            f.attrs["finished"] = now_iso()
            f.attrs["complete"] = bool(complete)

    @classmethod
    def reopen(cls, path: str | Path, rank: int, *, rows: int, keep_open: bool = True,
               buffer_rows: int = 4096) -> AgentWriter:
        """Go on writing the file of an interrupted run (resume) after its first ``rows`` updates."""
        path = Path(path)
        reopen_for_append(path, schema.UPDATES_GROUP, UPDATES, rows)
        self = cls.__new__(cls)
        self.path, self.rank, self.keep_open = path, int(rank), keep_open
        self._capacity = int(buffer_rows)
        self._buf = np.empty(self._capacity, dtype=schema.row_dtype(UPDATES))
        self._n, self._written = 0, int(rows)
        self._timings, self._final_model, self._final_attrs, self._closed = {}, None, {}, False
        self._server_steps = None
        self._file = open_swmr_write(path) if keep_open else None
        return self

    def __enter__(self) -> AgentWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(complete=exc_type is None)


class RunWriter:
    """Creates ``out_dir/run.h5`` with the run's metadata and appends the monitor's evaluations.

    One process writes it (the simulator, or the MPI monitor rank). The file is
    in SWMR mode while the run goes, so ``hpcasync report`` can read a live run.
    ``/agents/rank-NNNNN`` are external links to the agent files, which may be
    created later (or by other ranks). ``overwrite=False`` refuses a directory
    that already holds a run.
    """

    def __init__(self, out_dir: str | Path, *, config_toml: str, engine: str, n_agents: int,
                 adjacency: np.ndarray, weights: np.ndarray, versions: dict[str, Any],
                 hosts: list[str] | None = None, overwrite: bool = True) -> None:
        if engine not in schema.ENGINES:
            raise ValueError(f"engine must be one of {schema.ENGINES}, got {engine!r}")
        adjacency = np.asarray(adjacency)
        weights = np.asarray(weights, dtype=np.float64)
        if adjacency.shape != (n_agents, n_agents) or weights.shape != (n_agents, n_agents):
            raise ValueError(f"adjacency {adjacency.shape} and weights {weights.shape} must be "
                             f"({n_agents}, {n_agents})")
        if hosts is not None and len(hosts) != n_agents:
            raise ValueError(f"hosts has {len(hosts)} entries for {n_agents} agents")
        self.out_dir = ensure_output_dir(Path(out_dir))
        self.path = self.out_dir / schema.RUN_FILENAME
        if self.path.exists() and not overwrite:
            raise UserError(f"output directory {self.out_dir}: already holds a run ({schema.RUN_FILENAME}); "
                            "choose another run name or remove it")
        self.n_agents = int(n_agents)
        self._summary: dict[str, Any] = {}
        self._final_attrs: dict[str, Any] = {}
        self._written = 0
        self._closed = False

        f = create_file(self.path)
        try:
            set_attrs(f, {"format": schema.FORMAT_VERSION, "complete": False, "engine": engine,
                           "created": now_iso(), "hpcasync_version": __version__, "n_agents": self.n_agents})
            f.create_group(schema.CONFIG_GROUP).attrs["toml"] = config_toml
            topo = f.create_group(schema.TOPOLOGY_GROUP)
            topo.create_dataset("adjacency", data=(adjacency != 0).astype(np.uint8)).attrs["units"] = "1"
            topo.create_dataset("weights", data=weights).attrs["units"] = "1"
            set_attrs(f.create_group(schema.VERSIONS_GROUP), versions)
            if hosts is not None:
                ds = f.create_dataset(schema.HOSTS, data=np.array(hosts, dtype=h5py.string_dtype()))
                ds.attrs["units"] = "host name per rank"
            create_columns(f.create_group(schema.EVALUATIONS_GROUP), EVALUATIONS, 256)
            f.create_group(schema.SUMMARY_GROUP)
            agents = f.create_group(schema.AGENTS_GROUP)
            for rank in range(self.n_agents):
                # Relative name: the run directory can be moved or copied as a whole.
                agents[schema.agent_link_name(rank)] = h5py.ExternalLink(schema.agent_filename(rank), "/")
        except BaseException:
            f.close()
            raise
        self._file: h5py.File | None = publish(f, self.path, swmr=True)
        self._row = np.empty(1, dtype=schema.row_dtype(EVALUATIONS))

    def append_eval(self, *, wall_time: float, gradients: int, virtual_time: float = np.nan,
                    train_loss: float = np.nan, test_loss: float = np.nan, test_accuracy: float = np.nan,
                    consensus_distance: float = np.nan, staleness_avg: float = np.nan,
                    staleness_max: float = np.nan) -> None:
        """Append one evaluation of the average model (units in ``schema.EVALUATIONS``) and flush it."""
        if self._file is None:
            raise RuntimeError("append_eval() on a closed RunWriter")
        self._row[0] = (virtual_time, wall_time, gradients, train_loss, test_loss, test_accuracy,
                        consensus_distance, staleness_avg, staleness_max)
        # Evaluations are rare (every few time units), so each is published at once for live readers.
        self._written = append_rows(self._file, self._file[schema.EVALUATIONS_GROUP], EVALUATIONS,
                                     self._written, self._row)

    def set_summary(self, **attrs: Any) -> None:
        """Run totals (``gradients``, ``virtual_time``, ``wall_s`` …) for ``/summary``, written by close()."""
        if self._closed:
            raise RuntimeError("set_summary() on a closed RunWriter")
        self._summary.update(attrs)

    def set_final_attrs(self, **attrs: Any) -> None:
        """Root attributes written by ``close()`` (e.g. ``interrupted = "SIGINT"``)."""
        self._final_attrs.update(attrs)

    def flush(self) -> None:
        """Flush run.h5 (evaluations are already flushed as they are appended)."""
        if self._file is not None:
            self._file.flush()

    def close(self, complete: bool) -> None:
        """Close the SWMR handle, then write the summary and ``complete``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            f = open_h5(self.path, "r+", libver=LIBVER)
        except OSError as exc:
            warnings.warn(f"{self.path}: could not reopen to mark it complete ({exc})", stacklevel=2)
            return
        with f:
            set_attrs(f[schema.SUMMARY_GROUP], self._summary)
            set_attrs(f, self._final_attrs)
            f.attrs["finished"] = now_iso()
            f.attrs["complete"] = bool(complete)

    @classmethod
    def reopen(cls, out_dir: str | Path, n_agents: int, *, rows: int) -> RunWriter:
        """Go on writing run.h5 of an interrupted run (resume) after its first ``rows`` evaluations."""
        self = cls.__new__(cls)
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / schema.RUN_FILENAME
        reopen_for_append(self.path, schema.EVALUATIONS_GROUP, EVALUATIONS, rows)
        self.n_agents = int(n_agents)
        self._summary, self._final_attrs, self._written, self._closed = {}, {}, int(rows), False
        self._file = open_swmr_write(self.path)
        self._row = np.empty(1, dtype=schema.row_dtype(EVALUATIONS))
        return self

    @property
    def rows(self) -> int:
        """Evaluations appended so far."""
        return self._written

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(complete=exc_type is None)


def open_run_writer(out_dir: str | Path, cfg: Config, topology: Topology, engine: str, *,
                    versions: dict[str, Any], hosts: list[str] | None = None) -> RunWriter:
    """The :class:`RunWriter` of a run of ``cfg`` on ``topology`` (both engines create it so)."""
    return RunWriter(out_dir, config_toml=cfg.to_toml(), engine=engine, n_agents=topology.n,
                     adjacency=topology.adjacency(), weights=topology.W, versions=versions, hosts=hosts)


def close_writers(writers: Iterable[AgentWriter | RunWriter | None], complete: bool) -> None:
    """Close every writer given (``None`` entries skipped), marking its file ``complete`` or not."""
    for w in writers:
        if w is not None:
            w.close(complete=complete)
