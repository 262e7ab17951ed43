"""Communication graphs and their mixing matrices (docs/design.md §2).

A :class:`Topology` is an undirected graph on nodes ``0..n-1`` plus a mixing
matrix W that is symmetric and doubly stochastic with w_ij > 0 iff j ∈ N_i or
j = i (docs/design.md §2). :func:`build` turns a ``[topology]`` config section into
one; every mistake in that section raises :class:`~hpcasync.errors.UserError`
naming the field or file at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import networkx as nx
import numpy as np

from hpcasync.config import TopologySection
from hpcasync.errors import UserError, require
from hpcasync.graphs import (
    _empty,
    complete_graph,
    exponential_graph,
    grid_graph,
    hypercube_graph,
    random_graph,
    ring_graph,
    star_graph,
    torus_graph,
)
from hpcasync.registry import Registry

#: absolute tolerance of the doubly-stochastic and symmetry checks
TOL = 1e-9


@dataclass(frozen=True, eq=False)
class Topology:
    """A named graph with its mixing matrix W (``eq=False``: W is an array, compare by identity)."""

    #: arcs have a direction (hpcasync/topology_directed.py): only ``Algorithm.directed_ok`` algorithms run on it
    directed: ClassVar[bool] = False
    name: str
    graph: nx.Graph
    W: np.ndarray

    def __post_init__(self) -> None:
        # A private read-only float64 copy: every agent mixes with this W, nobody may modify it.
        W = np.array(self.W, dtype=np.float64)
        W.setflags(write=False)
        object.__setattr__(self, "W", W)
        n = self.graph.number_of_nodes()
        if set(self.graph.nodes) != set(range(n)):
            raise ValueError(f"topology {self.name!r}: graph nodes must be 0..{n - 1}")
        if self.W.shape != (n, n):
            raise ValueError(f"topology {self.name!r}: W has shape {self.W.shape}, graph has {n} nodes")

    @property
    def n(self) -> int:
        return self.W.shape[0]

    def neighbors(self, i: int) -> list[int]:
        """N_i, sorted, without i."""
        return sorted(j for j in self.graph.neighbors(i) if j != i)

    # Directed and time-varying topologies (topology_directed.py) override these four.
    def in_neighbors(self, i: int) -> list[int]:
        return self.neighbors(i)  # agents whose messages reach i

    def out_neighbors(self, i: int) -> list[int]:
        return self.neighbors(i)  # agents i sends to

    def mixing_period(self) -> tuple[np.ndarray, ...]:
        return (self.W,)  # P(0..L−1), used in round k as P(k mod L)

    def directed_graph(self) -> nx.DiGraph:
        return self.graph.to_directed()  # the arcs messages travel along

    def degree(self, i: int) -> int:
        """d_i = |N_i|."""
        return len(self.neighbors(i))

    def weights(self, i: int) -> dict[int, float]:
        """Row i of W as ``{j: w_ij}``, i itself included, zeros left out (``AgentSetup.weights``)."""
        row = self.W[i]
        return {int(j): float(row[j]) for j in np.flatnonzero(row)}

    def out_weights(self, i: int) -> dict[int, float]:
        """Column i of W without i as ``{j: w_ji}``: what i sends to each out-neighbour j."""
        col = self.W[:, i]
        return {int(j): float(col[j]) for j in np.flatnonzero(col) if j != i}

    def adjacency(self) -> np.ndarray:
        """The (n, n) 0/1 adjacency matrix (uint8, zero diagonal)."""
        return _adjacency(self.graph)

    def spectral_gap(self) -> float:
        """1 − λ with λ the second largest |eigenvalue| of W (1 for n = 1).

        λ < 1 iff gossip with W converges; the consensus error contracts by λ
        per synchronous round.
        """
        if self.n == 1:
            return 1.0
        symmetric = np.array_equal(self.W, self.W.T)
        eig = np.linalg.eigvalsh(self.W) if symmetric else np.linalg.eigvals(self.W)
        mags = np.sort(np.abs(eig))[::-1]
        return float(1.0 - mags[1])

    def is_bipartite(self) -> bool:
        return bool(nx.is_bipartite(self.graph))


# --------------------------------------------------------------------------- graphs


TOPOLOGIES: Registry[Callable[[TopologySection], Topology]] = Registry("topology", "topology.name")


def register_graph(name: str, graph: Callable[[TopologySection], nx.Graph]) -> None:
    """Register ``topology.name = name`` for a graph built from the section, with ``topology.weights``."""
    TOPOLOGIES.add(name, lambda cfg: from_graph(name, graph(cfg), cfg.weights))


# --------------------------------------------------------------------------- weights


def _adjacency(graph: nx.Graph) -> np.ndarray:
    n = graph.number_of_nodes()
    A = np.zeros((n, n), dtype=np.uint8)
    for i, j in graph.edges:
        if i != j:
            A[i, j] = A[j, i] = 1
    return A


def _fill_diagonal(W: np.ndarray) -> np.ndarray:
    # Computed as 1 − Σ off-diagonal so rows sum to 1 to rounding whatever the weights.
    np.fill_diagonal(W, 0.0)
    np.fill_diagonal(W, 1.0 - W.sum(axis=1))
    return W


def metropolis_hastings(graph: nx.Graph) -> np.ndarray:
    """Metropolis–Hastings weights, docs/design.md §2: w_ij = 1/(1 + max(d_i, d_j)) on edges, w_ii = 1 − Σ_j w_ij."""
    A = _adjacency(graph)
    d = A.sum(axis=1, dtype=np.int64)
    W = A / (1.0 + np.maximum.outer(d, d))
    return _fill_diagonal(W)


def max_degree(graph: nx.Graph) -> np.ndarray:
    """Max-degree weights: w_ij = 1/(1 + d_max) on edges, w_ii = 1 − d_i/(1 + d_max)."""
    A = _adjacency(graph)
    d_max = int(A.sum(axis=1).max(initial=0))
    W = A / (1.0 + d_max)
    return _fill_diagonal(W)


def double_step(W: np.ndarray, beta: float) -> np.ndarray:
    """(1 − β)·I + β·W: the mixing matrix of the double-step-size form, Zhou & Pu 2025 eq. (7)."""
    require(0 < beta <= 1, f"config field algorithm.beta: expected 0 < beta <= 1, got {beta}")
    return (1.0 - beta) * np.eye(W.shape[0]) + beta * W


WEIGHTS: dict[str, Callable[[nx.Graph], np.ndarray]] = {
    "metropolis": metropolis_hastings,
    "max-degree": max_degree,
}


# --------------------------------------------------------------------------- validation


def graph_from_matrix(W: np.ndarray) -> nx.Graph:
    """The undirected graph of W's off-diagonal sparsity: i ~ j iff w_ij ≠ 0 or w_ji ≠ 0."""
    g = _empty(W.shape[0])
    nz = (W != 0) | (W.T != 0)
    np.fill_diagonal(nz, False)
    i, j = np.nonzero(np.triu(nz))
    g.add_edges_from(zip(i.tolist(), j.tolist(), strict=True))
    return g


def check_mixing_matrix(W: np.ndarray, graph: nx.Graph, source: str) -> None:
    """Raise :class:`UserError` unless W fits docs/design.md §2 on ``graph``.

    W must be (n, n) finite, symmetric, nonnegative, with rows and columns
    summing to 1 (tolerance :data:`TOL`), w_ij > 0 iff i ~ j or i = j, and the
    graph must be connected. ``source`` opens each message (a field or file).
    """
    n = graph.number_of_nodes()
    require(W.ndim == 2 and W.shape == (n, n),
            f"{source}: W has shape {W.shape} but the graph has {n} nodes (expected ({n}, {n}))")
    require(bool(np.all(np.isfinite(W))), f"{source}: W holds NaN or infinite entries")
    asym = float(np.max(np.abs(W - W.T), initial=0.0))
    require(asym <= TOL, f"{source}: not symmetric (max |W - W^T| = {asym:.3g})")
    if (W < 0).any():
        i, j = np.unravel_index(int(np.argmin(W)), W.shape)
        raise UserError(f"{source}: negative weight W[{i},{j}] = {W[i, j]:.3g} (expected all w_ij >= 0)")
    for axis, what in ((1, "row"), (0, "column")):
        err = np.abs(W.sum(axis=axis) - 1.0)
        k = int(np.argmax(err))
        require(err[k] <= TOL,
                f"{source}: {what} {k} sums to {W.sum(axis=axis)[k]:.12g} (expected 1 within {TOL:g}; "
                f"W must be doubly stochastic)")
    A = _adjacency(graph).astype(bool)
    np.fill_diagonal(A, True)
    bad = np.argwhere((W > 0) != A)
    if bad.size:
        i, j = (int(v) for v in bad[0])
        if i == j:
            raise UserError(f"{source}: diagonal weight W[{i},{i}] = 0 (expected w_ii > 0)")
        if A[i, j]:
            raise UserError(f"{source}: W[{i},{j}] = 0 but {i}-{j} is an edge (expected w_ij > 0 on edges)")
        raise UserError(f"{source}: W[{i},{j}] = {W[i, j]:.3g} but {i}-{j} is not an edge "
                        f"(expected w_ij = 0 off the graph)")
    check_connected(graph, source)


def check_connected(graph: nx.Graph, source: str) -> None:
    """Raise :class:`UserError` naming two components unless ``graph`` is connected."""
    n = graph.number_of_nodes()
    require(n >= 1, f"{source}: the graph has no nodes")
    if nx.is_connected(graph):
        return
    comps = sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: c[0])
    show = " and ".join(_short(c) for c in comps[:2])
    raise UserError(f"{source}: graph with n={n} is not connected ({len(comps)} components, e.g. {show})")


def _short(nodes: list[int]) -> str:
    return "{" + ", ".join(map(str, nodes[:5])) + (", ...}" if len(nodes) > 5 else "}")


def load_matrix(path: str | Path) -> np.ndarray:
    """Read W from a .npy file or a whitespace-separated text file (one row per line)."""
    p = Path(path)
    where = f"topology.matrix {p}"
    require(p.is_file(), f"{where}: file not found")
    try:
        W = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, dtype=np.float64, ndmin=2)
    except (ValueError, OSError) as exc:
        raise UserError(f"{where}: cannot read a matrix ({' '.join(str(exc).split())})") from None
    require(W.dtype.kind in "fiu", f"{where}: expected numbers, got dtype {W.dtype}")
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    require(W.ndim == 2 and W.shape[0] == W.shape[1],
            f"{where}: expected a square n x n matrix, got shape {W.shape}")
    return W


# --------------------------------------------------------------------------- config


def from_graph(name: str, graph: nx.Graph, weights: str = "metropolis") -> Topology:
    """A validated :class:`Topology` of ``graph`` with the named weight rule."""
    source = f"topology {name!r} (n={graph.number_of_nodes()})"
    check_connected(graph, source)
    require(weights in WEIGHTS,
            f"config field topology.weights: unknown name {weights!r}; expected one of {', '.join(WEIGHTS)}")
    W = WEIGHTS[weights](graph)
    check_mixing_matrix(W, graph, source)
    return Topology(name=name, graph=graph, W=W)


def build(cfg: TopologySection) -> Topology:
    """The topology a ``[topology]`` section describes (docs/design.md §2); mistakes raise :class:`UserError`."""
    builder = TOPOLOGIES.get(cfg.name)
    require(isinstance(cfg.n, int) and cfg.n >= 1,
            f"config field topology.n: expected >= 1 agents, got {cfg.n}")
    return builder(cfg)


def _custom(cfg: TopologySection) -> Topology:
    """W read from ``topology.matrix``; the graph is W's sparsity."""
    require(bool(cfg.matrix), "config field topology.matrix: a custom topology needs the path of W")
    W = load_matrix(cfg.matrix)
    source = f"topology.matrix {cfg.matrix}"
    require(W.shape[0] == cfg.n, f"{source}: W is {W.shape[0]}x{W.shape[0]} but topology.n = {cfg.n}")
    graph = graph_from_matrix(W)
    check_mixing_matrix(W, graph, source)
    return Topology(name="custom", graph=graph, W=W)


def _shape(cfg: TopologySection) -> list[int] | None:
    if not cfg.shape:
        return None
    require(len(cfg.shape) == 2, f"config field topology.shape: expected [rows, cols], got {cfg.shape}")
    return cfg.shape


register_graph("ring", lambda cfg: ring_graph(cfg.n))
register_graph("grid", lambda cfg: grid_graph(cfg.n, _shape(cfg)))
register_graph("torus", lambda cfg: torus_graph(cfg.n, _shape(cfg)))
register_graph("complete", lambda cfg: complete_graph(cfg.n))
register_graph("star", lambda cfg: star_graph(cfg.n))
register_graph("exponential", lambda cfg: exponential_graph(cfg.n))
register_graph("hypercube", lambda cfg: hypercube_graph(cfg.n))
register_graph("random", lambda cfg: random_graph(cfg.n, cfg.degree, cfg.seed))
TOPOLOGIES.add("custom", _custom)

# directed and time-varying families (they import this module, so the import comes last)
from hpcasync import topology_directed as _directed  # noqa: E402,F401
