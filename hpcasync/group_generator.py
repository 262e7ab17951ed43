"""Prague's group generator (Luo et al. 2020 §5), the policy both engines apply.

A worker that finished its local update asks for a group. If another worker has
already drafted it into a pending group, it joins that group. Otherwise it becomes
the group's leader and drafts, in the order of its own random permutation of the
workers, the first ``size`` − 1 workers that are in no pending group. A worker
belongs to at most one pending group, so groups never overlap: Prague's conflict
avoidance taken to its strict form (its Group Buffer and Group Division serialise
or prevent conflicting groups; here a conflicting group is never formed). A group's
Partial All-Reduce runs once every member has asked, so a member waits for the
slowest of its group, never for anyone else (Xiong et al. 2023, App. A: "it has to
wait all members in the corresponding group to complete their local updates").
With no free worker left the leader's group is itself alone: it goes on without
averaging instead of waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["draft"]


def draft(order: Iterable[int], leader: int, size: int, take: Callable[[int], bool]) -> list[int]:
    """The sorted members of ``leader``'s new group: the leader and the first ``size`` − 1 workers of
    ``order`` for which ``take(j)`` succeeds (``take`` claims j if it is free: a plain check in the
    simulator, a compare-and-swap of j's word on MPI, where another leader may win the race)."""
    members = [leader]
    for j in order:
        if len(members) >= size:
            break
        j = int(j)
        if j != leader and take(j):
            members.append(j)
    return sorted(members)
