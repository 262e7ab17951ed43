"""The torch datasets on tiny files in the real formats: MNIST IDX, CIFAR-10 python batches,
LEAF Shakespeare JSON; digits as images; CIFAR crop + flip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (make install-torch: pip install torch==2.13.0)")

from hpcasync import problems  # noqa: E402
from hpcasync.errors import UserError  # noqa: E402
from hpcasync.problems.nn import data  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from tests.test_data import make_mnist, write_cifar  # noqa: E402


def test_digits_as_standardised_images() -> None:
    d = data.digits(0.2, 0, torch.float32)
    assert d.X_train.shape[1:] == (1, 8, 8) and d.X_train.dtype == torch.float32
    assert abs(float(d.X_train.mean())) < 1e-5 and float(d.X_train.std()) == pytest.approx(1.0, abs=1e-3)
    assert len(d.X_train) + len(d.X_test) == 1797 and d.num_classes == 10 and d.augment is None


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_as_normalised_tensors(tmp_path: Path, gz: bool) -> None:
    arrays = make_mnist(tmp_path, gz=gz)
    d = data.mnist(tmp_path, torch.float32)
    raw = arrays["train-images-idx3-ubyte"]
    assert d.X_train.shape == (6, 1, 28, 28) and d.X_test.shape == (4, 1, 28, 28)
    expect = (raw / 255.0 - data.MNIST_MEAN) / data.MNIST_STD
    np.testing.assert_allclose(d.X_train[:, 0].numpy(), expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(d.y_train.numpy(), arrays["train-labels-idx1-ubyte"])


def test_cifar_batches_as_normalised_tensors_with_crop_flip(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path, n=3)
    d = data.cifar10(tmp_path, torch.float32, augment=True)
    assert d.X_train.shape == (15, 3, 32, 32) and d.X_test.shape == (3, 3, 32, 32)
    raw = batches["data_batch_2"][b"data"][1].reshape(3, 32, 32) / 255.0
    mean, std = np.array(data.CIFAR_MEAN)[:, None, None], np.array(data.CIFAR_STD)[:, None, None]
    np.testing.assert_allclose(d.X_train[4].numpy(), (raw - mean) / std, rtol=1e-5, atol=1e-5)
    assert d.y_train.tolist()[3:6] == batches["data_batch_2"][b"labels"]
    assert d.augment is data.crop_flip
    assert data.cifar10(tmp_path, torch.float32, augment=False).augment is None


def _candidates(img: torch.Tensor, pad: int = 4) -> list[torch.Tensor]:
    C, H, W = img.shape
    padded = torch.nn.functional.pad(img, (pad,) * 4)
    out = []
    for r in range(2 * pad + 1):
        for c in range(2 * pad + 1):
            crop = padded[:, r:r + H, c:c + W]
            out += [crop, crop.flip(-1)]
    return out


def test_crop_flip_gives_shifted_mirrored_crops() -> None:
    gen = torch.Generator().manual_seed(0)
    imgs = torch.randn(24, 3, 8, 8)
    batch = imgs.clone()
    data.crop_flip(batch, gen)
    flipped = 0
    for b in range(len(batch)):
        cands = _candidates(imgs[b])
        hits = [k for k, c in enumerate(cands) if torch.equal(c, batch[b])]
        assert hits, f"image {b} is no crop/flip of the original"
        flipped += hits[0] % 2
    assert 0 < flipped < len(batch)  # both branches taken
    assert not torch.equal(batch, imgs)


def write_leaf(directory: Path) -> None:
    """Two LEAF Shakespeare JSON files in train/, one in test/, 5-char sequences."""
    def blob(users: dict[str, tuple[list[str], list[str]]]) -> dict:
        return {"users": list(users), "num_samples": [len(x) for x, _ in users.values()],
                "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()}}

    (directory / "train").mkdir(parents=True)
    (directory / "test").mkdir()
    (directory / "train" / "a.json").write_text(json.dumps(blob({"ROMEO": (["To be", " or n"], ["!", "o"])})))
    (directory / "train" / "b.json").write_text(json.dumps(blob({"JULIET": (["t to ", "be \u00e9?"], ["b", "Z"])})))
    (directory / "test" / "c.json").write_text(json.dumps(blob({"HAMLET": (["whet{"], ["h"])})))


def test_leaf_shakespeare_reader(tmp_path: Path) -> None:
    write_leaf(tmp_path)
    d = data.shakespeare(tmp_path)
    L = data.LEAF_LETTERS
    assert d.X_train.shape == (4, 5) and d.X_test.shape == (1, 5) and d.num_classes == len(L) + 1 == 81
    assert [L[i] for i in d.X_train[0].tolist()] == list("To be")
    assert "".join(L[i] for i in d.y_train.tolist()) == "!obZ"
    assert d.X_train[3, 3] == len(L)  # 'é' is not in LEAF's alphabet: the unknown index
    assert d.X_test[0, 4] == len(L)  # '{' neither


def test_leaf_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing folder"):
        data.shakespeare(tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "x.json").write_text("{not json")
    with pytest.raises(UserError, match="not LEAF JSON"):
        data.shakespeare(tmp_path)


def test_char_lstm_trains_on_shakespeare_files(tmp_path: Path) -> None:
    write_leaf(tmp_path)
    cfg = make_config(problem={"name": "torch", "model": "char-lstm"},
                      data={"name": "shakespeare", "dir": str(tmp_path)},
                      topology={"name": "ring", "n": 3, "shape": []}, delays={"straggler": 0})
    pb = problems.build(cfg, 2)
    g, loss = pb.oracle(0, 0).gradient(pb.init_params(0))
    assert np.isfinite(g).all() and loss == pytest.approx(np.log(81), rel=0.05)
    ev = pb.evaluate(pb.init_params(0))
    assert 0 <= ev["test_accuracy"] <= 1 and np.isfinite(ev["test_loss"])


def test_torch_problem_on_tiny_mnist_and_cifar(tmp_path: Path) -> None:
    make_mnist(tmp_path / "m", n_train=12)
    write_cifar(tmp_path / "c", n=3)
    for name, model in (("mnist", "cnn"), ("cifar10", "vgg11")):
        cfg = make_config(problem={"name": "torch", "model": model},
                          data={"name": name, "dir": str(tmp_path / name[0])},
                          topology={"name": "ring", "n": 3, "shape": []}, delays={"straggler": 0},
                          algorithm={"batch_size": 4})
        pb = problems.build(cfg, 3)
        g, _ = pb.oracle(2, 0).gradient(pb.init_params(0))
        assert g.shape == (pb.dim,) and np.isfinite(g).all()


def test_the_vgg11_cifar10_config_is_zhou_and_pus_setting(tmp_path: Path) -> None:
    """configs/torch/vgg11-cifar10.toml: batch 8, communication 2x in case 2, target 85 %; on a tiny
    CIFAR-10 directory it builds the VGG11 problem."""
    from hpcasync.config import load

    write_cifar(tmp_path, n=2)
    root = Path(__file__).resolve().parents[1]
    cfg = load(root / "configs/torch/vgg11-cifar10.toml", [f"data.dir={tmp_path}", "problem.device=cpu"])
    assert cfg.algorithm.batch_size == 8 and cfg.delays.slow_comm_mean == 2.0
    assert cfg.eval.target_accuracy == 0.85 and cfg.problem.model == "vgg11"
    pb = problems.build(cfg, cfg.topology.n)
    assert 9.2e6 < pb.dim < 9.3e6 and pb.bn_layers == 8 and pb.data.augment is not None
    small = load(root / "configs/torch/digits-cnn.toml")
    assert small.problem.model == "cnn" and small.delays.slow_comm_mean == 2.0
