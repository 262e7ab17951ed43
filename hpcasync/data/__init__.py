"""Datasets and partitioners (DESIGN §1 ``data/``).

``load(cfg, seed)`` returns the :class:`Dataset` named by ``cfg.name``;
``hpcasync.data.partition.partition(cfg, y, n, seed)`` splits its training
set among n agents. (That function is deliberately not re-exported here: it
would shadow the ``hpcasync.data.partition`` module attribute.)
"""

from __future__ import annotations

from hpcasync.config import DataSection
from hpcasync.data.dataset import Dataset
from hpcasync.errors import UserError, require

__all__ = ["Dataset", "load"]


def load(cfg: DataSection, seed: int) -> Dataset | None:
    """Load ``cfg.name``: digits, mnist, cifar10, least-squares; ``None`` for quadratic.

    The quadratic problem has no samples: its per-agent centers depend on the
    number of agents, so ``problems.build`` generates them itself
    (:func:`hpcasync.data.synthetic.quadratic_centers`) and this returns None.
    ``seed`` drives the digits split and the synthetic generators; the real
    datasets come with their own fixed train/test split.
    """
    if cfg.name == "digits":
        from hpcasync.data.digits import load_digits

        return load_digits(cfg.test_fraction, seed)
    if cfg.name == "mnist":
        from hpcasync.data.mnist import load_mnist

        require(bool(cfg.dir), "config field data.dir: dataset 'mnist' needs a local directory")
        return load_mnist(cfg.dir)
    if cfg.name == "cifar10":
        from hpcasync.data.cifar import load_cifar10

        require(bool(cfg.dir), "config field data.dir: dataset 'cifar10' needs a local directory")
        return load_cifar10(cfg.dir)
    if cfg.name == "least-squares":
        from hpcasync.data.synthetic import least_squares

        return least_squares(cfg.samples, cfg.dim, cfg.noise, seed)
    if cfg.name == "quadratic":
        return None
    raise UserError(f"config field data.name: unknown name {cfg.name!r}; "
                    "expected one of digits, mnist, cifar10, least-squares, quadratic")
