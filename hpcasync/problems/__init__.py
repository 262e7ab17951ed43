"""Gradient oracles on a flat parameter vector (docs/design.md §1 ``problems/``).

``build(cfg, n_agents)`` returns the :class:`Problem` named by
``cfg.problem.name`` — a class registered in a module of this package with
:func:`register_problem`, an entry point of group ``hpcasync.problems``, or a
plug-in ``"package.module:Class"`` — built by its ``from_config``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcasync.errors import UserError, require
from hpcasync.problems.base import PROBLEMS, Oracle, Problem, register_problem

__all__ = ["PROBLEMS", "Oracle", "Problem", "build", "register_problem"]


def build(cfg: Any, n_agents: int) -> Problem:
    """The problem of ``cfg`` split among ``n_agents`` agents (seed = ``cfg.run.seed``).

    ``problem.dtype`` sets the dtype of x: float64 for the numpy problems unless configured,
    float32 for torch (``hpcasync.problems.nn``).
    """
    pname = cfg.problem.name
    require(n_agents >= 1, f"problem {pname!r}: expected >= 1 agents, got {n_agents}")
    problem = PROBLEMS.get(pname).from_config(cfg, n_agents)
    if not isinstance(problem, Problem):
        raise UserError(f"config field problem.name: {pname!r}.from_config returned a {type(problem).__name__}, "
                        "expected an hpcasync.problems.Problem")
    dtype = getattr(cfg.problem, "dtype", "auto")
    if pname != "torch" and dtype != "auto":
        problem.dtype = np.dtype(dtype)
    return problem
