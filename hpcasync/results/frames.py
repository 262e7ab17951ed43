"""Rows and columns as numpy arrays, and as pandas DataFrames where pandas is installed (optional)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hpcasync.errors import UserError
from hpcasync.results.schema import Column


def columns_of(rows: Sequence[dict[str, float]], columns: tuple[Column, ...]) -> dict[str, np.ndarray]:
    """Row dicts (as the engines record them) → one array per schema column, in the file dtypes."""
    return {c.name: np.array([r.get(c.name, c.fill) for r in rows], dtype=c.dtype) for c in columns}


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise UserError("pandas is not installed (pip install pandas); the same data are numpy arrays "
                        "in .evaluations and per agent") from None
    return pandas


def to_frame(columns: dict[str, np.ndarray]) -> Any:
    """A DataFrame with one column per 1-D array."""
    return _pandas().DataFrame({k: v for k, v in columns.items() if np.ndim(v) == 1})


def updates_frame(per_agent: Sequence[dict[str, np.ndarray]], ranks: Sequence[int]) -> Any:
    """Every agent's update columns stacked, with an ``agent`` column first."""
    pd = _pandas()
    frames = []
    for rank, cols in zip(ranks, per_agent, strict=True):
        series = {k: v for k, v in cols.items() if isinstance(v, np.ndarray) and v.ndim == 1}
        n = len(next(iter(series.values()))) if series else 0
        frames.append(pd.DataFrame({"agent": np.full(n, rank, dtype=np.int64), **series}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
