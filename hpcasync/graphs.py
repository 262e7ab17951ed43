"""The graph families of ``topology.name`` (docs/design.md §2): undirected networkx graphs on nodes
``0..n-1``. :mod:`hpcasync.topology` registers each one and builds its mixing matrix."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from hpcasync.errors import UserError, require

#: seeds tried by :func:`random_graph` before giving up on connectivity
RANDOM_TRIES = 100


def _empty(n: int) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(n))
    return g


def ring_graph(n: int) -> nx.Graph:
    """Cycle i ~ i±1 mod n (n = 1: one node, n = 2: one edge)."""
    g = _empty(n)
    if n >= 2:
        g.add_edges_from((i, (i + 1) % n) for i in range(n))
    return g


def default_shape(n: int) -> tuple[int, int]:
    """As square as possible: rows = the largest divisor of n that is ≤ √n."""
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def _lattice(n: int, shape: tuple[int, int] | list[int] | None, periodic: bool) -> nx.Graph:
    rows, cols = default_shape(n) if not shape else (int(shape[0]), int(shape[1]))
    require(rows * cols == n,
            f"config field topology.shape: {rows}x{cols} grid has {rows * cols} nodes but topology.n = {n}")
    g = _empty(n)
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if c + 1 < cols:
                g.add_edge(i, i + 1)
            elif periodic and cols > 2:  # cols ≤ 2: the wrap edge is already there or a self-loop
                g.add_edge(i, r * cols)
            if r + 1 < rows:
                g.add_edge(i, i + cols)
            elif periodic and rows > 2:
                g.add_edge(i, c)
    return g


def grid_graph(n: int, shape: tuple[int, int] | list[int] | None = None) -> nx.Graph:
    """2-D rows×cols grid, node r·cols + c (Zhou & Pu 2025 uses 3×3)."""
    return _lattice(n, shape, periodic=False)


def torus_graph(n: int, shape: tuple[int, int] | list[int] | None = None) -> nx.Graph:
    """2-D grid with wrap-around edges (no wrap along a side of length ≤ 2)."""
    return _lattice(n, shape, periodic=True)


def complete_graph(n: int) -> nx.Graph:
    g = _empty(n)
    g.add_edges_from((i, j) for i in range(n) for j in range(i + 1, n))
    return g


def star_graph(n: int) -> nx.Graph:
    """Hub 0 joined to 1..n−1."""
    g = _empty(n)
    g.add_edges_from((0, j) for j in range(1, n))
    return g


def exponential_graph(n: int) -> nx.Graph:
    """i ~ (i ± 2^k) mod n for every 2^k < n, undirected (the SGP/BlueFog exponential graph)."""
    g = _empty(n)
    k = 1
    while k < n:
        for i in range(n):
            j = (i + k) % n
            if j != i:
                g.add_edge(i, j)
        k *= 2
    return g


def hypercube_graph(n: int) -> nx.Graph:
    """i ~ i XOR 2^b: the log2(n)-dimensional hypercube; n must be a power of 2."""
    require(n >= 1 and n & (n - 1) == 0,
            f"config field topology.n: a hypercube needs a power of 2 agents, got {n} "
            f"(nearest: {1 << max(0, (n.bit_length() - 1))} or {1 << n.bit_length()})")
    g = _empty(n)
    for b in range(n.bit_length() - 1):
        g.add_edges_from((i, i ^ (1 << b)) for i in range(n) if i < i ^ (1 << b))
    return g


def random_graph(n: int, degree: float = 3, seed: int = 0, tries: int = RANDOM_TRIES) -> nx.Graph:
    """Connected Erdős–Rényi G(n, p) with p = degree/(n−1), i.e. expected degree ``degree`` (Xiong et al. 2023).

    Draw k = 0, 1, … uses the seed sequence (seed, k); the first connected draw
    is returned, so a given seed always gives the same graph.
    """
    require(degree > 0, f"config field topology.degree: expected an expected degree > 0, got {degree}")
    if n == 1:
        return _empty(1)
    p = min(1.0, degree / (n - 1))
    iu = np.triu_indices(n, 1)
    for k in range(tries):
        rng = np.random.default_rng([seed, k])
        keep = rng.random(iu[0].size) < p
        g = _empty(n)
        g.add_edges_from(zip(iu[0][keep].tolist(), iu[1][keep].tolist(), strict=True))
        if nx.is_connected(g):
            return g
    raise UserError(f"topology: graph 'random' with n={n} is not connected in {tries} draws "
                    f"(topology.seed={seed}, topology.degree={degree}); raise topology.degree "
                    f"(about ln n = {math.log(n):.1f} or more)")


#: topology builders by ``topology.name``: ``(section) -> Topology`` (registered at the end of this module)
