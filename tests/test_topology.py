"""Graphs and mixing matrices (docs/design.md §2): properties, closed-form spectra, user errors."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from hpcasync import graphs
from hpcasync import topology as tp
from hpcasync.config import TopologySection
from hpcasync.errors import UserError

SIZES = {
    "ring": [1, 2, 3, 4, 7, 16],
    "grid": [1, 2, 4, 6, 9, 12, 13],
    "torus": [1, 4, 6, 9, 12, 16],
    "complete": [1, 2, 5, 9],
    "star": [1, 2, 3, 8],
    "exponential": [1, 2, 3, 5, 8, 12],
    "hypercube": [1, 2, 4, 8, 16],
    "random": [1, 2, 5, 16, 32],
}
CASES = [(name, n, w) for name, ns in SIZES.items() for n in ns for w in ("metropolis", "max-degree")]


def build(**kw) -> tp.Topology:
    return tp.build(TopologySection(**kw))


@pytest.mark.parametrize(("name", "n", "weights"), CASES)
def test_every_builder_gives_a_valid_mixing_matrix(name: str, n: int, weights: str) -> None:
    topo = build(name=name, n=n, weights=weights)
    W = topo.W
    assert topo.n == n and W.shape == (n, n) and W.dtype == np.float64
    np.testing.assert_array_equal(W, W.T)
    assert (W >= 0).all()
    np.testing.assert_allclose(W.sum(axis=0), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    A = topo.adjacency()
    assert A.dtype == np.uint8 and not A.diagonal().any()
    np.testing.assert_array_equal(W > 0, (A > 0) | np.eye(n, dtype=bool))
    assert nx.is_connected(topo.graph)
    assert 0 < topo.spectral_gap() <= 1 + 1e-12
    for i in range(n):
        row = topo.weights(i)
        assert sorted(row) == sorted([i, *topo.neighbors(i)])
        assert math.fsum(row.values()) == pytest.approx(1.0, abs=1e-12)
        assert topo.out_weights(i) == {j: W[j, i] for j in topo.neighbors(i)}
        assert topo.degree(i) == len(topo.neighbors(i)) == int(A[i].sum())
        assert i not in topo.neighbors(i) and topo.neighbors(i) == sorted(topo.neighbors(i))


def test_mixing_matrix_is_read_only() -> None:
    topo = build(name="ring", n=5)
    with pytest.raises(ValueError):
        topo.W[0, 0] = 2.0


def test_metropolis_hastings_weights_closed_form() -> None:
    # Star: hub degree n−1, leaves degree 1 → w_0j = 1/n, w_jj = 1 − 1/n, w_00 = 1/n.
    n = 6
    W = tp.metropolis_hastings(tp.star_graph(n))
    assert W[0, 3] == pytest.approx(1 / n)
    assert W[3, 3] == pytest.approx(1 - 1 / n)
    assert W[0, 0] == pytest.approx(1 / n)
    assert W[2, 3] == 0
    # Max-degree: every edge 1/(1 + d_max).
    M = tp.max_degree(tp.star_graph(n))
    assert M[0, 3] == pytest.approx(1 / n) and M[3, 3] == pytest.approx(1 - 1 / n)


@pytest.mark.parametrize("n", [3, 4, 5, 8, 11, 16])
def test_ring_spectral_gap_closed_form(n: int) -> None:
    # Circulant W with 1/3 on i, i±1: eigenvalues 1/3 + 2/3·cos(2πk/n).
    lam = max(abs(1 / 3 + 2 / 3 * math.cos(2 * math.pi * k / n)) for k in range(1, n))
    assert build(name="ring", n=n).spectral_gap() == pytest.approx(1 - lam, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 9])
@pytest.mark.parametrize("weights", ["metropolis", "max-degree"])
def test_complete_graph_gap_is_one(n: int, weights: str) -> None:
    # W = J/n: eigenvalues 1 and 0.
    topo = build(name="complete", n=n, weights=weights)
    np.testing.assert_allclose(topo.W, np.full((n, n), 1 / n), atol=1e-15)
    assert topo.spectral_gap() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_hypercube_gap_closed_form(m: int) -> None:
    # W = (I + Σ_b P_b)/(m+1): eigenvalues (m + 1 − 2k)/(m + 1), k = 0..m → gap 2/(m+1).
    assert build(name="hypercube", n=2**m).spectral_gap() == pytest.approx(2 / (m + 1), abs=1e-12)


@pytest.mark.parametrize(("rows", "cols"), [(3, 3), (3, 4), (4, 5)])
def test_torus_gap_closed_form(rows: int, cols: int) -> None:
    # 4-regular: W = (I + ring_r ⊗ I + I ⊗ ring_c)/5, eigenvalues (1 + 2cos(2πa/r) + 2cos(2πb/c))/5.
    lam = max(abs(1 + 2 * math.cos(2 * math.pi * a / rows) + 2 * math.cos(2 * math.pi * b / cols)) / 5
              for a in range(rows) for b in range(cols) if (a, b) != (0, 0))
    topo = build(name="torus", n=rows * cols, shape=[rows, cols])
    assert topo.spectral_gap() == pytest.approx(1 - lam, abs=1e-12)


def test_double_step() -> None:
    W = build(name="ring", n=6).W
    D = tp.double_step(W, 0.25)
    np.testing.assert_allclose(D, 0.75 * np.eye(6) + 0.25 * W)
    np.testing.assert_allclose(D.sum(axis=1), 1.0)
    # Eigenvalues map λ → 1 − β + βλ.
    np.testing.assert_allclose(np.linalg.eigvalsh(D), 0.75 + 0.25 * np.linalg.eigvalsh(W), atol=1e-12)
    np.testing.assert_array_equal(tp.double_step(W, 1.0), W)


def test_bipartiteness() -> None:
    assert build(name="grid", n=9).is_bipartite()
    assert build(name="grid", n=12, shape=[3, 4]).is_bipartite()
    assert build(name="ring", n=8).is_bipartite()
    assert not build(name="ring", n=9).is_bipartite()
    assert not build(name="complete", n=4).is_bipartite()
    assert build(name="hypercube", n=8).is_bipartite()
    assert build(name="star", n=5).is_bipartite()


def test_grid_shapes() -> None:
    assert graphs.default_shape(9) == (3, 3)
    assert graphs.default_shape(12) == (3, 4)
    assert graphs.default_shape(13) == (1, 13)
    topo = build(name="grid", n=6, shape=[2, 3])
    assert sorted(topo.graph.edges) == [(0, 1), (0, 3), (1, 2), (1, 4), (2, 5), (3, 4), (4, 5)]
    grid = build(name="grid", n=9)
    assert grid.degree(0) == 2 and grid.degree(1) == 3 and grid.degree(4) == 4
    assert all(d == 4 for _, d in build(name="torus", n=9).graph.degree)


def test_exponential_graph_neighbours() -> None:
    topo = build(name="exponential", n=16)
    assert topo.neighbors(0) == [1, 2, 4, 8, 12, 14, 15]


def test_random_graph_is_seeded_and_connected() -> None:
    a = build(name="random", n=32, degree=4, seed=3)
    b = build(name="random", n=32, degree=4, seed=3)
    c = build(name="random", n=32, degree=4, seed=4)
    assert sorted(a.graph.edges) == sorted(b.graph.edges)
    assert sorted(a.graph.edges) != sorted(c.graph.edges)
    mean_degree = 2 * a.graph.number_of_edges() / 32
    assert 2 <= mean_degree <= 7


def test_single_node() -> None:
    for name in ("ring", "complete"):
        topo = build(name=name, n=1)
        np.testing.assert_array_equal(topo.W, [[1.0]])
        assert topo.neighbors(0) == [] and topo.weights(0) == {0: 1.0} and topo.out_weights(0) == {}
        assert topo.spectral_gap() == 1.0


def test_custom_matrix_from_npy_and_text(tmp_path: Path) -> None:
    W = build(name="ring", n=5).W
    np.save(tmp_path / "W.npy", W)
    np.savetxt(tmp_path / "W.txt", W, fmt="%.17g")
    for f in ("W.npy", "W.txt"):
        topo = build(name="custom", n=5, matrix=str(tmp_path / f))
        np.testing.assert_array_equal(topo.W, W)
        assert sorted(topo.graph.edges) == sorted(tp.ring_graph(5).edges)


# ---------------------------------------------------------------------------- user errors


def test_unknown_name() -> None:
    with pytest.raises(UserError, match=r"topology.name: unknown name 'mesh'; expected one of ring, grid"):
        build(name="mesh", n=4)


def test_unknown_weights() -> None:
    with pytest.raises(UserError, match=r"topology.weights: unknown name 'uniform'"):
        build(name="ring", n=4, weights="uniform")


def test_grid_shape_mismatch() -> None:
    with pytest.raises(UserError, match=r"topology.shape: 2x4 grid has 8 nodes but topology.n = 9"):
        build(name="grid", n=9, shape=[2, 4])
    with pytest.raises(UserError, match=r"topology.shape: expected \[rows, cols\]"):
        build(name="torus", n=8, shape=[2, 2, 2])


def test_hypercube_needs_power_of_two() -> None:
    with pytest.raises(UserError,
                       match=r"topology.n: a hypercube needs a power of 2 agents, got 6 \(nearest: 4 or 8\)"):
        build(name="hypercube", n=6)


def test_bad_n() -> None:
    with pytest.raises(UserError, match=r"topology.n: expected >= 1 agents, got 0"):
        build(name="ring", n=0)


def test_random_graph_that_cannot_be_connected() -> None:
    with pytest.raises(UserError,
                       match=r"graph 'random' with n=40 is not connected in 3 draws .*topology.degree"):
        tp.random_graph(40, degree=0.5, seed=0, tries=3)
    with pytest.raises(UserError, match=r"topology.degree: expected an expected degree > 0"):
        build(name="random", n=5, degree=0)


def test_disconnected_graph() -> None:
    g = nx.Graph()
    g.add_nodes_from(range(5))
    g.add_edges_from([(0, 1), (2, 3), (3, 4)])
    with pytest.raises(UserError,
                       match=r"with n=5 is not connected \(2 components, e.g. \{0, 1\} and \{2, 3, 4\}\)"):
        tp.from_graph("mine", g)


def _save(tmp_path: Path, W, name: str = "W.npy") -> str:
    p = tmp_path / name
    np.save(p, np.asarray(W, dtype=float))
    return str(p)


def test_custom_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"topology.matrix .*nope.npy: file not found"):
        build(name="custom", n=3, matrix=str(tmp_path / "nope.npy"))
    with pytest.raises(UserError, match=r"topology.matrix: a custom topology needs the path of W"):
        build(name="custom", n=3, matrix="")
    bad_text = tmp_path / "W.txt"
    bad_text.write_text("0.5 0.5\n0.5 zero\n")
    with pytest.raises(UserError, match=r"topology.matrix .*W.txt: cannot read a matrix"):
        build(name="custom", n=2, matrix=str(bad_text))
    with pytest.raises(UserError, match=r"W.npy: expected a square n x n matrix, got shape \(2, 3\)"):
        build(name="custom", n=2, matrix=_save(tmp_path, np.ones((2, 3)) / 3))
    ring4 = build(name="ring", n=4).W
    with pytest.raises(UserError, match=r"W.npy: W is 4x4 but topology.n = 9"):
        build(name="custom", n=9, matrix=_save(tmp_path, ring4))


@pytest.mark.parametrize(
    ("W", "words"),
    [
        ([[0.5, 0.8], [0.2, 0.5]], r"not symmetric \(max \|W - W\^T\| = 0.6\)"),
        ([[1.2, -0.2], [-0.2, 1.2]], r"negative weight W\[0,1\] = -0.2 \(expected all w_ij >= 0\)"),
        ([[0.5, 0.4], [0.4, 0.5]], r"row 0 sums to 0.9 \(expected 1 within 1e-09"),
        ([[0.0, 1.0], [1.0, 0.0]], r"diagonal weight W\[0,0\] = 0 \(expected w_ii > 0\)"),
        ([[np.nan, 1.0], [1.0, 0.0]], r"W holds NaN or infinite entries"),
        ([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], r"graph with n=3 is not connected \(2 components"),
    ],
)
def test_bad_custom_matrix(tmp_path: Path, W, words: str) -> None:
    with pytest.raises(UserError, match=r"topology.matrix .*W.npy: " + words):
        build(name="custom", n=len(W), matrix=_save(tmp_path, W))


def test_check_mixing_matrix_sparsity_against_a_given_graph() -> None:
    W = build(name="complete", n=3).W
    with pytest.raises(UserError, match=r"ring3: W\[0,2\] = 0.333 but 0-2 is not an edge"):
        path = tp.grid_graph(3)  # 0-1-2
        tp.check_mixing_matrix(W, path, "ring3")
    W2 = tp.metropolis_hastings(tp.grid_graph(3))
    with pytest.raises(UserError,
                       match=r"tri: W\[0,2\] = 0 but 0-2 is an edge \(expected w_ij > 0 on edges\)"):
        tp.check_mixing_matrix(W2, tp.complete_graph(3), "tri")
    with pytest.raises(UserError, match=r"x: W has shape \(3, 3\) but the graph has 4 nodes"):
        tp.check_mixing_matrix(W2, tp.ring_graph(4), "x")


def test_double_step_rejects_bad_beta() -> None:
    with pytest.raises(UserError, match=r"algorithm.beta: expected 0 < beta <= 1, got 1.5"):
        tp.double_step(np.eye(2), 1.5)
