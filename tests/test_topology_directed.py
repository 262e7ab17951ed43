"""Directed and time-varying topologies: the families' matrices, their checks, one-line errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from hpcasync import topology as topo
from hpcasync.cli.main import main
from hpcasync.config import TopologySection
from hpcasync.errors import UserError
from hpcasync.topology_directed import DirectedTopology, from_period, hops
from tests.test_cli import write_config


def build(name: str, n: int, **kw) -> DirectedTopology:
    t = topo.build(TopologySection(name=name, n=n, **kw))
    assert isinstance(t, DirectedTopology) and t.directed
    return t


@pytest.mark.parametrize("n", [2, 3, 8, 9, 16])
def test_time_varying_exponential(n: int) -> None:
    t = build("time-varying-exponential", n)
    assert len(t.period) == len(hops(n)) == int(np.ceil(np.log2(n)))
    for k, P in enumerate(t.period):
        np.testing.assert_allclose(P.sum(axis=0), 1.0, atol=1e-15)
        for i in range(n):  # one peer per round, at hop 2^k
            out = [j for j in np.flatnonzero(P[:, i]) if j != i]
            assert out == [(i + 2**k) % n] and P[i, i] == 0.5
    assert nx.is_strongly_connected(t.directed_graph())
    assert t.out_neighbors(0) == sorted({h % n for h in hops(n)})
    assert t.in_neighbors(0) == sorted({(-h) % n for h in hops(n)})


def test_directed_random_is_column_not_row_stochastic() -> None:
    t = build("directed-random", 12, degree=2, seed=4)
    (P,) = t.period
    np.testing.assert_allclose(P.sum(axis=0), 1.0, atol=1e-15)
    assert np.abs(P.sum(axis=1) - 1).max() > 0.1
    assert nx.is_strongly_connected(t.arcs)
    for i in range(12):  # arcs follow P: j in out(i) iff p_ji > 0
        assert t.out_neighbors(i) == [j for j in np.flatnonzero(P[:, i]) if j != i]


def test_static_directed_families() -> None:
    ring = build("directed-ring", 5)
    assert ring.out_neighbors(4) == [0] and ring.in_neighbors(0) == [4]
    ex = build("directed-exponential", 8)
    assert ex.out_neighbors(0) == [1, 2, 4]
    np.testing.assert_allclose(ex.period[0][:, 0].sum(), 1.0)


def test_undirected_topologies_stay_undirected() -> None:
    t = topo.build(TopologySection(name="grid", n=9, shape=[3, 3]))
    assert not t.directed and t.mixing_period() == (t.W,)
    assert t.in_neighbors(4) == t.out_neighbors(4) == t.neighbors(4)


@pytest.mark.parametrize("P, words", [
    (np.array([[0.5, 0.0], [0.5, 1.0]]), ["strongly connected", "no directed path from 1 to 0"]),
    (np.array([[0.5, 0.4], [0.5, 0.5]]), ["column 1", "column-stochastic"]),
    (np.array([[1.5, 0.5], [-0.5, 0.5]]), ["negative weight P[1,0]"]),
    (np.array([[0.0, 0.5], [1.0, 0.5]]), ["diagonal weight P[0,0] = 0"]),
    (np.array([[0.5, np.nan], [0.5, 0.5]]), ["NaN"]),
])
def test_bad_period_one_line(P: np.ndarray, words: list[str]) -> None:
    with pytest.raises(UserError) as exc:
        from_period("t", [P])
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_strong_connectivity_over_a_period_not_per_round() -> None:
    """Neither round alone is strongly connected; their union is (B-strong connectivity, B = 2)."""
    a = np.array([[0.5, 0.0], [0.5, 1.0]])
    b = np.array([[1.0, 0.5], [0.0, 0.5]])
    t = from_period("alternating", [a, b])
    assert t.in_neighbors(0) == [1] and len(t.period) == 2
    with pytest.raises(UserError, match="strongly connected"):
        from_period("one-way", [a, a])


def test_directed_custom_and_cli_errors(tmp_path: Path, capsys) -> None:
    good = tmp_path / "P.txt"
    np.savetxt(good, np.array([[0.5, 0.0, 0.3], [0.5, 0.6, 0.0], [0.0, 0.4, 0.7]]))
    t = build("directed-custom", 3, matrix=str(good))
    assert t.out_neighbors(0) == [1]
    cases = {
        "bad column": (np.array([[0.5, 0.0, 0.3], [0.5, 0.6, 0.0], [0.0, 0.3, 0.7]]), "column 1"),
        "not strongly connected": (np.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.3], [0.0, 0.4, 0.7]]),
                                   "strongly connected"),
    }
    for P, word in cases.values():
        path = tmp_path / "bad.txt"
        np.savetxt(path, P)
        cfg = write_config(tmp_path, algorithm={"name": "agp"}, delays={"straggler": 0},
                           topology={"name": "directed-custom", "n": 3, "shape": [], "matrix": str(path)})
        assert main(["check", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err, err


@pytest.mark.parametrize("override, words", [
    ("algorithm.overlap=0", ["algorithm.overlap"]),
    ("algorithm.overlap=-3", ["algorithm.overlap"]),
    ("algorithm.overlap=1.5", ["algorithm.overlap", "integer"]),
    ("algorithm.step_cap=0.5", ["algorithm.step_cap"]),
    ("algorithm.name=adsgd", ["topology.name", "directed", "sgp"]),
    ("topology.degree=0", ["topology.degree"]),
])
def test_bad_fields_one_line_exit_2(tmp_path: Path, capsys, override: str, words: list[str]) -> None:
    cfg = write_config(tmp_path, algorithm={"name": "osgp"}, delays={"straggler": 0},
                       topology={"name": "directed-random", "n": 6, "shape": [], "degree": 2})
    assert main(["check", str(cfg), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
