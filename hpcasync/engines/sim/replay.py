"""Trace replay: the simulator driven by the times an MPI run measured (``hpcasync simulate --replay RUN_DIR``).

An MPI run records, per rank, the busy time of every gradient step and the
link time of every transmission (:mod:`hpcasync.engines.mpi.trace`). A
:class:`TraceDelays` hands agent i exactly those durations, in order, as its
computation and communication delays, in time units (seconds / ``mpi.time_unit``
with a delay model, else seconds). Once an agent's computations are used up
its next one never ends (``inf``): the replay makes no gradient the run did
not make, so a synchronous run (DSGD) replays its iterates exactly, and an
asynchronous one interleaves as the run did, up to the MPI run's own
jitter of reads and writes (which the trace does not record). Transmissions
beyond the recorded ones take the recorded mean.

The replayed config is the run's (run.h5), with its budget and evaluation
interval converted to time units and no gradient budget (the trace bounds
the gradients).
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np

from hpcasync import delays as delay_models
from hpcasync.config import Config
from hpcasync.delays import DelayModel
from hpcasync.engines.mpi.trace import read as read_trace
from hpcasync.errors import UserError
from hpcasync.results import schema
from hpcasync.resume import stored_config


class TraceDelays(DelayModel):
    """A :class:`DelayModel` whose samples are the recorded durations of each agent, in order."""

    def __init__(self, compute: list[np.ndarray], comm: list[np.ndarray], unit: float) -> None:
        n = len(compute)
        super().__init__(compute_samplers=[lambda rng: 0.0] * n, comm_samplers=[lambda rng: 0.0] * n,
                         compute_rngs=[np.random.default_rng(0)] * n, comm_rngs=[np.random.default_rng(0)] * n)
        self.compute_trace = [np.asarray(c, np.float64) / unit for c in compute]
        self.comm_trace = [np.asarray(c, np.float64) / unit for c in comm]
        self.comm_mean = [float(c.mean()) if c.size else 0.0 for c in self.comm_trace]
        self.compute_pos = [0] * n
        self.comm_pos = [0] * n

    def compute(self, i: int) -> float:
        k = self.compute_pos[i]
        self.compute_pos[i] = k + 1
        trace = self.compute_trace[i]
        return float(trace[k]) if k < trace.size else math.inf

    def comm(self, i: int) -> float:
        k = self.comm_pos[i]
        self.comm_pos[i] = k + 1
        trace = self.comm_trace[i]
        return float(trace[k]) if k < trace.size else self.comm_mean[i]

    def comm_from(self, i: int, rng: np.random.Generator) -> float:
        return self.comm_mean[i]


def load(run_dir: Path) -> tuple[Config, TraceDelays]:
    """The config to replay ``run_dir`` with and its :class:`TraceDelays`; UserError if it has no trace."""
    run_dir = Path(run_dir)
    cfg, _ = stored_config(run_dir, "--replay")
    with h5py.File(run_dir / schema.RUN_FILENAME, "r", swmr=True) as f:
        engine = f.attrs.get("engine")
        wall = float(f[schema.SUMMARY_GROUP].attrs.get("wall_s", math.nan))
    if engine != "mpi":
        raise UserError(f"--replay {run_dir}: a {engine} run; replay needs a run of `hpcasync run` (MPI)")
    n = cfg.topology.n
    compute, comm = [], []
    for i in range(n):
        path = run_dir / schema.agent_filename(i)
        try:
            series = read_trace(path) if path.is_file() else None
        except (OSError, KeyError) as exc:
            raise UserError(f"--replay {run_dir}: {path.name} is unreadable ({exc})") from None
        if series is None:
            raise UserError(f"--replay {run_dir}: {path.name} has no timing trace (/trace)")
        compute.append(series[0])
        comm.append(series[1])
    plan = delay_models.DELAY_MODELS.get(cfg.delays.model)(cfg.delays, n)
    unit = cfg.mpi.time_unit if plan.enabled else 1.0
    if not math.isfinite(wall):  # an interrupted run: its busiest rank's recorded time
        wall = max(float(c.sum()) for c in compute)
    d = cfg.to_dict()
    d["budget"] = dict(d["budget"], time=wall / unit * 1.001 + 1e-9, gradients=0)
    d["eval"] = dict(d["eval"], interval=cfg.eval.interval / unit)
    d["delays"] = dict(d["delays"], drop=0.0)
    from hpcasync.config import from_dict

    return from_dict(d, source=f"replay of {run_dir}"), TraceDelays(compute, comm, unit)
