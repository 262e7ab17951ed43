"""AD-PSGD's atomic pairwise averaging on MPI: a window of live models with per-operation locks.

DESIGN §3 ``pair_average(j, v)``: "exclusive lock on j's window, get, put".

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

Locks. This window is *not* in a long ``Lock_all`` epoch (unlike
:mod:`windows` and :mod:`board`): atomicity comes from passive-target
exclusive locks, one per operation.

* An *active* agent i averaging with neighbour j (:meth:`average`):
  ``Lock(j, EXCLUSIVE)``; ``Get`` x_j and j's ITER; ``Flush(j)``;
  v ← (v + x_j)/2; ``Put`` v into x_j and i's update count into j's word
  for i; ``Unlock(j)``. Both ends get the same bits, so Σ x changes only by
  rounding (exact halving of one rounded sum).
* A *passive* agent changes its own x (x ← x − α·g, in the algorithm's step)
  only between :meth:`lock_own` and :meth:`unlock_own` (``Lock(self,
  EXCLUSIVE)``), so no average is interleaved with its update. In the same
  region it copies x into :attr:`snapshot` (the gradient is computed there
  while peers go on averaging into x) and publishes its update count.
* An active agent's own x is never accessed by another rank, so it updates
  it without a lock.

No deadlock: an active rank locks only passive neighbours, a passive rank
locks only itself, and no rank holds two locks at once (the bipartition,
``engines/build.py: active_side``, is checked here). Every lock is released
in a ``finally``.

Injected transfer time (``hold``). The simulator keeps both ends of an
exchange busy for a round trip (one communication delay of each end,
request then response), then averages with the peer's
model of that moment; the peer goes on computing meanwhile and other
exchanges with it wait. Holding j's lock for the delay would also stop j's
own steps, so instead i first *reserves* j: a compare-and-swap 0 → i+1 on
j's word in a second, tiny window that stays in one ``Lock_all`` epoch (like
:mod:`board`: truly one-sided, it never waits for j). It retries with short
sleeps while another agent holds the reservation ("waiting while j is
busy"), sleeps out the delay holding no lock, does the locked exchange above
and clears the reservation.

Progress. With MPICH (ch4, shared memory) granting and releasing a lock on
j are done by j's progress engine: a lock or an unlock waits until j enters
MPI (measured: ≈ 0.9 s while j computed 1 s without calling MPI; the
Get/Put themselves are direct copies, ~50 µs at d = 650). So a passive
agent must call MPI often while it does not compute: :meth:`progress` (an
``Iprobe``) is called by the runner's padding loop every ``PAIR_POLL_S``,
and the lock/unlock of each own step make progress too. An active agent
thus waits at most for the rest of one real gradient computation of its
peer, or the poll interval while the peer pads.

Both windows are freed by :meth:`free` (collective, idempotent, also when
the constructor fails after allocating); a lock still held (an exception
inside an exchange) is released first.
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
#: sleeps of an active agent while its peer is reserved by another (growing, capped)
_BUSY_BACKOFF_S = 2e-5
_BUSY_BACKOFF_MAX_S = 2e-4


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
        self.exchange_s = 0.0  # wall time of the locked exchanges, Lock(j) to Unlock(j) (lock wait included)
        self.exchange_max_s = 0.0
        self.lock_wait_s = 0.0  # of which: waiting in Lock(j)
        self.busy_wait_s = 0.0  # with a hold: waiting while the peer was reserved by another agent
        self.busy_retries = 0  # reservation attempts that found the peer busy
        self.own_locks = 0
        self.own_lock_s = 0.0  # passive: waiting for Lock(self) (an exchange in progress)
        self._buf = np.empty(self.dim if self.active else 0, self.dtype)
        self._peer_iter = np.zeros(1, np.int64)
        self._word = np.zeros(1, np.int64)  # this agent's update count, put into the peer's slot
        self._mark = np.array([self.rank + 1], np.int64)  # a reservation by this rank
        self._zero = np.zeros(1, np.int64)
        self._seen = np.zeros(1, np.int64)
        self._held: int | None = None  # rank whose lock this rank holds
        self._win: MPI.Win | None = None
        self._rwin: MPI.Win | None = None

        def initialise() -> None:
            # the live models are locked per exchange, not held in a long epoch (see the module docstring)
            self._win, mem = self.allocate((self._mw + 1 + deg) * WORD, np.uint8, epoch=False,
                                           relaxed_ordering=False)
            self._rwin, rmem = self.allocate(WORD, np.int64, relaxed_ordering=False)
            #: the live model x_i (window memory)
            self.x = np.frombuffer(mem, self.dtype, count=self.dim)
            self._words = np.frombuffer(mem, np.int64, offset=self._mw * WORD, count=1 + deg)
            #: x_i as of the end of the last own step (passive side: what the gradient is computed at)
            self.snapshot = np.array(x0, self.dtype) if not self.active else self.x
            self._win.Lock(self.rank, MPI.LOCK_EXCLUSIVE)
            self.x[:] = np.asarray(x0, self.dtype)
            self._words[:] = 0
            self._win.Unlock(self.rank)  # completes the local stores before anybody may lock
            rmem[:] = 0

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
        staleness). Waits while j's lock is held (j stepping, or another
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
        t0 = self.clock()
        win.Lock(j, MPI.LOCK_EXCLUSIVE)
        self._held = j
        try:
            self.lock_wait_s += self.clock() - t0
            win.Get([self._buf, d, _D], j, target=(0, d, _D))
            win.Get([self._peer_iter, 1, _I], j, target=(mw, 1, _I))
            win.Flush(j)
            np.add(v, self._buf, out=v)
            v *= 0.5
            self._word[0] = iteration
            win.Put([v, d, _D], j, target=(0, d, _D))
            win.Put([self._word, 1, _I], j, target=(mw + 1 + self._slot_at[j], 1, _I))
        finally:
            self._held = None
            win.Unlock(j)

    def _reserve(self, j: int) -> None:
        """Compare-and-swap j's reservation word 0 → rank+1, retrying with short sleeps while taken."""
        rwin = self._rwin
        assert rwin is not None
        t0 = self.clock()
        sleep = _BUSY_BACKOFF_S
        while True:
            rwin.Compare_and_swap([self._mark, 1, _I], [self._zero, 1, _I], [self._seen, 1, _I], j, 0)
            rwin.Flush(j)
            if self._seen[0] == 0:
                break
            self.busy_retries += 1
            time.sleep(sleep)
            sleep = min(2 * sleep, _BUSY_BACKOFF_MAX_S)
        self.busy_wait_s += self.clock() - t0

    def _release(self, j: int) -> None:
        rwin = self._rwin
        assert rwin is not None
        rwin.Compare_and_swap([self._zero, 1, _I], [self._mark, 1, _I], [self._seen, 1, _I], j, 0)
        rwin.Flush(j)

    # -- passive side --------------------------------------------------------------------
    def lock_own(self) -> None:
        """Take the exclusive lock on this rank's own window (waits for an exchange in progress)."""
        win = self._check_open()
        if self.active:
            return  # nobody else touches an active agent's x
        t0 = self.clock()
        win.Lock(self.rank, MPI.LOCK_EXCLUSIVE)
        self._held = self.rank
        self.own_locks += 1
        self.own_lock_s += self.clock() - t0

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
        self._held = None
        win.Unlock(self.rank)

    def progress(self) -> None:
        """Let MPI serve the lock requests of peers (passive ranks call it while they pad)."""
        if self._win is not None:
            self.comm.Iprobe(MPI.ANY_SOURCE, PROGRESS_TAG)

    # -- teardown ------------------------------------------------------------------------
    def free(self) -> None:
        """Release a lock still held, close the epoch and free both windows (collective). Idempotent.

        ``x`` becomes a private copy of the final model, so it stays valid.
        """
        win = self._win
        self._win = self._rwin = None
        first: BaseException | None = None
        if win is not None and self._held is not None:
            try:
                win.Unlock(self._held)
            except BaseException as exc:
                first = exc
            self._held = None
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
