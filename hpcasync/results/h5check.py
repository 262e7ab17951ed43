"""Checks on an HDF5 file made before h5py touches it, so that a broken file fails fast and by name.

A truncated file opened with ``swmr=True`` does not fail: HDF5 skips its
end-of-file check for SWMR readers (the file may still grow) and retries the
reads past the end, sleeping, forever. :func:`check_file` therefore reads the
superblock itself and compares the end-of-file address stored there with the
size on disk. A file that is still being written is never shorter than its
superblock says: the writer truncates or extends the file to that address on
every flush, after writing the superblock — :func:`check_file` looks twice,
``RECHECK_S`` apart, before it calls a file truncated.

:func:`open_error` turns h5py's open errors into one line that says what
happened to the file and what to do.
"""

from __future__ import annotations

import time
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: the superblock is at 0 or at 512, 1024, 2048 … when a user block precedes it
_MAX_USERBLOCK = 1 << 20
RECHECK_S = 0.2


class BrokenFileError(Exception):
    """An HDF5 file that cannot be read (message: what is wrong, without the file name)."""


def _superblock(head: bytes) -> tuple[int, int, int] | None:
    """(superblock offset, base address, stored end-of-file address), or None if not found/parsed."""
    offsets = [0] + [1 << k for k in range(9, 21)]
    for off in offsets:
        if head[off:off + 8] != SIGNATURE:
            continue
        version = head[off + 8] if len(head) > off + 8 else -1
        if version in (2, 3):
            size_o = head[off + 9]
            pos = off + 12
        elif version in (0, 1):
            size_o = head[off + 13]
            pos = off + 24 + (4 if version == 1 else 0)
        else:
            return None
        if size_o not in (2, 4, 8, 16) or len(head) < pos + 3 * size_o:
            return None
        base = int.from_bytes(head[pos:pos + size_o], "little")
        eof_at = pos + 2 * size_o  # after the base and the extension (v2/3) or free-space (v0/1) address
        eof = int.from_bytes(head[eof_at:eof_at + size_o], "little")
        return off, base, eof
    return None


def check_file(path: Path) -> None:
    """Raise :class:`BrokenFileError` for a file that is empty, not HDF5, or shorter than it says."""
    path = Path(path)
    for attempt in (0, 1):
        size = path.stat().st_size
        if size == 0:
            raise BrokenFileError("empty file (0 bytes), not an HDF5 file")
        with path.open("rb") as fh:
            head = fh.read(min(size, _MAX_USERBLOCK + 64))
        if SIGNATURE not in head:
            raise BrokenFileError(f"not an HDF5 file ({size} bytes, no HDF5 signature)")
        sb = _superblock(head)
        if sb is None:
            raise BrokenFileError(f"damaged HDF5 superblock ({size} bytes)")
        _, base, eof = sb
        if size >= base + eof:
            return
        if attempt == 0:
            time.sleep(RECHECK_S)  # a live writer may be between its superblock and its truncate
    raise BrokenFileError(f"truncated: {size} bytes on disk, its superblock says {base + eof}")


def open_error(exc: BaseException) -> str:
    """What an h5py open error means for the user, in one line."""
    text = " ".join(str(exc).split())
    if "not already open for SWMR writing" in text or "already open for write" in text:
        return ("left open for writing by a process that ended while it had the file open outside SWMR "
                "mode; `h5clear -s FILE` (HDF5's tools) clears that mark so it can be read")
    return text
