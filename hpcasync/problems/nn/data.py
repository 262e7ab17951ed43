"""Datasets as torch tensors for the torch problem (``data.name`` with ``problem.name = "torch"``).

* ``digits``: the embedded 8×8 digits as 1×8×8 images (pixel counts / 16, then standardised with
  the training set's mean and standard deviation);
* ``mnist``: the IDX files as 1×28×28 images, (x/255 − 0.1307)/0.3081 (the usual constants);
* ``cifar10``: the python batches as 3×32×32 images, per-channel (x/255 − mean)/std with the
  CIFAR-10 training-set constants, and for training batches random crop with 4-pixel zero padding
  plus a horizontal flip with probability ½ (``problem.augment``);
* ``shakespeare``: LEAF's Shakespeare JSON (Caldas et al. 2018): ``data.dir/train/*.json`` and
  ``data.dir/test/*.json``, each ``{"users", "num_samples", "user_data": {user: {"x": [80-char
  strings], "y": [next char]}}}``; characters are indices into LEAF's 80-letter alphabet, anything
  else maps to one extra "unknown" index (vocabulary 81);
* ``"mypkg.mod:factory"``: a callable ``factory()`` returning ``(X_train, y_train, X_test, y_test)``
  (tensors or arrays) or ``(train, test)`` torch Datasets of (sample, label) pairs; or a dataset
  plug-in of the registry, ``factory(data_section, seed)`` returning an ``hpcasync.data.Dataset``
  (flat features, for the ``mlp``).

Images are loaded from the raw uint8 files straight into the problem's float dtype: the float64
flat arrays of ``hpcasync.data`` would take 1.2 GB for CIFAR-10.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcasync.errors import UserError, require

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
#: LEAF's Shakespeare alphabet (leaf/models/utils/language_utils.py)
LEAF_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"


@dataclass
class TensorData:
    """Train and test tensors; ``augment(batch, generator)`` transforms a training batch in place."""

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: Callable[[torch.Tensor, torch.Generator], None] | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])


def crop_flip(batch: torch.Tensor, gen: torch.Generator, pad: int = 4) -> None:
    """In place: each image of (B, C, H, W) becomes a random H×W crop of it zero-padded by ``pad``,
    mirrored left-right with probability ½."""
    B, _, H, W = batch.shape
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad))
    rows = torch.randint(0, 2 * pad + 1, (B,), generator=gen).tolist()
    cols = torch.randint(0, 2 * pad + 1, (B,), generator=gen).tolist()
    flips = (torch.rand(B, generator=gen) < 0.5).tolist()
    for b in range(B):
        crop = padded[b, :, rows[b]:rows[b] + H, cols[b]:cols[b] + W]
        batch[b] = crop.flip(-1) if flips[b] else crop


def digits(test_fraction: float, seed: int, dtype: torch.dtype) -> TensorData:
    from hpcasync.data.digits import load_digits

    ds = load_digits(test_fraction, seed)
    mean, std = float(ds.X_train.mean()), float(ds.X_train.std())

    def images(X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((X - mean) / std).to(dtype).reshape(-1, 1, 8, 8).contiguous()

    return TensorData("digits", images(ds.X_train), torch.from_numpy(ds.y_train), images(ds.X_test),
                      torch.from_numpy(ds.y_test), 10)


def mnist(directory: str | Path, dtype: torch.dtype) -> TensorData:
    from hpcasync.data.mnist import FILES, IMAGES_MAGIC, LABELS_MAGIC, find_file, read_idx

    d = Path(directory)
    require(d.is_dir(), f"data.dir {d}: not a directory (expected the MNIST IDX files)")

    def split(images_key: str, labels_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        img = read_idx(find_file(d, FILES[images_key]), IMAGES_MAGIC)
        lab = read_idx(find_file(d, FILES[labels_key]), LABELS_MAGIC)
        require(len(img) == len(lab), f"data.dir {d}: {len(img)} {images_key} but {len(lab)} labels")
        require(not len(lab) or int(lab.max()) <= 9, f"data.dir {d}: {labels_key} outside 0..9")
        X = torch.from_numpy(np.array(img)).to(dtype).div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)
        return X.unsqueeze(1).contiguous(), torch.from_numpy(lab.astype(np.int64))

    Xtr, ytr = split("train_images", "train_labels")
    Xte, yte = split("test_images", "test_labels")
    require(len(Xtr) > 0, f"data.dir {d}: the MNIST training file holds no images")
    return TensorData("mnist", Xtr, ytr, Xte, yte, 10)


def cifar10(directory: str | Path, dtype: torch.dtype, augment: bool) -> TensorData:
    from hpcasync.data.cifar import TEST_BATCH, TRAIN_BATCHES, _batch_dir, read_batch

    d = Path(directory)
    require(d.is_dir(), f"data.dir {d}: not a directory (expected the CIFAR-10 python batches)")
    where = _batch_dir(d)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        require((where / name).is_file(), f"data.dir {d}: missing {name}")
    mean = torch.tensor(CIFAR_MEAN, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, dtype=dtype).view(1, 3, 1, 1)

    def images(raw: np.ndarray) -> torch.Tensor:
        X = torch.from_numpy(raw).reshape(-1, 3, 32, 32).to(dtype).div_(255.0)
        return X.sub_(mean).div_(std).contiguous()

    parts = [read_batch(where / name) for name in TRAIN_BATCHES]
    Xtr = images(np.concatenate([p for p, _ in parts]))
    ytr = torch.from_numpy(np.concatenate([lab for _, lab in parts]))
    raw_te, yte = read_batch(where / TEST_BATCH)
    return TensorData("cifar10", Xtr, ytr, images(raw_te), torch.from_numpy(yte), 10,
                      crop_flip if augment else None)


def _leaf_split(folder: Path) -> tuple[list[str], list[str]]:
    require(folder.is_dir(), f"data.dir: missing folder {folder} (LEAF Shakespeare train/ and test/)")
    files = sorted(folder.glob("*.json"))
    require(bool(files), f"data.dir: no *.json files in {folder}")
    xs: list[str] = []
    ys: list[str] = []
    for f in files:
        try:
            obj = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"Shakespeare file {f}: not LEAF JSON ({exc})") from None
        require(isinstance(obj, dict) and isinstance(obj.get("user_data"), dict),
                f"Shakespeare file {f}: expected a JSON object with 'user_data'")
        for user in obj.get("users", list(obj["user_data"])):
            rec = obj["user_data"].get(user)
            require(isinstance(rec, dict) and "x" in rec and "y" in rec,
                    f"Shakespeare file {f}: user {user!r} has no 'x'/'y'")
            require(len(rec["x"]) == len(rec["y"]), f"Shakespeare file {f}: user {user!r}: x and y differ in length")
            xs.extend(rec["x"])
            ys.extend(rec["y"])
    require(bool(xs), f"Shakespeare folder {folder}: holds no samples")
    width = len(xs[0])
    require(all(len(s) == width for s in xs), f"Shakespeare folder {folder}: sequences of different lengths")
    require(all(len(c) == 1 for c in ys), f"Shakespeare folder {folder}: a 'y' that is not one character")
    return xs, ys


def _encode(strings: list[str]) -> torch.Tensor:
    unknown = len(LEAF_LETTERS)
    index = {c: i for i, c in enumerate(LEAF_LETTERS)}
    width = len(strings[0]) if strings else 0
    flat = np.fromiter((index.get(c, unknown) for s in strings for c in s), np.int64, len(strings) * width)
    return torch.from_numpy(flat.reshape(len(strings), width))


def shakespeare(directory: str | Path) -> TensorData:
    d = Path(directory)
    xtr, ytr = _leaf_split(d / "train")
    xte, yte = _leaf_split(d / "test")
    require(len(xtr[0]) == len(xte[0]), f"data.dir {d}: train and test sequences differ in length")
    return TensorData("shakespeare", _encode(xtr), _encode(ytr)[:, 0], _encode(xte), _encode(yte)[:, 0],
                      len(LEAF_LETTERS) + 1)


def load_object(spec: str, field: str) -> Any:
    """The object named ``"package.module:attribute"`` (bring your own model/data/loss)."""
    mod_name, _, attr = spec.partition(":")
    require(bool(mod_name) and bool(attr), f"config field {field}: expected 'package.module:name', got {spec!r}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise UserError(f"config field {field}: cannot import {mod_name!r} ({exc})") from None
    require(hasattr(mod, attr), f"config field {field}: module {mod_name!r} has no attribute {attr!r}")
    return getattr(mod, attr)


def _as_tensor(a: Any, dtype: torch.dtype | None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.contiguous()


def _stack(ds: Any, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        pairs = [ds[i] for i in range(len(ds))]
    except Exception as exc:  # a user's Dataset: anything can go wrong
        raise UserError(f"config field {field}: cannot read the dataset's samples ({exc})") from None
    require(bool(pairs), f"config field {field}: the factory returned an empty dataset")
    return (torch.stack([torch.as_tensor(p[0]) for p in pairs]),
            torch.as_tensor([int(p[1]) for p in pairs], dtype=torch.int64))


def from_factory(spec: str, dtype: torch.dtype, section: Any = None, seed: int = 0) -> TensorData:
    import inspect

    from hpcasync.data.dataset import Dataset

    factory = load_object(spec, "data.name")
    try:
        n_args = len(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        n_args = 0
    out = factory(section, seed) if n_args >= 2 else factory()
    if isinstance(out, Dataset):
        require(out.is_classification, f"config field data.name: {spec} returned regression data; "
                                       "the torch problem trains classifiers")
        out = (out.X_train, out.y_train, out.X_test, out.y_test)
    field = "data.name"
    require(isinstance(out, tuple | list) and len(out) in (2, 4),
            f"config field {field}: {spec} must return (X_train, y_train, X_test, y_test) or (train, test) "
            f"Datasets, got {type(out).__name__}")
    if len(out) == 2:
        (Xtr, ytr), (Xte, yte) = _stack(out[0], field), _stack(out[1], field)
    else:
        Xtr, ytr, Xte, yte = out
    Xtr, Xte = _as_tensor(Xtr, dtype), _as_tensor(Xte, dtype)
    ytr, yte = _as_tensor(ytr, None).long(), _as_tensor(yte, None).long()
    require(len(Xtr) == len(ytr) and len(Xte) == len(yte) and len(Xtr) > 0,
            f"config field {field}: {spec} returned mismatched sample and label counts")
    require(int(ytr.min()) >= 0, f"config field {field}: {spec} returned negative labels")
    classes = int(max(int(ytr.max()), int(yte.max()) if len(yte) else 0)) + 1
    return TensorData(spec, Xtr, ytr, Xte, yte, classes)


def load(name: str, directory: str, test_fraction: float, seed: int, dtype: torch.dtype,
         augment: bool, section: Any = None) -> TensorData:
    if ":" in name:
        return from_factory(name, dtype, section, seed)
    if name == "digits":
        return digits(test_fraction, seed, dtype)
    require(bool(directory), f"config field data.dir: dataset {name!r} needs a local directory")
    if name == "mnist":
        return mnist(directory, dtype)
    if name == "cifar10":
        return cifar10(directory, dtype, augment)
    if name == "shakespeare":
        return shakespeare(directory)
    raise UserError(f"config field data.name: dataset {name!r} is not available to the torch problem; "
                    "expected digits, mnist, cifar10, shakespeare or 'package.module:factory'")
