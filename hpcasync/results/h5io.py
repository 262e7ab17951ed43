"""Low-level HDF5 I/O of a run directory, shared by the writers and the reader.

Opening with retries while another process holds the file lock, creating a
file, attributes, the append-only column groups and their ``committed_rows``
marker (see :mod:`hpcasync.results.writer` for the SWMR protocol).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcasync.errors import UserError
from hpcasync.results.schema import COMMITTED, Column

#: HDF5 format bounds of every file written: the 1.10 format (superblock v3, the oldest with SWMR), so
#: HDF5 1.10's own tools (h5dump, h5ls) read the files; "latest" wrote a bool attribute they cannot open
LIBVER = ("v110", "v110")

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
    return _retry_locked(lambda: h5py.File(path, mode, **kwargs), timeout)


def _retry_locked(opener: Callable[[], h5py.File], timeout: float) -> h5py.File:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return opener()
        except OSError as exc:
            if not is_lock_error(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.2)


def open_swmr_write(path: Path, *, timeout: float = LOCK_TIMEOUT_S) -> h5py.File:
    """``path`` opened read-write in SWMR mode by one ``H5Fopen``: never plainly open for writing.

    (A plain ``r+`` open followed by ``swmr_mode = True`` leaves a moment in which a killed writer
    leaves a file that opens neither with ``swmr=True`` nor plainly.)
    """
    def opener() -> h5py.File:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl=fapl)
        return h5py.File(fid)

    return _retry_locked(opener, timeout)


def temporary_path(path: Path) -> Path:
    """Where ``path`` is built before :func:`publish` renames it into place."""
    return path.with_name(f".{path.name}.tmp")


def create_file(path: Path) -> h5py.File:
    """A new file at :func:`temporary_path` of ``path``; :func:`publish` moves it into place."""
    try:
        return h5py.File(temporary_path(path), "w", libver=LIBVER)
    except OSError as exc:
        raise UserError(f"output file {path}: cannot be created ({exc})") from exc


def publish(f: h5py.File, path: Path, swmr: bool) -> h5py.File | None:
    """Close the fully built temporary file, rename it to ``path``; reopen it for SWMR writing if ``swmr``.

    So a file under its real name is at every moment closed or open for SWMR writing, both of which
    a reader opens.
    """
    tmp = Path(f.filename)
    f.close()
    os.replace(tmp, path)
    return open_swmr_write(path) if swmr else None


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


def reopen_for_append(path: Path, group: str, columns: tuple[Column, ...], rows: int) -> None:
    """Make the closed file of an interrupted run ready to go on (resume): its ``group``'s columns cut
    back to ``rows`` (what the checkpoint saw: no duplicate), ``complete`` False, ``interrupted``
    removed and ``resumes`` counted. Plain ``r+`` here; the writer then reopens it for SWMR writing."""
    with open_h5(path, "r+", libver=LIBVER) as f:
        g = f[group]
        have = int(g[COMMITTED][()])
        if have < rows:
            raise UserError(f"{path}: {have} rows of {group} on disk, the checkpoint expects {rows}")
        for c in columns:
            g[c.name].resize((rows,))
        g[COMMITTED][()] = rows
        f.attrs["complete"] = False
        if "interrupted" in f.attrs:
            del f.attrs["interrupted"]
        f.attrs["resumes"] = int(f.attrs.get("resumes", 0)) + 1
