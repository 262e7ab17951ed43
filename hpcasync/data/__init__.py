"""Datasets and partitioners (docs/design.md §1 ``data/``).

``load(cfg, seed)`` returns the :class:`Dataset` named by ``cfg.name``: a
loader registered in a module of this package with :func:`register_dataset`
(digits, mnist, cifar10, least-squares, quadratic), an entry point of group
``hpcasync.datasets``, or a plug-in ``"package.module:function"``.
``hpcasync.data.partition.partition(cfg, y, n, seed)`` splits its training
set among n agents. (That function is deliberately not re-exported here: it
would shadow the ``hpcasync.data.partition`` module attribute.)
"""

from __future__ import annotations

from typing import Any

from hpcasync.data.dataset import DATA_KINDS, DATASETS, Dataset, dataset_kind, register_dataset
from hpcasync.errors import UserError

__all__ = ["DATASETS", "DATA_KINDS", "Dataset", "dataset_kind", "load", "register_dataset"]


def load(cfg: Any, seed: int) -> Dataset | None:
    """Load ``cfg.name`` (a ``[data]`` section); ``None`` for data the problem generates (quadratic).

    ``seed`` drives the digits split and the synthetic generators; the real
    datasets come with their own fixed train/test split.
    """
    result = DATASETS.get(cfg.name)(cfg, seed)
    if result is not None and not isinstance(result, Dataset):
        raise UserError(f"config field data.name: loader {cfg.name!r} returned a {type(result).__name__}, "
                        "expected an hpcasync.data.Dataset")
    return result
