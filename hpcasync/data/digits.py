"""The embedded 8×8 digits data (scikit-learn's bundled copy of UCI optdigits).

DESIGN §7: the default stand-in for seed 000's MNIST logistic-regression
experiment; it ships with scikit-learn, so no network is ever needed.
"""

from __future__ import annotations

import numpy as np

from hpcasync.data.dataset import Dataset
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


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """1797 images, 64 features scaled to [0, 1] (pixel counts / 16), 10 classes, stratified split."""
    require(0 < test_fraction < 1,
            f"config field data.test_fraction: expected in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits as _sk_load_digits  # deferred: sklearn import is slow

    raw = _sk_load_digits()
    X = np.asarray(raw.data, dtype=np.float64) / 16.0
    y = np.asarray(raw.target, dtype=np.int64)
    train, test = stratified_split(y, test_fraction, seed)
    return Dataset("digits", X[train], y[train], X[test], y[test], num_classes=10)
