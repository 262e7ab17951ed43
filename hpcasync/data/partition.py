"""Split a training set among n agents.

Every partitioner returns n sorted int64 index arrays that are disjoint, cover
``0..len(y)-1``, are all non-empty (else :class:`UserError`), and depend only
on (y, n, parameters, seed).
"""

from __future__ import annotations

import heapq

import numpy as np

from hpcasync.config import DataSection
from hpcasync.errors import UserError, require

_PART_STREAM = 0x70617274  # "part": independent of the other streams seeded by the run seed


def _rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _PART_STREAM, salt]))


def _check_count(y: np.ndarray, n: int, what: str) -> None:
    require(n >= 1, f"data.partition {what}: expected >= 1 agents, got {n}")
    require(len(y) >= n,
            f"data.partition {what}: {len(y)} training samples cannot give each of {n} agents at least one")


def _finish(parts: list[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid(y: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Uniformly random split into n parts whose sizes differ by at most one."""
    _check_count(y, n, "iid")
    return _finish(np.array_split(_rng(seed, 0).permutation(len(y)), n))


def heterogeneity(y: np.ndarray, n: int, rho: float, seed: int) -> list[np.ndarray]:
    """Zhou & Pu 2025 §4 / App. B: a fraction ρ of each agent's data is label-sorted, the rest uniform.

    A random ρ-fraction of the samples is sorted by label (ties in random
    order) and cut into n contiguous parts; the remaining samples are split
    i.i.d. Agent i gets sorted part i plus uniform part i. ρ = 1 is fully
    label-partitioned, ρ = 0 is :func:`iid`. For regression targets the sort
    is by value, which skews each agent towards a range of targets.
    """
    _check_count(y, n, "heterogeneity")
    require(0.0 <= rho <= 1.0, f"config field data.rho: expected 0 <= rho <= 1, got {rho}")
    perm = _rng(seed, 1).permutation(len(y))
    k = int(round(rho * len(y)))
    skewed = perm[:k][np.argsort(y[perm[:k]], kind="stable")]
    sorted_parts = np.array_split(skewed, n)
    # Reversed so the agents that got one extra sorted sample get the smaller
    # uniform parts: sizes stay within one of each other, and none is empty.
    uniform_parts = np.array_split(perm[k:], n)[::-1]
    return _finish([np.concatenate([s, u]) for s, u in zip(sorted_parts, uniform_parts, strict=True)])


def _shard_counts(class_sizes: np.ndarray, total: int) -> np.ndarray:
    """Shards per class: one each, then greedily to the class with the largest shards."""
    counts = np.ones(len(class_sizes), dtype=np.int64)
    heap = [(-size / 1.0, c) for c, size in enumerate(class_sizes)]
    heapq.heapify(heap)
    for _ in range(total - len(class_sizes)):
        _, c = heapq.heappop(heap)
        counts[c] += 1
        heapq.heappush(heap, (-class_sizes[c] / counts[c], c))
    return counts


def k_classes(y: np.ndarray, n: int, k: int, seed: int) -> list[np.ndarray]:
    """Xiong et al. 2023 App. C (after McMahan et al.): every agent holds data of at most k classes.

    Shards method: the data sorted by label is cut into n·k shards and every
    agent gets k random shards. Shards here never straddle a class boundary
    (each class is cut into a number of shards proportional to its size), so
    "at most k classes" holds exactly; shard sizes differ by class size.
    """
    _check_count(y, n, "k-classes")
    require(k >= 1, f"config field data.classes_per_agent: expected >= 1, got {k}")
    classes, inverse = np.unique(y, return_inverse=True)
    require(k <= len(classes),
            f"config field data.classes_per_agent: expected at most the {len(classes)} classes of the data, got {k}")
    n_shards = n * k
    require(n_shards >= len(classes),
            f"config field data.classes_per_agent: {n} agents x {k} classes = {n_shards} shards "
            f"cannot cover the {len(classes)} classes of the data; raise classes_per_agent")
    require(len(y) >= n_shards,
            f"config field data.classes_per_agent: {len(y)} training samples cannot fill "
            f"{n} agents x {k} non-empty shards")
    rng = _rng(seed, 2)
    sizes = np.bincount(inverse, minlength=len(classes))
    counts = _shard_counts(sizes, n_shards)
    shards: list[np.ndarray] = []
    for c in range(len(classes)):
        shards.extend(np.array_split(rng.permutation(np.flatnonzero(inverse == c)), counts[c]))
    order = rng.permutation(n_shards)
    return _finish([np.concatenate([shards[s] for s in order[i * k:(i + 1) * k]]) for i in range(n)])


def dirichlet(y: np.ndarray, n: int, a: float, seed: int) -> list[np.ndarray]:
    """Per class c, agent shares q_c ~ Dirichlet(a·1_n); class c's samples are cut by q_c.

    Small a concentrates each class on few agents. An agent left empty takes
    one sample from the currently largest agent (deterministically), so every
    agent holds data whenever len(y) >= n.
    """
    _check_count(y, n, "dirichlet")
    require(a > 0, f"config field data.dirichlet_alpha: expected > 0, got {a}")
    rng = _rng(seed, 3)
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        q = rng.dirichlet(np.full(n, a))
        cuts = np.round(np.cumsum(q)[:-1] * len(members)).astype(np.int64)
        for i, chunk in enumerate(np.split(members, cuts)):
            parts[i].append(chunk)
    out = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]
    for i in range(n):
        if len(out[i]) == 0:
            donor = int(np.argmax([len(p) for p in out]))
            out[i], out[donor] = out[donor][-1:], out[donor][:-1]
    return _finish(out)


def replicated(y: np.ndarray, n: int) -> list[np.ndarray]:
    """Every agent holds the whole training set (the exception to "disjoint"): Mishchenko et al.'s (2022)
    workers all sample minibatches from the same data, as a parameter server's workers do."""
    require(len(y) >= 1, "data.partition replicated: the training set is empty")
    return [np.arange(len(y), dtype=np.int64) for _ in range(n)]


def partition(cfg: DataSection, y: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Dispatch on ``cfg.partition``.

    Regression targets (float y) support ``iid`` and ``heterogeneity`` (sorted
    by target value); class-based schemes raise :class:`UserError`.
    """
    regression = not np.issubdtype(np.asarray(y).dtype, np.integer)
    if cfg.partition == "iid":
        return iid(y, n, seed)
    if cfg.partition == "heterogeneity":
        return heterogeneity(y, n, cfg.rho, seed)
    if cfg.partition == "replicated":
        return replicated(y, n)
    if cfg.partition in ("k-classes", "dirichlet") and regression:
        raise UserError(f"config field data.partition: {cfg.partition!r} needs class labels but "
                        f"data.name {cfg.name!r} is regression data; use 'iid' or 'heterogeneity'")
    if cfg.partition == "k-classes":
        return k_classes(y, n, cfg.classes_per_agent, seed)
    if cfg.partition == "dirichlet":
        return dirichlet(y, n, cfg.dirichlet_alpha, seed)
    raise UserError(f"config field data.partition: unknown name {cfg.partition!r}; "
                    "expected one of iid, heterogeneity, k-classes, dirichlet")
