"""Per-rank "notice board": counters and the model the monitor reads, all one-sided (docs/design.md §5).

Every rank of the job (workers and monitor) owns two windows, each held in
one ``Lock_all(MODE_NOCHECK)`` epoch (:mod:`.epoch`):

* a word window of :data:`WORDS` int64 per rank: ``SEQ`` the seqlock word of
  the model published for the monitor, ``ITER`` the worker's update count
  (read by neighbours for staleness and by the monitor for the gradient
  column), ``TOTAL`` (rank 0 only) the job-wide gradient counter of a
  gradient budget (``Fetch_and_op(SUM)``), ``STALE`` the staleness the
  worker last recorded (float64 bits; the live status line, :mod:`.status`),
  then ``clock_len`` words for an algorithm with a vector clock (DASGD: the
  gradients of each origin applied here, read by the monitor for S_avg/S_max);
* a data window of two model buffers per worker (only when the job has a
  monitor rank).

The model is published *into the worker's own window* and *pulled* by the
monitor: the worker only copies d floats locally and bumps its own word, so
it never sends anything, never waits, and its memory does not depend on the
number of workers; the monitor copies one model at a time. The seqlock is
§5.1's with the roles of the windows swapped: the writer sets its word to
2u−1, writes buffer u mod 2, sets the word to 2u; the reader fetches the word
w1 remotely, copies buffer ⌊w1/2⌋ mod 2, fetches the word again as w2 and
keeps the copy iff w2 < 2⌊w1/2⌋ + 3.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.dtypes import model_dtype, mpi_type
from hpcasync.engines.mpi.epoch import IMMEDIATE_RETRIES, Epoch, back_off_s

SEQ, ITER, TOTAL, STALE = 0, 1, 2, 3
WORDS = 4
_W = MPI.INT64_T


class Board(Epoch):
    """Collective over ``comm`` (all ranks). ``publishes`` is True on workers of a job with a monitor.

    ``dtype``: of the published models (the problem's; default x0's, else float64).
    ``clock_len``: words of vector clock per rank (the same on every rank; 0 = none).
    """

    def __init__(self, comm: MPI.Comm, dim: int, publishes: bool, x0: np.ndarray | None = None,
                 dtype: np.dtype | type | None = None, clock_len: int = 0) -> None:
        super().__init__(comm)
        self.clock_len = int(clock_len)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype) if dtype is not None else model_dtype(x0)
        self._T = mpi_type(self.dtype)
        self.publishes = bool(publishes)
        self.published = 0
        self.retries = 0
        self._one = np.zeros(1, np.int64)
        self._res = np.zeros(1, np.int64)
        self._dummy = np.zeros(1, np.int64)
        def initialise() -> None:
            self._words_win, self._words = self.allocate((WORDS + self.clock_len) * 8, np.int64)
            size = self.dtype.itemsize
            nbytes = 2 * self.dim * size if self.publishes else 0
            self._data_win, data = self.allocate(nbytes, self.dtype, disp_unit=size)  # displacements in elements
            self._words[:] = 0
            self._words[STALE:STALE + 1].view(np.float64)[0] = np.nan
            if self.publishes:
                data.reshape(2, self.dim)[:] = 0.0 if x0 is None else np.asarray(x0, self.dtype)

        self.build(initialise)

    def release_views(self) -> None:
        self._words = np.zeros(0, np.int64)

    # -- counters ----------------------------------------------------------------------
    def _set_own(self, index: int, value: int) -> None:
        self._one[0] = value
        self._words_win.Accumulate([self._one, 1, _W], self.rank, target=(index, 1, _W), op=MPI.REPLACE)
        self._words_win.Flush(self.rank)

    def set_iteration(self, k: int) -> None:
        """Make this worker's update count ``k`` visible to the other ranks.

        A plain aligned 8-byte store into this rank's own window memory (the
        unified memory model of ``Win.Allocate``), not an MPI call: it runs
        after every update, and a self-``Accumulate`` + ``Flush`` measured
        ~10 µs with multi-millisecond outliers after a long sleep. Readers use
        atomic fetches; an aligned 8-byte store is single-copy atomic on the
        hardware MPI shared memory and RDMA run on, and the count is a
        statistic (staleness, the monitor's gradient column), never a lock.
        """
        self.check_open()
        self._words[ITER] = k

    def set_staleness(self, value: float) -> None:
        """Make the staleness this worker last recorded visible (a local store, as :meth:`set_iteration`)."""
        self.check_open()
        self._words[STALE:STALE + 1].view(np.float64)[0] = value

    def read_staleness(self, ranks: Sequence[int], out: np.ndarray) -> np.ndarray:
        """``out[r] ←`` the staleness ``ranks[r]`` last recorded (float64; NaN before its first)."""
        words = self._read_words(ranks, STALE, np.zeros((len(ranks), 1), np.int64))
        out[:] = words.view(np.float64)[:, 0]
        return out

    def set_clock(self, clock: np.ndarray) -> None:
        """Make this worker's vector clock visible (local stores, as :meth:`set_iteration`; a statistic)."""
        self.check_open()
        self._words[WORDS:WORDS + self.clock_len] = clock

    def read_clocks(self, ranks: Sequence[int], out: np.ndarray) -> np.ndarray:
        """``out[r] ←`` the vector clock of ``ranks[r]`` (``out``: (len(ranks), clock_len) int64).

        Each word is read atomically, the vector as a whole is not: a clock
        that moves meanwhile is seen partly before and partly after, which
        is as good as any instant for a staleness statistic."""
        return self._read_words(ranks, WORDS, out)

    def read_iterations(self, ranks: Sequence[int], out: np.ndarray) -> np.ndarray:
        """``out[r] ←`` update count of ``ranks[r]``."""
        self._read_words(ranks, ITER, out[:, None])  # a view: the counts land in out
        return out

    def _read_words(self, ranks: Sequence[int], index: int, rows: np.ndarray) -> np.ndarray:
        """``rows[r] ←`` the ``rows.shape[1]`` words of ``ranks[r]`` from word ``index`` on, each read
        atomically (``Rget_accumulate(NO_OP)``, completed by the requests: :mod:`.epoch`, "Reads")."""
        self.check_open()
        k = rows.shape[1]
        dummy = self._dummy if k == 1 else np.zeros(k, np.int64)
        MPI.Request.Waitall([self._words_win.Rget_accumulate([dummy, k, _W], [rows[r], k, _W], j,
                                                             target=(index, k, _W), op=MPI.NO_OP)
                             for r, j in enumerate(ranks)])
        return rows

    def add_total(self, k: int) -> int:
        """Add ``k`` gradients to the job-wide counter on rank 0; returns the new total."""
        self.check_open()
        self._one[0] = k
        self._words_win.Fetch_and_op([self._one, 1, _W], [self._res, 1, _W], 0, TOTAL, MPI.SUM)
        self._words_win.Flush(0)
        return int(self._res[0]) + k

    # -- the model the monitor reads ---------------------------------------------------
    def publish(self, x: np.ndarray) -> None:
        """Seqlock write of ``x`` into this worker's own buffers (local copies, no remote traffic)."""
        self.check_open()
        if not self.publishes:
            return
        u = self.published + 1
        self._set_own(SEQ, 2 * u - 1)
        dwin = self._data_win
        dwin.Put([np.ascontiguousarray(x, self.dtype), self.dim, self._T], self.rank,
                 target=((u % 2) * self.dim, self.dim, self._T))
        dwin.Flush(self.rank)
        self._set_own(SEQ, 2 * u)
        self.published = u

    def _fetch(self, j: int, index: int) -> int:
        win = self._words_win
        win.Rget_accumulate([self._dummy, 1, _W], [self._res, 1, _W], j, target=(index, 1, _W),
                            op=MPI.NO_OP).Wait()
        return int(self._res[0])

    def read_model(self, j: int, out: np.ndarray) -> int:
        """Copy worker ``j``'s newest complete published model into ``out``; returns its number.

        Never waits for ``j``: a copy that ``j`` may have overwritten meanwhile
        is discarded and redone, with a growing sleep after the first retries.
        """
        self.check_open()
        attempt = 0
        w1 = self._fetch(j, SEQ)
        while True:
            d = w1 // 2
            self._data_win.Rget([out, self.dim, self._T], j, target=((d % 2) * self.dim, self.dim, self._T)).Wait()
            w2 = self._fetch(j, SEQ)
            if w2 < 2 * d + 3:
                return d
            self.retries += 1
            attempt += 1
            w1 = w2
            if attempt > IMMEDIATE_RETRIES:
                time.sleep(back_off_s(attempt))
                w1 = self._fetch(j, SEQ)  # not w2: see ModelSlots._read_slots (a livelock otherwise)
