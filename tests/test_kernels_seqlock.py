"""The fused read-mix-publish kernel (kernels/seqlock.py) on plain arrays standing in for the slots.

Its multi-rank counterpart, under writers hammering the slots, is
tests/mpi/test_shared_slots_mpi.py::test_fused_update_mixes_complete_models.
"""

from __future__ import annotations

import numpy as np
import pytest

from hpcasync.kernels import adsgd_step_rows
from hpcasync.kernels.seqlock import adsgd_mix_publish


def _setup(d: int, deg: int, targets: int, dtype: type, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((2 * deg, d)).astype(dtype)
    words = rng.integers(0, 50, deg).astype(np.int64) * 2  # even: every slot complete
    peer_words = [np.zeros(3, np.int64) for _ in range(targets)]  # slot 1 of each target's words
    peer_data = [np.zeros((4, d), dtype) for _ in range(targets)]  # 2 slots × 2 buffers
    table = np.array([[w[1:].ctypes.data, p[2].ctypes.data, p[3].ctypes.data]
                      for w, p in zip(peer_words, peer_data, strict=True)], np.int64).reshape(-1, 3)
    x = rng.standard_normal(d).astype(dtype)
    g = rng.standard_normal(d).astype(dtype)
    w = rng.random(deg)
    return data, words, peer_words, peer_data, table, x, g, w


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("d", "deg", "targets"), [(650, 2, 2), (1001, 3, 1), (17, 0, 2), (64, 4, 0)])
@pytest.mark.parametrize("u", [7, 8])
def test_mix_equals_the_rows_kernel_and_publishes_model_u(dtype: type, d: int, deg: int, targets: int,
                                                          u: int) -> None:
    data, words, peer_words, peer_data, table, x, g, w = _setup(d, deg, targets, dtype)
    views = np.zeros((2, deg), np.int64)
    rows, versions = views
    expected = x.copy()
    want_rows = np.array([2 * k + (words[k] // 2) % 2 for k in range(deg)], np.int64)
    adsgd_step_rows(expected, g, data, want_rows, w, 0.3, 0.01, 0.9)
    before = [p.copy() for p in peer_data]
    assert adsgd_mix_publish(x, g, data, words, w, 0.3, 0.01, 0.9, views, table, 2 * u - 1, 2 * u) == 0
    np.testing.assert_array_equal(x, expected)  # bit for bit: the same loop
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(versions, words // 2)
    b = u % 2
    for pw, pd, old in zip(peer_words, peer_data, before, strict=True):
        assert pw.tolist() == [0, 2 * u, 0]  # only this writer's word, closed
        np.testing.assert_array_equal(pd[2 + b], x)  # model u in buffer u mod 2 of slot 1
        np.testing.assert_array_equal(np.delete(pd, 2 + b, axis=0), np.delete(old, 2 + b, axis=0))


def test_a_slot_rewritten_during_the_mix_publishes_nothing() -> None:
    """A thread keeps announcing newer models in slot 0 (its word moves on by 2) while the kernel
    mixes: a call that sees the word two publications ahead (≥ 2v+3) returns the torn count and
    stores nothing into its target; a call that does not, publishes."""
    import threading

    d, deg = 20_000, 2  # a mix of ~10 µs: the writer moves the word many times during one
    data, words, peer_words, peer_data, table, x, g, w = _setup(d, deg, 1, np.float64)
    views = np.zeros((2, deg), np.int64)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            words[0] += 2

    t = threading.Thread(target=writer)
    t.start()
    torn = published = 0
    try:
        for _ in range(2000):
            peer_words[0][:] = 0
            peer_data[0][:] = 0.0
            n = adsgd_mix_publish(x, g, data, words, w, 0.3, 0.0, 1.0, views, table, 1, 2)
            if n:
                torn += 1
                assert n == 1  # only slot 0 is written
                assert peer_words[0].tolist() == [0, 0, 0] and not peer_data[0].any()
            else:
                published += 1
                assert peer_words[0].tolist() == [0, 2, 0]
                np.testing.assert_array_equal(peer_data[0][3], x)
            if torn and published:
                break
    finally:
        stop.set()
        t.join()
    assert torn > 0
