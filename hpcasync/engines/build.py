"""Turn a config into the pieces both engines share: topology, problem, agents."""

from __future__ import annotations

import networkx as nx
import numpy as np

from hpcasync import topology as topo
from hpcasync.algorithms import base
from hpcasync.algorithms.base import AgentSetup, Algorithm, StepSize
from hpcasync.config import Config
from hpcasync.errors import UserError, require
from hpcasync.topology import Topology


def check_supported(cls: type[Algorithm], features: frozenset[str] | set[str], engine: str, name: str) -> None:
    """Refuse an algorithm that needs a transport feature the engine lacks (one-line UserError)."""
    missing = sorted(set(cls.requires) - set(features))
    if missing:
        raise UserError(f"config field algorithm.name: algorithm {name!r} needs transport feature(s) "
                        f"{', '.join(missing)}, which the {engine} engine does not provide")


def build_topology(cfg: Config) -> Topology:
    t = topo.build(cfg.topology)
    algo = base.get(cfg.algorithm.name)
    if t.directed and not algo.directed_ok:
        ok = ", ".join(n for n in base.names() if base.get(n).directed_ok)
        raise UserError(f"config field topology.name: topology {cfg.topology.name!r} is directed; algorithm "
                        f"{cfg.algorithm.name!r} needs an undirected graph (directed topologies run {ok})")
    if algo.needs_bipartite:
        require(t.is_bipartite(),
                f"algorithm {cfg.algorithm.name}: needs a bipartite graph; topology {cfg.topology.name!r} "
                f"with n={t.n} is not bipartite (use a ring with even n, a grid or a hypercube)")
    require(not (algo.needs_lossless and cfg.delays.drop > 0),
            f"config field delays.drop: algorithm {cfg.algorithm.name} needs every message delivered "
            f"(a lost gradient or edge announcement stalls it); got drop = {cfg.delays.drop}")
    return t


def step_size(cfg: Config, n: int) -> StepSize:
    """α_k = α·decay^k, with α as the algorithm scales it (``Algorithm.effective_alpha``: RFAST's α/n)."""
    alpha = base.get(cfg.algorithm.name).effective_alpha(cfg.algorithm.alpha, n, cfg.algorithm)
    return StepSize(alpha, cfg.algorithm.decay if cfg.algorithm.schedule == "exponential" else 1.0)


def active_side(topology: Topology, rank: int) -> bool:
    """AD-PSGD's roles: agents coloured 0 in a 2-colouring of a bipartite graph are active."""
    if topology.n == 1 or not topology.is_bipartite():
        return True
    return nx.bipartite.color(topology.graph)[rank] == 0


def build_agent(cfg: Config, topology: Topology, rank: int, x0: np.ndarray) -> Algorithm:
    cls = base.get(cfg.algorithm.name)
    setup = AgentSetup(
        rank=rank, n=topology.n, x0=x0, weights=topology.weights(rank),
        out_weights=topology.out_weights(rank), step=step_size(cfg, topology.n), beta=cfg.algorithm.beta,
        active=active_side(topology, rank) if cls.needs_bipartite else True,
        mixing=topology.mixing_period(), section=cfg.algorithm,
        max_staleness=cfg.algorithm.max_staleness,
    )
    return cls(setup)
