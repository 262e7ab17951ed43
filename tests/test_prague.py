"""Prague (Luo et al. 2020) in the simulator: groups never overlap, a Partial All-Reduce keeps the sum of the
models and leaves its members equal, the group generator drafts only free workers, and a run never stalls."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hpcasync.engines.sim.groups import GroupOps
from hpcasync.engines.sim.runner import build_simulator
from hpcasync.errors import UserError
from hpcasync.group_generator import draft
from tests.conftest import make_config


def run(**sections: dict[str, Any]) -> Any:
    sim = build_simulator(make_config(**sections))
    sim.run()
    return sim


def _overlaps(log: list[tuple[float, float, tuple[int, ...]]]) -> list[tuple[int, Any, Any]]:
    """(agent, group, group) for every two groups of one agent whose lifetimes [formed, done] overlap."""
    bad = []
    per_agent: dict[int, list[tuple[float, float, tuple[int, ...]]]] = {}
    for entry in log:
        for j in entry[2]:
            per_agent.setdefault(j, []).append(entry)
    for j, groups in per_agent.items():
        groups.sort()
        bad += [(j, a, b) for a, b in zip(groups, groups[1:], strict=False) if b[0] < a[1]]
    return bad


@pytest.mark.parametrize("seed", range(8))
def test_groups_never_overlap(seed: int) -> None:
    """Random graphs of 4–33 agents, group sizes 2–5, random or fixed stragglers: no agent is ever in two
    groups at once, no group is larger than G, and every agent keeps averaging."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([4, 9, 16, 33]))
    size = int(rng.integers(2, 6))
    delays = ({"model": "random-stragglers", "p": 0.1, "s": 10.0} if seed % 2 else
              {"model": "case", "case": int(rng.choice([2, 3, 5])), "straggler": int(rng.integers(n))})
    sim = run(algorithm={"name": "prague", "alpha": 0.05, "group_size": size},
              topology={"name": "random", "n": n, "degree": 3, "seed": seed, "shape": []},
              delays=delays, budget={"time": 80.0}, eval={"interval": 80.0})
    log = sim.group_log
    assert len(log) > n
    assert _overlaps(log) == []
    assert all(1 < len(m) <= size and list(m) == sorted(set(m)) for _, _, m in log)
    assert all(f <= d for f, d, _ in log)
    assert sim.now >= 80.0
    assert min(len(a.group_sizes) for a in sim.agents) >= 1
    # what agents counted is what the generator logged (groups of one average nothing and are not logged;
    # the groups still under way at the budget complete afterwards, with no agent running any more)
    counted = sum(sum(k > 1 for k in a.group_sizes) for a in sim.agents)
    assert counted == sum(len(m) for _, done, m in log if done <= 80.0)


def test_a_partial_all_reduce_keeps_the_sum_and_leaves_its_members_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = []
    finish = GroupOps._finish_group

    def checking(self: Any, group: Any) -> None:
        models = [group.joined[j][1] for j in group.members]
        before = np.sum(models, axis=0)
        finish(self, group)
        after = [group.joined[j][1] for j in group.members]
        assert all(np.array_equal(after[0], v) for v in after[1:])  # the same bits at every member
        np.testing.assert_allclose(np.sum(after, axis=0), before, rtol=1e-12, atol=1e-12)
        checked.append(len(models))

    monkeypatch.setattr(GroupOps, "_finish_group", checking)
    run(algorithm={"name": "prague", "alpha": 0.05, "group_size": 4}, delays={"model": "case", "case": 3},
        budget={"time": 40.0}, eval={"interval": 40.0})
    assert len(checked) >= 10 and max(checked) == 4


def test_zero_delays_full_groups_in_lockstep() -> None:
    """Unit computation and instant links on 9 agents with G = 3: every round forms three full groups, so
    every agent updates once per time unit and averages in a group of 3 every time."""
    sim = run(algorithm={"name": "prague", "alpha": 0.05, "group_size": 3}, delays={"model": "none"},
              budget={"time": 30.0}, eval={"interval": 30.0})
    assert [a.iteration for a in sim.agents] == [30] * 9
    assert all(set(a.group_sizes) == {3} for a in sim.agents)
    assert len(sim.group_log) == 30 * 3
    assert sim.evaluations[-1]["train_loss"] < 0.9 * sim.evaluations[0]["train_loss"]


def test_draft_takes_the_first_free_workers_of_the_order() -> None:
    free = {0, 2, 3, 5, 7}
    taken: list[int] = []

    def take(j: int) -> bool:
        if j in free:
            taken.append(j)
            return True
        return False

    assert draft([6, 1, 5, 3, 2, 7], 4, 3, take) == [3, 4, 5]
    assert taken == [5, 3]  # stops once the group is full
    assert draft([4, 1], 4, 3, lambda j: False) == [4]  # nobody free: the leader alone


def test_runs_are_deterministic() -> None:
    kw: dict[str, Any] = {"algorithm": {"name": "prague", "alpha": 0.05}, "delays": {"model": "case", "case": 5},
                          "budget": {"time": 30.0}, "eval": {"interval": 30.0}}
    a, b = run(**kw), run(**kw)
    assert a.group_log == b.group_log
    assert all(np.array_equal(x.x, y.x) for x, y in zip(a.agents, b.agents, strict=True))


@pytest.mark.parametrize("bad", [1, 0, 2.5, True])
def test_group_size_must_be_an_integer_of_at_least_two(bad: Any) -> None:
    with pytest.raises(UserError, match="algorithm.group_size"):
        build_simulator(make_config(algorithm={"name": "prague", "group_size": bad}))
