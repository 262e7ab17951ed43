"""Datasets (digits, MNIST IDX, CIFAR-10 batches, synthetic) and partitioners."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcasync import data
from hpcasync.config import DataSection
from hpcasync.data import partition as part
from hpcasync.data.cifar import load_cifar10, read_batch
from hpcasync.data.digits import load_digits, stratified_split
from hpcasync.data.mnist import load_mnist, read_idx
from hpcasync.data.synthetic import least_squares, quadratic_centers
from hpcasync.errors import UserError

# ---------------------------------------------------------------- MNIST IDX


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, magic: int, gz: bool = False) -> Path:
    payload = idx_bytes(arr, magic)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_mnist(directory: Path, n_train: int = 6, n_test: int = 4, gz: bool = False,
               seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 0x803),
        "train-labels-idx1-ubyte": (rng.integers(0, 10, n_train), 0x801),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 0x803),
        "t10k-labels-idx1-ubyte": (rng.integers(0, 10, n_test), 0x801),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, (arr, magic) in arrays.items():
        write_idx(directory / name, arr, magic, gz=gz)
    return {name: arr for name, (arr, _) in arrays.items()}


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads_raw_and_gz(tmp_path: Path, gz: bool) -> None:
    arrays = make_mnist(tmp_path, gz=gz)
    ds = load_mnist(tmp_path)
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.X_train.shape == (6, 784) and ds.X_test.shape == (4, 784)
    assert ds.X_train.dtype == np.float64 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.X_train, arrays["train-images-idx3-ubyte"].reshape(6, -1) / 255.0)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.X_train.min() >= 0.0 and ds.X_train.max() <= 1.0


def test_mnist_mixed_raw_and_gz(tmp_path: Path) -> None:
    arrays = make_mnist(tmp_path)
    raw = tmp_path / "t10k-images-idx3-ubyte"
    with gzip.open(str(raw) + ".gz", "wb") as fh:
        fh.write(raw.read_bytes())
    raw.unlink()
    ds = load_mnist(tmp_path)
    np.testing.assert_allclose(ds.X_test * 255.0, arrays["t10k-images-idx3-ubyte"].reshape(4, -1))


def test_read_idx_shape_and_dtype(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a", arr, 0x803), 0x803)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_mnist_wrong_magic(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.zeros((4, 1, 1)), 0x803)
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte: wrong magic number 0x00000803, "
                                        r"expected 0x00000801"):
        load_mnist(tmp_path)


def test_mnist_truncated(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:16 + 1234])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte: truncated: header says 6 images of "
                                        r"28x28, file holds 1234 bytes of data"):
        load_mnist(tmp_path)


def test_mnist_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(UserError, match="truncated"):
        read_idx(path, 0x803)


def test_mnist_missing_file_and_dir(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match=r"data.dir .*: missing t10k-labels-idx1-ubyte\(\.gz\)"):
        load_mnist(tmp_path)
    with pytest.raises(UserError, match="data.dir .*nowhere: does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_mnist_count_mismatch(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5), 0x801)
    with pytest.raises(UserError, match="holds 6 images but train-labels-idx1-ubyte holds 5 labels"):
        load_mnist(tmp_path)


def test_mnist_bad_gzip(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="not a valid gzip file"):
        load_mnist(tmp_path)


def test_mnist_via_load(tmp_path: Path) -> None:
    make_mnist(tmp_path, gz=True)
    ds = data.load(DataSection(name="mnist", dir=str(tmp_path)), seed=0)
    assert ds is not None and ds.n_train == 6


# ---------------------------------------------------------------- CIFAR-10


def write_cifar(directory: Path, n: int = 3, protocol: int = pickle.HIGHEST_PROTOCOL,
                seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        with (directory / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
        batches[name] = batch
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_loads(tmp_path: Path, protocol: int) -> None:
    batches = write_cifar(tmp_path, protocol=protocol)
    ds = load_cifar10(tmp_path)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.X_train.shape == (15, 3072) and ds.X_test.shape == (3, 3072)
    np.testing.assert_allclose(ds.X_train[:3] * 255.0, batches["data_batch_1"][b"data"])
    np.testing.assert_array_equal(ds.y_train[12:], batches["data_batch_5"][b"labels"])
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][b"labels"])


def test_cifar_nested_folder(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    ds = data.load(DataSection(name="cifar10", dir=str(tmp_path)), seed=0)
    assert ds is not None and ds.n_test == 3


def test_cifar_missing_batch(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(UserError, match="data.dir .*: missing data_batch_4"):
        load_cifar10(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_cifar10(tmp_path / "nope")


def test_cifar_bad_files(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(UserError, match="test_batch: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)
    bad = tmp_path / "bad"
    with bad.open("wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(UserError, match=r"data has shape \(2, 100\), expected \(N, 3072\)"):
        read_batch(bad)
    with bad.open("wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, fh)
    with pytest.raises(UserError, match="missing key b'labels'"):
        read_batch(bad)
    with bad.open("wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, fh)
    with pytest.raises(UserError, match=r"labels span 0..12, expected 0..9"):
        read_batch(bad)


def test_cifar_refuses_arbitrary_globals(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # would run os.getcwd on load
            return (os.getcwd, ())

    path = tmp_path / "evil"
    with path.open("wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(UserError, match="refusing to load global"):
        read_batch(path)


# ---------------------------------------------------------------- digits, synthetic


def test_digits_split_deterministic_and_disjoint() -> None:
    a, b, c = load_digits(0.2, 0), load_digits(0.2, 0), load_digits(0.2, 1)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.X_test, c.X_test)
    assert a.n_train + a.n_test == 1797 and a.num_features == 64 and a.num_classes == 10
    assert a.X_train.min() >= 0.0 and a.X_train.max() <= 1.0
    train, test = stratified_split(np.concatenate([a.y_train, a.y_test]), 0.2, 0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    # stratified: every class keeps round(20%) of its samples in test
    y_all = np.concatenate([a.y_train, a.y_test])
    for k in range(10):
        assert abs(np.sum(a.y_test == k) - 0.2 * np.sum(y_all == k)) <= 0.5


def test_digits_bad_fraction() -> None:
    with pytest.raises(UserError, match="data.test_fraction"):
        load_digits(1.5, 0)


def test_least_squares_data() -> None:
    ds = least_squares(n=200, d=10, noise=0.0, seed=3)
    assert ds.num_classes == 0 and ds.y_train.dtype == np.float64
    assert ds.X_train.shape == (200, 10) and ds.X_test.shape == (40, 10)
    np.testing.assert_allclose(ds.X_train @ ds.extras["x_star"], ds.y_train)
    again = least_squares(n=200, d=10, noise=0.0, seed=3)
    np.testing.assert_array_equal(ds.X_train, again.X_train)
    assert ds.n_train == 200


def test_load_dispatch() -> None:
    assert data.load(DataSection(name="quadratic"), 0) is None
    ds = data.load(DataSection(name="least-squares", samples=50, dim=3), 0)
    assert ds is not None and ds.X_train.shape == (50, 3)
    centers, curv = quadratic_centers(4, 3, 0)
    assert centers.shape == (4, 3) and np.all(curv == 1.0)
    with pytest.raises(UserError, match="data.dir"):
        data.load(DataSection(name="mnist"), 0)


# ---------------------------------------------------------------- partitions


def check_partition(parts: list[np.ndarray], n_samples: int, n: int) -> None:
    assert len(parts) == n
    assert all(len(p) > 0 for p in parts)
    allidx = np.concatenate(parts)
    assert len(allidx) == n_samples
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n_samples))


LABELS = np.repeat(np.arange(10), 50)[np.random.default_rng(0).permutation(500)]

SCHEMES = {
    "iid": lambda y, n, s: part.iid(y, n, s),
    "heterogeneity": lambda y, n, s: part.heterogeneity(y, n, 0.5, s),
    "k-classes": lambda y, n, s: part.k_classes(y, n, 2, s),
    "dirichlet": lambda y, n, s: part.dirichlet(y, n, 0.3, s),
}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_partition_invariants(scheme: str) -> None:
    fn = SCHEMES[scheme]
    parts = fn(LABELS, 9, 0)
    check_partition(parts, len(LABELS), 9)
    for a, b in zip(parts, fn(LABELS, 9, 0), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, fn(LABELS, 9, 1), strict=True))


def test_iid_and_heterogeneity_balanced() -> None:
    for parts in (part.iid(LABELS, 9, 0), part.heterogeneity(LABELS, 9, 0.37, 0)):
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_heterogeneity_rho_one_few_labels() -> None:
    parts = part.heterogeneity(LABELS, 9, 1.0, 0)
    # 500/9 ≈ 56 contiguous label-sorted samples span at most 3 of the 50-sample classes
    assert all(len(np.unique(LABELS[p])) <= 3 for p in parts)
    mixed = part.heterogeneity(LABELS, 9, 0.0, 0)
    assert all(len(np.unique(LABELS[p])) >= 8 for p in mixed)


def test_k_classes_at_most_k() -> None:
    for k in (1, 2, 3):
        parts = part.k_classes(LABELS, 10, k, 0)
        check_partition(parts, len(LABELS), 10)
        assert all(len(np.unique(LABELS[p])) <= k for p in parts)
    with pytest.raises(UserError, match="classes_per_agent"):
        part.k_classes(LABELS, 4, 2, 0)  # 8 shards cannot cover 10 classes


def test_dirichlet_tiny_alpha_non_empty() -> None:
    parts = part.dirichlet(LABELS, 40, 0.01, 0)
    check_partition(parts, len(LABELS), 40)


def test_partition_impossible() -> None:
    with pytest.raises(UserError, match="cannot give each of 9 agents at least one"):
        part.iid(np.arange(5), 9, 0)


@settings(max_examples=40, deadline=None)
@given(n_samples=st.integers(1, 120), n=st.integers(1, 12), rho=st.floats(0, 1),
       alpha=st.floats(0.01, 10), seed=st.integers(0, 2**31))
def test_partitions_property(n_samples: int, n: int, rho: float, alpha: float, seed: int) -> None:
    y = np.random.default_rng(seed).integers(0, 4, n_samples)
    if n_samples < n:
        with pytest.raises(UserError):
            part.heterogeneity(y, n, rho, seed)
        return
    check_partition(part.heterogeneity(y, n, rho, seed), n_samples, n)
    check_partition(part.dirichlet(y, n, alpha, seed), n_samples, n)
    check_partition(part.iid(y, n, seed), n_samples, n)


def test_partition_dispatch_and_regression() -> None:
    y = LABELS
    cfg = DataSection(partition="k-classes", classes_per_agent=2)
    assert all(len(np.unique(y[p])) <= 2 for p in part.partition(cfg, y, 9, 0))
    yr = np.linspace(0.0, 1.0, 90)
    parts = part.partition(DataSection(name="least-squares", partition="heterogeneity", rho=1.0), yr, 3, 0)
    check_partition(parts, 90, 3)
    assert yr[parts[0]].max() < yr[parts[1]].min()  # sorted by target value
    with pytest.raises(UserError, match="data.partition: 'dirichlet' needs class labels"):
        part.partition(DataSection(name="least-squares", partition="dirichlet"), yr, 3, 0)
