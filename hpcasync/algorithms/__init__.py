"""Algorithms, one module each, written against :mod:`hpcasync.algorithms.transport` only.

A module of this package that defines an :class:`Algorithm` subclass decorated
with :func:`register` is found by name (``ALGORITHMS``, discovered with
pkgutil); one outside the package runs as ``algorithm.name =
"package.module:Class"`` or registers through the ``hpcasync.algorithms``
entry-point group.
"""

from hpcasync.algorithms.base import (
    ALGORITHMS,
    FEATURES,
    AgentSetup,
    Algorithm,
    StepSize,
    get,
    lookup,
    names,
    reference_algorithms,
    register,
)
from hpcasync.algorithms.transport import OpGenerator, Transport

__all__ = ["ALGORITHMS", "FEATURES", "AgentSetup", "Algorithm", "OpGenerator", "StepSize", "Transport", "get",
           "lookup", "names", "reference_algorithms", "register"]
