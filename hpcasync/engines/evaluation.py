"""The evaluation of the average model, the same on both engines (the ``evaluations`` of run.h5).

The simulator at each evaluation, the MPI monitor rank while the workers run,
and rank 0 of an MPI job without a monitor at the end all record the row
:func:`evaluate_average` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from hpcasync.algorithms.dasgd import pairwise_staleness
from hpcasync.kernels import consensus_distance, mean_rows_into


def evaluate_average(evaluate: Callable[[np.ndarray], Mapping[str, float]], head: Mapping[str, float],
                     mean: np.ndarray, rows: np.ndarray | None = None, *, n: int = 0,
                     sum_sq: float = 0.0) -> dict[str, float]:
    """The evaluation row of the average model x̄ = (1/n)·Σ_i x_i.

    ``head`` (time stamps, gradients) first, then the consensus distance
    (1/n)·Σ_i ‖x_i − x̄‖², then ``evaluate(x̄)`` (training loss, test
    accuracy/loss). With ``rows`` (the n models stacked) x̄ is computed into
    ``mean``. Without (models too many to stack, the monitor rank) ``mean``
    already holds x̄ and the consensus distance is (1/n)·Σ‖x_i‖² − ‖x̄‖² from
    ``sum_sq`` = Σ_i ‖x_i‖² (one pass over the models), clipped at 0.
    """
    row: dict[str, Any] = dict(head)
    if rows is not None:
        mean_rows_into(mean, rows)
        row["consensus_distance"] = float(consensus_distance(rows, mean))
    else:
        row["consensus_distance"] = max(sum_sq / n - float(mean @ mean), 0.0)
    row.update(evaluate(mean))
    return row


def pairwise_staleness_row(clocks: np.ndarray) -> dict[str, float]:
    """``staleness_avg`` / ``staleness_max`` of an evaluation row from the agents' vector clocks ((n, n))."""
    avg, mx = pairwise_staleness(clocks)
    return {"staleness_avg": avg, "staleness_max": mx}
