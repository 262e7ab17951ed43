"""Checks of parameter-server runs shared by the simulator and MPI tests (async-sgd, hogwild)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcasync.data.synthetic import least_squares_uniform

#: a small deterministic least squares: full-batch gradients (batch >= samples), every worker holds all rows
LSQ_SAMPLES, LSQ_DIM = 100, 4


def lsq_smoothness() -> float:
    A = least_squares_uniform(LSQ_SAMPLES, LSQ_DIM, 0.0, 0).X_train
    return float(np.linalg.eigvalsh(A.T @ A / len(A))[-1])


def lsq_sections(n: int, **changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw: dict[str, dict[str, Any]] = {
        "algorithm": {"name": "async-sgd", "alpha": 0.5, "batch_size": LSQ_SAMPLES},
        "topology": {"name": "complete" if n > 1 else "ring", "n": n},
        "data": {"name": "least-squares-uniform", "samples": LSQ_SAMPLES, "dim": LSQ_DIM, "noise": 0.0,
                 "partition": "replicated"},
        "problem": {"name": "least-squares"},
        "delays": {"model": "none"},
        "budget": {"time": 0.0, "gradients": 50},
        "eval": {"interval": 1e6},
    }
    for name, fields in changes.items():
        raw.setdefault(name, {}).update(fields)
    return raw


def tau_errors(steps: list[dict[str, np.ndarray]]) -> list[str]:
    """What breaks τ = k − prev in one run's records (``steps[m]``: worker m's server_steps).

    Every version 0..K−1 must be applied exactly once; a worker's gradient is
    computed at the model it got back from its previous step, so its first
    step has prev = 0 and each later one prev = (its previous step) + 1.
    """
    errors = []
    every = np.sort(np.concatenate([s["step"] for s in steps])) if steps else np.empty(0, np.int64)
    if not np.array_equal(every, np.arange(len(every))):
        errors.append(f"server versions applied are not exactly 0..{len(every) - 1}")
    for m, s in enumerate(steps):
        k = np.asarray(s["step"])
        prev = np.concatenate([[0], k[:-1] + 1]) if len(k) else k
        if len(k) and not np.all(np.diff(k) > 0):
            errors.append(f"worker {m}: its steps are not in increasing version order")
        bad = np.flatnonzero(np.asarray(s["tau"]) != k - prev)
        if len(bad):
            i = int(bad[0])
            errors.append(f"worker {m}: step {int(k[i])} recorded tau {int(s['tau'][i])}, "
                          f"k - prev = {int(k[i] - prev[i])}")
    return errors


def expected_taus(cycles: list[float], comm: float, gradients: int) -> list[list[tuple[int, int]]]:
    """(k, τ) per worker when worker m computes for exactly ``cycles[m]`` and each leg takes ``comm``.

    An independent model of Alg. 1: worker m's j-th gradient reaches the server at
    j·(c_m + 2δ) + c_m + δ; the server numbers the arrivals in time order.
    """
    arrivals = []
    for m, c in enumerate(cycles):
        t, j = c + comm, 0
        while j < gradients:
            arrivals.append((t, m))
            t += c + 2 * comm
            j += 1
    arrivals.sort()
    arrivals = arrivals[:gradients]
    out: list[list[tuple[int, int]]] = [[] for _ in cycles]
    prev = [0] * len(cycles)
    for k, (_, m) in enumerate(arrivals):
        out[m].append((k, k - prev[m]))
        prev[m] = k + 1
    return out
