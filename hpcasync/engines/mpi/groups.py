"""Prague's group generator on MPI (feature ``group_average``): one-sided group formation, two-sided P-Reduce.

No rank is spent on the generator (Luo et al. 2020 run it as a service): rank 0 of
the workers' communicator hosts one ``Win.Allocate`` window of int64 words, every
other worker allocates none, and a worker forms or finds its group with atomics::

    disp s(i) = i                 worker i's state: 0 free, −1 stopped, gid > 0 drafted into group gid
    disp r(L) = n + L·(2 + G)     leader L's roster: gid, |S|, then the G member ranks (sorted)

A leader L (a free worker that asks) takes its own word 0 → gid by compare-and-swap
(gid = L's group count · n + L + 1, unique), reads every state word (one
``Get_accumulate`` NO_OP), and drafts the workers of its random order that read 0
by compare-and-swap 0 → gid: another leader or the worker's own exit may win a race,
so a worker is in at most one group (hpcasync/group_generator.py). It writes the
roster's body, flushes, then sets the roster's gid word atomically: a member that
finds its state word = gid waits (sleeping back-off) until the roster's gid word is
gid, and then reads a complete body. A group of one (no free worker) averages nothing
and frees the leader at once.

P-Reduce: every member ``Isend``\\ s its model to the others and ``Irecv``\\ s theirs on
a duplicated communicator (one tag: two workers share at most one group at a time and
finish it before the next, so MPI's non-overtaking order matches the messages), then
sums the models in member order (all members get the same bits) and frees its state
word (0). At the end of the run every worker calls :meth:`GroupWindow.leave` before
the final barrier: it completes a P-Reduce it is in, then stops its word 0 → −1
(leaders skip stopped workers); a worker drafted meanwhile does that group first. A
member therefore waits only for the other members of its own group, each of which is
computing, waiting in the same group, or leaving through it: no deadlock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from hpcasync.engines.mpi.dtypes import mpi_type
from hpcasync.engines.mpi.epoch import WORD, Epoch
from hpcasync.group_generator import draft

__all__ = ["GroupWindow"]

_I = MPI.INT64_T
HOST = 0
FREE, STOPPED = 0, -1
TAG = 11
_SLEEP_S, _SLEEP_MAX_S = 2e-5, 5e-4


def sleep_backoff(sleep: float) -> float:
    """Sleep ``sleep`` seconds (never spin) and return the next, doubled, back-off."""
    time.sleep(sleep)
    return min(2 * sleep, _SLEEP_MAX_S)


class GroupWindow(Epoch):
    """The state words and rosters on rank 0 of ``comm`` (the workers); collective to construct and free."""

    #: log the sum of every averaged model (an extra pass over d per P-Reduce: tests only)
    checksums = False

    def __init__(self, comm: MPI.Comm, dim: int, dtype: np.dtype, size: int) -> None:
        super().__init__(comm)
        self.n = comm.Get_size()
        self.size = int(size)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self._T = mpi_type(self.dtype)
        self._row = 2 + self.size
        words = self.n * (1 + self._row) if self.rank == HOST else 0
        self._one = np.zeros(1, np.int64)
        self._cmp = np.zeros(1, np.int64)
        self._seen = np.zeros(1, np.int64)
        self._states = np.zeros(self.n, np.int64)
        self._noop = np.zeros(self.n, np.int64)
        self._body = np.zeros(self._row - 1, np.int64)
        self._count = 0  # groups this rank led
        self._recv = np.zeros((0, self.dim), self.dtype)
        self._reqs: list[MPI.Request] = []
        #: the group this rank is in and has not averaged yet: (gid, members), started or not
        self.current: tuple[int, tuple[int, ...]] | None = None
        self.started = False
        #: (gid, members, sum of the averaged model or 0.0 without :attr:`checksums`) of every P-Reduce
        #: this rank took part in, in order: every member must log the same entry (tests)
        self.log: list[tuple[int, tuple[int, ...], float]] = []
        self.bytes_sent = 0
        self.messages_sent = 0
        self.msg = comm.Dup()

        def initialise() -> None:
            self._win, mem = self.allocate(words * WORD, np.int64, relaxed_ordering=False)
            if words:
                mem[:] = 0

        try:
            self.build(initialise)
        except BaseException:
            self.msg.Free()
            raise

    # -- atomics on the host's words -----------------------------------------------------
    def _fetch(self, disp: int, op: MPI.Op, value: int = 0) -> int:
        self._one[0] = value
        self._win.Fetch_and_op([self._one, 1, _I], [self._seen, 1, _I], HOST, disp, op=op)
        self._win.Flush(HOST)
        return int(self._seen[0])

    def _cas(self, disp: int, new: int, expected: int) -> int:
        self._one[0], self._cmp[0] = new, expected
        self._win.Compare_and_swap([self._one, 1, _I], [self._cmp, 1, _I], [self._seen, 1, _I], HOST, disp)
        self._win.Flush(HOST)
        return int(self._seen[0])

    def _read_states(self) -> np.ndarray:
        self._win.Get_accumulate([self._noop, self.n, _I], [self._states, self.n, _I], HOST,
                                 target=(0, self.n, _I), op=MPI.NO_OP)
        self._win.Flush(HOST)
        return self._states

    # -- forming a group -----------------------------------------------------------------
    def request(self, order: Sequence[int]) -> tuple[int, ...]:
        """This rank's group: the one it was drafted into, else a new one it leads (see the module doc).
        Returns the sorted members; a group of several is then :attr:`current`."""
        me = self.rank
        gid = self._count * self.n + me + 1
        old = self._cas(me, gid, FREE)
        if old != FREE:  # drafted meanwhile
            return self._join(old)
        self._count += 1
        states = self._read_states()

        def take(j: int) -> bool:
            return bool(states[j] == FREE) and self._cas(j, gid, FREE) == FREE

        members = tuple(draft(order, me, self.size, take))
        if len(members) == 1:
            self._fetch(me, MPI.REPLACE, FREE)
            return members
        base = self.n + me * self._row
        self._body[:] = -1
        self._body[0] = len(members)
        self._body[1:1 + len(members)] = members
        self._win.Put([self._body, self._row - 1, _I], HOST, target=(base + 1, self._row - 1, _I))
        self._win.Flush(HOST)
        self._fetch(base, MPI.REPLACE, gid)  # the roster is complete before anyone can read it as gid's
        self.current, self.started = (gid, members), False
        return members

    def _join(self, gid: int) -> tuple[int, ...]:
        """Wait (sleeping) until the leader of group ``gid`` has written its roster; read it."""
        base = self.n + ((gid - 1) % self.n) * self._row
        sleep = _SLEEP_S
        while self._fetch(base, MPI.NO_OP) != gid:
            sleep = sleep_backoff(sleep)
        self._win.Get([self._body, self._row - 1, _I], HOST, target=(base + 1, self._row - 1, _I))
        self._win.Flush(HOST)
        members = tuple(int(j) for j in self._body[1:1 + int(self._body[0])])
        self.current, self.started = (gid, members), False
        return members

    # -- the partial all-reduce ----------------------------------------------------------
    def start(self, v: np.ndarray) -> None:
        """Send ``v`` to the other members of :attr:`current` and post the receives of theirs."""
        assert self.current is not None and not self.started
        others = [j for j in self.current[1] if j != self.rank]
        if self._recv.shape[0] < len(others):
            self._recv = np.empty((len(others), self.dim), self.dtype)
        spec = [v, self.dim, self._T]
        self._reqs = [self.msg.Irecv([self._recv[k], self.dim, self._T], source=j, tag=TAG)
                      for k, j in enumerate(others)]
        self._reqs += [self.msg.Isend(spec, dest=j, tag=TAG) for j in others]
        self.bytes_sent += len(others) * v.nbytes
        self.messages_sent += len(others)
        self.started = True

    def test(self) -> bool:
        """Whether every message of the started P-Reduce has arrived and left."""
        return bool(MPI.Request.Testall(self._reqs))

    def finish(self, v: np.ndarray) -> tuple[int, ...]:
        """v ← the mean of the members' models (member order); this rank is free again."""
        assert self.current is not None
        gid, members = self.current
        others = iter(self._recv)
        total = np.zeros(self.dim, self.dtype)
        for j in members:
            total += v if j == self.rank else next(others)
        total /= len(members)
        np.copyto(v, total)
        self._reqs = []
        self.current = None
        self.log.append((gid, members, float(total.sum()) if self.checksums else 0.0))
        self._fetch(self.rank, MPI.REPLACE, FREE)
        return members

    def complete(self, v: np.ndarray) -> tuple[int, ...]:
        """Start the current P-Reduce if needed and wait for it (sleeping back-off)."""
        if not self.started:
            self.start(v)
        sleep = _SLEEP_S
        while not self.test():
            sleep = sleep_backoff(sleep)
        return self.finish(v)

    def leave(self, v: np.ndarray) -> None:
        """End of run, before the final barrier: finish any group this rank is in, then stop (0 → −1)."""
        if self.current is not None:
            self.complete(v)
        while True:
            old = self._cas(self.rank, STOPPED, FREE)
            if old in (FREE, STOPPED):
                return
            self._join(old)  # drafted after its last request: serve that group first
            self.complete(v)

    # -- teardown ------------------------------------------------------------------------
    def free(self) -> None:
        for req in self._reqs:  # an error path: a P-Reduce under way
            with contextlib.suppress(MPI.Exception):
                req.Cancel()
        self._reqs = []
        try:
            super().free()
        finally:
            if self.msg != MPI.COMM_NULL:
                self.msg.Free()


def open_groups(comm: MPI.Comm, algorithm: type, x0: np.ndarray, section: object) -> GroupWindow | None:
    """The group generator's window when the algorithm needs one (collective over the workers), else None."""
    if "group_average" not in algorithm.requires:
        return None
    return GroupWindow(comm, x0.size, x0.dtype, algorithm.group_size_of(section))
