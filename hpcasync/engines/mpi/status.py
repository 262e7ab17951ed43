"""Live progress of an MPI run: a bar on a terminal, a periodic status line in a batch log.

One rank reports: the monitor (it evaluates the average model anyway) or,
without one, rank 0, from its loop's record points. Everything it shows is
read one-sidedly from the other ranks' notice boards (update counts and the
staleness each worker last recorded, :mod:`.board`), so no worker ever waits
for the report. Where stderr is a terminal a tqdm bar advances over the
budget (wall seconds, or gradients for a gradient budget); elsewhere (a
SLURM/PBS log) one line every ``mpi.status_interval`` seconds::

    hpcasync: 60.0 s, 48213 gradients (803/s), test accuracy 0.9121, staleness 1.42

``mpi.status_interval = 0`` and ``hpcasync run --quiet`` turn both off.
"""

from __future__ import annotations

import math
import sys
from typing import IO, Any

#: the bar redraws at most this often (seconds): tqdm itself is cheap, the terminal is not
BAR_REFRESH_S = 0.5


def status_line(wall: float, gradients: float, rate: float, accuracy: float | None, staleness: float) -> str:
    """The batch-log line (see the module docstring); unknown figures are left out."""
    parts = [f"{wall:.1f} s", f"{int(gradients)} gradients ({rate:.0f}/s)"]
    if accuracy is not None and math.isfinite(accuracy):
        parts.append(f"test accuracy {accuracy:.4f}")
    if math.isfinite(staleness):
        parts.append(f"staleness {staleness:.2f}")
    return "hpcasync: " + ", ".join(parts)


class StatusReporter:
    """Called with the run's figures as often as convenient; shows them as often as configured.

    ``budget_time`` (wall seconds, 0 or inf: none) or ``budget_gradients``
    (0: none) size the terminal bar. ``tty`` defaults to ``stream.isatty()``.
    """

    def __init__(self, interval: float, budget_time: float, budget_gradients: int, label: str,
                 stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = interval > 0
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self.interval = interval
        self.by_gradients = budget_gradients > 0
        self._next = interval
        self._last_draw = -math.inf
        self._bar: Any = None
        self.lines = 0
        if self.enabled and self.tty:
            from tqdm import tqdm

            total = budget_gradients if self.by_gradients else (budget_time if math.isfinite(budget_time)
                                                               and budget_time > 0 else None)
            self._bar = tqdm(total=total, desc=label, unit="grad" if self.by_gradients else "s",
                             file=self.stream, leave=False, dynamic_ncols=True,
                             bar_format=None if total else "{desc}: {n:.0f} {unit} [{elapsed}]")

    def update(self, wall: float, gradients: float, accuracy: float | None = None,
               staleness: float = math.nan) -> None:
        """The figures at ``wall`` seconds into the run; draws the bar or writes a line when due."""
        if not self.enabled:
            return
        rate = gradients / wall if wall > 0 else 0.0
        if self._bar is not None:
            if wall - self._last_draw < BAR_REFRESH_S:
                return
            self._last_draw = wall
            self._bar.n = min(gradients if self.by_gradients else wall, self._bar.total or math.inf)
            post = {"grad/s": f"{rate:.0f}"}
            if accuracy is not None and math.isfinite(accuracy):
                post["acc"] = f"{accuracy:.4f}"
            if math.isfinite(staleness):
                post["stale"] = f"{staleness:.2f}"
            self._bar.set_postfix(post, refresh=True)
            return
        if wall >= self._next:
            print(status_line(wall, gradients, rate, accuracy, staleness), file=self.stream, flush=True)
            self.lines += 1
            self._next += self.interval * max(1, math.floor((wall - self._next) / self.interval) + 1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def reporter_for(cfg: Any, quiet: bool) -> StatusReporter | None:
    """The reporter of the rank that reports (monitor, or rank 0 without one); None when quiet."""
    if quiet or cfg.mpi.status_interval <= 0:
        return None
    return StatusReporter(cfg.mpi.status_interval, cfg.budget.time, cfg.budget.gradients,
                          f"{cfg.run.name} [{cfg.algorithm.name}]")


def mean_staleness(values: Any) -> float:
    """Mean of the finite staleness figures the workers last recorded (NaN if none has one)."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan
