"""Double-buffered model slots with a seqlock per in-neighbour.

Every agent publishes its latest model into a slot in each out-neighbour's
memory; readers copy the newest complete model. No method takes a lock, and
none waits for another rank (the windows live in one long epoch,
:mod:`hpcasync.engines.mpi.epoch`). Counts ``bytes_sent`` and
``messages_sent``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.dtypes import model_dtype, mpi_type
from hpcasync.engines.mpi.epoch import IMMEDIATE_RETRIES, WORD, Epoch, back_off_s, check_ranks
from hpcasync.engines.mpi.world import agree

__all__ = ["ATOMIC_WORD_READS", "ModelSlots"]

# Retry backoff of a seqlock reader: the first retries are immediate (the
# writer usually finished long ago), later ones sleep so that a reader never
# spins on MPI calls against a writer that publishes faster than it copies.

#: Default of ``ModelSlots(atomic_words=...)``: read the sequence words of this
#: rank's own slots with MPI atomics (``Get_accumulate(NO_OP)`` + ``Flush``)
#: instead of plain loads after ``Win.Sync``. See :class:`ModelSlots`.
ATOMIC_WORD_READS = False


class ModelSlots(Epoch):
    """Double-buffered model slots with a seqlock per in-neighbour (docs/design.md §5.1).

    Layout (two windows, displacement unit 8 bytes, allocated with
    ``MPI.Win.Allocate``) on a rank with in-neighbours ``in_neighbors``:

    * word window: one int64 sequence word per in-neighbour, slot k at disp k;
    * data window: two buffers of ``dim`` elements of the model dtype (float64, or float32
      for torch models; the displacement unit is one element) per in-neighbour, buffer b of
      slot k at disp ``(2k + b)·dim``.

    Words live apart from the data so they are always 8-byte aligned and are
    only ever written by atomic operations (``Fetch_and_op(REPLACE)`` by the
    writer; a reader loads them, or with ``atomic_words`` fetches them with
    ``Fetch_and_op``/``Get_accumulate(NO_OP)``, which fits the default
    ``accumulate_ops=same_op_no_op``). One combined window measured the same
    latency.

    Word values, the writer's steps, the reader's consistency test and why no one
    waits: docs/design.md §5.1. Torn copies are discarded and copied again
    (:attr:`retries`; :attr:`reads` counts the slot reads returned), backing off up
    to 1 ms instead of spinning.

    Word reads. A reader reads the words of its *own* window with plain aligned
    8-byte loads after ``Win.Sync`` (a memory barrier), not with
    ``Get_accumulate(NO_OP)`` + ``Flush``: those cost 2 × 2-3 µs per read on an idle
    node and, under ``MPI_THREAD_MULTIPLE``, 20-150 µs once other processes compete
    for the cores (each ``Flush`` yields). The window is ``MPI_WIN_UNIFIED`` memory,
    the words are aligned and written only by one-int64 ``Fetch_and_op(REPLACE)``,
    and such a load is single-copy atomic on every CPU MPI runs on (as
    :meth:`Board.set_iteration`'s store). ``atomic_words=True`` (or
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
        dtype: np.dtype | type | None = None,
        defer_closing: bool = False,
    ) -> None:
        """Collective over ``comm``. ``x0`` (default zeros) is the model read from a
        slot whose writer has not published yet; every rank may pass its own.
        ``atomic_words``: read the sequence words with MPI atomics (default
        :data:`ATOMIC_WORD_READS`; see the class docstring). ``defer_closing``:
        two flushes per publication instead of three (:meth:`publish`); the caller
        then calls :meth:`complete` before it relies on its last model being visible."""
        super().__init__(comm)
        self.defer_closing = bool(defer_closing)
        self._closing_pending = False
        size = comm.Get_size()
        self.dim = int(dim)
        self._shape = (self.dim,)
        self.dtype = np.dtype(dtype) if dtype is not None else model_dtype(x0)  # x0's, else float64
        self._T = mpi_type(self.dtype)
        self.atomic_words = ATOMIC_WORD_READS if atomic_words is None else bool(atomic_words)
        self.in_neighbors = [int(j) for j in in_neighbors]
        self.out_neighbors = [int(j) for j in out_neighbors]

        error = (
            (f"dim must be a positive integer, got {dim}" if self.dim < 1 else None)
            or check_ranks(self.in_neighbors, size, self.rank, "in_neighbors")
            or check_ranks(self.out_neighbors, size, self.rank, "out_neighbors")
        )
        if error is None and x0 is not None and np.shape(x0) != (self.dim,):
            error = f"x0 has shape {np.shape(x0)}, expected ({self.dim},)"
        agree(comm, error, "ModelSlots")

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
        crc = None if x0 is None else zlib.crc32(np.ascontiguousarray(x0, self.dtype).view(np.uint8))
        self.common_x0 = len(set(comm.allgather(crc))) == 1
        self._slot_of = {j: k for k, j in enumerate(self.in_neighbors)}

        deg = len(self.in_neighbors)
        self.published = 0  # u: number of the last model published by this rank
        self.reads = 0  # slot reads returned (read: 1, read_all: degree)
        self.retries = 0  # torn slot copies discarded and redone
        # Origin buffers stay untouched until their Flush; a deferred closing word has its own.
        self._word = np.zeros(1, np.int64)
        self._word_closing = np.zeros(1, np.int64)
        self._fetch_dummy = np.zeros(max(deg, 1), np.int64)  # ignored by NO_OP
        self._w1 = np.zeros(max(deg, 1), np.int64)
        self._w2 = np.zeros(max(deg, 1), np.int64)
        self._all_slots = list(range(deg))
        # zero-copy reads (open_views/close_views): window row and model number per slot
        self._views = np.zeros((2, deg), np.int64)  # one array: the fused kernel takes it as one argument
        self._view_rows, self._view_versions = self._views
        # publish: MPI buffer specs and targets built once (a publish runs every update). The
        # words are set with Fetch_and_op(REPLACE), measured ~0.8 µs cheaper than a one-element
        # Accumulate(REPLACE) (MPICH's single-element fast path); each target gets its own
        # result element, as an RMA result buffer must not be shared by pending operations.
        self._word_spec = [self._word, 1, MPI.INT64_T]
        self._closing_spec = [self._word_closing, 1, MPI.INT64_T]
        self._word_old = np.zeros(max(len(self._targets), 1), np.int64)
        self._closing_old = np.zeros(max(len(self._targets), 1), np.int64)
        self._word_targets = [(j, k, [self._word_old[i:i + 1], 1, MPI.INT64_T])
                              for i, (j, k) in enumerate(self._targets)]
        self._closing_results = [[self._closing_old[i:i + 1], 1, MPI.INT64_T] for i in range(len(self._targets))]
        d = self.dim
        self._data_targets = [[(j, ((2 * k + b) * d, d, self._T)) for j, k in self._targets] for b in (0, 1)]
        def initialise() -> None:
            # a deferred closing word and the next opening word go to the same word unflushed:
            # MPI's default accumulate ordering (waw) applies them in that order
            self._word_win, self._words = self.allocate(deg * WORD, np.int64,
                                                        relaxed_ordering=not self.defer_closing)
            size = self.dtype.itemsize
            self._data_win, data = self.allocate(2 * deg * self.dim * size, self.dtype, disp_unit=size)
            if self._word_win.Get_attr(MPI.WIN_MODEL) != MPI.WIN_UNIFIED:
                self.atomic_words = True  # plain loads see remote updates only in the unified model
            self._data = data.reshape(2 * deg, self.dim)
            self._words[:] = 0
            self._data[:] = 0.0 if x0 is None else np.asarray(x0, self.dtype)

        self.build(initialise)

    def release_views(self) -> None:
        self._words = np.zeros(0, np.int64)
        self._data = np.zeros((0, self.dim), self.dtype)

    # -- writer -------------------------------------------------------------------------
    def publish(self, x: np.ndarray) -> int:
        """Publish a copy of ``x`` as this rank's next model to every out-neighbour.

        Protocol of §5.1, batched across neighbours: word ← 2u−1 at all targets,
        flush; data into buffer u mod 2 at all targets, flush; word ← 2u at all
        targets, flush. Per target the order word/data/word is what §5.1
        requires; a flush completes each step at every target before the next
        step is issued. Returns u. ``x`` may be modified as soon as this returns.

        With ``defer_closing`` the last flush is left to the next publication's first
        one (the word window keeps MPI's default accumulate ordering, so closing and
        next opening land in issue order; docs/design.md §5.1); :meth:`complete` forces it.
        """
        return self._publish(x, self.published + 1)

    def _publish(self, x: np.ndarray, u: int) -> int:
        """Publish ``x`` as model ``u`` (> :attr:`published`, of the other parity). The opening
        word is 2p+1, p the last model (= 2u−1 unless numbers skip), so that a reader labels a copy
        with the number of the model it holds (docs/design.md §5.1)."""
        self.check_open()
        if type(x) is not np.ndarray or x.dtype != self.dtype or not x.flags.c_contiguous:
            x = self._as_model(x, "x")  # copies only an array of another dtype or a strided one
        elif x.shape != self._shape:
            raise ValueError(f"x has shape {x.shape}, expected ({self.dim},)")
        dim = self.dim
        wwin, dwin = self._word_win, self._data_win
        word, replace = self._word_spec, MPI.REPLACE

        self._word[0] = 2 * self.published + 1
        for j, k, old in self._word_targets:
            wwin.Fetch_and_op(word, old, j, k, replace)
        self._flush(wwin)  # also completes the last publication's deferred closing word
        src = [x, dim, self._T]  # one pass from x itself: no staging copy
        for j, target in self._data_targets[u % 2]:
            dwin.Put(src, j, target=target)
        self._flush(dwin)
        self._close(2 * u)

        self.published = u
        deg = len(self._targets)
        self.messages_sent += deg
        self.rma_ops += 3 * deg
        self.bytes_sent += deg * (dim * self.dtype.itemsize + 2 * WORD)
        return u

    def _close(self, closing: int) -> None:
        """The closing word 2u at every RMA target; flushed now, or with ``defer_closing`` by the next
        publication's first flush (or :meth:`complete`)."""
        self._word_closing[0] = closing
        wwin, spec, replace = self._word_win, self._closing_spec, MPI.REPLACE
        for i, (j, k, _) in enumerate(self._word_targets):  # a result buffer each, apart from the opening's
            wwin.Fetch_and_op(spec, self._closing_results[i], j, k, replace)
        if self.defer_closing:
            self._closing_pending = bool(self._word_targets)
        elif self._word_targets:
            self._flush(wwin)

    def complete(self) -> None:
        """Complete a deferred closing word: the last publication is then visible at every target."""
        if self._closing_pending:
            self._word_win.Flush_all()
            self._closing_pending = False

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
        self.check_open()
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
        self.check_open()
        deg = len(self.in_neighbors)
        out = self._as_out(out, (deg, self.dim))
        if deg == 0:
            return np.zeros(0, np.int64)
        return self._read_slots(list(range(deg)), out)

    def newest_numbers(self) -> list[int]:
        """The sequence word of every in-neighbour's slot (changes when a publication starts or ends)."""
        return self._fetch_words(list(range(len(self.in_neighbors))), self._w1)

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
            # Buffer d mod 2 is rewritten only by the second model after d, announced by a word ≥ 2d+3.
            torn = [r for r in todo if w2[r] >= 2 * versions[r] + 3]
            if not torn:
                return np.array(versions, np.int64)
            self.retries += len(torn)
            attempt += 1
            todo = torn
            if attempt > IMMEDIATE_RETRIES:
                time.sleep(back_off_s(attempt))
                # Not w2: a writer that published twice during the sleep would make every copy taken
                # after it look torn against a word from before it (a livelock; test_windows.py).
                w1 = self._fetch_words(slots, self._w1)
            else:
                w1 = w2

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
        self.check_open()
        w1 = self._fetch_words(self._all_slots, self._w1)
        rows, versions = self._view_rows, self._view_versions
        for k, w in enumerate(w1):
            d = w // 2
            versions[k] = d
            rows[k] = 2 * k + d % 2
        self._data_win.Sync()  # order the caller's loads after the word fetch
        return self._data, rows, versions

    @property
    def view_versions(self) -> np.ndarray:
        """The model number of each slot as the last zero-copy read found it (reused by the next)."""
        return self._view_versions

    def close_views(self) -> list[int]:
        """End the read begun by :meth:`open_views`: the slots whose buffer may have
        been rewritten while it was in use (usually none).

        Buffer d mod 2 is rewritten only by the second model published after
        d, announced by a word ≥ 2d+3 before its data is written; a slot listed here must be read again
        (:meth:`read`/:meth:`read_all`), and anything computed from its view
        discarded.
        """
        self.check_open()
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
        self.check_open()
        if not self._targets:
            raise RuntimeError("fetch_published: this rank has no out-neighbour")
        if self.published == 0 and not self.common_x0:
            raise RuntimeError("fetch_published: nothing published yet, and the ranks' x0 differ")
        out = self._as_out(out, (self.dim,))
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        j, target = self._data_targets[self.published % 2][0]
        self._data_win.Rget([out, self.dim, self._T], j, target=target).Wait()  # a read (epoch.py, "Reads")
        return self.published

    # -- helpers ------------------------------------------------------------------------
    def _as_model(self, x: np.ndarray, name: str) -> np.ndarray:
        if np.shape(x) != (self.dim,):
            raise ValueError(f"{name} has shape {np.shape(x)}, expected ({self.dim},)")
        # A copy only when the caller passes an array of another dtype or a strided one.
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _as_out(self, out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != self.dtype:
            got = (getattr(out, "shape", None), getattr(out, "dtype", None))
            raise ValueError(f"out must be a {self.dtype} array of shape {shape}, got {got}")
        return out
