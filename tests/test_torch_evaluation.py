"""The buffers policy (problems/nn/evaluation.py): the evaluated average model is x̄'s parameters
with BatchNorm statistics recomputed on x̄; the agents' own statistics play no part; batching
does not change the evaluation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (make install-torch: pip install torch==2.13.0)")

from hpcasync import problems  # noqa: E402
from tests.conftest import make_config  # noqa: E402


def build(model: str = "tests.torch_factories:tiny_bn", **problem):
    cfg = make_config(problem={"name": "torch", "model": model, **problem},
                      topology={"name": "ring", "n": 3, "shape": []}, delays={"straggler": 0},
                      algorithm={"batch_size": 16})
    return problems.build(cfg, 3)


def average_of_trained_agents(pb) -> np.ndarray:
    rng = np.random.default_rng(0)
    xs = []
    for i in range(3):
        x = pb.init_params(0) + (0.3 * rng.standard_normal(pb.dim)).astype(np.float32)
        oracle = pb.oracle(i, 0)
        for _ in range(3):  # the agents' modules update their own running statistics
            g, _ = oracle.gradient(x)
            x -= 0.1 * g
        xs.append(x)
    return np.mean(xs, axis=0, dtype=np.float64).astype(np.float32)


def test_evaluated_average_model_has_batchnorm_statistics_of_the_average() -> None:
    pb = build(bn_samples=300, eval_batch=500)  # one recompute batch: exact batch statistics
    xbar = average_of_trained_agents(pb)
    got = pb.evaluate(xbar)
    bn = pb._eval.module[2]
    # by hand: a fresh module holding x̄, the BatchNorm input over the same 300 samples
    ref = pb.new_module()
    torch.nn.utils.vector_to_parameters(torch.from_numpy(xbar.copy()), ref.parameters())
    Xs = pb.data.X_train[pb._bn_idx]
    with torch.no_grad():
        h = ref[1](ref[0](Xs))
    assert len(Xs) == 300
    np.testing.assert_allclose(bn.running_mean.numpy(), h.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), h.var(0, unbiased=True).numpy(), rtol=1e-4)
    ref[2].running_mean.copy_(h.mean(0))
    ref[2].running_var.copy_(h.var(0, unbiased=True))
    ref.eval()
    with torch.no_grad():
        test_loss = float(torch.nn.functional.cross_entropy(ref(pb.data.X_test), pb.data.y_test))
        acc = float((ref(pb.data.X_test).argmax(1) == pb.data.y_test).float().mean())
    assert got["test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert got["test_accuracy"] == pytest.approx(acc)
    # the agents' own statistics are something else (they are local, never mixed)
    agent_bn = pb.oracle(0, 0).module[2]
    assert not torch.allclose(agent_bn.running_mean, bn.running_mean)


def test_evaluation_does_not_depend_on_earlier_evaluations_or_batching() -> None:
    pb = build(bn_samples=200, eval_batch=50)
    xbar = average_of_trained_agents(pb)
    first = pb.evaluate(xbar)
    pb.evaluate(pb.init_params(0))  # other statistics in between
    assert pb.evaluate(xbar) == first
    mlp_small, mlp_big = build("mlp", eval_batch=7), build("mlp", eval_batch=5000)
    x = mlp_small.init_params(0)
    a, b = mlp_small.evaluate(x), mlp_big.evaluate(x)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_evaluate_does_not_touch_x() -> None:
    pb = build()
    x = average_of_trained_agents(pb)
    before = x.copy()
    pb.evaluate(x)
    np.testing.assert_array_equal(x, before)
