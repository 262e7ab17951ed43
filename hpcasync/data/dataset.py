"""The in-memory dataset every loader returns (DESIGN §1 ``data/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """Train and test arrays of one dataset.

    ``X_*`` are ``(N, p)`` float64, C-contiguous (the problems gather rows from
    them). ``y_*`` are int64 class labels in ``0..num_classes-1`` for
    classification, or float64 targets for regression (``num_classes == 0``).
    ``extras`` holds generator facts a test may want (e.g. ``x_star`` of the
    synthetic least-squares data); loaders of real data leave it empty.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise dtypes/layout once here so every problem can rely on them.
        self.X_train = np.ascontiguousarray(self.X_train, dtype=np.float64)
        self.X_test = np.ascontiguousarray(self.X_test, dtype=np.float64)
        label_dtype = np.int64 if self.num_classes > 0 else np.float64
        self.y_train = np.ascontiguousarray(self.y_train, dtype=label_dtype)
        self.y_test = np.ascontiguousarray(self.y_test, dtype=label_dtype)
        if self.X_train.ndim != 2 or self.X_test.ndim != 2:
            raise ValueError(f"dataset {self.name}: X_train/X_test must be 2-D")
        if self.X_train.shape[1] != self.X_test.shape[1]:
            raise ValueError(f"dataset {self.name}: train has {self.X_train.shape[1]} features, "
                             f"test has {self.X_test.shape[1]}")
        if len(self.y_train) != len(self.X_train) or len(self.y_test) != len(self.X_test):
            raise ValueError(f"dataset {self.name}: label and sample counts differ")

    @property
    def is_classification(self) -> bool:
        return self.num_classes > 0

    @property
    def num_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])
