"""The timing trace of one MPI rank, replayed by the simulator (``hpcasync simulate --replay RUN_DIR``).

Two series, in seconds, float32 in the rank's file (4 bytes an event):

* ``/trace/compute_s``: for each gradient, how long the rank was busy from
  the start of the gradient to the algorithm's next blocking op — the
  computation, its injected padding, the mixing and sends of that step —
  less the time spent waiting in collectives. This is what the simulator
  models as one computation delay (its mixing takes no virtual time).
* ``/trace/comm_s``: for each transmission, how long it occupied the link —
  with a delay model the injected sample of the serial sender (and of a
  collective's contribution, as the simulator draws it), without one the
  measured time of the one-sided sends of that step.

The simulator's delay model fed from these series
(:mod:`hpcasync.engines.sim.replay`) gives every agent the recorded
durations in the recorded order.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import h5py
import numpy as np

from hpcasync.results.h5io import LIBVER, open_h5

GROUP = "trace"
COMPUTE = "compute_s"
COMM = "comm_s"


class Trace:
    """The growing series of one rank (amortised O(1) appends, no numpy per event)."""

    def __init__(self) -> None:
        self.compute = array("f")
        self.comm = array("f")
        self.pending_send_s = 0.0  # measured send time of the current step (immediate sends)

    def add_compute(self, seconds: float) -> None:
        self.compute.append(seconds if seconds > 0.0 else 0.0)  # once per update: no max(float(…))

    def add_comm(self, seconds: float) -> None:
        self.comm.append(max(float(seconds), 0.0))

    def end_step(self) -> None:
        """Close the step: its immediate sends were one transmission."""
        if self.pending_send_s > 0.0:
            self.add_comm(self.pending_send_s)
            self.pending_send_s = 0.0

    def load(self, path: Path) -> None:
        """Start from the series already in ``path`` (a resumed run goes on recording after them)."""
        series = read(path)
        if series is not None:
            self.compute = array("f", series[0].tolist())
            self.comm = array("f", series[1].tolist())

    def write(self, path: Path) -> None:
        """Store the series in the closed rank file ``path`` (replacing earlier ones)."""
        with open_h5(path, "r+", libver=LIBVER) as f:
            g = f.require_group(GROUP)
            for name, values in ((COMPUTE, self.compute), (COMM, self.comm)):
                if name in g:
                    del g[name]
                ds = g.create_dataset(name, data=np.array(values, np.float32))
                ds.attrs["units"] = "s"


def read(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(compute_s, comm_s) of the rank file ``path``; None if it has no trace."""
    with h5py.File(path, "r", swmr=True) as f:
        if GROUP not in f:
            return None
        g = f[GROUP]
        return np.asarray(g[COMPUTE][()], np.float64), np.asarray(g[COMM][()], np.float64)
