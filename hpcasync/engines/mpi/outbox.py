"""The per-rank serial send queue of the MPI engine, with injected transmission times (docs/design.md §6).

Sending is full-duplex multicast and *serial*: one outgoing transmission at
a time per rank. A transmission lasts one sample of the rank's communication
delay × ``time_unit`` seconds and lands (the RMA is performed) when that time
is up, exactly like the simulator's ``DELIVER`` event. What is pushed while a
transmission is in flight waits in the queue, where a newer model replaces a
queued one and deltas are summed; when the link frees up, everything queued
leaves as the next transmission. Without a delay model (``comm_delay=None``)
every push is performed at once.

Nothing here calls MPI or sleeps: the owner calls :meth:`Outbox.poll` with the
time whenever it can (between the algorithm's operations, and while it pads a
computation), and the two callbacks perform the actual sends. The outbox
holds at most two models (queued + in flight) whatever the degree.

Deltas (Alg. 3): an algorithm pushes one Δ per step to every out-neighbour j
with a fixed weight w_ji. The queue then keeps a single unscaled sum ΣΔ and
the per-target weights, and scales when the transmission leaves, so its
memory stays at two vectors as the degree grows. A step is the run of
``push_delta`` calls between two :meth:`poll` calls (the engine polls after
every blocking operation); within a step the same array object is taken to
hold the same values. If a step pushes different arrays, skips a target or
changes a weight, the queue switches, exactly, to one summed buffer per
target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from hpcasync.kernels import axpy

SendModel = Callable[[np.ndarray, int], None]
SendDelta = Callable[[int, np.ndarray, float], None]


class _Deltas:
    """Deltas queued for one transmission (see the module docstring)."""

    __slots__ = ("shared", "scales", "per", "round_src", "round_targets", "first_round")

    def __init__(self) -> None:
        self.shared: np.ndarray | None = None  # Σ unscaled Δ (shared mode)
        self.scales: dict[int, float] = {}  # target → weight (shared mode)
        self.per: dict[int, np.ndarray] | None = None  # target → Σ scaled Δ (per-target mode)
        self.round_src: np.ndarray | None = None  # the array pushed in the current step
        self.round_targets: set[int] = set()
        self.first_round = True

    def empty(self) -> bool:
        return not self.scales and not self.per


class _Packet:
    __slots__ = ("model", "number", "deltas")

    def __init__(self) -> None:
        self.model: np.ndarray | None = None
        self.number = 0
        self.deltas = _Deltas()

    def empty(self) -> bool:
        return self.model is None and self.deltas.empty()


class Outbox:
    """Serial multicast sender of one rank.

    ``send_model(buf, number)`` publishes a model to every out-neighbour;
    ``send_delta(j, buf, scale)`` adds ``scale·buf`` into neighbour j.
    ``comm_delay()`` returns one transmission time in seconds (``None``:
    send at once). ``clock`` is the time source of :meth:`poll`'s ``now``.
    """

    def __init__(self, dim: int, send_model: SendModel, send_delta: SendDelta,
                 comm_delay: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.perf_counter, dtype: np.dtype | type = np.float64) -> None:
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)  # the model's: float32 queues hold half the bytes
        self.send_model = send_model
        self.send_delta = send_delta
        self.comm_delay = comm_delay
        self.clock = clock
        self._queued = _Packet()
        self._queued_since = 0.0
        self._flight: _Packet | None = None
        self._due = math.inf
        self._free_at = -math.inf
        self._spare: list[np.ndarray] = []
        self.transmissions = 0  # transmissions that left (a model and/or deltas each)
        self.models_replaced = 0  # queued models overwritten by a newer one before leaving
        self.deltas_merged = 0  # delta pushes added to one already queued for the same target
        self.per_target_fallbacks = 0  # times the delta queue left the shared-sum mode
        #: called with each transmission's measured time on the link, start to landed (trace replay)
        self.on_transmission: Callable[[float], None] | None = None
        self._start = 0.0

    # -- state -------------------------------------------------------------------------
    @property
    def immediate(self) -> bool:
        return self.comm_delay is None

    @property
    def busy(self) -> bool:
        """A transmission is in flight."""
        return self._flight is not None

    @property
    def due(self) -> float:
        """When the transmission in flight lands (``inf`` when the link is idle)."""
        return self._due if self._flight is not None else math.inf

    def pending(self) -> bool:
        """Something is in flight or queued."""
        return self._flight is not None or not self._queued.empty()

    def buffers(self) -> int:
        """Vectors of length dim this outbox holds (for memory reports)."""
        n = len(self._spare)
        for p in (self._queued, self._flight):
            if p is None:
                continue
            n += p.model is not None
            n += p.deltas.shared is not None
            n += len(p.deltas.per or {})
        return n

    def _buffer(self, zero: bool) -> np.ndarray:
        buf = self._spare.pop() if self._spare else np.empty(self.dim, self.dtype)
        if zero:
            buf.fill(0.0)
        return buf

    def _mark_queued(self) -> None:
        if self._queued.empty():
            self._queued_since = self.clock()

    # -- pushes ------------------------------------------------------------------------
    def push_model(self, v: np.ndarray, number: int) -> None:
        """Queue a copy of ``v`` as model ``number`` (replacing a queued one)."""
        if self.comm_delay is None:
            self.send_model(v, number)
            return
        self._mark_queued()
        q = self._queued
        if q.model is None:
            q.model = self._buffer(zero=False)
        else:
            self.models_replaced += 1
        np.copyto(q.model, v)
        q.number = number

    def push_delta(self, j: int, delta: np.ndarray, scale: float = 1.0) -> None:
        """Queue ``scale·delta`` for neighbour ``j`` (summed with what is queued for it)."""
        if self.comm_delay is None:
            self.send_delta(j, delta, scale)
            return
        self._mark_queued()
        dq = self._queued.deltas
        if dq.per is None and not self._shared_push(dq, j, delta, scale):
            self._to_per_target(dq)
        if dq.per is not None:
            buf = dq.per.get(j)
            if buf is None:
                buf = dq.per[j] = self._buffer(zero=True)
            else:
                self.deltas_merged += 1
            axpy(buf, float(scale), delta)

    def _shared_push(self, dq: _Deltas, j: int, delta: np.ndarray, scale: float) -> bool:
        """Add to the shared sum if this push fits its pattern; False: switch to per-target."""
        known = dq.scales.get(j)
        if known is not None and known != scale:
            return False
        if known is None and not dq.first_round:
            return False
        if dq.round_src is None:  # the step's first push
            if dq.shared is None:
                dq.shared = self._buffer(zero=True)
            elif dq.scales:
                self.deltas_merged += 1
            dq.shared += delta
            dq.round_src = delta
            dq.round_targets = {j}
        elif delta is dq.round_src and j not in dq.round_targets:
            dq.round_targets.add(j)
        else:
            return False
        dq.scales[j] = scale
        return True

    def _end_step(self) -> None:
        """Close the current step of delta pushes: it must have reached every queued target."""
        dq = self._queued.deltas
        if dq.round_src is None:
            return
        if dq.per is None and dq.round_targets != set(dq.scales):
            self._to_per_target(dq)
        dq.round_src = None
        dq.round_targets = set()
        dq.first_round = False

    def _to_per_target(self, dq: _Deltas) -> None:
        """Rewrite the shared sum as exact per-target sums (the current step's Δ only where pushed)."""
        self.per_target_fallbacks += 1
        per: dict[int, np.ndarray] = {}
        for j, c in dq.scales.items():
            buf = self._buffer(zero=False)
            np.copyto(buf, dq.shared)
            if dq.round_src is not None and j not in dq.round_targets:
                buf -= dq.round_src
            buf *= c
            per[j] = buf
        if dq.shared is not None:
            self._spare.append(dq.shared)
        dq.shared = None
        dq.scales = {}
        dq.per = per

    # -- transmission ------------------------------------------------------------------
    def poll(self, now: float | None = None) -> float:
        """Land the transmission in flight if its time is up and start the next one.

        Also closes the current step of delta pushes. Returns when the
        transmission in flight lands (``inf`` if none) so the caller knows
        how long it may sleep.
        """
        if self.comm_delay is None:  # immediate sends: nothing is ever queued
            return math.inf
        self._end_step()
        if now is None:
            now = self.clock()
        while True:
            if self._flight is not None:
                if now < self._due:
                    return self._due
                self._land(self._flight)
                self._flight = None
                if self.on_transmission is not None:  # landed late by the owner's polling, and the RMA time
                    self.on_transmission(self.clock() - self._start)
                self._free_at = self._due
            if self._queued.empty():
                return math.inf
            start = max(self._free_at, self._queued_since)
            self._start = start
            self._flight, self._queued = self._queued, _Packet()
            self._due = start + self.comm_delay()

    def flush(self) -> None:
        """Send everything in flight and queued now, ignoring the remaining delay (end of run)."""
        self._end_step()
        if self._flight is not None:
            self._land(self._flight)
            self._flight = None
        if not self._queued.empty():
            q, self._queued = self._queued, _Packet()
            self._land(q)
        self._due = math.inf

    def _land(self, p: _Packet) -> None:
        self.transmissions += 1
        if p.model is not None:
            self.send_model(p.model, p.number)
            self._spare.append(p.model)
        dq = p.deltas
        if dq.per is not None:
            for j, buf in dq.per.items():
                self.send_delta(j, buf, 1.0)
                self._spare.append(buf)
        elif dq.shared is not None:
            for j, c in dq.scales.items():
                self.send_delta(j, dq.shared, c)
            self._spare.append(dq.shared)
        # keep at most two spare vectors: the steady state needs queued + in flight
        del self._spare[2:]
