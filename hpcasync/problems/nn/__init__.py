"""torch models as problems (``problem.name = "torch"``), docs/design.md §12.

Nothing here imports torch until :func:`build` runs, so ``import hpcasync`` and every numpy
problem stay torch-free. Modules: ``zoo`` (built-in models), ``flat`` (zero-copy flat
parameters), ``data`` (datasets as tensors), ``evaluation`` (buffers policy, batched
evaluation), ``problem`` (the oracle and the problem).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hpcasync.config import Config
from hpcasync.errors import UserError
from hpcasync.problems.base import Oracle, Problem, register_problem

if TYPE_CHECKING:
    from hpcasync.problems.nn.problem import TorchProblem

INSTALL_HINT = "pip install torch==2.13.0 (make install-torch); pinned: an unpinned torch pulls CUDA packages"


def import_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(f"config field problem.name 'torch': torch is not installed; {INSTALL_HINT}") from None


def dtype_of(cfg: Config) -> str:
    """The flat vector's dtype: ``problem.dtype``, float32 for torch when ``auto``."""
    return "float32" if cfg.problem.dtype == "auto" else cfg.problem.dtype


def build(cfg: Config, n_agents: int) -> TorchProblem:
    """The torch problem of ``cfg`` over ``n_agents`` shards (partitioned by the run seed)."""
    import_torch()
    from hpcasync import threads
    from hpcasync.data.partition import partition
    from hpcasync.problems.nn import data
    from hpcasync.problems.nn.flat import torch_dtype
    from hpcasync.problems.nn.problem import TorchProblem

    threads.configure_torch()
    p, d = cfg.problem, cfg.data
    dtype = dtype_of(cfg)
    tensors = data.load(d.name, d.dir, d.test_fraction, cfg.run.seed, torch_dtype(dtype), p.augment, d)
    shards = partition(d, tensors.y_train.numpy(), n_agents, cfg.run.seed)
    return TorchProblem(tensors, shards, cfg.algorithm.batch_size, p.model, loss=p.loss, dtype=dtype,
                        device=p.device, augment=p.augment, eval_batch=p.eval_batch,
                        eval_train_samples=p.eval_train_samples, bn_samples=p.bn_samples, seed=cfg.run.seed)


@register_problem
class TorchNetwork(Problem):
    """``problem.name = "torch"`` in the problem registry, without importing torch.

    :meth:`from_config` builds the real problem (:class:`hpcasync.problems.nn.problem.TorchProblem`,
    a :class:`Problem` too); this class itself is never instantiated.
    """

    name: ClassVar[str] = "torch"
    data_kind: ClassVar[str] = "classification"

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if not cfg.problem.model:
            raise UserError("config field problem.model: the torch problem needs a model name (mlp, cnn, alexnet, "
                            "vgg11, vgg13, resnet18, char-lstm or 'package.module:factory')")

    @classmethod
    def from_config(cls, cfg: Any, n_agents: int) -> Problem:
        return build(cfg, n_agents)

    def _never(self) -> Any:
        raise TypeError("TorchNetwork is a registry entry; from_config returns the problem")

    def init_params(self, seed: int) -> np.ndarray:
        return self._never()

    def oracle(self, agent: int, seed: int) -> Oracle:
        return self._never()

    def evaluate(self, x: np.ndarray) -> dict[str, float]:
        return self._never()

    def full_gradient(self, x: np.ndarray) -> np.ndarray:
        return self._never()

    def local_full_gradient(self, agent: int, x: np.ndarray) -> np.ndarray:
        return self._never()
