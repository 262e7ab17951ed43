"""Directed and time-varying communication graphs for the push-sum family (docs/algorithms.md §7).

A :class:`DirectedTopology` is a period of column-stochastic mixing matrices
P(0), …, P(L−1) (L = 1: a static directed graph), used in round k as
P(k mod L). p_ij > 0 means agent j pushes the share p_ij of its (w, φ) to
agent i; column j sums to 1 (the sender splits all its mass, keeping p_jj).
Push-sum needs no row sums (Assran, Aytekin, Feyzmahdavian, Johansson &
Rabbat 2020, §4.3), only column stochasticity and that the union of the
period's graphs is strongly connected (Assran, Loizou, Ballas & Rabbat 2019,
§3, the "B-strongly connected" assumption with B = L).

Families (``topology.name``):

* ``time-varying-exponential``: the SGP paper's default (Assran et al. 2019 §6):
  in round k every agent i pushes half of its mass to the one peer
  (i + 2^(k mod L)) mod n, L = ⌈log2 n⌉ hops 1, 2, 4, … < n, and keeps half.
* ``directed-exponential``: static, i → (i + 2^m) mod n for every 2^m < n, the
  mass split evenly over the out-neighbours and i itself.
* ``directed-ring``: i → i + 1 mod n, halves.
* ``directed-random``: each arc i → j (j ≠ i) with probability degree/(n − 1),
  redrawn (seed sequence (seed, k)) until strongly connected; uniform
  out-weights 1/(out-degree + 1), so P is column- but not row-stochastic.
* ``directed-custom``: P read from ``topology.matrix`` (column stochastic).

``graph`` (what reports and undirected code read) is the undirected graph
underlying the union; ``W`` is the mean of the period (column stochastic).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import networkx as nx
import numpy as np

from hpcasync.config import TopologySection
from hpcasync.errors import UserError, require
from hpcasync.graphs import RANDOM_TRIES
from hpcasync.topology import TOL, TOPOLOGIES, Topology, load_matrix


@dataclass(frozen=True, eq=False)
class DirectedTopology(Topology):
    """A period of column-stochastic mixing matrices (see the module docstring)."""

    directed: ClassVar[bool] = True
    period: tuple[np.ndarray, ...] = field(default_factory=tuple)
    arcs: nx.DiGraph = field(default_factory=nx.DiGraph)

    def __post_init__(self) -> None:
        super().__post_init__()
        frozen = []
        for P in self.period:
            P = np.array(P, dtype=np.float64)
            P.setflags(write=False)
            frozen.append(P)
        object.__setattr__(self, "period", tuple(frozen))

    def in_neighbors(self, i: int) -> list[int]:
        """Agents that push to i in some round of the period, sorted."""
        return sorted(j for j in self.arcs.predecessors(i) if j != i)

    def out_neighbors(self, i: int) -> list[int]:
        """Agents i pushes to in some round of the period, sorted."""
        return sorted(j for j in self.arcs.successors(i) if j != i)

    def mixing_period(self) -> tuple[np.ndarray, ...]:
        return self.period

    def directed_graph(self) -> nx.DiGraph:
        return self.arcs


# --------------------------------------------------------------------------- checks


def check_column_stochastic(P: np.ndarray, source: str) -> None:
    """Raise :class:`UserError` unless P is square, finite, nonnegative, with p_ii > 0 and columns summing to 1."""
    require(P.ndim == 2 and P.shape[0] == P.shape[1], f"{source}: expected a square matrix, got shape {P.shape}")
    require(bool(np.all(np.isfinite(P))), f"{source}: P holds NaN or infinite entries")
    if (P < 0).any():
        i, j = np.unravel_index(int(np.argmin(P)), P.shape)
        raise UserError(f"{source}: negative weight P[{i},{j}] = {P[i, j]:.3g} (expected all p_ij >= 0)")
    err = np.abs(P.sum(axis=0) - 1.0)
    k = int(np.argmax(err))
    require(err[k] <= TOL, f"{source}: column {k} sums to {P.sum(axis=0)[k]:.12g} (expected 1 within {TOL:g}; "
                           f"push-sum needs a column-stochastic P)")
    diag = np.diag(P)
    k = int(np.argmin(diag))
    require(diag[k] > 0, f"{source}: diagonal weight P[{k},{k}] = 0 (expected p_ii > 0: a sender keeps a share)")


def union_arcs(period: Sequence[np.ndarray]) -> nx.DiGraph:
    """Arc j → i wherever p_ij > 0 (i ≠ j) in some matrix of the period."""
    n = period[0].shape[0]
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    nz = np.zeros((n, n), dtype=bool)
    for P in period:
        nz |= P > 0
    np.fill_diagonal(nz, False)
    i, j = np.nonzero(nz)
    g.add_edges_from(zip(j.tolist(), i.tolist(), strict=True))
    return g


def check_strongly_connected(arcs: nx.DiGraph, source: str) -> None:
    """Raise :class:`UserError` unless every agent reaches every other along the period's arcs."""
    n = arcs.number_of_nodes()
    require(n >= 1, f"{source}: the graph has no nodes")
    if nx.is_strongly_connected(arcs):
        return
    comps = sorted((sorted(c) for c in nx.strongly_connected_components(arcs)), key=lambda c: c[0])
    a, b = comps[0][0], comps[1][0]
    which = (a, b) if not nx.has_path(arcs, a, b) else (b, a)
    raise UserError(f"{source}: the union over a period is not strongly connected ({len(comps)} strongly "
                    f"connected components; no directed path from {which[0]} to {which[1]})")


def from_period(name: str, period: Sequence[np.ndarray], source: str | None = None) -> DirectedTopology:
    """A validated :class:`DirectedTopology` of ``period`` (every matrix checked, the union strongly connected)."""
    mats = [np.asarray(P, dtype=np.float64) for P in period]
    require(len(mats) >= 1, f"topology {name!r}: empty period")
    n = mats[0].shape[0]
    where = source or f"topology {name!r} (n={n})"
    for k, P in enumerate(mats):
        require(P.shape == (n, n), f"{where}: P({k}) has shape {P.shape}, expected ({n}, {n})")
        check_column_stochastic(P, where if len(mats) == 1 else f"{where} round {k}")
    arcs = union_arcs(mats)
    check_strongly_connected(arcs, where)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(arcs.edges)
    W = np.mean(mats, axis=0)
    return DirectedTopology(name=name, graph=graph, W=W, period=tuple(mats), arcs=arcs)


# --------------------------------------------------------------------------- families


def hops(n: int) -> list[int]:
    """1, 2, 4, … < n: the exponential graph's hop lengths (none for n = 1)."""
    return [1 << m for m in range(max(1, math.ceil(math.log2(n))))] if n > 1 else []


def _push_matrix(n: int, targets: Callable[[int], list[int]]) -> np.ndarray:
    """Column i: an even split of i's mass over itself and ``targets(i)``."""
    P = np.zeros((n, n))
    for i in range(n):
        out = sorted(set(targets(i)) - {i})
        share = 1.0 / (len(out) + 1)
        P[i, i] = 1.0 - share * len(out)  # the remainder: the column sums to 1 to rounding
        for j in out:
            P[j, i] = share
    return P


def time_varying_exponential(n: int) -> list[np.ndarray]:
    """P(k): i → (i + 2^k) mod n with weight 1/2, i keeps 1/2 (Assran et al. 2019 §6)."""
    if n == 1:
        return [np.ones((1, 1))]
    return [_push_matrix(n, lambda i, h=h: [(i + h) % n]) for h in hops(n)]


def directed_exponential(n: int) -> list[np.ndarray]:
    return [_push_matrix(n, lambda i: [(i + h) % n for h in hops(n)])]


def directed_ring(n: int) -> list[np.ndarray]:
    return [_push_matrix(n, lambda i: [(i + 1) % n] if n > 1 else [])]


def directed_random(n: int, degree: float, seed: int, tries: int = RANDOM_TRIES) -> list[np.ndarray]:
    """Arcs i → j with probability degree/(n − 1), the first strongly connected draw of seeds (seed, k)."""
    require(degree > 0, f"config field topology.degree: expected an expected out-degree > 0, got {degree}")
    if n == 1:
        return [np.ones((1, 1))]
    p = min(1.0, degree / (n - 1))
    for k in range(tries):
        rng = np.random.default_rng([seed, k, 0xD1])
        A = rng.random((n, n)) < p
        np.fill_diagonal(A, False)
        P = _push_matrix(n, lambda i, A=A: np.flatnonzero(A[i]).tolist())
        if nx.is_strongly_connected(union_arcs([P])):
            return [P]
    raise UserError(f"topology: graph 'directed-random' with n={n} is not strongly connected in {tries} draws "
                    f"(topology.seed={seed}, topology.degree={degree}); raise topology.degree")


def _custom(cfg: TopologySection) -> DirectedTopology:
    require(bool(cfg.matrix), "config field topology.matrix: a directed-custom topology needs the path of P")
    P = load_matrix(cfg.matrix)
    source = f"topology.matrix {cfg.matrix}"
    require(P.shape[0] == cfg.n, f"{source}: P is {P.shape[0]}x{P.shape[0]} but topology.n = {cfg.n}")
    return from_period("directed-custom", [P], source)


def register_period(name: str, period: Callable[[TopologySection], list[np.ndarray]]) -> None:
    """Register ``topology.name = name`` for a period of matrices built from the section."""
    TOPOLOGIES.add(name, lambda cfg: from_period(name, period(cfg)))


register_period("time-varying-exponential", lambda cfg: time_varying_exponential(cfg.n))
register_period("directed-exponential", lambda cfg: directed_exponential(cfg.n))
register_period("directed-ring", lambda cfg: directed_ring(cfg.n))
register_period("directed-random", lambda cfg: directed_random(cfg.n, cfg.degree, cfg.seed))
TOPOLOGIES.add("directed-custom", _custom)
