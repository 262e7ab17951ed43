"""hpcasync: asynchronous decentralized SGD on MPI one-sided RMA and in a discrete-event simulator.

The Python API (imported on first use, so ``import hpcasync`` stays cheap and
pulls in neither MPI nor torch)::

    load_config(path_or_dict, overrides=...)   # a validated Config
    simulate(cfg, out=None)                    # in memory; HDF5 only with out
    run(cfg, out=...)                          # inside `mpiexec -n N python script.py`
    open_run(run_dir)                          # evaluations / per-agent series as numpy arrays
    sweep(path, ...)                           # a sweep file, as `hpcasync sweep`
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"load_config", "simulate", "run", "open_run", "Result"}
__all__ = ["Config", "Result", "UserError", "__version__", "load_config", "open_run", "run", "simulate", "sweep"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from hpcasync import api

        return getattr(api, name)
    if name == "sweep":
        # the submodule hpcasync.sweep becomes this attribute as soon as anything imports it, so the
        # module itself is callable: hpcasync.sweep(...) is hpcasync.api.sweep(...)
        import hpcasync.sweep

        return hpcasync.sweep
    if name == "Config":
        from hpcasync.config import Config

        return Config
    if name == "UserError":
        from hpcasync.errors import UserError

        return UserError
    raise AttributeError(f"module 'hpcasync' has no attribute {name!r}")
