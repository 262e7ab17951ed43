"""Bring-your-own data for the torch benchmarks (``data.name = "torch_data:random_cifar"``; the
benchmarks run with this folder on sys.path): random CIFAR-shaped images, for VGG11-sized runs
where the real CIFAR-10 is not on the machine."""

from __future__ import annotations

import numpy as np


def random_cifar():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((640, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 640)
    return X[:576], y[:576], X[576:], y[576:]
