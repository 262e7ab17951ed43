"""Numba kernels for the mixing arithmetic of ADSGD and friends (docs/design.md §4, §9).

Every kernel works in place on float64 or float32 arrays (numba compiles one specialization per
dtype; sums run in float64 registers and round once on store, so float32 models lose no accuracy
to long neighbour sums), allocates nothing of size d,
and touches each array once: the mixing step is memory-bound, so the figure
of merit is GB/s relative to ``numpy.copyto`` (docs/design.md §9,
``benchmarks/bench_kernels.py``). Models are 1-D C-contiguous arrays;
neighbour models are one C-contiguous ``(deg, d)`` array; weights a 1-D
float64 array. Pass scalars as Python floats: an int compiles (and caches)
a second specialization.

Kernels raise ``ValueError`` on mismatched lengths rather than read out of
bounds.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

#: elements per block of :func:`adsgd_step_blocked`: 16 KiB per array, so the
#: block of x being accumulated stays in L1 while the neighbour rows stream past
BLOCK = 2048


@njit(cache=True, fastmath=False, nogil=True)
def _check_rows(x, rows, weights):
    if rows.shape[1] != x.shape[0]:
        raise ValueError("neighbour rows have a different length than x")
    if weights.shape[0] != rows.shape[0]:
        raise ValueError("one weight per neighbour row expected")


@njit(cache=True, fastmath=False, nogil=True)
def adsgd_step(x, g, nbrs, w_nbrs, w_self, alpha, beta):
    """x ← (1−β)·x + β·(w_ii·x + Σ_j w_ij·x̃_j) − α·g, Zhou & Pu 2025 Alg. 2, eq. (5) (β = 1) and (7).

    ``nbrs`` is (deg, d) with row j the latest model of neighbour j and
    ``w_nbrs[j]`` its weight w_ij. Elements outer, neighbours inner: one
    pass over x, g and every row as deg + 2 plain streams. Four elements per
    iteration with four independent sums: LLVM packs them into one SIMD
    register (it never vectorises an outer loop, and without fastmath it may
    not reorder the sum itself). Measured on a 2-core EPYC VM, d = 1e7, GB/s
    at deg 2/4/8: this 38/32/31, the plain one-element loop 15-27 (compute
    bound), row-blocked (:func:`adsgd_step_blocked`) 28/22/19, and
    ``numpy.copyto`` 25-27 (``benchmarks/results/kernels.json``).
    """
    d = x.shape[0]
    if g.shape[0] != d:
        raise ValueError("g has a different length than x")
    _check_rows(x, nbrs, w_nbrs)
    deg = nbrs.shape[0]
    b1 = 1.0 - beta
    d4 = d - d % 4
    for i in range(0, d4, 4):
        s0 = w_self * x[i]
        s1 = w_self * x[i + 1]
        s2 = w_self * x[i + 2]
        s3 = w_self * x[i + 3]
        for j in range(deg):
            w = w_nbrs[j]
            s0 += w * nbrs[j, i]
            s1 += w * nbrs[j, i + 1]
            s2 += w * nbrs[j, i + 2]
            s3 += w * nbrs[j, i + 3]
        x[i] = b1 * x[i] + beta * s0 - alpha * g[i]
        x[i + 1] = b1 * x[i + 1] + beta * s1 - alpha * g[i + 1]
        x[i + 2] = b1 * x[i + 2] + beta * s2 - alpha * g[i + 2]
        x[i + 3] = b1 * x[i + 3] + beta * s3 - alpha * g[i + 3]
    for i in range(d4, d):
        s = w_self * x[i]
        for j in range(deg):
            s += w_nbrs[j] * nbrs[j, i]
        x[i] = b1 * x[i] + beta * s - alpha * g[i]


@njit(cache=True, fastmath=False, nogil=True)
def adsgd_step_rows(x, g, data, rows, w_nbrs, w_self, alpha, beta):
    """:func:`adsgd_step` with neighbour j's model in row ``rows[j]`` of ``data``.

    Lets the MPI engine mix straight from its window of model slots (two
    buffers per neighbour, ``data`` of shape (2·deg, d)) without copying the
    newest buffer of each slot out first. Same loop shape, same arithmetic
    in the same order as :func:`adsgd_step`, so both give bit-identical x.
    """
    d = x.shape[0]
    if g.shape[0] != d:
        raise ValueError("g has a different length than x")
    if data.shape[1] != d:
        raise ValueError("neighbour rows have a different length than x")
    deg = rows.shape[0]
    if w_nbrs.shape[0] != deg:
        raise ValueError("one weight per neighbour row expected")
    # min/max, not a loop of comparisons: with such a loop here (even in a helper) LLVM did
    # not vectorise the main loop below (checked in the assembly)
    if deg > 0 and (rows.min() < 0 or rows.max() >= data.shape[0]):
        raise ValueError("row index out of range")
    b1 = 1.0 - beta
    d4 = d - d % 4
    for i in range(0, d4, 4):
        s0 = w_self * x[i]
        s1 = w_self * x[i + 1]
        s2 = w_self * x[i + 2]
        s3 = w_self * x[i + 3]
        for j in range(deg):
            w = w_nbrs[j]
            # unsigned (checked above): a signed runtime index keeps numba's negative-index
            # wraparound in the loop, which stopped LLVM from vectorising it (measured 1.4× slower)
            r = uint64(rows[j])
            s0 += w * data[r, i]
            s1 += w * data[r, i + 1]
            s2 += w * data[r, i + 2]
            s3 += w * data[r, i + 3]
        x[i] = b1 * x[i] + beta * s0 - alpha * g[i]
        x[i + 1] = b1 * x[i + 1] + beta * s1 - alpha * g[i + 1]
        x[i + 2] = b1 * x[i + 2] + beta * s2 - alpha * g[i + 2]
        x[i + 3] = b1 * x[i + 3] + beta * s3 - alpha * g[i + 3]
    for i in range(d4, d):
        s = w_self * x[i]
        for j in range(deg):
            s += w_nbrs[j] * data[uint64(rows[j]), i]
        x[i] = b1 * x[i] + beta * s - alpha * g[i]


@njit(cache=True, fastmath=False, nogil=True)
def adsgd_step_blocked(x, g, nbrs, w_nbrs, w_self, alpha, beta):
    """Same update as :func:`adsgd_step`, row-blocked: per block of :data:`BLOCK` elements
    x ← (1−β+β·w_ii)·x − α·g, then x += β·w_ij·x̃_j one neighbour row at a time.

    Kept as the measured alternative (``bench_kernels.py`` times both): fastest
    while everything sits in cache, slower from memory as the degree grows,
    since each row is streamed in short bursts.
    """
    d = x.shape[0]
    if g.shape[0] != d:
        raise ValueError("g has a different length than x")
    _check_rows(x, nbrs, w_nbrs)
    deg = nbrs.shape[0]
    c = (1.0 - beta) + beta * w_self
    for start in range(0, d, BLOCK):
        stop = min(start + BLOCK, d)
        # Slices index from 0, so LLVM can drop the negative-index checks and vectorise.
        xb = x[start:stop]
        gb = g[start:stop]
        m = stop - start
        for i in range(m):
            xb[i] = c * xb[i] - alpha * gb[i]
        for j in range(deg):
            bw = beta * w_nbrs[j]
            nb = nbrs[j, start:stop]
            for i in range(m):
                xb[i] += bw * nb[i]


@njit(cache=True, fastmath=False, nogil=True)
def adsgd_delta_step(x, s, g, delta, w_self, alpha, beta):
    """Δ = (1−β)·x + β·(w_ii·x + s) − α·g − x; x ← x + Δ; delta ← Δ (Zhou & Pu 2025 Alg. 3, App. A.3).

    s = Σ_j w_ij·x̃_j is the running neighbour sum; the caller pushes w_ji·Δ
    to each out-neighbour j.
    """
    d = x.shape[0]
    if s.shape[0] != d or g.shape[0] != d or delta.shape[0] != d:
        raise ValueError("x, s, g and delta must have the same length")
    for i in range(d):
        xi = x[i]
        dl = (1.0 - beta) * xi + beta * (w_self * xi + s[i]) - alpha * g[i] - xi
        x[i] = xi + dl
        delta[i] = dl


@njit(cache=True, fastmath=False, nogil=True)
def adsgd_delta_step_inbox(x, s, inbox, g, delta, w_self, alpha, beta):
    """s ← s + inbox; inbox ← 0; then :func:`adsgd_delta_step`, fused in one pass (Zhou & Pu 2025 Alg. 3).

    ``inbox`` is the accumulator the neighbours' w_ij·Δ_j land in (the
    simulator's drain buffer); on MPI they land in s directly (docs/design.md §4).
    """
    d = x.shape[0]
    if s.shape[0] != d or inbox.shape[0] != d or g.shape[0] != d or delta.shape[0] != d:
        raise ValueError("x, s, inbox, g and delta must have the same length")
    for i in range(d):
        si = s[i] + inbox[i]
        s[i] = si
        inbox[i] = 0.0
        xi = x[i]
        dl = (1.0 - beta) * xi + beta * (w_self * xi + si) - alpha * g[i] - xi
        x[i] = xi + dl
        delta[i] = dl


@njit(cache=True, fastmath=False, nogil=True)
def add_and_zero(s, inbox):
    """s ← s + inbox; inbox ← 0 (take everything accumulated, Zhou & Pu 2025 Alg. 3 drain)."""
    if inbox.shape[0] != s.shape[0]:
        raise ValueError("s and inbox must have the same length")
    for i in range(s.shape[0]):
        s[i] += inbox[i]
        inbox[i] = 0.0


@njit(cache=True, fastmath=False, nogil=True)
def axpy(y, a, x):
    """y ← y + a·x."""
    if x.shape[0] != y.shape[0]:
        raise ValueError("x and y must have the same length")
    for i in range(y.shape[0]):
        y[i] += a * x[i]


@njit(cache=True, fastmath=False, nogil=True)
def scale_into(out, a, x):
    """out ← a·x."""
    if x.shape[0] != out.shape[0]:
        raise ValueError("x and out must have the same length")
    for i in range(out.shape[0]):
        out[i] = a * x[i]


@njit(cache=True, fastmath=False, nogil=True)
def copy_into(out, x):
    """out ← x."""
    if x.shape[0] != out.shape[0]:
        raise ValueError("x and out must have the same length")
    for i in range(out.shape[0]):
        out[i] = x[i]


@njit(cache=True, fastmath=False, nogil=True)
def weighted_sum_into(out, rows, weights):
    """out ← Σ_k weights[k]·rows[k] (s_i = Σ_j w_ij·x_j, the Alg. 3 invariant of docs/design.md §4; DSGD mixing).

    Same loop shape as :func:`adsgd_step`: out is written once, 4 lanes per iteration.
    """
    _check_rows(out, rows, weights)
    m = rows.shape[0]
    d = out.shape[0]
    d4 = d - d % 4
    for i in range(0, d4, 4):
        s0 = s1 = s2 = s3 = 0.0
        for k in range(m):
            w = weights[k]
            s0 += w * rows[k, i]
            s1 += w * rows[k, i + 1]
            s2 += w * rows[k, i + 2]
            s3 += w * rows[k, i + 3]
        out[i] = s0
        out[i + 1] = s1
        out[i + 2] = s2
        out[i + 3] = s3
    for i in range(d4, d):
        s = 0.0
        for k in range(m):
            s += weights[k] * rows[k, i]
        out[i] = s


@njit(cache=True, fastmath=False, nogil=True)
def mean_rows_into(out, rows):
    """out ← (1/n)·Σ_k rows[k], the average model x̄ (Zhou & Pu 2025 figures: loss of the average model)."""
    n = rows.shape[0]
    d = out.shape[0]
    if n == 0:
        raise ValueError("mean of zero rows")
    if rows.shape[1] != d:
        raise ValueError("rows have a different length than out")
    inv = 1.0 / n  # a multiply: four divides per iteration halved the bandwidth at n = 2
    d4 = d - d % 4
    for i in range(0, d4, 4):
        s0 = s1 = s2 = s3 = 0.0
        for k in range(n):
            s0 += rows[k, i]
            s1 += rows[k, i + 1]
            s2 += rows[k, i + 2]
            s3 += rows[k, i + 3]
        out[i] = s0 * inv
        out[i + 1] = s1 * inv
        out[i + 2] = s2 * inv
        out[i + 3] = s3 * inv
    for i in range(d4, d):
        s = 0.0
        for k in range(n):
            s += rows[k, i]
        out[i] = s * inv


@njit(cache=True, fastmath=False, nogil=True)
def consensus_distance(rows, mean):
    """(1/n)·Σ_i ‖rows_i − mean‖², the consensus error of n models around x̄.

    Four partial sums: one running sum is bound by the add latency (measured
    ~11 GB/s), four reach memory speed (~20 GB/s at d = 1e7).
    """
    n = rows.shape[0]
    d = mean.shape[0]
    if n == 0:
        raise ValueError("consensus distance of zero rows")
    if rows.shape[1] != d:
        raise ValueError("rows have a different length than mean")
    d4 = d - d % 4
    t0 = t1 = t2 = t3 = 0.0
    for k in range(n):
        for i in range(0, d4, 4):
            e0 = rows[k, i] - mean[i]
            e1 = rows[k, i + 1] - mean[i + 1]
            e2 = rows[k, i + 2] - mean[i + 2]
            e3 = rows[k, i + 3] - mean[i + 3]
            t0 += e0 * e0
            t1 += e1 * e1
            t2 += e2 * e2
            t3 += e3 * e3
        for i in range(d4, d):
            e = rows[k, i] - mean[i]
            t0 += e * e
    return ((t0 + t1) + (t2 + t3)) / n


def warmup(dtype: np.dtype | type = np.float64) -> None:
    """Call every kernel once on tiny ``dtype`` arrays so numba compiles (or loads its cache) before timing starts."""
    x = np.zeros(3, dtype)
    y = np.ones(3, dtype)
    z = np.zeros(3, dtype)
    u = np.zeros(3, dtype)
    v = np.zeros(3, dtype)
    rows = np.ones((2, 3), dtype)
    w = np.full(2, 0.25)
    adsgd_step(x, y, rows, w, 0.5, 0.1, 1.0)
    adsgd_step_blocked(x, y, rows, w, 0.5, 0.1, 1.0)
    adsgd_step_rows(x, y, rows, np.array([1, 0], np.int64), w, 0.5, 0.1, 1.0)
    adsgd_delta_step(x, z, y, u, 0.5, 0.1, 1.0)
    adsgd_delta_step_inbox(x, z, v, y, u, 0.5, 0.1, 1.0)
    add_and_zero(z, v)
    axpy(z, 0.5, y)
    scale_into(z, 0.5, y)
    copy_into(z, y)
    weighted_sum_into(z, rows, w)
    mean_rows_into(z, rows)
    consensus_distance(rows, z)
    from hpcasync.kernels.seqlock import warmup as warmup_seqlock  # imports this module: not at the top

    warmup_seqlock(dtype)
