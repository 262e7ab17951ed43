"""Prague: local SGD steps and Partial All-Reduce in random, non-overlapping groups (Luo et al. 2020).

Worker i, with a group size G (``algorithm.group_size``, default 3)::

    loop: x_i ← x_i − α·∇f_i(x_i; ξ_i)
          ask the group generator for a group S ∋ i, |S| ≤ G      (hpcasync/group_generator.py)
          wait until every member of S has asked
          x_i ← (1/|S|)·Σ_{j∈S} x_j                              (Partial All-Reduce, §4)

The group generator drafts the leader's random choice of workers that are in
no pending group, so a worker is in at most one group at a time and no P-Reduce
waits behind another (§5's conflicts cannot happen). Each P-Reduce keeps the sum
of the models, and every member leaves it with the same model. Groups are drawn
from all workers, whatever the topology: Prague assumes every worker can reach
every other (a cluster), as in Xiong et al.'s experiments, where "workers are
randomly selected for parameter averaging" (2023, §5). A member waits for the
slowest member of its group: the straggler sensitivity Xiong et al. attribute to
it (App. A). Messages: each member sends its model to the |S| − 1 others.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcasync.algorithms.base import AgentSetup, Algorithm, register
from hpcasync.algorithms.transport import OpGenerator, Transport
from hpcasync.errors import UserError
from hpcasync.kernels import axpy


@register
class Prague(Algorithm):
    name = "prague"
    payload = "none"
    requires = frozenset({"group_average"})
    directed_ok = True  # groups ignore the topology
    needs_lossless = True
    mixes_stale_copies = False
    staleness_note = "averages the current models of its group (partial all-reduce)"
    memory_models = "group_size + 1"
    #: ``order``: the permutation of the pending request; ``phase``: the op the loop is suspended at
    #: ("gradient" or "group"), so a resumed run re-enters there with the same request
    checkpoint_state = (*Algorithm.checkpoint_state, "rng", "order", "phase")

    def __init__(self, setup: AgentSetup) -> None:
        super().__init__(setup)
        self.size = self.group_size_of(setup.section)
        # each worker's own stream of group choices (as AD-PSGD's peer choices)
        self.rng = np.random.default_rng([setup.n, setup.rank, 0x9A6E])
        self.group_sizes: list[int] = []  # |S| of every P-Reduce (tests, reports)
        self.order = np.arange(setup.n)
        self.phase = "gradient"

    @staticmethod
    def group_size_of(section: Any) -> int:
        size = getattr(section, "group_size", 3) if section is not None else 3
        if not isinstance(size, int) or isinstance(size, bool) or size < 2:
            raise UserError(f"config field algorithm.group_size: expected an integer >= 2 (workers per group), "
                            f"got {size!r}")
        return size

    def run(self, t: Transport) -> OpGenerator:
        while True:
            if self.phase == "gradient":
                g = yield from t.gradient(self.x)
                axpy(self.x, -self.alpha(), g)
                self.iteration += 1
                self.order = self.rng.permutation(t.n)
                self.phase = "group"
            members = yield from t.group_average(self.x, self.order, self.size)
            self.group_sizes.append(len(members))
            self.phase = "gradient"
