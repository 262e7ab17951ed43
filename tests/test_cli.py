"""The command line: a simulated run end to end, and one line + exit 2 for every bad input of issue 2."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcasync.cli.main import main
from hpcasync.results.reader import open_run
from tests.conftest import make_config

HPCASYNC = [sys.executable, "-m", "hpcasync"]


def write_config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "c.toml"
    cfg = make_config(**sections)
    cfg.run.out = str(tmp_path / "runs")
    path.write_text(cfg.to_toml())
    return path


def write_text_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "raw.toml"
    path.write_text(text)
    return path


def fails_with(capsys, argv: list[str], *words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


def test_simulate_writes_a_readable_run(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path)
    out = tmp_path / "out"
    assert main(["simulate", str(cfg), "--out", str(out), "--quiet", "--set", "budget.time=20"]) == 0
    assert "test_acc=" in capsys.readouterr().out
    run = open_run(out)
    assert run.complete and run.engine == "sim" and run.n_agents == 9
    assert run.config["budget"]["time"] == 20.0
    assert len(run.evaluations["virtual_time"]) == 5
    rows = run.agent(0)  # agent 4 is the straggler
    assert rows["iteration"][-1] > 5 and np.all(np.diff(rows["virtual_time"]) > 0)
    assert rows["final_model"].shape == (650,)


def test_same_config_same_datasets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for name in ("a", "b"):
        assert main(["simulate", str(cfg), "--out", str(tmp_path / name), "--quiet"]) == 0
    a, b = open_run(tmp_path / "a"), open_run(tmp_path / "b")
    for key, values in a.evaluations.items():
        if key != "wall_time":
            np.testing.assert_array_equal(values, b.evaluations[key])
    for rank in range(9):
        ra, rb = a.agent(rank), b.agent(rank)
        for key in ("virtual_time", "iteration", "loss", "grad_norm", "bytes_sent", "staleness", "final_model"):
            np.testing.assert_array_equal(ra[key], rb[key])


def test_check_accepts_a_good_config(tmp_path: Path, capsys) -> None:
    assert main(["check", str(write_config(tmp_path))]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("override, words", [
    ("algorithm.name=sgdx", ["algorithm.name", "sgdx"]),
    ("topology.name=moebius", ["topology.name", "moebius"]),
    ("delays.model=chaos", ["delays.model", "chaos"]),
    ("topology.shape=[2,4]", ["topology.shape", "2x4", "topology.n = 9"]),
    ("delays.compute_mean=-1", ["delays.compute_mean"]),
    ("delays.comm_mean=0", ["delays.comm_mean"]),
    ("algorithm.alpha=0", ["algorithm.alpha"]),
    ("algorithm.alpha=-0.1", ["algorithm.alpha"]),
    ("budget.time=0", ["budget"]),
])
def test_bad_fields(tmp_path: Path, capsys, override: str, words: list[str]) -> None:
    cfg = write_config(tmp_path)
    if override == "budget.time=0":
        fails_with(capsys, ["simulate", str(cfg), "--set", override, "--set", "budget.gradients=0"], *words)
    else:
        fails_with(capsys, ["simulate", str(cfg), "--set", override], *words)


def test_disconnected_and_bad_custom_matrices(tmp_path: Path, capsys) -> None:
    bad = {
        "disconnected": (np.eye(4), "connected"),
        "not-symmetric": (np.array([[0.5, 0.5, 0], [0.2, 0.5, 0.3], [0.3, 0, 0.7]]), "symmetric"),
        "not-stochastic": (np.array([[0.5, 0.4], [0.4, 0.5]]), "stochastic"),
    }
    for name, (W, word) in bad.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, W)
        cfg = write_config(tmp_path, topology={"name": "custom", "n": W.shape[0], "shape": [], "matrix": str(path)},
                           delays={"straggler": 0})
        assert main(["check", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err.lower(), err


def test_random_graph_never_disconnected_or_named(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path, topology={"name": "hypercube", "n": 6, "shape": []}, delays={"straggler": 0})
    fails_with(capsys, ["check", str(cfg)], "hypercube")


def test_missing_data_dir(tmp_path: Path, capsys) -> None:
    cfg = write_config(tmp_path, data={"name": "mnist", "dir": str(tmp_path / "nowhere")})
    fails_with(capsys, ["check", str(cfg)], str(tmp_path / "nowhere"))


def _idx_images(path: Path, n: int, magic: int = 0x00000803, payload: int | None = None) -> None:
    header = struct.pack(">IIII", magic, n, 28, 28)
    data = bytes(payload if payload is not None else n * 28 * 28)
    path.write_bytes(header + data)


def _idx_labels(path: Path, n: int) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", 0x00000801, n) + bytes(n))


@pytest.mark.parametrize("fault, words", [("truncated", ["truncated"]), ("magic", ["magic"])])
def test_bad_idx_files(tmp_path: Path, capsys, fault: str, words: list[str]) -> None:
    d = tmp_path / "mnist"
    d.mkdir()
    for prefix, n in (("train", 20), ("t10k", 10)):
        _idx_images(d / f"{prefix}-images-idx3-ubyte", n)
        _idx_labels(d / f"{prefix}-labels-idx1-ubyte.gz", n)
    if fault == "truncated":
        _idx_images(d / "train-images-idx3-ubyte", 20, payload=100)
    else:
        _idx_images(d / "train-images-idx3-ubyte", 20, magic=0x00000801)
    cfg = write_config(tmp_path, data={"name": "mnist", "dir": str(d)})
    fails_with(capsys, ["check", str(cfg)], "train-images-idx3-ubyte", *words)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered by the file-as-directory case")
def test_unwritable_output_dir_permissions(tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    fails_with(capsys, ["simulate", str(write_config(tmp_path)), "--out", str(locked / "run"), "--quiet"],
               "output directory", "not writable")


def test_unwritable_output_dir(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    fails_with(capsys, ["simulate", str(write_config(tmp_path)), "--out", str(blocker / "run"), "--quiet"],
               "output directory", "not writable")


def test_missing_config_and_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([*HPCASYNC, "simulate", str(tmp_path / "nope.toml")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"hpcasync simulate: error: config file {tmp_path / 'nope.toml'}: "
                                                "not found"]
