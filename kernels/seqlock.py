"""One numba call per ADSGD update on shared memory: read the slots, mix, publish (docs/design.md §5.6).

:func:`adsgd_mix_publish` does in one kernel what the MPI engine otherwise does
in four Python-level steps per update (``open_views``, the mixing kernel,
``close_views``, ``publish``): Zhou & Pu 2025 Alg. 2's step

    x ← (1−β)·x + β·(w_ii·x + Σ_j w_ij·x̃_j) − α·g

read straight from this rank's slots of its in-neighbours' newest models, then
the seqlock publication of the new x into every out-neighbour's slot on the
same node (plain stores into their ``Allocate_shared`` segments). At d = 650
those steps cost ~7 µs of interpreter time per update against ~1 µs of work
(``benchmarks/profile_adsgd_update.py``).

Memory ordering. The reader side loads the words, fences, loads the data (the
mix), fences, loads the words again; the writer side stores the opening words,
fences, stores the data, fences, stores the closing words: the seqlock of
``engines/mpi/shared_slots.py``, whose fences are separate opaque calls. Here
all of it is one compiled function, so the fences must stop the *compiler*
too: :func:`fence` emits LLVM's ``fence seq_cst``, which LLVM treats as
reading and writing all memory (no load or store moves across it, no load is
reused across it) and lowers to a full hardware barrier (x86-64 ``mfence``,
aarch64 ``dmb ish``): store→store and load→load ordering on both, what the
seqlock needs. Each word is an aligned int64, loaded and stored whole
(single-copy atomic on both), and has exactly one writer.

The caller gives the out-neighbours' slots as a table of addresses (int64:
word, buffer 0, buffer 1 per target): their segments are separate mappings, so
no one array spans them, and one small int64 array keeps the call's dispatch
cost to that of one argument. The caller keeps the mappings alive while the
table is in use.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from hpcasync.kernels.mixing import adsgd_step_rows


@intrinsic
def fence(typingctx):  # noqa: ARG001 (numba's signature)
    """A full memory barrier that is also a compiler barrier (module docstring)."""

    def codegen(context, builder, signature, args):  # noqa: ARG001
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _pointer(typingctx, address):  # noqa: ARG001
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@njit(cache=True, nogil=True)
def _store_words(table, value):
    for p in range(table.shape[0]):
        carray(_pointer(table[p, 0]), (1,), np.int64)[0] = value


@njit(cache=True, fastmath=False, nogil=True)
def adsgd_mix_publish(x, g, data, words, w_nbrs, w_self, alpha, beta, views, table, opening, closing):
    """Alg. 2's step from this rank's slots, then the new x published as model ``closing // 2``.

    ``data`` (2·deg, d) and ``words`` (deg,) are this rank's slot buffers and
    sequence words; ``views`` (2, deg) receives the row (``views[0]``) and the
    model number (``views[1]``) read from each slot. ``table`` (targets, 3)
    holds each out-neighbour slot's word, buffer-0 and buffer-1 addresses.
    ``opening`` (2p+1, p the last model published) is stored into every
    target's word before the data, ``closing`` (2u) after it; the data goes
    into buffer u mod 2. Few arguments on purpose: each array costs the
    dispatcher a type check per call.

    Returns the number of slots that may have been rewritten during the mix
    (their word moved on by two publications, slots.py ``close_views``). Then
    x holds a void mix and *nothing was published*: the caller restores x and
    redoes the step from consistent copies. Otherwise returns 0, published.
    """
    deg = words.shape[0]
    d = x.shape[0]
    if views.shape[0] != 2 or views.shape[1] != deg:
        raise ValueError("views must be (2, deg)")
    rows = views[0]
    versions = views[1]
    for k in range(deg):
        v = words[k] // 2
        versions[k] = v
        rows[k] = 2 * k + v % 2
    fence()  # the word loads before the data loads
    adsgd_step_rows(x, g, data, rows, w_nbrs, w_self, alpha, beta)
    fence()  # the data loads before the second word loads
    torn = 0
    for k in range(deg):
        if words[k] >= 2 * versions[k] + 3:
            torn += 1
    if torn:
        return torn
    b = (closing // 2) % 2
    _store_words(table, opening)
    fence()  # the opening words before the data
    for p in range(table.shape[0]):
        dst = carray(_pointer(table[p, 1 + b]), (d,), x.dtype)
        for i in range(d):
            dst[i] = x[i]
    fence()  # the data before the closing words
    _store_words(table, closing)
    return 0


def warmup(dtype: np.dtype | type = np.float64) -> None:
    """Compile (or load from numba's cache) :func:`adsgd_mix_publish` for ``dtype`` before timing starts."""
    x, g = np.zeros(3, dtype), np.zeros(3, dtype)
    data = np.zeros((2, 3), dtype)
    target_words, target_data = np.zeros(1, np.int64), np.zeros((2, 3), dtype)
    table = np.array([[target_words.ctypes.data, target_data[0].ctypes.data, target_data[1].ctypes.data]], np.int64)
    adsgd_mix_publish(x, g, data, np.zeros(1, np.int64), np.full(1, 0.5), 0.5, 0.1, 1.0, np.zeros((2, 1), np.int64),
                      table, 1, 2)
