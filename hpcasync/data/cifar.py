"""CIFAR-10 from the "python version" batches (Krizhevsky, 2009).

Zhou & Pu 2025 §4.2 trains a VGG11 on CIFAR-10. The archive ``cifar-10-python.tar.gz``
unpacks into ``cifar-10-batches-py/`` holding ``data_batch_1`` … ``data_batch_5``
(10000 images each) and ``test_batch``: pickled dicts with ``b'data'``, a
uint8 array (N, 3072) of R, G, B planes of 32×32, and ``b'labels'``, N ints in 0..9.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from hpcasync.data.dataset import Dataset, register_dataset
from hpcasync.errors import UserError, require

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
PIXELS = 3 * 32 * 32

#: The only globals a CIFAR batch pickle needs (numpy arrays, Python-2 byte
#: strings). Anything else is refused: unpickling an arbitrary file is code
#: execution, and ``data.dir`` may point anywhere.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 data (N, 3072), int64 labels (N,)), validated."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            # encoding="bytes": the official batches were pickled by Python 2.
            obj = _BatchUnpickler(fh, encoding="bytes").load()
    except OSError as exc:
        raise UserError(f"CIFAR-10 file {path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # any unpickling failure means "not a batch file"
        raise UserError(f"CIFAR-10 file {path}: not a CIFAR-10 python batch ({exc})") from None
    require(isinstance(obj, dict), f"CIFAR-10 file {path}: expected a pickled dict, got {type(obj).__name__}")
    for key in (b"data", b"labels"):
        require(key in obj or key.decode() in obj, f"CIFAR-10 file {path}: missing key {key!r}")
    data = np.asarray(obj.get(b"data", obj.get("data")))
    labels = np.asarray(obj.get(b"labels", obj.get("labels")))
    require(data.ndim == 2 and data.shape[1] == PIXELS,
            f"CIFAR-10 file {path}: data has shape {data.shape}, expected (N, {PIXELS})")
    require(data.dtype == np.uint8, f"CIFAR-10 file {path}: data has dtype {data.dtype}, expected uint8")
    require(labels.ndim == 1 and len(labels) == len(data),
            f"CIFAR-10 file {path}: {len(data)} images but {labels.size} labels")
    require(np.issubdtype(labels.dtype, np.integer) or len(labels) == 0,
            f"CIFAR-10 file {path}: labels have dtype {labels.dtype}, expected integers")
    if len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        require(lo >= 0 and hi <= 9, f"CIFAR-10 file {path}: labels span {lo}..{hi}, expected 0..9")
    return data, labels.astype(np.int64)


def _batch_dir(directory: Path) -> Path:
    # Accept both the unpacked folder and its parent (where the tarball was extracted).
    nested = directory / "cifar-10-batches-py"
    if not (directory / TEST_BATCH).exists() and nested.is_dir():
        return nested
    return directory


def load_cifar10(directory: str | Path) -> Dataset:
    """50000 training and 10000 test images, pixels / 255, flattened to 3072 (channel planes)."""
    directory = Path(directory)
    require(directory.exists(),
            f"data.dir {directory}: does not exist (expected the CIFAR-10 python batches)")
    require(directory.is_dir(), f"data.dir {directory}: not a directory")
    where = _batch_dir(directory)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        require((where / name).is_file(), f"data.dir {directory}: missing {name}")

    def _to_float(data: np.ndarray) -> np.ndarray:
        X = data.astype(np.float64)
        X /= 255.0
        return X

    parts = [read_batch(where / name) for name in TRAIN_BATCHES]
    X_train = _to_float(np.concatenate([d for d, _ in parts]))
    y_train = np.concatenate([labels for _, labels in parts])
    test_data, y_test = read_batch(where / TEST_BATCH)
    return Dataset("cifar10", X_train, y_train, _to_float(test_data), y_test, num_classes=10)


@register_dataset("cifar10", kind="classification", needs_dir=True)
def _cifar10(cfg: Any, seed: int) -> Dataset:
    require(bool(cfg.dir), "config field data.dir: dataset 'cifar10' needs a local directory")
    return load_cifar10(cfg.dir)
