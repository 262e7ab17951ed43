"""One-sided RMA building blocks of the MPI engine (DESIGN §5).

Two window types, both living in **one** passive-target epoch per window that
is opened with ``Lock_all(MPI.MODE_NOCHECK)`` at construction and closed in
:meth:`free`. DESIGN §5 measured why: a per-operation ``Win.Lock`` blocks
while the target computes without calling MPI, whereas inside a long
``Lock_all`` epoch an operation completed with ``Win.Flush`` never waits for
the target. So no method here takes a lock, and none waits for another rank.

* :class:`ModelSlots` (§5.1): every agent publishes its latest model into a
  double-buffered slot in each out-neighbour's memory, guarded by a sequence
  word (a seqlock); readers copy the newest complete model.
* :class:`DeltaAccumulator` (§5.2): senders add deltas into the owner's
  window with ``Accumulate(SUM)``; the owner takes them atomically.

Both are collective to construct and to free, are context managers, and free
their windows and close their epochs on every exit path: a leaked epoch hangs
``MPI_Finalize``. Both count ``bytes_sent`` and ``messages_sent`` (DESIGN §3).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import numpy as np
from mpi4py import MPI

__all__ = ["DeltaAccumulator", "ModelSlots"]

_WORD = 8  # bytes in an int64 sequence word and in a float64 element

# Retry backoff of a seqlock reader: the first retries are immediate (the
# writer usually finished long ago), later ones sleep so that a reader never
# spins on MPI calls against a writer that publishes faster than it copies.
_IMMEDIATE_RETRIES = 2
_BACKOFF_START_S = 1e-5
_BACKOFF_MAX_S = 1e-3

#: Default of ``ModelSlots(atomic_words=...)``: read the sequence words of this
#: rank's own slots with MPI atomics (``Get_accumulate(NO_OP)`` + ``Flush``)
#: instead of plain loads after ``Win.Sync``. See :class:`ModelSlots`.
ATOMIC_WORD_READS = False


def _agree(comm: MPI.Comm, error: str | None, what: str) -> None:
    """Raise the same ``ValueError`` on every rank if any rank found an error.

    Validation happens before the collective window allocation: raising on one
    rank only would leave the others blocked in ``Win.Allocate``.
    """
    errors = comm.allgather(error)
    bad = [f"rank {r}: {e}" for r, e in enumerate(errors) if e]
    if bad:
        more = f" (and {len(bad) - 3} more ranks)" if len(bad) > 3 else ""
        raise ValueError(f"{what}: " + "; ".join(bad[:3]) + more)


def _check_ranks(ranks: Sequence[int], size: int, me: int, name: str) -> str | None:
    if len(set(ranks)) != len(ranks):
        return f"{name} has duplicates: {list(ranks)}"
    for j in ranks:
        if not 0 <= j < size:
            return f"{name} contains {j}, not a rank of a communicator of size {size}"
        if j == me:
            return f"{name} contains the rank itself ({me})"
    return None


def _window_info() -> MPI.Info:
    info = MPI.Info.Create()
    # Every protocol step is completed with a Flush before the next one is
    # issued, so no ordering between accumulates is needed; relaxing it lets
    # the library pipeline them.
    info.Set("accumulate_ordering", "none")
    info.Set("same_disp_unit", "true")
    return info


class _Epoch:
    """Windows held in one ``Lock_all(MODE_NOCHECK)`` epoch each; collective free.

    ``free`` is idempotent and runs from ``__exit__`` whatever happened inside
    the ``with`` block, so windows are released on error paths too. It is
    collective (``MPI_Win_free`` is): every rank must reach it.
    """

    bytes_sent: int
    messages_sent: int
    rma_ops: int

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm
        self.rank = comm.Get_rank()
        self._windows: list[MPI.Win] = []
        self._locked: list[MPI.Win] = []
        self.bytes_sent = 0
        self.messages_sent = 0
        self.rma_ops = 0

    def _allocate(self, nbytes: int) -> tuple[MPI.Win, memoryview]:
        info = _window_info()
        try:
            win = MPI.Win.Allocate(nbytes, _WORD, info, self.comm)
        finally:
            info.Free()
        self._windows.append(win)
        return win, win.tomemory()

    def _open_epochs(self) -> None:
        """Open the long epochs and make the locally initialised memory visible.

        Must follow the local initialisation of every window: ``Win.Sync``
        publishes those stores (unified model) and the barrier keeps any remote
        operation from arriving before every owner has initialised.
        """
        for win in self._windows:
            win.Lock_all(MPI.MODE_NOCHECK)
            self._locked.append(win)
            win.Sync()
        self.comm.Barrier()

    @property
    def closed(self) -> bool:
        return not self._windows

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} used after free()")

    def free(self) -> None:
        """Close the epochs (completing every pending operation) and free the windows.

        Collective. Safe to call twice. Each window is unlocked and freed even
        if an earlier one failed, and the first error is re-raised afterwards.
        """
        first: BaseException | None = None
        while self._locked:
            win = self._locked.pop()
            try:
                win.Unlock_all()
            except BaseException as e:  # keep freeing, re-raise below
                first = first or e
        while self._windows:
            win = self._windows.pop()
            try:
                win.Free()
            except BaseException as e:
                first = first or e
        # The memory is unmapped now: drop the numpy views of it.
        self._release_views()
        if first is not None:
            raise first

    def _release_views(self) -> None:
        """Replace numpy views of window memory by empty arrays (called by free)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.free()


class ModelSlots(_Epoch):
    """Double-buffered model slots with a seqlock per in-neighbour (DESIGN §5.1).

    Layout (two windows, displacement unit 8 bytes, allocated with
    ``MPI.Win.Allocate``) on a rank with in-neighbours ``in_neighbors``:

    * word window: one int64 sequence word per in-neighbour, slot k at disp k;
    * data window: two float64 buffers of ``dim`` per in-neighbour, buffer b of
      slot k at disp ``(2k + b)·dim``.

    Words live apart from the data so they are always 8-byte aligned and are
    only ever written by atomic operations (``Fetch_and_op(REPLACE)`` by the
    writer; a reader loads them, or with ``atomic_words`` fetches them with
    ``Fetch_and_op``/``Get_accumulate(NO_OP)``, which fits the default
    ``accumulate_ops=same_op_no_op``). One combined window measured the same
    latency (a publish is 3 flushes either way).

    Word value w of a slot: model ⌊w/2⌋ is complete in buffer ⌊w/2⌋ mod 2, and
    w odd means model ⌊w/2⌋+1 is being written into the other buffer. Both
    buffers start as ``x0``, which is "model 0", so readers need no special
    case before the first publication.

    Writers never wait for a reader, and readers never wait for a writer:
    a reader whose copy may have been torn discards it and copies again
    (counted in :attr:`retries`; :attr:`reads` counts the slot reads that
    succeeded). A copy is torn only if the writer starts two publications
    while it runs, so a reader can be starved only by a writer that publishes
    back to back faster than the reader copies (seen in tests that publish in
    a tight loop; an agent that computes between publications cannot do
    that). Retries back off, up to 1 ms, instead of spinning.

    Word reads. A reader reads the words of its *own* window. By default it
    does so with plain aligned 8-byte loads after ``Win.Sync`` (a memory
    barrier), not with ``Get_accumulate(NO_OP)`` + ``Flush``: the two
    self-targeted fetches of a read cost 2 × 2-3 µs on an idle node, and
    under ``MPI_THREAD_MULTIPLE`` each ``Flush`` also yields the core
    (``sched_yield``), measured 20-150 µs per fetch once other processes
    compete for the cores. This is the same reasoning as
    :meth:`Board.set_iteration`'s plain store: the window is
    ``MPI_WIN_UNIFIED`` memory, the words are 8-byte aligned and written only
    by ``Fetch_and_op(REPLACE)`` of one int64, and an aligned 8-byte load is
    single-copy atomic on every CPU MPI runs on (the data copy itself was
    always plain loads, validated by the words). ``atomic_words=True`` (or
    :data:`ATOMIC_WORD_READS`) restores the MPI-atomic fetches.

    Zero-copy reads: :meth:`open_views` / :meth:`close_views` hand out the
    newest buffer of every slot *in place* (no copy), and tell afterwards
    which of them may have been overwritten while the caller used them.

    Threads: ``publish`` may run in one thread while ``read``/``read_all`` run
    in another (they use separate buffers; needs ``MPI_THREAD_MULTIPLE``, the
    mpi4py default); two concurrent publishers or two concurrent readers are
    not supported.
    """

    def __init__(
        self,
        comm: MPI.Comm,
        dim: int,
        in_neighbors: Sequence[int],
        out_neighbors: Sequence[int],
        x0: np.ndarray | None = None,
        atomic_words: bool | None = None,
    ) -> None:
        """Collective over ``comm``. ``x0`` (default zeros) is the model read from a
        slot whose writer has not published yet; every rank may pass its own.
        ``atomic_words``: read the sequence words with MPI atomics (default
        :data:`ATOMIC_WORD_READS`; see the class docstring)."""
        super().__init__(comm)
        size = comm.Get_size()
        self.dim = int(dim)
        self._shape = (self.dim,)
        self.atomic_words = ATOMIC_WORD_READS if atomic_words is None else bool(atomic_words)
        self.in_neighbors = [int(j) for j in in_neighbors]
        self.out_neighbors = [int(j) for j in out_neighbors]

        error = (
            (f"dim must be a positive integer, got {dim}" if self.dim < 1 else None)
            or _check_ranks(self.in_neighbors, size, self.rank, "in_neighbors")
            or _check_ranks(self.out_neighbors, size, self.rank, "out_neighbors")
        )
        if error is None and x0 is not None and np.shape(x0) != (self.dim,):
            error = f"x0 has shape {np.shape(x0)}, expected ({self.dim},)"
        _agree(comm, error, "ModelSlots")

        # The slot a writer owns at target j is its position in j's in_neighbors.
        all_in = comm.allgather(self.in_neighbors)
        all_out = comm.allgather(self.out_neighbors)
        out_edges = {(i, j) for i in range(size) for j in all_out[i]}
        in_edges = {(i, j) for j in range(size) for i in all_in[j]}
        mismatch = sorted(out_edges ^ in_edges)
        if mismatch:  # every rank sees the same lists, so every rank raises
            raise ValueError(
                "ModelSlots: out_neighbors and in_neighbors disagree on the edges (writer, reader) "
                + ", ".join(map(str, mismatch[:5]))
            )
        self._targets = [(j, all_in[j].index(self.rank)) for j in self.out_neighbors]
        # Whether every rank starts its slots from the same x0, bit for bit: then this rank's
        # initial model lies in its out-neighbours' windows too ("model 0", fetch_published).
        crc = None if x0 is None else zlib.crc32(np.ascontiguousarray(x0, np.float64).view(np.uint8))
        self.common_x0 = len(set(comm.allgather(crc))) == 1
        self._slot_of = {j: k for k, j in enumerate(self.in_neighbors)}

        deg = len(self.in_neighbors)
        self.published = 0  # u: number of the last model published by this rank
        self.reads = 0  # slot reads returned (read: 1, read_all: degree)
        self.retries = 0  # torn slot copies discarded and redone
        # Origin buffers: an RMA origin must stay untouched until its Flush.
        self._word = np.zeros(1, np.int64)
        self._fetch_dummy = np.zeros(max(deg, 1), np.int64)  # ignored by NO_OP
        self._w1 = np.zeros(max(deg, 1), np.int64)
        self._w2 = np.zeros(max(deg, 1), np.int64)
        self._all_slots = list(range(deg))
        # zero-copy reads (open_views/close_views): window row and model number per slot
        self._view_rows = np.zeros(deg, np.int64)
        self._view_versions = np.zeros(deg, np.int64)
        # publish: MPI buffer specs and targets built once (a publish runs every update). The
        # words are set with Fetch_and_op(REPLACE), measured ~0.8 µs cheaper than a one-element
        # Accumulate(REPLACE) (MPICH's single-element fast path); each target gets its own
        # result element, as an RMA result buffer must not be shared by pending operations.
        self._word_spec = [self._word, 1, MPI.INT64_T]
        self._word_old = np.zeros(max(len(self._targets), 1), np.int64)
        self._word_targets = [(j, k, [self._word_old[i:i + 1], 1, MPI.INT64_T])
                              for i, (j, k) in enumerate(self._targets)]
        d = self.dim
        self._data_targets = [[(j, ((2 * k + b) * d, d, MPI.DOUBLE)) for j, k in self._targets] for b in (0, 1)]
        try:
            self._word_win, word_mem = self._allocate(deg * _WORD)
            self._data_win, data_mem = self._allocate(2 * deg * self.dim * _WORD)
            if self._word_win.Get_attr(MPI.WIN_MODEL) != MPI.WIN_UNIFIED:
                self.atomic_words = True  # plain loads see remote updates only in the unified model
            self._words = np.frombuffer(word_mem, np.int64)
            self._data = np.frombuffer(data_mem, np.float64).reshape(2 * deg, self.dim)
            self._words[:] = 0
            self._data[:] = 0.0 if x0 is None else np.asarray(x0, np.float64)
            self._open_epochs()
        except BaseException:
            self.free()
            raise

    def _release_views(self) -> None:
        self._words = np.zeros(0, np.int64)
        self._data = np.zeros((0, self.dim), np.float64)

    # -- writer -------------------------------------------------------------------------
    def publish(self, x: np.ndarray) -> int:
        """Publish a copy of ``x`` as this rank's next model to every out-neighbour.

        Protocol of §5.1, batched across neighbours: word ← 2u−1 at all targets,
        flush; data into buffer u mod 2 at all targets, flush; word ← 2u at all
        targets, flush. Per target the order word/data/word is what §5.1
        requires; a flush completes each step at every target before the next
        step is issued. Returns u. ``x`` may be modified as soon as this returns.
        """
        self._check_open()
        if type(x) is not np.ndarray or x.dtype != np.float64 or not x.flags.c_contiguous:
            x = self._as_model(x, "x")  # copies only a non-float64 or strided array
        elif x.shape != self._shape:
            raise ValueError(f"x has shape {x.shape}, expected ({self.dim},)")
        u = self.published + 1
        dim = self.dim
        wwin, dwin = self._word_win, self._data_win
        word, replace = self._word_spec, MPI.REPLACE

        self._word[0] = 2 * u - 1
        for j, k, old in self._word_targets:
            wwin.Fetch_and_op(word, old, j, k, replace)
        self._flush(wwin)
        src = [x, dim, MPI.DOUBLE]  # one pass from x itself: no staging copy
        for j, target in self._data_targets[u % 2]:
            dwin.Put(src, j, target=target)
        self._flush(dwin)
        self._word[0] = 2 * u
        for j, k, old in self._word_targets:
            wwin.Fetch_and_op(word, old, j, k, replace)
        self._flush(wwin)

        self.published = u
        deg = len(self._targets)
        self.messages_sent += deg
        self.rma_ops += 3 * deg
        self.bytes_sent += deg * (dim + 2) * _WORD
        return u

    @staticmethod
    def _flush(win: MPI.Win) -> None:
        # One Flush_all, not a Flush per target: measured faster even on a ring
        # of 32 ranks (MPICH completes only the targets that have pending
        # operations, and it saves a Python call per target). The only
        # operations pending on these windows are this step's, so it completes
        # exactly them.
        win.Flush_all()

    # -- reader -------------------------------------------------------------------------
    def read(self, j: int, out: np.ndarray) -> int:
        """Copy the newest complete model of in-neighbour ``j`` into ``out``; return its number.

        0 means ``j`` has published nothing yet and ``out`` holds ``x0``.
        The number never decreases between calls.
        """
        self._check_open()
        k = self._slot_of.get(j)
        if k is None:
            raise ValueError(f"rank {j} is not an in-neighbour of rank {self.rank}")
        out = self._as_out(out, (self.dim,))
        return int(self._read_slots([k], out[np.newaxis, :])[0])

    def read_all(self, out: np.ndarray) -> np.ndarray:
        """Copy every in-neighbour's newest complete model into row k of ``out``.

        ``out`` has shape ``(len(in_neighbors), dim)``, rows ordered like
        ``in_neighbors``. Returns the model numbers (int64, one per row).
        All words are fetched with one ``Get_accumulate(NO_OP)``; only torn
        slots are copied again.
        """
        self._check_open()
        deg = len(self.in_neighbors)
        out = self._as_out(out, (deg, self.dim))
        if deg == 0:
            return np.zeros(0, np.int64)
        return self._read_slots(list(range(deg)), out)

    def _read_slots(self, slots: list[int], out: np.ndarray) -> np.ndarray:
        """Seqlock read (§5.1) of ``slots`` into the rows of ``out``; returns model numbers."""
        n = len(slots)
        versions = [0] * n
        todo: Sequence[int] = range(n)  # row indices still to (re)read
        w1 = self._fetch_words(slots, self._w1)
        self.reads += n
        data = self._data
        attempt = 0
        while True:
            self._data_win.Sync()  # order the copy after the word fetch
            for r in todo:
                d = w1[r] // 2
                versions[r] = d
                out[r] = data[2 * slots[r] + d % 2]
            self._data_win.Sync()  # order the copy before the second fetch
            w2 = self._fetch_words(slots, self._w2)
            # Buffer d mod 2 is rewritten only by model d+2, announced by word 2d+3.
            torn = [r for r in todo if w2[r] >= 2 * versions[r] + 3]
            if not torn:
                return np.array(versions, np.int64)
            self.retries += len(torn)
            attempt += 1
            todo = torn
            w1 = w2
            if attempt > _IMMEDIATE_RETRIES:
                time.sleep(min(_BACKOFF_START_S * 2 ** (attempt - _IMMEDIATE_RETRIES), _BACKOFF_MAX_S))

    def _fetch_words(self, slots: list[int], buf: np.ndarray) -> list[int]:
        """The sequence words of ``slots`` (contiguous) in this rank's own window, read atomically.

        Plain aligned loads after ``Win.Sync``, or MPI atomics with
        ``atomic_words`` (see the class docstring).
        """
        win = self._word_win
        win.Sync()  # see remote updates of the words (unified model); a full memory barrier
        n = len(slots)
        if not self.atomic_words:
            # ndarray.tolist() reads each int64 with one aligned 8-byte load
            return self._words[slots[0]:slots[0] + n].tolist() if n else []
        if n == 1:
            win.Fetch_and_op(
                [self._fetch_dummy, 1, MPI.INT64_T], [buf, 1, MPI.INT64_T], self.rank, slots[0], MPI.NO_OP
            )
        else:  # read_all: contiguous slots 0..deg-1, element-wise atomic
            win.Get_accumulate(
                [self._fetch_dummy, n, MPI.INT64_T],
                [buf, n, MPI.INT64_T],
                self.rank,
                target=(slots[0], n, MPI.INT64_T),
                op=MPI.NO_OP,
            )
        win.Flush(self.rank)
        return buf[:n].tolist()

    # -- zero-copy reader -------------------------------------------------------------------
    def open_views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Begin a zero-copy read of every slot: returns ``(data, rows, versions)``.

        ``data`` is this rank's window of slot buffers, shape ``(2·deg, dim)``;
        ``data[rows[k]]`` is in-neighbour k's newest complete model, number
        ``versions[k]``, in place: nothing is copied. Writers keep publishing
        meanwhile, so whatever the caller computes from these rows is valid
        only if :meth:`close_views`, called after the caller's last load from
        ``data``, reports no torn slot. ``rows`` and ``versions`` are reused
        by the next call. Same seqlock as :meth:`read_all` (§5.1) with the
        copy replaced by the caller's own pass over the buffers.
        """
        self._check_open()
        w1 = self._fetch_words(self._all_slots, self._w1)
        rows, versions = self._view_rows, self._view_versions
        for k, w in enumerate(w1):
            d = w // 2
            versions[k] = d
            rows[k] = 2 * k + d % 2
        self._data_win.Sync()  # order the caller's loads after the word fetch
        return self._data, rows, versions

    def close_views(self) -> list[int]:
        """End the read begun by :meth:`open_views`: the slots whose buffer may have
        been rewritten while it was in use (usually none).

        Buffer d mod 2 is rewritten only by model d+2, announced by word 2d+3
        before its data is written; a slot listed here must be read again
        (:meth:`read`/:meth:`read_all`), and anything computed from its view
        discarded.
        """
        self._check_open()
        self._data_win.Sync()  # order the caller's loads before the second fetch
        w2 = self._fetch_words(self._all_slots, self._w2)
        versions = self._view_versions
        torn = [k for k, w in enumerate(w2) if w >= 2 * int(versions[k]) + 3]
        self.reads += len(w2)
        self.retries += len(torn)
        return torn

    def fetch_published(self, out: np.ndarray) -> int:
        """Copy this rank's last published model back from an out-neighbour's window into ``out``.

        Returns its number. Exact: that buffer is rewritten only by this
        rank's own next publication. Lets a caller that updated its model in
        place undo the update (it has published the model it started from).
        Before the first publication this is model 0, x0, which the
        out-neighbour's buffers hold when every rank passed the same x0
        (:attr:`common_x0`).
        """
        self._check_open()
        if not self._targets:
            raise RuntimeError("fetch_published: this rank has no out-neighbour")
        if self.published == 0 and not self.common_x0:
            raise RuntimeError("fetch_published: nothing published yet, and the ranks' x0 differ")
        out = self._as_out(out, (self.dim,))
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        j, target = self._data_targets[self.published % 2][0]
        self._data_win.Get([out, self.dim, MPI.DOUBLE], j, target=target)
        self._data_win.Flush(j)
        return self.published

    # -- helpers ------------------------------------------------------------------------
    def _as_model(self, x: np.ndarray, name: str) -> np.ndarray:
        if np.shape(x) != (self.dim,):
            raise ValueError(f"{name} has shape {np.shape(x)}, expected ({self.dim},)")
        # A copy only when the caller passes a non-float64 or strided array.
        return np.ascontiguousarray(x, dtype=np.float64)

    @staticmethod
    def _as_out(out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float64:
            got = (getattr(out, "shape", None), getattr(out, "dtype", None))
            raise ValueError(f"out must be a float64 array of shape {shape}, got {got}")
        return out


class DeltaAccumulator(_Epoch):
    """A window of ``dim`` float64 per rank that neighbours add deltas into (DESIGN §5.2).

    Senders ``Accumulate(SUM)``; accumulates are element-wise atomic across
    origins, so concurrent senders never lose an update. The owner takes
    everything with :meth:`drain_into` (``Get_accumulate`` of zeros with
    ``REPLACE`` on itself: an element-wise atomic swap). A drain may see part
    of one message and the rest at the next drain; nothing is lost or counted
    twice.

    The drain mixes ``REPLACE`` with the senders' ``SUM`` on one location,
    which the MPI default hint ``accumulate_ops=same_op_no_op`` formally
    excludes. MPICH stays atomic here: with its default
    ``which_accumulate_ops`` (all ops) it uses network atomics only where every
    op has them (ch4/ofi source), and on one node all accumulates take the
    shared-memory path; the lossless test checks it on this MPI. The
    ``initial=`` mode below needs only SUM and NO_OP, within the default hint
    on any MPI.

    Alternative mode for Alg. 3 ("the deltas land directly in the s_i
    window", DESIGN §4): construct with ``initial=(1 − w_ii)·x0`` and never
    drain. The window then *is* s_i = s_i(0) + Σ(deltas arrived), and
    :meth:`snapshot_into` copies it with an element-wise atomic
    ``Get_accumulate(NO_OP)``. This is exact for the same reason draining is
    (each element is read atomically; an element may hold part of a message
    and get the rest later, as with a drain; nothing is subtracted, so nothing
    can be lost), and it saves the zero-writing and the ``s += r`` pass:
    measured 5× cheaper than :meth:`drain_into` at d = 1e6
    (``benchmarks/bench_rma.py``). Reading the window memory directly with
    numpy would avoid even the copy, but MPI does not make plain loads atomic
    with concurrent accumulates, so this class does not offer it.

    Threads: ``accumulate`` in one thread and ``drain_into``/``snapshot_into``
    in another is fine (separate buffers); two concurrent ``accumulate`` calls
    are not (they share the scaling scratch).
    """

    def __init__(
        self,
        comm: MPI.Comm,
        dim: int,
        out_neighbors: Sequence[int],
        initial: np.ndarray | None = None,
    ) -> None:
        """Collective over ``comm``. ``initial`` (default zeros) is this rank's
        starting window content (s_i(0) in the ``snapshot_into`` mode)."""
        super().__init__(comm)
        self.dim = int(dim)
        self.out_neighbors = [int(j) for j in out_neighbors]
        error = (f"dim must be a positive integer, got {dim}" if self.dim < 1 else None) or _check_ranks(
            self.out_neighbors, comm.Get_size(), self.rank, "out_neighbors"
        )
        if error is None and initial is not None and np.shape(initial) != (self.dim,):
            error = f"initial has shape {np.shape(initial)}, expected ({self.dim},)"
        _agree(comm, error, "DeltaAccumulator")

        self._out = set(self.out_neighbors)
        self.drains = 0
        # Reused buffers: scaling, the REPLACE source and the fetched result are
        # never allocated per call (dim may be 1e7).
        self._scratch = np.empty(self.dim, np.float64)
        self._zeros = np.zeros(self.dim, np.float64)
        self._result = np.empty(self.dim, np.float64)
        try:
            self._win, mem = self._allocate(self.dim * _WORD)
            self._local = np.frombuffer(mem, np.float64)
            self._local[:] = 0.0 if initial is None else np.asarray(initial, np.float64)
            self._open_epochs()
        except BaseException:
            self.free()
            raise

    def _release_views(self) -> None:
        self._local = np.zeros(0, np.float64)

    def accumulate(self, j: int, delta: np.ndarray, scale: float = 1.0) -> None:
        """Add ``scale · delta`` into out-neighbour ``j``'s window; complete on return."""
        self._check_open()
        if j not in self._out:
            raise ValueError(f"rank {j} is not an out-neighbour of rank {self.rank}")
        if np.shape(delta) != (self.dim,):
            raise ValueError(f"delta has shape {np.shape(delta)}, expected ({self.dim},)")
        if scale == 1.0 and delta.dtype == np.float64 and delta.flags.c_contiguous:
            src = delta
        else:
            np.multiply(delta, scale, out=self._scratch)
            src = self._scratch
        self._win.Accumulate([src, self.dim, MPI.DOUBLE], j, target=(0, self.dim, MPI.DOUBLE), op=MPI.SUM)
        # Completes the sum at j and frees src/scratch for reuse.
        self._win.Flush(j)
        self.messages_sent += 1
        self.rma_ops += 1
        self.bytes_sent += self.dim * _WORD

    def drain_into(self, s: np.ndarray) -> None:
        """s ← s + (everything accumulated here), zeroing the window atomically."""
        self._check_open()
        self._check_target(s, "s")
        win = self._win
        win.Get_accumulate(
            [self._zeros, self.dim, MPI.DOUBLE],
            [self._result, self.dim, MPI.DOUBLE],
            self.rank,
            target=(0, self.dim, MPI.DOUBLE),
            op=MPI.REPLACE,
        )
        win.Flush(self.rank)
        s += self._result
        self.drains += 1

    def snapshot_into(self, out: np.ndarray) -> None:
        """out ← current window content, element-wise atomic (``initial=`` mode).

        In this mode the window is s_i itself: the owner never drains, so the
        content is ``initial`` plus every delta that has arrived.
        """
        self._check_open()
        self._check_target(out, "out")
        win = self._win
        win.Get_accumulate(
            [self._zeros, self.dim, MPI.DOUBLE],  # ignored by NO_OP
            [out, self.dim, MPI.DOUBLE],
            self.rank,
            target=(0, self.dim, MPI.DOUBLE),
            op=MPI.NO_OP,
        )
        win.Flush(self.rank)
        self.drains += 1

    def _check_target(self, a: np.ndarray, name: str) -> None:
        if (
            not isinstance(a, np.ndarray)
            or a.shape != (self.dim,)
            or a.dtype != np.float64
            or not a.flags.c_contiguous
        ):
            got = (getattr(a, "shape", None), getattr(a, "dtype", None))
            raise ValueError(f"{name} must be a contiguous float64 array of shape ({self.dim},), got {got}")
