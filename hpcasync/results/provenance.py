"""Provenance of a run: the software versions and the host recorded in ``/versions``."""

from __future__ import annotations

import platform
import socket
import sys
from importlib import metadata

import h5py

from hpcasync import __version__


def software_versions(mpi_version: str | None = None) -> dict[str, str]:
    """Versions of Python, the libraries a run depends on, and the host, for ``/versions``.

    Package versions come from installed metadata, so nothing is imported
    (importing mpi4py.MPI would initialise MPI). ``mpi_version`` is the MPI
    library string (``MPI.Get_library_version()``) when the caller has one.
    """
    versions = {
        "python": sys.version.split()[0],
        "hpcasync": __version__,
        "hdf5": h5py.version.hdf5_version,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
    }
    for package in ("numpy", "numba", "h5py", "mpi4py", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    if mpi_version:
        versions["mpi_library"] = mpi_version.replace("\x00", "").strip()  # Open MPI's ends in a NUL
    return versions
