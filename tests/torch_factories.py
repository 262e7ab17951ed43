"""Tiny bring-your-own datasets and models for the torch tests ("tests.torch_factories:name")."""

from __future__ import annotations

import numpy as np


def cifar_like():
    """12 train and 4 test random 3×32×32 images, 10 classes."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    y = np.arange(16) % 10
    return X[:12], y[:12], X[12:], y[12:]


def mnist_like():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    y = np.arange(16) % 10
    return X[:12], y[:12], X[12:], y[12:]


def chars():
    """Sequences of 12 character indices (vocabulary 20), label = the next character."""
    rng = np.random.default_rng(2)
    X = rng.integers(0, 20, (16, 12))
    y = (X[:, -1] + 1) % 20
    return X[:12], y[:12], X[12:], y[12:]


def datasets():
    """(train, test) as torch Datasets of (sample, label) pairs."""
    import torch
    from torch.utils.data import TensorDataset

    X = torch.randn(20, 4, generator=torch.Generator().manual_seed(3))
    y = torch.arange(20) % 3
    return TensorDataset(X[:15], y[:15]), TensorDataset(X[15:], y[15:])


def tiny_bn(in_shape, num_classes):
    """Linear → BatchNorm1d → ReLU → Linear: the BatchNorm policy test's model."""
    from torch import nn

    d = int(np.prod(in_shape))
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, num_classes))


def no_args():
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def not_a_module(in_shape, num_classes):
    return "nope"
