"""The in-memory dataset every loader returns (docs/design.md §1 ``data/``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpcasync.registry import Registry


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


#: what a loader returns: labelled classes, real targets, or nothing (the problem generates its data)
DATA_KINDS = ("classification", "regression", "generated")

#: ``(cfg: DataSection, seed) -> Dataset | None`` by ``data.name``; each has a ``kind`` (DATA_KINDS)
Loader = Callable[[Any, int], "Dataset | None"]


def _not_a_loader(obj: Any) -> str | None:
    if not callable(obj):
        return f"expected a function (data_section, seed) -> Dataset, got {obj!r}"
    kind = getattr(obj, "kind", None)
    if kind is not None and kind not in DATA_KINDS:
        return f"its kind {kind!r} is not one of {', '.join(DATA_KINDS)}"
    return None


#: every dataset: the modules of ``hpcasync.data``, entry points, "module:function" plug-ins
DATASETS: Registry[Loader] = Registry("dataset", "data.name", package="hpcasync.data", group="hpcasync.datasets",
                                      check=_not_a_loader, plugins=True)


def register_dataset(name: str, kind: str, needs_dir: bool = False) -> Callable[[Loader], Loader]:
    """Decorator: make a loader ``(cfg: DataSection, seed) -> Dataset`` available as ``data.name``.

    ``needs_dir``: it reads files from ``data.dir`` (config validation then requires the field)."""
    if kind not in DATA_KINDS:
        raise ValueError(f"dataset {name!r}: kind {kind!r} is not one of {', '.join(DATA_KINDS)}")

    def deco(fn: Loader) -> Loader:
        fn.kind = kind  # type: ignore[attr-defined]
        fn.needs_dir = needs_dir  # type: ignore[attr-defined]
        return DATASETS.add(name, fn)
    return deco


def dataset_kind(loader: Loader) -> str | None:
    """The declared kind of a loader (None for a plug-in that does not say)."""
    return getattr(loader, "kind", None)
