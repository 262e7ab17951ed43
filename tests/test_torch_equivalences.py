"""The simulator's equivalences with a torch model (tests/test_equivalences.py's, through the flat view):
Alg. 3 ≡ Alg. 2 and zero-delay ADSGD ≡ DSGD, float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (make install-torch: pip install torch==2.13.0)")

from hpcasync.engines.sim.runner import build_simulator  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from tests.test_equivalences import ListRecorder, models  # noqa: E402


def run(dtype: str = "float32", model: str = "mlp", **sections):
    rec = ListRecorder()
    base = {"problem": {"name": "torch", "model": model, "dtype": dtype},
            "topology": {"name": "ring", "n": 4, "shape": []}, "delays": {"case": 5, "straggler": 1},
            "algorithm": {"batch_size": 16, "alpha": 0.05}, "budget": {"time": 12.0}, "eval": {"interval": 6.0}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    sim = build_simulator(make_config(**base), rec)
    sim.run()
    return sim, rec


@pytest.mark.parametrize(("dtype", "rtol"), [("float64", 1e-9), ("float32", 2e-4)])
@pytest.mark.parametrize("case", [1, 5])
def test_alg3_equals_alg2_with_a_torch_model(dtype: str, rtol: float, case: int) -> None:
    a2, r2 = run(dtype, algorithm={"name": "adsgd"}, delays={"case": case})
    a3, r3 = run(dtype, algorithm={"name": "adsgd-delta"}, delays={"case": case})
    assert a2.gradients == a3.gradients > 20
    x2, x3 = models(a2), models(a3)
    assert x2.dtype == np.dtype(dtype)
    assert np.linalg.norm(x3 - x2) <= rtol * np.linalg.norm(x2)
    np.testing.assert_allclose([r["loss"] for _, r in r3.rows], [r["loss"] for _, r in r2.rows], rtol=10 * rtol)


def test_zero_delay_adsgd_equals_dsgd_with_a_torch_model() -> None:
    a, _ = run(model="cnn", algorithm={"name": "adsgd"}, delays={"model": "none"})
    d, _ = run(model="cnn", algorithm={"name": "dsgd"}, delays={"model": "none"})
    assert a.gradients == d.gradients == 4 * 13
    np.testing.assert_array_equal(models(a), models(d))
    # not vacuous: delays make them differ
    c, _ = run(model="cnn", algorithm={"name": "adsgd"}, delays={"case": 1})
    assert not np.allclose(models(c), models(d))


def test_float32_halves_the_bytes_of_every_push() -> None:
    s32, _ = run("float32", algorithm={"name": "adsgd"}, delays={"model": "none"})
    s64, _ = run("float64", algorithm={"name": "adsgd"}, delays={"model": "none"})
    b32 = sum(t.bytes_sent for t in s32.transports)
    b64 = sum(t.bytes_sent for t in s64.transports)
    assert b32 > 0 and 2 * b32 == b64


@pytest.mark.parametrize("algorithm", ["allreduce", "adpsgd", "rfast"])
def test_other_algorithms_keep_float32(algorithm: str) -> None:
    sim, _ = run(algorithm={"name": algorithm}, budget={"time": 6.0})
    assert sim.gradients > 0
    assert all(a.model.dtype == np.float32 for a in sim.agents)
    assert np.isfinite(models(sim)).all()
