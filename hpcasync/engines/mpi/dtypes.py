"""The model dtype on MPI: float64 (numpy problems) or float32 (torch models, half the bytes).

Every window, board and message of a run uses the problem's dtype; all ranks must agree on it
(they build the same problem from the same config).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

_MPI_TYPES = {np.dtype(np.float64): MPI.DOUBLE, np.dtype(np.float32): MPI.FLOAT}


def model_dtype(x: object | None, default: np.dtype | type = np.float64) -> np.dtype:
    """The dtype of model ``x`` when it is a float32/float64 array, else ``default``."""
    dt = getattr(x, "dtype", None)
    if dt is not None and np.dtype(dt) in _MPI_TYPES:
        return np.dtype(dt)
    return np.dtype(default)


def mpi_type(dtype: np.dtype | type) -> MPI.Datatype:
    dt = np.dtype(dtype)
    if dt not in _MPI_TYPES:
        raise ValueError(f"model dtype must be float32 or float64, got {dt}")
    return _MPI_TYPES[dt]


def words_for(count: int, dtype: np.dtype | type) -> int:
    """8-byte words that hold ``count`` elements of ``dtype`` (what follows stays 8-byte aligned)."""
    return (count * np.dtype(dtype).itemsize + 7) // 8
