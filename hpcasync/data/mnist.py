"""MNIST from its original IDX files (LeCun et al.), raw or gzipped.

Zhou & Pu 2025 §4.1 trains its non-convex logistic regression on MNIST. The IDX
format: a big-endian magic word ``0x0000TTDD`` (TT = element type, DD = number
of dimensions), DD big-endian uint32 sizes, then the elements in C order.
Images are ``0x00000803`` (uint8, N×28×28), labels ``0x00000801`` (uint8, N).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from hpcasync.data.dataset import Dataset, register_dataset
from hpcasync.errors import UserError, require

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

#: IDX element-type code -> big-endian numpy dtype.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"MNIST file {path}: not a valid gzip file ({exc})") from None
    except OSError as exc:
        raise UserError(f"MNIST file {path}: cannot read ({exc.strerror or exc})") from None


def _describe(dims: tuple[int, ...]) -> str:
    if len(dims) == 3:
        return f"{dims[0]} images of {dims[1]}x{dims[2]}"
    if len(dims) == 1:
        return f"{dims[0]} labels"
    return "dimensions " + "x".join(map(str, dims))


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or ``.gz`` by suffix) into a read-only array of its declared shape.

    Raises :class:`UserError` for a wrong magic number (when ``expect_magic``
    is given, or for an unknown type code), a short header, and a data section
    whose size does not match the header.
    """
    path = Path(path)
    raw = _read_bytes(path)
    require(len(raw) >= 4, f"MNIST file {path}: truncated: {len(raw)} bytes, not even an IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    if expect_magic is not None:
        require(magic == expect_magic,
                f"MNIST file {path}: wrong magic number 0x{magic:08x}, expected 0x{expect_magic:08x}")
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    require(magic >> 16 == 0 and type_code in _IDX_TYPES and ndim >= 1,
            f"MNIST file {path}: wrong magic number 0x{magic:08x}, not an IDX file")
    header = 4 + 4 * ndim
    require(len(raw) >= header,
            f"MNIST file {path}: truncated: header needs {header} bytes, file holds {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    held = len(raw) - header
    require(held >= expected,
            f"MNIST file {path}: truncated: header says {_describe(dims)}, file holds {held} bytes of data")
    require(held == expected,
            f"MNIST file {path}: {held - expected} bytes of trailing data after {_describe(dims)}")
    return np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)


def find_file(directory: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` in ``directory`` (also the ``train-images.idx3-ubyte`` spelling)."""
    variants = (stem, stem.replace("-idx", ".idx"))
    for name in variants:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise UserError(f"data.dir {directory}: missing {stem}(.gz)")


def _load_split(directory: Path, images_key: str, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    img_path = find_file(directory, FILES[images_key])
    lab_path = find_file(directory, FILES[labels_key])
    images = read_idx(img_path, IMAGES_MAGIC)
    labels = read_idx(lab_path, LABELS_MAGIC)
    require(len(images) == len(labels),
            f"data.dir {directory}: {img_path.name} holds {len(images)} images but "
            f"{lab_path.name} holds {len(labels)} labels")
    require(len(images) > 0, f"MNIST file {img_path}: holds no images (expected at least one)")
    require(images.ndim == 3, f"MNIST file {img_path}: holds {_describe(images.shape)}, expected N images of HxW")
    top = int(labels.max())
    require(top <= 9, f"MNIST file {lab_path}: label {top} out of range, expected 0..9")
    X = images.reshape(len(images), -1).astype(np.float64)
    X /= 255.0
    return X, labels.astype(np.int64)


def load_mnist(directory: str | Path) -> Dataset:
    """MNIST train (60000) and t10k test (10000) sets; pixels / 255, images flattened to 784."""
    directory = Path(directory)
    require(directory.exists(), f"data.dir {directory}: does not exist (expected the MNIST IDX files)")
    require(directory.is_dir(), f"data.dir {directory}: not a directory")
    X_train, y_train = _load_split(directory, "train_images", "train_labels")
    X_test, y_test = _load_split(directory, "test_images", "test_labels")
    require(X_train.shape[1] == X_test.shape[1],
            f"data.dir {directory}: train images have {X_train.shape[1]} pixels, "
            f"test images {X_test.shape[1]}")
    return Dataset("mnist", X_train, y_train, X_test, y_test, num_classes=10)


@register_dataset("mnist", kind="classification", needs_dir=True)
def _mnist(cfg: Any, seed: int) -> Dataset:
    require(bool(cfg.dir), "config field data.dir: dataset 'mnist' needs a local directory")
    return load_mnist(cfg.dir)
