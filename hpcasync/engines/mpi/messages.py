"""Flooding on MPI (feature ``flood``): two-sided non-blocking messages on a duplicated communicator.

An item is one message of 16 bytes of header — origin and the payload's
dtype code (int32 each), seq (int64) — then the payload (any length: DASGD's
gradients, DSGD-AAU's 3-word edge announcements), sent with ``Isend`` to
each neighbour but the one it came from. Receiving is ``Iprobe`` + ``Recv`` of whatever has arrived, never a
wait: :meth:`FloodChannel.poll` returns at once, and the worker calls it
between steps, while it pads a computation and, with short growing sleeps,
while its algorithm waits for items (no busy spin). MPI's non-overtaking
rule makes each link FIFO, so :class:`~hpcasync.engines.flood.FloodState`
sees each origin's items in order. Items are sent at once: the injected
communication delay of a delay model does not apply to them.

End of run (:meth:`FloodChannel.quiesce`, collective, from the algorithm's
``finish``): (1) every rank learns every origin's final count (Iallgather)
and keeps receiving and forwarding until it has accepted all of them;
(2) the per-link numbers of messages sent are exchanged (Ialltoall) and each
rank receives until it has taken in exactly what was sent to it (the late
copies are duplicates); (3) its own sends complete. Then no message is left
in flight and no request pending, and :meth:`free` frees the communicator.
On an error path :meth:`free` cancels what is still pending.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from mpi4py import MPI

from hpcasync.engines.flood import FloodState

TAG = 7
HEADER = 16  # origin, dtype code (int32 each), seq (int64)
#: longest sleep between two polls while waiting
MAX_SLEEP_S = 5e-4


def _backoff(sleep: float) -> float:
    time.sleep(sleep)
    return min(2 * sleep, MAX_SLEEP_S)


class FloodChannel:
    """Agent ``comm.rank``'s end of the flood over ``neighbors`` (undirected). Collective to build."""

    def __init__(self, comm: MPI.Comm, neighbors: Sequence[int]) -> None:
        self.comm = comm.Dup()
        self.rank, self.n = self.comm.Get_rank(), self.comm.Get_size()
        self.neighbors = [int(j) for j in neighbors]
        self.state = FloodState(self.rank, self.n)
        self.sent_to = np.zeros(self.n, np.int64)
        self.received_from = np.zeros(self.n, np.int64)
        self.bytes_sent = 0
        self.messages_sent = 0
        self._sends: list[tuple[MPI.Request, np.ndarray]] = []
        self._status = MPI.Status()
        self.cancelled = 0
        self.left_in_flight = False

    # -- sending --------------------------------------------------------------------------
    def _send(self, buf: np.ndarray, skip: int) -> None:
        for j in self.neighbors:
            if j != skip:
                self._sends.append((self.comm.Isend([buf, MPI.BYTE], dest=j, tag=TAG), buf))
                self.sent_to[j] += 1
                self.bytes_sent += buf.nbytes
                self.messages_sent += 1

    def flood(self, v: np.ndarray) -> int:
        seq = int(self.state.seen[self.rank]) + 1
        self.state.seen[self.rank] = seq
        v = np.ascontiguousarray(v)
        buf = np.empty(HEADER + v.nbytes, np.uint8)
        buf[:8].view(np.int32)[:] = (self.rank, ord(v.dtype.char))
        buf[8:HEADER].view(np.int64)[0] = seq
        buf[HEADER:].view(v.dtype)[:] = v.ravel()
        self._send(buf, -1)
        self.poll()
        return seq

    def _reap(self) -> None:
        """Forget completed sends (their buffers may go)."""
        if self._sends:
            self._sends = [(r, b) for r, b in self._sends if not r.Test()]

    # -- receiving ------------------------------------------------------------------------
    def poll(self) -> None:
        """Take in everything that has arrived: accept new items and forward them, drop copies."""
        st = self._status
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG, st):
            src = st.Get_source()
            buf = np.empty(st.Get_count(MPI.BYTE), np.uint8)
            self.comm.Recv([buf, MPI.BYTE], source=src, tag=TAG)
            self.received_from[src] += 1
            origin, seq = int(buf[:8].view(np.int32)[0]), int(buf[8:HEADER].view(np.int64)[0])
            for item in self.state.arrive(src, origin, seq, buf):
                self._send(item[2], skip=src)
        self._reap()

    def take(self) -> list[tuple[int, int, np.ndarray]]:
        """The accepted items as (origin, seq, payload view of the dtype in the header)."""
        return [(o, s, buf[HEADER:].view(np.dtype(chr(int(buf[:8].view(np.int32)[1])))))
                for o, s, buf in self.state.take()]

    def wait(self, stop: Callable[[], bool]) -> bool:
        """Poll, sleeping between polls, until an item is waiting (True) or ``stop()`` (False)."""
        sleep = 2e-5
        while True:
            self.poll()
            if self.state.pending:
                return True
            if stop():
                return False
            sleep = _backoff(sleep)

    # -- end of run -----------------------------------------------------------------------
    def _until(self, req: MPI.Request) -> None:
        sleep = 2e-5
        while not req.Test():
            self.poll()
            sleep = _backoff(sleep)

    def quiesce(self) -> None:
        """Collective: return once nothing is in flight (module docstring)."""
        totals = np.zeros(self.n, np.int64)
        mine = np.array([self.state.seen[self.rank]], np.int64)
        self._until(self.comm.Iallgather(mine, totals))
        sleep = 2e-5
        while (self.state.seen < totals).any():
            self.poll()
            sleep = _backoff(sleep)
        expected = np.zeros(self.n, np.int64)
        self._until(self.comm.Ialltoall(self.sent_to, expected))
        sleep = 2e-5
        while (self.received_from < expected).any():
            self.poll()
            sleep = _backoff(sleep)
        sleep = 2e-5
        while self._sends:
            self._reap()
            if self._sends:
                sleep = _backoff(sleep)

    def free(self) -> None:
        """Cancel what is still pending (error paths) and free the communicator. Idempotent.
        ``cancelled`` and ``left_in_flight`` say what it found (0 and False after :meth:`quiesce`)."""
        if self.comm == MPI.COMM_NULL:
            return
        self.cancelled = len(self._sends)
        self.left_in_flight = bool(self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG))
        for req, _ in self._sends:
            try:
                req.Cancel()
                req.Free()
            except MPI.Exception:
                pass
        self._sends = []
        self.comm.Free()


def wait_arrival(channel: FloodChannel | None, words: Callable[[], list[int]], seen: Sequence[int],
                 poll_outbox: Callable[[], None], stop: Callable[[], bool]) -> bool:
    """Until a flooded item waits or some in-neighbour has a complete model newer than ``seen`` (the
    numbers the algorithm last read; ``words()``: the slots' sequence words, 2u when model u is
    complete) — True — or ``stop()`` — False; growing sleeps. Comparing with what was *read*, not
    with the words at the start of the wait, keeps a model landing just before it from being missed.
    ``poll_outbox`` lands this rank's own due transmissions meanwhile."""
    sleep = 2e-5
    while True:
        poll_outbox()
        if channel is not None:
            channel.poll()
            if channel.state.pending:
                return True
        if any(w // 2 > s for w, s in zip(words(), seen, strict=True)):
            return True
        if stop():
            return False
        sleep = _backoff(sleep)


class FloodTransport:
    """The flood calls of the Transport interface, for a transport with a ``flood_channel``."""

    flood_channel: FloodChannel | None

    def _channel(self) -> FloodChannel:
        if self.flood_channel is None:
            raise RuntimeError("flood on a transport built without flood=True")
        return self.flood_channel

    def flood(self, v: np.ndarray) -> int:
        return self._channel().flood(v)

    def flooded(self) -> list[tuple[int, int, np.ndarray]]:
        ch = self._channel()
        ch.poll()
        return ch.take()

    def quiesce_flood(self) -> None:
        self._channel().quiesce()
