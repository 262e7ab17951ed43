"""Config loading: defaults, overrides, and one clear error per bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcasync import config
from hpcasync.errors import UserError
from tests.conftest import make_config


def test_round_trip_through_toml(tmp_path: Path) -> None:
    cfg = make_config(topology={"name": "torus", "n": 12, "shape": [3, 4]})
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert config.load(path) == cfg


def test_overrides_parse_as_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(make_config().to_toml())
    cfg = config.load(path, ["algorithm.alpha=0.5", "topology.shape=[1, 9]", "algorithm.name=dsgd"])
    assert (cfg.algorithm.alpha, cfg.topology.shape, cfg.algorithm.name) == (0.5, [1, 9], "dsgd")


@pytest.mark.parametrize("sections, match", [
    ({"algorithm": {"name": "sgdx"}}, "algorithm.name: unknown name 'sgdx'"),
    ({"topology": {"name": "moebius"}}, "topology.name: unknown name 'moebius'"),
    ({"delays": {"model": "chaos"}}, "delays.model: unknown name 'chaos'"),
    ({"algorithm": {"alpha": 0.0}}, "algorithm.alpha: expected > 0, got 0.0"),
    ({"algorithm": {"alpha": -1.0}}, "algorithm.alpha"),
    ({"topology": {"shape": [2, 4]}}, "2x4 grid has 8 nodes but topology.n = 9"),
    ({"delays": {"compute_mean": 0.0}}, "delays.compute_mean: expected > 0, got 0.0"),
    ({"delays": {"comm_mean": -2.0}}, "delays.comm_mean"),
    ({"budget": {"time": 0.0, "gradients": 0}}, "a budget of zero"),
    ({"algorithm": {"beta": 1.5}}, "algorithm.beta"),
    ({"data": {"name": "mnist", "dir": ""}}, "data.dir: dataset 'mnist' needs a local directory"),
    ({"algorithm": {"alpha": "big"}}, "algorithm.alpha: expected a number"),
    ({"algorithm": {"speed": 3}}, "unknown field algorithm.speed"),
    ({"bogus": {"x": 1}}, r"unknown section \[bogus\]"),
])
def test_bad_fields_name_themselves(sections, match) -> None:
    with pytest.raises(UserError, match=match):
        make_config(**sections)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nname=")
    with pytest.raises(UserError, match="not valid TOML"):
        config.load(bad)
    good = tmp_path / "good.toml"
    good.write_text("")
    with pytest.raises(UserError, match="expected section.field=value"):
        config.load(good, ["alpha"])
