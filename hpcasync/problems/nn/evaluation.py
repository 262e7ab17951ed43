"""Buffers policy and batched evaluation of a torch model at a flat parameter vector.

**Buffers (BatchNorm running statistics) are local and never mixed.** x holds the parameters only;
each agent's module keeps its own running statistics, which its training never reads (training
forward passes run in ``train()`` mode and normalise with the batch's own statistics). The
average model x̄ = (1/n) Σ_i x_i therefore comes without statistics of its own, and averaging the
agents' running means would not give the statistics of x̄'s activations. So before every
evaluation the statistics are **recomputed on x̄**: every BatchNorm layer's running statistics
are reset and re-estimated as the cumulative average (``momentum=None``) over forward passes in
``train()`` mode, without gradients, over the first ``problem.bn_samples`` training samples of a
fixed permutation (seeded by the run seed), in batches of ``problem.eval_batch``. With one batch,
running_mean is exactly the batch mean of each BatchNorm input at x̄ and running_var its unbiased
variance (``tests/test_torch_evaluation.py``). The evaluation itself then runs in ``eval()``
mode (dropout off, BatchNorm with these statistics). Models without BatchNorm skip the pass.

Evaluation is in batches of ``problem.eval_batch`` under ``torch.no_grad()``; the train loss is
measured on the first ``problem.eval_train_samples`` samples of the same permutation (0 = all).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recompute_batchnorm(module: nn.Module, X: torch.Tensor, batch: int) -> int:
    """Re-estimate every BatchNorm's running statistics on ``X`` (see module docstring).

    Returns how many BatchNorm layers were updated.
    """
    bns = batchnorms(module)
    if not bns or len(X) == 0:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    module.train()
    try:
        with torch.no_grad():
            for a in range(0, len(X), batch):
                module(X[a:a + batch])
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
    return len(bns)


def loss_accuracy(module: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  X: torch.Tensor, y: torch.Tensor, batch: int,
                  device: torch.device) -> tuple[float, float]:
    """(mean loss, accuracy) of ``module`` in eval mode over (X, y), in batches; nan when empty."""
    if len(X) == 0:
        return math.nan, math.nan
    module.eval()
    total = 0.0
    correct = 0
    with torch.no_grad():
        for a in range(0, len(X), batch):
            xb = X[a:a + batch].to(device, non_blocking=True)
            yb = y[a:a + batch].to(device, non_blocking=True)
            out = module(xb)
            total += float(loss_fn(out, yb)) * len(yb)
            if out.ndim == 2:
                correct += int((out.argmax(1) == yb).sum())
    return total / len(X), correct / len(X)
