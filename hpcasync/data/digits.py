"""The embedded 8×8 digits data (scikit-learn's bundled copy of UCI optdigits).

docs/design.md §7: the default stand-in for Zhou & Pu's (2025) MNIST logistic-regression
experiment; it ships with scikit-learn, so no network is ever needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from hpcasync.data.dataset import Dataset, register_dataset
from hpcasync.errors import require

#: Tag mixed into the seed so the split does not share a random stream with
#: other consumers of the run seed (partitions, oracles, delays).
_SPLIT_STREAM = 0x64696769  # "digi"


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: ``round(test_fraction · N_c)`` of every class c goes to test.

    Returns sorted (train, test) index arrays; both are disjoint and cover ``y``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM]))
    test_parts = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = int(round(test_fraction * len(members)))
        test_parts.append(rng.permutation(members)[:k])
    test = np.sort(np.concatenate(test_parts))
    train = np.setdiff1d(np.arange(len(y)), test, assume_unique=True)
    return train, test


def _bundled_csv() -> Path | None:
    """scikit-learn's digits.csv.gz, located without importing scikit-learn (1.5 s per MPI rank)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _read_bundled() -> tuple[np.ndarray, np.ndarray]:
    """(X, y) as ``sklearn.datasets.load_digits`` returns them: 64 pixel counts 0..16, label last."""
    path = _bundled_csv()
    if path is None:
        from sklearn.datasets import load_digits as sk_load_digits

        raw = sk_load_digits()
        return np.asarray(raw.data, dtype=np.float64), np.asarray(raw.target, dtype=np.int64)
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(np.int64)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """1797 images, 64 features scaled to [0, 1] (pixel counts / 16), 10 classes, stratified split."""
    require(0 < test_fraction < 1,
            f"config field data.test_fraction: expected in (0, 1), got {test_fraction}")
    X, y = _read_bundled()
    X = X / 16.0
    train, test = stratified_split(y, test_fraction, seed)
    return Dataset("digits", X[train], y[train], X[test], y[test], num_classes=10)


@register_dataset("digits", kind="classification")
def _digits(cfg: Any, seed: int) -> Dataset:
    return load_digits(cfg.test_fraction, seed)
