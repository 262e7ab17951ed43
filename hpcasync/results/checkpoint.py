"""Checkpoint files: a nested state in one HDF5 file, written atomically (docs/design.md, "Preemption and resume").

A state is a tree of dicts (``str`` or ``int`` keys), lists, numpy arrays,
Python/numpy scalars, strings and ``None``; :func:`write` stores it in an
HDF5 file that plain h5py reads (a group per dict or list, a dataset per
array or scalar, the Python type in a ``kind`` attribute), :func:`read`
gives it back with the same types and bit-identical arrays. The file is
built under a temporary name, flushed, fsynced and renamed into place: a
checkpoint is either the old complete one or the new complete one, never
half written.

Engines keep their checkpoints in ``RUN_DIR/checkpoint/``: the simulator one
file ``sim.h5``, an MPI run one file per rank (``rank-00003.h5``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcasync.errors import UserError
from hpcasync.results.h5io import LIBVER, set_attrs

#: the folder of a run directory that holds its checkpoint
CHECKPOINT_DIR = "checkpoint"
FORMAT_VERSION = 1
_SCALARS = {"bool": bool, "int": int, "float": float}


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def encode(parent: h5py.Group, key: str, obj: Any) -> None:
    """Store ``obj`` as ``parent[key]`` (see module docstring)."""
    if isinstance(obj, np.ndarray):
        parent.create_dataset(key, data=obj)
    elif isinstance(obj, np.generic):
        parent.create_dataset(key, data=obj).attrs["kind"] = "npscalar"
    elif isinstance(obj, bool | int | float):
        parent.create_dataset(key, data=obj).attrs["kind"] = type(obj).__name__
    elif isinstance(obj, str):
        parent.create_dataset(key, data=obj, dtype=h5py.string_dtype()).attrs["kind"] = "str"
    elif obj is None:
        parent.create_group(key).attrs["kind"] = "none"
    elif isinstance(obj, dict):
        g = parent.create_group(key)
        int_keys = bool(obj) and all(isinstance(k, int | np.integer) for k in obj)
        g.attrs["kind"] = "idict" if int_keys else "dict"
        for k, v in obj.items():
            if not int_keys and not isinstance(k, str):
                raise TypeError(f"checkpoint: dict key {k!r} is neither str nor int")
            encode(g, str(k), v)
    elif isinstance(obj, list | tuple):
        g = parent.create_group(key)
        g.attrs["kind"] = "list"
        g.attrs["length"] = len(obj)
        for i, v in enumerate(obj):
            encode(g, str(i), v)
    else:
        raise TypeError(f"checkpoint: cannot store a {type(obj).__name__} ({key})")


def decode(node: h5py.Group | h5py.Dataset) -> Any:
    """What :func:`encode` stored at ``node``."""
    kind = node.attrs.get("kind", "array")
    if isinstance(node, h5py.Dataset):
        if kind == "array":
            return node[()]
        if kind == "str":
            return node.asstr()[()]
        value = node[()]
        return value if kind == "npscalar" else _SCALARS[kind](value)
    if kind == "none":
        return None
    if kind == "list":
        return [decode(node[str(i)]) for i in range(int(node.attrs["length"]))]
    if kind == "idict":
        return {int(k): decode(v) for k, v in sorted(node.items(), key=lambda kv: int(kv[0]))}
    return {k: decode(v) for k, v in node.items()}


def write(path: Path, state: dict[str, Any], attrs: dict[str, Any]) -> Path:
    """Write ``state`` (under ``/state``) and root ``attrs`` to ``path`` atomically; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w", libver=LIBVER) as f:
        set_attrs(f, {"format": FORMAT_VERSION, **attrs})
        encode(f, "state", state)
    with open(tmp, "rb") as fh:  # the data on disk before the rename makes it the checkpoint
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(root attributes, state) of the checkpoint at ``path``; UserError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path}: not found; the run left no checkpoint to resume from")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            if attrs.get("format") != FORMAT_VERSION or "state" not in f:
                raise UserError(f"checkpoint {path}: not a hpcasync checkpoint (format {attrs.get('format')!r})")
            state = decode(f["state"])
    except UserError:
        raise
    except Exception as exc:  # truncated, overwritten or otherwise damaged
        raise UserError(f"checkpoint {path}: unreadable ({type(exc).__name__}: {exc})") from None
    return attrs, state
