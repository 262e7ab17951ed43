"""Prague's group generator and Partial All-Reduce in the simulator, a mixin of
:class:`~hpcasync.engines.sim.engine.Simulator` (op ``GroupAverage``).

A group is formed when its leader asks (hpcasync/group_generator.py) and done when
every member has asked and its model has travelled to the others: at the latest
arrival, max over members of (ask time + one sample of its communication delay).
Every member then gets the mean, summed in member order (the same bits for all).
A leader that finds nobody free goes on alone at once. ``group_log`` records
(formed, done, members) of every group of two or more, for tests and reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcasync.algorithms.transport import GroupAverage
from hpcasync.engines.sim.events import GROUP
from hpcasync.group_generator import draft


@dataclass
class Group:
    members: list[int]
    formed: float
    joined: dict[int, tuple[float, np.ndarray]] = field(default_factory=dict)


class GroupOps:
    """The handlers; ``transports``, ``delays``, ``now``, ``n`` and ``_push``/``_block``/``_wake`` are the
    Simulator's."""

    transports: list[Any]
    delays: Any
    now: float
    n: int

    if TYPE_CHECKING:
        def _push(self, t: float, kind: int, a: int, b: Any) -> None: ...

        def _block(self, i: int) -> None: ...

        def _wake(self, i: int, t: float, value: Any) -> None: ...

    def _init_groups(self) -> None:
        self._group_of: list[Group | None] = [None] * self.n
        self.group_log: list[tuple[float, float, tuple[int, ...]]] = []

    def _group_request(self, i: int, op: GroupAverage) -> None:
        self._block(i)
        group = self._group_of[i]
        if group is None:
            free = self._group_of

            def take(j: int) -> bool:
                return free[j] is None

            members = draft(op.order, i, op.size, take)
            if len(members) == 1:  # nobody free: go on alone, nothing to average (as on MPI)
                self._wake(i, self.now, (i,))
                return
            group = Group(members, self.now)
            for j in members:
                self._group_of[j] = group
        size = len(group.members)
        tr = self.transports[i]
        tr.bytes_sent += (size - 1) * op.v.nbytes
        tr.messages_sent += size - 1
        group.joined[i] = (self.now + self.delays.comm(i), op.v)
        if len(group.joined) == size:
            self._push(max(t for t, _ in group.joined.values()), GROUP, group.members[0], group)

    def _finish_group(self, group: Group) -> None:
        """Every member's model has arrived everywhere: all of them leave with the mean."""
        models = [group.joined[j][1] for j in group.members]
        mean = models[0].copy()
        for v in models[1:]:
            mean += v
        mean /= len(models)
        members = tuple(group.members)
        self.group_log.append((group.formed, self.now, members))
        for j in members:
            np.copyto(group.joined[j][1], mean)
            self._group_of[j] = None
            self._wake(j, self.now, members)
