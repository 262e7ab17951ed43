"""Numba kernels, installed as ``hpcasync.kernels`` (docs/design.md §1): in-place, memory-bound mixing arithmetic."""

from hpcasync.kernels.mixing import (
    add_and_zero,
    adsgd_delta_step,
    adsgd_delta_step_inbox,
    adsgd_step,
    adsgd_step_blocked,
    adsgd_step_rows,
    axpy,
    consensus_distance,
    copy_into,
    mean_rows_into,
    scale_into,
    warmup,
    weighted_sum_into,
)

__all__ = [
    "add_and_zero",
    "adsgd_delta_step",
    "adsgd_delta_step_inbox",
    "adsgd_step",
    "adsgd_step_blocked",
    "adsgd_step_rows",
    "axpy",
    "consensus_distance",
    "copy_into",
    "mean_rows_into",
    "scale_into",
    "warmup",
    "weighted_sum_into",
]
