"""Low-level HDF5 I/O of a run directory, shared by the writers and the reader.

Opening with retries while another process holds the file lock, creating a
file, attributes, the append-only column groups and their ``committed_rows``
marker (see :mod:`hpcasync.results.writer` for the SWMR protocol).
"""

from __future__ import annotations

import errno
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcasync.errors import UserError
from hpcasync.results.schema import COMMITTED, Column

# How long close() and the flushes of keep_open=False writers retry while a
# reader in another process holds the HDF5 file lock (readers hold it briefly).
LOCK_TIMEOUT_S = 10.0


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def ensure_output_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` (and parents) or raise UserError naming it and why it cannot be written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output directory {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"output directory {out_dir}: not writable ({exc.strerror or exc})") from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"output directory {out_dir}: not writable (Permission denied)")
    return out_dir


def is_lock_error(exc: OSError) -> bool:
    return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in str(exc).lower()


def open_h5(path: Path, mode: str, *, timeout: float = LOCK_TIMEOUT_S, **kwargs: Any) -> h5py.File:
    """``h5py.File(path, mode, **kwargs)``, retrying with backoff while another process holds its lock."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return h5py.File(path, mode, **kwargs)
        except OSError as exc:
            if not is_lock_error(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.2)


def create_file(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "w", libver="latest")
    except OSError as exc:
        raise UserError(f"output file {path}: cannot be created ({exc})") from exc


def attr_value(value: Any) -> Any:
    """Something HDF5 can store as an attribute; None means: do not store.

    NUL characters are dropped from strings: HDF5 variable-length strings cannot hold them, and
    Open MPI's ``MPI.Get_library_version()`` ends in one.
    """
    if isinstance(value, str):
        return value.replace("\0", "")
    if value is None or isinstance(value, bool | int | float | np.generic | np.ndarray):
        return value
    if isinstance(value, list | tuple):
        return np.asarray(value)
    return str(value)


def set_attrs(obj: h5py.HLObject, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        value = attr_value(value)
        if value is not None:
            obj.attrs[key] = value


def create_columns(group: h5py.Group, columns: tuple[Column, ...], chunk_rows: int) -> None:
    for c in columns:
        ds = group.create_dataset(c.name, shape=(0,), maxshape=(None,), chunks=(chunk_rows,),
                                  dtype=c.dtype, fillvalue=c.fill)
        ds.attrs["units"] = c.units
        ds.attrs["description"] = c.description
    ds = group.create_dataset(COMMITTED, data=np.int64(0))
    ds.attrs["units"] = "rows"
    ds.attrs["description"] = "rows of this group's columns known to be completely on disk"


def append_rows(file: h5py.File, group: h5py.Group, columns: tuple[Column, ...], start: int,
                 rows: np.ndarray) -> int:
    """Append structured ``rows`` at row ``start`` of every column; publish; return the new total."""
    end = start + len(rows)
    for c in columns:
        ds = group[c.name]
        ds.resize((end,))
        ds[start:end] = rows[c.name]
    # Data first, then the commit marker (see module docstring).
    file.flush()
    group[COMMITTED][()] = end
    file.flush()
    return end
