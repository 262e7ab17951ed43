"""Gradient oracles on a flat parameter vector (DESIGN §1 ``problems/``).

``build(cfg, n_agents)`` loads ``cfg.data``, partitions it with the run seed
and returns the :class:`Problem` named by ``cfg.problem.name``.
"""

from __future__ import annotations

from hpcasync import data
from hpcasync.config import Config
from hpcasync.data.partition import partition
from hpcasync.errors import UserError, require
from hpcasync.problems.base import Oracle, Problem

__all__ = ["Oracle", "Problem", "build"]

_DATA_KIND = {"digits": "classification", "mnist": "classification", "cifar10": "classification",
              "least-squares": "regression"}


def build(cfg: Config, n_agents: int) -> Problem:
    """The problem of ``cfg`` split among ``n_agents`` agents (seed = ``cfg.run.seed``)."""
    pname, dname, seed = cfg.problem.name, cfg.data.name, cfg.run.seed
    require(n_agents >= 1, f"problem {pname!r}: expected >= 1 agents, got {n_agents}")
    if pname == "quadratic" or dname == "quadratic":
        require(pname == dname,
                f"config field problem.name {pname!r} does not fit data.name {dname!r}: "
                "the quadratic problem and the quadratic data only go together")
        from hpcasync.data.synthetic import quadratic_centers
        from hpcasync.problems.quadratic import QuadraticProblem

        centers, curvatures = quadratic_centers(n_agents, cfg.data.dim, seed)
        return QuadraticProblem(centers, curvatures, sigma=cfg.data.noise)

    # Check the pairing by name before loading: reading MNIST/CIFAR takes seconds.
    kind = _DATA_KIND.get(dname)
    if pname == "softmax":
        require(kind != "regression",
                f"config field problem.name 'softmax' needs classification data, "
                f"but data.name {dname!r} is regression; use problem.name = 'least-squares'")
    elif pname == "least-squares":
        require(kind != "classification",
                f"config field problem.name 'least-squares' needs regression data, "
                f"but data.name {dname!r} is classification; use problem.name = 'softmax'")
    else:
        raise UserError(f"config field problem.name: unknown name {pname!r}; "
                        "expected one of softmax, least-squares, quadratic")
    dataset = data.load(cfg.data, seed)
    if dataset is None or dataset.is_classification != (pname == "softmax"):
        raise UserError(f"config field problem.name {pname!r} does not fit data.name {dname!r}")
    shards = partition(cfg.data, dataset.y_train, n_agents, seed)
    batch = cfg.algorithm.batch_size
    if pname == "softmax":
        from hpcasync.problems.softmax import SoftmaxProblem

        return SoftmaxProblem(dataset, shards, batch, cfg.problem.lam)
    from hpcasync.problems.least_squares import LeastSquaresProblem

    return LeastSquaresProblem(dataset, shards, batch)
