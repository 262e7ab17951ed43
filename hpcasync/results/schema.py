"""The HDF5 layout of a run directory (docs/design.md §8): names, dtypes and units in one place.

The writer creates exactly these datasets and the reader looks for exactly
these, so a column added here appears in both. A run directory holds::

    run.h5              attrs: format, complete, engine, created, hpcasync_version, n_agents
      /config           attr "toml": the full config text
      /topology/adjacency   uint8 n×n
      /topology/weights     float64 n×n (the mixing matrix W)
      /versions         attrs: software and host versions
      /hosts            optional, rank → host name
      /evaluations/*    one 1-D column per EVALUATIONS entry, plus committed_rows
      /summary          attrs set by RunWriter.set_summary
      /agents/rank-00003 -> external link to rank-00003.h5:/
    rank-00003.h5       attrs: format, rank, algorithm, complete, …
      /updates/*        one 1-D column per UPDATES entry, plus committed_rows (int64
                        scalar: rows known to be fully on disk)
      /timings/*        float64 scalars, units from the name (``_s`` seconds, ``_units`` time units)
      /final/model      float64 or float32 (d,): the run's dtype (problem.dtype)
      /trace/compute_s  MPI: float32 per gradient, the step's busy time (s), for replay
      /trace/comm_s     MPI: float32 per transmission, its measured link time (s)

``committed_rows`` exists because an SWMR reader may see a dataset's new
extent before the chunk data behind it; the writer bumps it only after the
rows themselves were flushed, and readers never read past it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 1
RUN_FILENAME = "run.h5"

UPDATES_GROUP = "updates"
EVALUATIONS_GROUP = "evaluations"
COMMITTED = "committed_rows"
TIMINGS_GROUP = "timings"
FINAL_MODEL = "final/model"
AGENTS_GROUP = "agents"
CONFIG_GROUP = "config"
TOPOLOGY_GROUP = "topology"
VERSIONS_GROUP = "versions"
HOSTS = "hosts"
SUMMARY_GROUP = "summary"

ENGINES = ("sim", "mpi")


@dataclass(frozen=True)
class Column:
    """One 1-D appendable dataset: its name, numpy dtype, units and meaning."""

    name: str
    dtype: str
    units: str
    description: str

    @property
    def fill(self) -> float | int:
        """Fill value for rows allocated but not yet written: NaN for floats, -1 for counters."""
        return np.nan if np.dtype(self.dtype).kind == "f" else -1


UPDATES: tuple[Column, ...] = (
    Column("wall_time", "f8", "s", "wall-clock seconds since the run started"),
    Column("virtual_time", "f8", "time units", "simulated time; NaN on MPI without a delay model"),
    Column("iteration", "i8", "gradients", "gradients computed by this agent so far"),
    Column("loss", "f8", "1", "minibatch loss of the last gradient"),
    Column("grad_norm", "f8", "1", "Euclidean norm of the last stochastic gradient"),
    Column("bytes_sent", "i8", "bytes", "cumulative payload bytes sent by this agent"),
    Column("messages_sent", "i8", "messages", "cumulative messages sent by this agent"),
    Column("staleness", "f8", "iterations", "algorithm-defined staleness of the information mixed"),
)

EVALUATIONS: tuple[Column, ...] = (
    Column("virtual_time", "f8", "time units", "simulated time of the evaluation; NaN without a delay model"),
    Column("wall_time", "f8", "s", "wall-clock seconds since the run started"),
    Column("gradients", "i8", "gradients", "gradients computed by all agents together"),
    Column("train_loss", "f8", "1", "training objective of the average model"),
    Column("test_loss", "f8", "1", "test loss of the average model"),
    Column("test_accuracy", "f8", "fraction", "test accuracy of the average model (NaN for regression)"),
    Column("consensus_distance", "f8", "1", "mean over agents of ||x_i - x_mean||^2"),
    Column("staleness_avg", "f8", "gradients",
           "mean over agent pairs i<j of S_ij = sum_o |c_i[o] - c_j[o]| over the vector clocks of applied "
           "gradients (Tosi & Theobald 2023); NaN for algorithms without vector clocks"),
    Column("staleness_max", "f8", "gradients", "max over agent pairs of S_ij (as staleness_avg)"),
)

#: /server_steps of a worker's rank file (async-sgd, hogwild): one row per gradient the parameter server
#: applied for this worker, written when the file is closed
SERVER_STEPS_GROUP = "server_steps"
SERVER_STEPS: tuple[Column, ...] = (
    Column("step", "i8", "steps", "server version k when the gradient was applied (0 = first step)"),
    Column("tau", "i8", "steps", "delay tau = k - prev: steps applied since the worker read its model"),
    Column("wall_time", "f8", "s", "wall-clock seconds since the run started when the step was applied"),
    Column("virtual_time", "f8", "time units", "simulated time of the step; NaN on MPI without a delay model"),
)

UPDATE_NAMES = tuple(c.name for c in UPDATES)
EVALUATION_NAMES = tuple(c.name for c in EVALUATIONS)
TIME_KEYS = ("virtual_time", "wall_time")


def row_dtype(columns: tuple[Column, ...]) -> np.dtype:
    """Structured dtype of one row: the writers buffer rows in arrays of it."""
    return np.dtype([(c.name, c.dtype) for c in columns])


def agent_link_name(rank: int) -> str:
    """Name of agent ``rank`` under /agents in run.h5: ``rank-00003``."""
    return f"rank-{rank:05d}"


def agent_filename(rank: int) -> str:
    """File of agent ``rank`` in the run directory: ``rank-00003.h5``."""
    return f"{agent_link_name(rank)}.h5"


def value_units(name: str) -> str:
    """Units of a timing or summary value, from its name's suffix (``compute_s``, ``idle_units``)."""
    if name.endswith("_s"):
        return "s"
    if name.endswith("_units"):
        return "time units"
    if name.endswith("_bytes") or name == "bytes":
        return "bytes"
    return "1"


def time_label(time_key: str) -> str:
    """Axis label for a time column."""
    return {"virtual_time": "virtual time (time units)", "wall_time": "wall time (s)"}[time_key]
