"""Every config and sweep file shipped in configs/ still validates (fields, ranges, names, graphs)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hpcasync import config as config_mod
from hpcasync.sweep import load_sweep

ROOT = Path(__file__).resolve().parent.parent / "configs"
FILES = sorted(ROOT.rglob("*.toml"))


def _is_sweep(path: Path) -> bool:
    return "sweep" in tomllib.loads(path.read_text()) or "base" in tomllib.loads(path.read_text())


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_file_validates(path: Path) -> None:
    if _is_sweep(path):
        sweep = load_sweep(path)
        assert sweep.runs, path
    else:
        cfg = config_mod.load(path)
        assert cfg.algorithm.name, path


def test_there_are_shipped_files() -> None:
    assert len(FILES) > 20
