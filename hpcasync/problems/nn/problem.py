"""A torch ``nn.Module`` as a problem: per-agent minibatch gradients on a flat float32 vector.

f_i(x) = (1/m_i) Σ_{r ∈ S_i} ℓ(model_x(a_r), y_r) with ℓ = ``problem.loss`` (cross-entropy by
default, Zhou & Pu 2025 §4.2; any ``"package.module:name"`` with the signature of
``torch.nn.functional.cross_entropy`` and mean reduction). Each agent's oracle owns one copy of
the module whose parameters are views of the x it is called with and whose gradients land in one
flat buffer (``problems/nn/flat.py``): ``gradient(x)`` copies no parameters. The returned
gradient is that buffer (overwritten by the next call, as :class:`~hpcasync.problems.base.Oracle`
says).

``problem.device``: ``cpu``; ``cuda`` (GPU of this rank's local rank modulo the visible GPUs;
x is copied to the device once per gradient, the gradient comes back through a pinned host
buffer, every exchange stays in host memory); ``auto`` (cuda when available).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from hpcasync.errors import UserError, require
from hpcasync.problems.base import Oracle, Problem, ShardSampler, oracle_rng
from hpcasync.problems.nn import evaluation, zoo
from hpcasync.problems.nn.data import TensorData, load_object
from hpcasync.problems.nn.flat import FlatModule, torch_dtype

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_EVAL_STREAM = 0x6576616C  # "eval": the fixed permutation of evaluation and BatchNorm samples


def model_factory(spec: str) -> Callable[[tuple[int, ...], int], nn.Module]:
    """A built-in name of :data:`zoo.MODELS` or ``"package.module:factory"``."""
    if spec in zoo.MODELS:
        return zoo.MODELS[spec]
    require(":" in spec, f"config field problem.model: unknown model {spec!r}; expected one of "
                         f"{', '.join(zoo.MODELS)} or 'package.module:factory'")
    factory = load_object(spec, "problem.model")
    require(callable(factory), f"config field problem.model: {spec} is not callable")
    try:
        takes_args = len(inspect.signature(factory).parameters) >= 2
    except (TypeError, ValueError):
        takes_args = True

    def build(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        module = factory(in_shape, num_classes) if takes_args else factory()
        require(isinstance(module, nn.Module),
                f"config field problem.model: {spec} returned {type(module).__name__}, expected a torch nn.Module")
        return module

    return build


def loss_function(spec: str) -> LossFn:
    if spec in ("cross-entropy", "cross_entropy", ""):
        return nn.functional.cross_entropy
    if spec == "nll":
        return nn.functional.nll_loss
    fn = load_object(spec, "problem.loss")
    require(callable(fn), f"config field problem.loss: {spec} is not callable")
    return fn


def choose_device(spec: str, local_rank: int | None = None) -> torch.device:
    """cpu, or this rank's GPU: local rank modulo the visible GPUs."""
    require(spec in ("cpu", "cuda", "auto"), f"config field problem.device: expected cpu, cuda or auto, got {spec!r}")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    require(torch.cuda.is_available(), "config field problem.device = 'cuda': torch sees no GPU on this node")
    if local_rank is None:
        local_rank = local_rank_from_env()
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def local_rank_from_env() -> int:
    for name in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMI_LOCAL_RANK", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


class TorchOracle(Oracle):
    """Minibatch gradient of f_i through the flat view (see module docstring)."""

    def __init__(self, problem: TorchProblem, shard: np.ndarray, rng: np.random.Generator, seed: int,
                 agent: int) -> None:
        self.problem = problem
        self.dim = problem.dim
        self.flat = FlatModule(problem.new_module(), problem.dtype, problem.device)
        self.module = self.flat.module
        self.grad = self.flat.attach_grad(pin=True)
        self.sampler = ShardSampler(shard, problem.batch_size, rng)
        # augmentation stream: independent per (seed, agent)
        state = np.random.SeedSequence([seed, agent, 0x617567]).generate_state(1)[0]
        self.gen = torch.Generator().manual_seed(int(state))

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        pb = self.problem
        idx = torch.from_numpy(self.sampler.next())
        xb = pb.data.X_train.index_select(0, idx)
        yb = pb.data.y_train.index_select(0, idx)
        if pb.data.augment is not None and pb.augment:
            pb.data.augment(xb, self.gen)
        if pb.device.type != "cpu":
            xb, yb = xb.to(pb.device, non_blocking=True), yb.to(pb.device, non_blocking=True)
        self.flat.bind(x)
        self.flat.zero_grad()
        self.module.train()
        with torch.enable_grad():
            loss = pb.loss_fn(self.module(xb), yb)
            loss.backward()
        self.flat.grad_to_host()
        return self.grad, float(loss.detach())


class TorchProblem(Problem):
    """The problem of training ``model`` on ``data`` split into ``shards`` (one per agent)."""

    def __init__(self, data: TensorData, shards: list[np.ndarray], batch_size: int, model: str,
                 loss: str = "cross-entropy", dtype: str = "float32", device: str = "cpu",
                 augment: bool = True, eval_batch: int = 500, eval_train_samples: int = 10000,
                 bn_samples: int = 2000, seed: int = 0) -> None:
        require(all(len(s) > 0 for s in shards), "problem.name 'torch': every agent needs a non-empty shard")
        self.data = data
        self.shards = [np.ascontiguousarray(s, dtype=np.int64) for s in shards]
        self.n_agents = len(shards)
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.device = choose_device(device)
        self.augment = augment
        self.eval_batch = max(1, eval_batch)
        self.factory = model_factory(model)
        self.model_name = model
        self.loss_fn = loss_function(loss)
        self._seed = seed
        torch.manual_seed(seed)  # the same x0 on every rank, and deterministic dropout
        try:
            template = self.new_module()
        except ValueError as exc:  # a zoo model that does not fit the data's shape
            raise UserError(f"config field problem.model {model!r}: {exc}") from None
        self._x0 = FlatModule(template, self.dtype).initial_vector()
        self.dim = self._x0.size
        self._eval = FlatModule(template, self.dtype, self.device)  # x̄'s module (own buffers)
        perm = np.random.default_rng(np.random.SeedSequence([seed, _EVAL_STREAM])).permutation(data.n_train)
        n_tr = data.n_train if eval_train_samples <= 0 else min(eval_train_samples, data.n_train)
        self._train_eval = torch.from_numpy(np.sort(perm[:n_tr]))
        self._bn_idx = torch.from_numpy(perm[:min(max(bn_samples, 0), data.n_train)])
        self.bn_layers = len(evaluation.batchnorms(template))

    def new_module(self) -> nn.Module:
        module = self.factory(self.data.in_shape, self.data.num_classes)
        return module.to(dtype=torch_dtype(self.dtype))

    def init_params(self, seed: int) -> np.ndarray:
        # torch's default initialisation under torch.manual_seed(run seed) at construction
        return self._x0.copy()

    def oracle(self, agent: int, seed: int) -> TorchOracle:
        self._check_agent(agent)
        return TorchOracle(self, self.shards[agent], oracle_rng(seed, agent), seed, agent)

    # -- whole-set quantities ------------------------------------------------------------------
    def _grad_over(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        """∇ of the mean loss over rows ``idx`` (train mode, in eval_batch chunks weighted by size)."""
        flat = self._eval
        flat.bind(x)
        g = flat.attach_grad()
        module = flat.module
        module.train()
        out = np.zeros(self.dim, self.dtype)
        n = len(idx)
        for a in range(0, n, self.eval_batch):
            rows = torch.from_numpy(np.ascontiguousarray(idx[a:a + self.eval_batch]))
            xb = self.data.X_train.index_select(0, rows).to(self.device)
            yb = self.data.y_train.index_select(0, rows).to(self.device)
            flat.zero_grad()
            with torch.enable_grad():
                self.loss_fn(module(xb), yb).backward()
            flat.grad_to_host()
            out += g * (len(rows) / n)
        return out

    def full_gradient(self, x: np.ndarray) -> np.ndarray:
        return self._grad_over(np.arange(self.data.n_train), x)

    def local_full_gradient(self, agent: int, x: np.ndarray) -> np.ndarray:
        self._check_agent(agent)
        return self._grad_over(self.shards[agent], x)

    def prepare_eval(self, x: np.ndarray) -> nn.Module:
        """x̄'s module: parameters x, BatchNorm statistics recomputed on x (evaluation.py's policy)."""
        self._eval.bind(np.asarray(x))
        module = self._eval.module
        if self.bn_layers:
            Xb = self.data.X_train.index_select(0, self._bn_idx).to(self.device)
            evaluation.recompute_batchnorm(module, Xb, self.eval_batch)
        return module

    def evaluate(self, x: np.ndarray) -> dict[str, float]:
        module = self.prepare_eval(x)
        d = self.data
        Xtr, ytr = d.X_train.index_select(0, self._train_eval), d.y_train.index_select(0, self._train_eval)
        train_loss, _ = evaluation.loss_accuracy(module, self.loss_fn, Xtr, ytr, self.eval_batch, self.device)
        test_loss, test_acc = evaluation.loss_accuracy(module, self.loss_fn, d.X_test, d.y_test,
                                                       self.eval_batch, self.device)
        return {"train_loss": train_loss, "test_loss": test_loss, "test_accuracy": test_acc}

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_name, "dim": self.dim, "dtype": str(self.dtype), "device": str(self.device),
                "batchnorm_layers": self.bn_layers}
