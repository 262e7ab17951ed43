"""AD-PSGD's atomic pairwise averaging on MPI: a window of live models guarded by lock words.

docs/design.md §5.3 (Lian et al. 2018, Alg. 1: the average of x_i and x_j is atomic; here the
exclusion is a lock word taken by compare-and-swap, not an MPI exclusive lock).

Model window. Each worker owns, in one ``MPI.Win.Allocate`` window
(displacement unit 8 bytes), its live model and a few int64 words::

    disp 0 .. m-1     x_i, the agent's model itself (float64, or float32 for torch models;
                      m = ⌈d·itemsize/8⌉ words)
    disp m            ITER: the owner's update count, written with x_i
    disp m+1+k        the update count of neighbour k (k-th of ``neighbors``)
                      when its model was last averaged into x_i (staleness)

The agent's ``x`` *is* this memory (:attr:`PairWindow.x`; the runner binds
the algorithm's ``x`` to it), rather than a private array copied in and out:
copying in/out would need a second buffer and three passes over d per step
(apply the local change to the window, copy back, remember what was copied)
to fold in the averages that arrived meanwhile, while the shared model costs
one copy per step (the snapshot below) and keeps the window the single
truth, so no average can be lost between two copies.

Control window. A second, tiny window holds two int64 words per rank::

    disp 0   RESERVED: 0, or r+1 while active agent r has reserved this agent
    disp 1   LOCK:     0, or r+1 while rank r (a peer, or the owner) holds
                       this agent's model

Both windows stay in one ``Lock_all(MODE_NOCHECK)`` epoch from construction
to :meth:`PairWindow.free`; every operation is completed with ``Flush``
(docs/design.md §5, :mod:`epoch`). There are no MPI exclusive locks (``Win.Lock`` /
``Win.Unlock``): their grant and release are served by the target's progress
engine, which made each exchange wait for the peer to enter MPI. (Open MPI
4.1.4's osc rdma over btl vader crashes in its emulated atomics either way:
in ``Win_unlock`` before, in ``Compare_and_swap`` now; use ``--mca osc sm``
there.) The words are accessed only with
atomics (``Compare_and_swap``), by the owner too; the model only with
``Get``/``Put`` by a peer holding LOCK, or with loads and stores by the
owner holding LOCK.

* take(j, LOCK): ``Compare_and_swap`` LOCK_j 0 → i+1, ``Flush(j)``; if the
  old value was not 0 another rank holds it: sleep (20 µs, doubling, capped
  at 200 µs: no busy spin) and retry. give(j, LOCK): ``Compare_and_swap``
  LOCK_j i+1 → 0, ``Flush(j)`` (it was this rank's: checked).
* An *active* agent i averaging with neighbour j (:meth:`average`):
  take(j, LOCK); ``Get`` x_j and j's ITER, ``Flush(j)``;
  v ← (v + x_j)/2; ``Put`` v into x_j and i's update count into j's word
  for i, ``Flush(j)`` (complete at j before the lock is given back);
  give(j, LOCK). Both ends get the same bits, so Σ x changes only by
  rounding (exact halving of one rounded sum).
* A *passive* agent changes its own x (x ← x − α·g, in the algorithm's step)
  only between :meth:`lock_own` (take(self, LOCK), then ``Win.Sync`` so its
  loads see the peers' completed puts) and :meth:`unlock_own` (``Win.Sync``
  so peers' gets see its stores, then give(self, LOCK)), so no average is
  interleaved with its update. In the same region it copies x into
  :attr:`snapshot` (the gradient is computed there while peers go on
  averaging into x) and publishes its update count.
* An active agent's own x is never accessed by another rank, so it updates
  it without a lock.

No deadlock: a rank holds at most one LOCK at a time and never waits for a
LOCK while holding one; an active rank takes only passive neighbours' LOCKs,
a passive rank only its own (the bipartition, ``engines/build.py:
active_side``, is checked here, so two agents never pick each other). The
RESERVED word below is taken before, never while holding, a LOCK. Every word
taken is given back in a ``finally`` (and by :meth:`free`).

Injected transfer time (``hold``). The simulator keeps both ends of an
exchange busy for a round trip (one communication delay of each end,
request then response), then averages with the peer's
model of that moment; the peer goes on computing meanwhile and other
exchanges with it wait. Holding j's LOCK for the delay would also stop j's
own steps, so instead i first *reserves* j: take(j, RESERVED), retrying with
the same backoff while another agent holds the reservation ("waiting while j
is busy"), sleeps out the delay holding no LOCK, does the exchange above
and gives the reservation back.

Progress. The words and the model are reached with one-sided atomics and
copies that, on shared memory (MPICH ch4, Open MPI osc sm and rdma over
vader), the origin completes alone. Components that emulate them with
messages (Open MPI osc rdma over btl tcp, osc ucx/pt2pt) need the target to
enter MPI: the passive agent calls :meth:`progress` (an ``Iprobe``) while it
pads, every ``PAIR_POLL_S`` of the runner, and its own take/give enter MPI
on every step.

Both windows are freed by :meth:`free` (collective, idempotent, also when
the constructor fails after allocating); a word still held (an exception
inside an exchange) is given back first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.dtypes import model_dtype, mpi_type, words_for
from hpcasync.engines.mpi.epoch import WORD, Epoch, check_ranks
from hpcasync.engines.mpi.world import agree

__all__ = ["PairWindow"]

_I = MPI.INT64_T
#: tag of the progress-only Iprobe (matches nothing: no rank sends point-to-point on this communicator)
PROGRESS_TAG = 0x7AD
#: sleeps while a word is held by another rank (growing, capped)
_BUSY_BACKOFF_S = 2e-5
_BUSY_BACKOFF_MAX_S = 2e-4
#: displacements of the two words of the control window
RESERVED, LOCK = 0, 1


class PairWindow(Epoch):
    """The live models of AD-PSGD. Collective over ``comm`` (the workers) to construct and to free.

    ``x0`` is this agent's initial model, ``neighbors`` its neighbours (all on
    the other side of the bipartition), ``active`` its side.
    """

    def __init__(self, comm: MPI.Comm, x0: np.ndarray, neighbors: Sequence[int], active: bool,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(comm)
        self.dim = int(np.size(x0))
        self.dtype = model_dtype(x0)  # float64, or float32 for torch models
        self._D = mpi_type(self.dtype)
        self._mw = words_for(self.dim, self.dtype)  # 8-byte words of the model; the counters follow
        self.neighbors = [int(j) for j in neighbors]
        self.active = bool(active)
        self.clock = clock
        size = comm.Get_size()
        error = (f"dim must be a positive integer, got {self.dim}" if self.dim < 1 else None) or check_ranks(
            self.neighbors, size, self.rank, "neighbors")
        all_nbrs = comm.allgather(self.neighbors)
        all_active = comm.allgather(self.active)
        if error is None:
            for j in self.neighbors:
                if self.rank not in all_nbrs[j]:
                    error = f"rank {j} is a neighbour of {self.rank} but not the other way round"
                elif all_active[j] == self.active:
                    side = "active" if self.active else "passive"
                    error = f"neighbour {j} is {side} like this rank: pairs must cross the bipartition"
                if error:
                    break
        agree(comm, error, "PairWindow")
        # where this rank's count lives in each neighbour's word area
        self._slot_at = {j: all_nbrs[j].index(self.rank) for j in self.neighbors}
        self._index = {j: k for k, j in enumerate(self.neighbors)}

        deg = len(self.neighbors)
        #: per neighbour: its update count when its model was last averaged with this agent's
        self.versions = np.zeros(deg, np.int64)
        # counters (bytes/messages: what this rank moved; the active side initiates every exchange)
        self.bytes_sent = 0
        self.messages_sent = 0
        self.exchanges = 0
        self.exchange_s = 0.0  # wall time of the exchanges, take(j, LOCK) to give (waiting included)
        self.exchange_max_s = 0.0
        self.lock_wait_s = 0.0  # of which: taking j's LOCK
        self.busy_wait_s = 0.0  # with a hold: waiting while the peer was reserved by another agent
        self.busy_retries = 0  # reservation attempts that found the peer busy
        self.lock_retries = 0  # LOCK attempts that found the model held (by its owner or a peer)
        self.own_locks = 0
        self.own_lock_s = 0.0  # passive: taking its own LOCK (waiting for an exchange in progress)
        self._buf = np.empty(self.dim if self.active else 0, self.dtype)
        self._peer_iter = np.zeros(1, np.int64)
        self._word = np.zeros(1, np.int64)  # this agent's update count, put into the peer's slot
        self._mark = np.array([self.rank + 1], np.int64)  # a reservation by this rank
        self._zero = np.zeros(1, np.int64)
        self._seen = np.zeros(1, np.int64)
        self._held: int | None = None  # rank whose LOCK this rank holds
        self._win: MPI.Win | None = None
        self._rwin: MPI.Win | None = None

        def initialise() -> None:
            # both windows live in a long Lock_all epoch; the LOCK word guards the model (module docstring)
            self._win, mem = self.allocate((self._mw + 1 + deg) * WORD, np.uint8, relaxed_ordering=False)
            self._rwin, rmem = self.allocate(2 * WORD, np.int64, relaxed_ordering=False)
            #: the live model x_i (window memory)
            self.x = np.frombuffer(mem, self.dtype, count=self.dim)
            self._words = np.frombuffer(mem, np.int64, offset=self._mw * WORD, count=1 + deg)
            #: x_i as of the end of the last own step (passive side: what the gradient is computed at)
            self.snapshot = np.array(x0, self.dtype) if not self.active else self.x
            self.x[:] = np.asarray(x0, self.dtype)
            self._words[:] = 0
            rmem[:] = 0  # open_epochs (in build) publishes these stores before anybody may access

        self.build(initialise)

    @property
    def closed(self) -> bool:
        return self._win is None

    def _check_open(self) -> MPI.Win:
        if self._win is None:
            raise RuntimeError("PairWindow used after free()")
        return self._win

    # -- active side ---------------------------------------------------------------------
    def average(self, j: int, v: np.ndarray, iteration: int, hold: Callable[[], None] | None = None) -> float:
        """x_i, x_j ← (v + x_j)/2 atomically; ``v`` (this rank's x) is updated in place.

        ``iteration`` is this agent's update count (recorded at j for its
        staleness). Waits while j's LOCK is held (j stepping, or another
        exchange with j). ``hold()``, if given, is an injected transfer time:
        j is reserved first (waiting while another agent has reserved it),
        ``hold`` runs holding no lock, and the average is taken afterwards
        with j's model of that moment. Returns the seconds spent in ``hold``.
        """
        win = self._check_open()
        if not self.active:
            raise RuntimeError(f"rank {self.rank} is passive: it does not start exchanges")
        k = self._index.get(j)
        if k is None:
            raise ValueError(f"rank {j} is not a neighbour of rank {self.rank}")
        if np.shape(v) != (self.dim,) or v.dtype != self.dtype or not v.flags.c_contiguous:
            raise ValueError(f"v must be a contiguous {self.dtype} array of shape ({self.dim},)")
        held = 0.0
        if hold is not None:
            self._reserve(j)
            h0 = self.clock()
            try:
                hold()
            except BaseException:
                self._release(j)
                raise
            held = self.clock() - h0
        try:
            t1 = self.clock()
            self._exchange(win, j, v, iteration)
            elapsed = self.clock() - t1
        finally:
            if hold is not None:
                self._release(j)
        self.versions[k] = self._peer_iter[0]
        self.exchanges += 1
        self.exchange_s += elapsed
        self.exchange_max_s = max(self.exchange_max_s, elapsed)
        self.messages_sent += 2
        self.bytes_sent += 2 * (self.dim * self.dtype.itemsize + WORD)
        return held

    def _exchange(self, win: MPI.Win, j: int, v: np.ndarray, iteration: int) -> None:
        d, mw, _D = self.dim, self._mw, self._D
        self.lock_wait_s += self._take(j, LOCK)
        self._held = j
        try:
            win.Get([self._buf, d, _D], j, target=(0, d, _D))
            win.Get([self._peer_iter, 1, _I], j, target=(mw, 1, _I))
            win.Flush(j)
            np.add(v, self._buf, out=v)
            v *= 0.5
            self._word[0] = iteration
            win.Put([v, d, _D], j, target=(0, d, _D))
            win.Put([self._word, 1, _I], j, target=(mw + 1 + self._slot_at[j], 1, _I))
            win.Flush(j)  # complete at j before the lock word says it is free
        finally:
            self._held = None
            self._give(j, LOCK)

    def _take(self, j: int, word: int) -> float:
        """Compare-and-swap j's ``word`` 0 → rank+1, sleeping between tries while it is taken.

        Returns the seconds spent (waiting included)."""
        rwin = self._rwin
        assert rwin is not None
        t0 = self.clock()
        sleep = _BUSY_BACKOFF_S
        while True:
            rwin.Compare_and_swap([self._mark, 1, _I], [self._zero, 1, _I], [self._seen, 1, _I], j, word)
            rwin.Flush(j)
            if self._seen[0] == 0:
                return self.clock() - t0
            if word == RESERVED:
                self.busy_retries += 1
            else:
                self.lock_retries += 1
            time.sleep(sleep)
            sleep = min(2 * sleep, _BUSY_BACKOFF_MAX_S)

    def _give(self, j: int, word: int) -> None:
        rwin = self._rwin
        assert rwin is not None
        rwin.Compare_and_swap([self._zero, 1, _I], [self._mark, 1, _I], [self._seen, 1, _I], j, word)
        rwin.Flush(j)
        if self._seen[0] != self._mark[0]:
            raise RuntimeError(f"rank {self.rank}: word {word} of rank {j} was {self._seen[0]}, "
                               f"not this rank's mark {self._mark[0]}")

    def _reserve(self, j: int) -> None:
        """Take j's reservation ("waiting while j is busy" with another agent)."""
        self.busy_wait_s += self._take(j, RESERVED)

    def _release(self, j: int) -> None:
        self._give(j, RESERVED)

    # -- passive side --------------------------------------------------------------------
    def lock_own(self) -> None:
        """Take the LOCK word of this rank's own model (waits for an exchange in progress)."""
        win = self._check_open()
        if self.active:
            return  # nobody else touches an active agent's x
        self.own_lock_s += self._take(self.rank, LOCK)
        self._held = self.rank
        self.own_locks += 1
        win.Sync()  # this rank's loads see the peers' completed puts

    def own_step_done(self, iteration: int) -> None:
        """Within :meth:`lock_own`: snapshot x, publish the update count, read the neighbours' counts."""
        if self.active:
            return
        assert self._held == self.rank, "own_step_done outside lock_own/unlock_own"
        np.copyto(self.snapshot, self.x)
        self._words[0] = iteration
        self.versions[:] = self._words[1:]

    def unlock_own(self) -> None:
        if self.active or self._held != self.rank:
            return
        win = self._check_open()
        win.Sync()  # peers' gets see this rank's stores
        self._held = None
        self._give(self.rank, LOCK)

    def progress(self) -> None:
        """Let MPI serve peers' operations on this rank's windows (passive ranks call it while they pad)."""
        if self._win is not None:
            self.comm.Iprobe(MPI.ANY_SOURCE, PROGRESS_TAG)

    # -- teardown ------------------------------------------------------------------------
    def free(self) -> None:
        """Give back a LOCK still held, close the epochs and free both windows (collective). Idempotent.

        ``x`` becomes a private copy of the final model, so it stays valid.
        """
        first: BaseException | None = None
        if self._rwin is not None and self._held is not None and self._locked:
            try:
                self._give(self._held, LOCK)
            except BaseException as exc:
                first = exc
        self._held = None
        self._win = self._rwin = None
        if hasattr(self, "x"):
            self.x = np.array(self.x)
            self._words = np.array(self._words)
            self.snapshot = self.x if self.active else np.array(self.snapshot)
        try:
            super().free()
        except BaseException as exc:
            first = first or exc
        if first is not None:
            raise first
