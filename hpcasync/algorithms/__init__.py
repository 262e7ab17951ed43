"""Algorithms, one module each, written against :mod:`hpcasync.algorithms.transport` only."""

import importlib

_MODULES = ("adsgd", "adsgd_delta", "dsgd", "allreduce", "adpsgd", "rfast")


def load_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(f"hpcasync.algorithms.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hpcasync.algorithms.{mod}":
                raise
