"""``adsgd_step_rows``: ADSGD's step with the neighbour models picked by row index from one array
(the MPI engine's window of model slots, docs/design.md §5.1), checked against ``adsgd_step``."""

from __future__ import annotations

import numpy as np
import pytest

from hpcasync.kernels import adsgd_step, adsgd_step_rows


@pytest.mark.parametrize("d", [1, 3, 4, 7, 650, 4099])
@pytest.mark.parametrize("deg", [0, 1, 2, 5])
@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_rows_kernel_is_bit_identical_to_adsgd_step(d: int, deg: int, beta: float) -> None:
    rng = np.random.default_rng([d, deg])
    data = rng.standard_normal((2 * deg + 1, d))
    rows = np.array([2 * k + int(rng.integers(2)) for k in range(deg)], np.int64)
    w = rng.uniform(0.05, 0.3, deg)
    x = rng.standard_normal(d)
    g = rng.standard_normal(d)
    expected = x.copy()
    adsgd_step(expected, g, np.ascontiguousarray(data[rows]), w, 0.3, 0.01, beta)
    adsgd_step_rows(x, g, data, rows, w, 0.3, 0.01, beta)
    assert np.array_equal(x, expected)


def test_rows_kernel_rejects_bad_arguments() -> None:
    data = np.ones((4, 8))
    x, g = np.zeros(8), np.zeros(8)
    w = np.array([0.5])
    for bad in ([4], [-1]):
        with pytest.raises(ValueError, match="row index"):
            adsgd_step_rows(x, g, data, np.array(bad, np.int64), w, 0.5, 0.1, 1.0)
    with pytest.raises(ValueError, match="one weight"):
        adsgd_step_rows(x, g, data, np.array([0, 1], np.int64), w, 0.5, 0.1, 1.0)
    with pytest.raises(ValueError, match="length"):
        adsgd_step_rows(np.zeros(7), np.zeros(7), data, np.array([0], np.int64), w, 0.5, 0.1, 1.0)
