"""The torch problem: gradients through the flat view equal autograd on a fresh copy, the
parameters are views of x, a gradient allocates nothing parameter-sized, user errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (make install-torch: pip install torch==2.13.0)")

from hpcasync import problems  # noqa: E402
from hpcasync.errors import UserError  # noqa: E402
from tests.conftest import make_config  # noqa: E402

F = "tests.torch_factories:"
CASES = [  # (model, data): every zoo model on data of its shape
    ("mlp", "digits"), ("cnn", "digits"), ("cnn", F + "mnist_like"), ("alexnet", F + "cifar_like"),
    ("vgg11", F + "cifar_like"), ("vgg13", F + "cifar_like"), ("resnet18", F + "cifar_like"),
    ("char-lstm", F + "chars"), (F + "tiny_bn", "digits"), (F + "no_args", "digits"),
]


def build(model: str, data: str = "digits", n: int = 1, batch: int = 100000, **problem):
    cfg = make_config(problem={"name": "torch", "model": model, **problem}, data={"name": data},
                      algorithm={"batch_size": batch}, topology={"name": "ring", "n": max(n, 3), "shape": []},
                      delays={"straggler": 0})
    return problems.build(cfg, n)


def autograd_reference(pb, x: np.ndarray, rows: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """∇ of the minibatch loss by plain autograd on a fresh module holding a copy of x."""
    module = pb.new_module()
    torch.nn.utils.vector_to_parameters(torch.from_numpy(x.copy()), module.parameters())
    module.train()
    idx = torch.from_numpy(rows)
    torch.manual_seed(seed)  # the same dropout masks as the oracle's pass
    loss = pb.loss_fn(module(pb.data.X_train[idx]), pb.data.y_train[idx])
    loss.backward()
    return torch.nn.utils.parameters_to_vector([p.grad for p in module.parameters()]).numpy(), float(loss.detach())


@pytest.mark.parametrize(("model", "data"), CASES)
def test_gradient_through_flat_view_equals_autograd(model: str, data: str) -> None:
    pb = build(model, data)
    oracle = pb.oracle(0, 3)
    rng = np.random.default_rng(5)
    x = pb.init_params(3)
    x += (0.01 * rng.standard_normal(x.size)).astype(np.float32)  # not the initial point
    assert x.dtype == np.float32 and pb.dim == x.size
    torch.manual_seed(11)
    g, loss = oracle.gradient(x)
    ref, ref_loss = autograd_reference(pb, x, pb.shards[0], 11)
    assert g.dtype == np.float32 and g.shape == (pb.dim,)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    scale = float(np.abs(ref).max())
    assert scale > 0
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5 * scale)


def test_parameters_are_views_of_x_and_gradients_of_one_buffer() -> None:
    pb = build("cnn", batch=16)
    oracle = pb.oracle(0, 3)
    x = pb.init_params(3)
    lo, hi = x.ctypes.data, x.ctypes.data + x.nbytes
    g1, _ = oracle.gradient(x)
    ptrs = [p.data_ptr() for p in oracle.module.parameters()]
    assert all(lo <= p < hi for p in ptrs)
    assert oracle.flat.check_views()
    g2, _ = oracle.gradient(x)
    assert g2 is g1  # the same flat buffer, overwritten
    gl, gh = g1.ctypes.data, g1.ctypes.data + g1.nbytes
    assert all(gl <= p.grad.data_ptr() < gh for p in oracle.module.parameters())
    assert [p.data_ptr() for p in oracle.module.parameters()] == ptrs  # no rebinding for the same x
    # x is the storage: writing x changes the module
    first = next(oracle.module.parameters())
    x[0] += 1.0
    assert float(first.detach().reshape(-1)[0]) == x[0]


def test_a_gradient_step_allocates_nothing_parameter_sized() -> None:
    """Profiled allocations of one gradient and one mixing step stay below the flat vector's size;
    the same probe does see a parameters_to_vector (the check can fail)."""
    from torch.profiler import ProfilerActivity, profile

    from hpcasync.kernels import adsgd_step

    pb = build("cnn", batch=16)
    oracle = pb.oracle(0, 3)
    x = pb.init_params(3)
    nbrs = np.stack([x, x])
    w = np.array([0.25, 0.25])
    oracle.gradient(x)
    adsgd_step(x, oracle.grad, nbrs, w, 0.5, 0.01, 1.0)
    flat_bytes = pb.dim * x.itemsize
    assert max(p.numel() for p in oracle.module.parameters()) * x.itemsize < flat_bytes

    def largest(fn) -> int:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        return max(e.self_cpu_memory_usage for e in prof.events())

    def step() -> None:
        g, _ = oracle.gradient(x)
        adsgd_step(x, g, nbrs, w, 0.5, 0.01, 1.0)

    assert largest(step) < flat_bytes
    assert largest(lambda: torch.nn.utils.parameters_to_vector(oracle.module.parameters())) >= flat_bytes


def test_other_arrays_rebind_and_read_only_arrays_are_copied() -> None:
    pb = build("mlp", batch=16)
    oracle = pb.oracle(0, 3)
    x = pb.init_params(3)
    y = x.copy()
    oracle.gradient(x)
    oracle.gradient(y)
    p = next(oracle.module.parameters())
    assert y.ctypes.data <= p.data_ptr() < y.ctypes.data + y.nbytes
    ro = x.copy()
    ro.flags.writeable = False
    g, _ = oracle.gradient(ro)  # no torch warning about non-writable arrays, no write into ro
    assert np.isfinite(g).all()


def test_float64_on_request() -> None:
    pb = build("mlp", dtype="float64")
    x = pb.init_params(0)
    assert x.dtype == np.float64
    g, _ = pb.oracle(0, 0).gradient(x)
    ref, _ = autograd_reference(pb, x, pb.shards[0], 0)
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)


def test_full_and_local_gradients_average_the_shards() -> None:
    pb = build("mlp", n=3, batch=16, eval_batch=37)
    x = pb.init_params(0)
    full = pb.full_gradient(x)
    sizes = np.array([len(s) for s in pb.shards], float)
    local = [pb.local_full_gradient(i, x) for i in range(3)]
    np.testing.assert_allclose(full, sum(w * g for w, g in zip(sizes / sizes.sum(), local, strict=True)),
                               rtol=1e-4, atol=1e-6)
    # the oracle with a whole-shard batch computes the same thing
    pb1 = build("mlp", n=3)
    g, _ = pb1.oracle(1, 0).gradient(x)
    np.testing.assert_allclose(g, pb1.local_full_gradient(1, x), rtol=1e-4, atol=1e-6)


def test_same_seed_same_x0_and_bring_your_own_datasets() -> None:
    np.testing.assert_array_equal(build("cnn").init_params(0), build("cnn").init_params(0))
    pb = build(F + "no_args", data=F + "datasets")
    assert pb.data.X_train.shape == (15, 4) and pb.data.num_classes == 3


@pytest.mark.parametrize(("problem", "data", "match"), [
    ({"model": "nope"}, "digits", "problem.model: unknown model 'nope'"),
    ({"model": "vgg11"}, "digits", "too small"),
    ({"model": F + "not_a_module"}, "digits", "expected a torch nn.Module"),
    ({"model": "no.such.module:f"}, "digits", "cannot import"),
    ({"model": "mlp", "loss": "tests.torch_factories:missing"}, "digits", "has no attribute 'missing'"),
    ({"model": "mlp"}, "no.such:data", "data.name: cannot import"),
])
def test_user_errors(problem, data, match) -> None:
    with pytest.raises(UserError, match=match):
        build(problem.pop("model"), data, **problem)


def test_config_requires_a_model() -> None:
    with pytest.raises(UserError, match="problem.model"):
        make_config(problem={"name": "torch"})
    with pytest.raises(UserError, match="problem.device"):
        make_config(problem={"name": "torch", "model": "mlp", "device": "tpu"})
    cfg = make_config(problem={"name": "softmax"}, data={"name": "shakespeare", "dir": "x"})
    with pytest.raises(UserError, match="data.name 'shakespeare': .* torch problem only"):
        problems.build(cfg, 9)
