"""``hpcasync check CONFIG``: validate a config, its graph and its data without running anything."""

from __future__ import annotations

import argparse

from hpcasync import problems
from hpcasync.cli.common import add_config_args, load_config
from hpcasync.engines.build import build_topology


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="validate a config (fields, graph, weights, data)", description=__doc__)
    add_config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    topology = build_topology(cfg)
    problem = problems.build(cfg, topology.n)
    print(f"{args.config}: ok — {cfg.algorithm.name} on {cfg.topology.name} (n={topology.n}, "
          f"spectral gap {topology.spectral_gap():.4f}), {cfg.problem.name} on {cfg.data.name} "
          f"(d={problem.dim}), delays {cfg.delays.model}")
    return 0
