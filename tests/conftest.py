"""Shared fixtures: small configs that run in well under a second."""

from __future__ import annotations

import os
from typing import Any

import pytest

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from hpcasync.config import Config, from_dict  # noqa: E402

SMALL: dict[str, dict[str, Any]] = {
    "run": {"name": "t", "seed": 3},
    "algorithm": {"name": "adsgd", "alpha": 0.05, "batch_size": 16},
    "topology": {"name": "grid", "n": 9, "shape": [3, 3]},
    "data": {"name": "digits"},
    "problem": {"name": "softmax"},
    "delays": {"model": "case", "case": 5, "straggler": 4},
    "budget": {"time": 25.0},
    "eval": {"interval": 5.0},
}


def make_config(**sections: dict[str, Any]) -> Config:
    """SMALL with the given sections' fields replaced."""
    raw = {k: dict(v) for k, v in SMALL.items()}
    for name, fields in sections.items():
        raw.setdefault(name, {}).update(fields)
    return from_dict(raw, source="test")


@pytest.fixture
def small_config() -> Config:
    return make_config()
