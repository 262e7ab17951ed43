"""The MPI transport: docs/design.md §3's interface on one-sided RMA windows, plus the blocking collectives.

Non-blocking calls (what the asynchronous algorithms use):

* ``push_model(v)`` → the :class:`~hpcasync.engines.mpi.outbox.Outbox`
  (a newer model replaces a queued one) → when the transmission lands:
  :meth:`ModelSlots.publish` into every out-neighbour (§5.1). The model
  number written into the seqlock word is the writer's iteration count, so a
  reader knows how many updates behind each neighbour's model is
  (staleness). Numbers only grow, which is all the seqlock needs (a
  publication into the buffer being copied always announces a number ≥ d+2).
* ``latest_models()`` → :meth:`ModelSlots.read_all` into one local
  ``(deg, d)`` array (allocated on first use).
* ``mix_latest(x, g, …)`` (ADSGD's step) mixes straight from the window of
  model slots (:meth:`ModelSlots.open_views`, no copy of the neighbours);
  a slot overwritten meanwhile voids the result: x is restored exactly (from
  the copy this rank last published, :meth:`ModelSlots.fetch_published`, or
  from a copy taken before the kernel when a delay model holds the push back)
  and the step redone from seqlock copies. ``mix_and_push`` does mix and
  publish in one kernel on one node (docs/design.md §5.6).
* ``pair_average(j, v)`` (AD-PSGD) → :meth:`perform_pair_average`, called
  by the runner: take j's LOCK word (compare-and-swap), get, average,
  put (:class:`~hpcasync.engines.mpi.pairs.PairWindow`, built when the runner
  passes ``pair_model``: the window then *is* the agent's x).
* ``push_delta(j, c·Δ)`` → outbox → :meth:`DeltaAccumulator.accumulate`.
* ``drain_into(s)``: Alg. 3's deltas land directly in the s_i window. When
  the runner passes ``delta_target`` (the algorithm's s_i, whose initial
  value the window starts from), the window *is* s_i and ``drain_into(s)``
  is an atomic :meth:`DeltaAccumulator.snapshot_into` (measured 5× cheaper
  than a drain at d = 1e6): exact, because s changes only through this
  call. Otherwise it is a true drain (``Get_accumulate(REPLACE)``).

Blocking collectives (DSGD, AllReduce SGD) run on the worker communicator
as non-blocking MPI calls completed by the runner's ``wait`` (short sleeps,
never a busy spin, so oversubscribed ranks do not steal each other's
cores). Two extra numbers ride along each round: the sender's injected
"available at" time (send time + one sampled communication delay, as in the
simulator a round completes when the slowest contribution has travelled)
and the stop round, so that every rank stops after the same round.

Every call is timed into ``comm_s`` and every byte counted (``bytes_sent``,
``messages_sent``: what the windows moved, seqlock words included, plus the
collectives' payloads).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from hpcasync.algorithms.transport import Transport
from hpcasync.engines.mpi.collectives import Collectives
from hpcasync.engines.mpi.dtypes import model_dtype
from hpcasync.engines.mpi.messages import FloodChannel, FloodTransport
from hpcasync.engines.mpi.outbox import Outbox
from hpcasync.engines.mpi.pairs import PairWindow
from hpcasync.engines.mpi.paths import NumberedSlots, delta_class, slots_class
from hpcasync.engines.mpi.shared_deltas import SharedDeltas
from hpcasync.engines.mpi.windows import DeltaAccumulator
from hpcasync.kernels import adsgd_step, adsgd_step_rows

if TYPE_CHECKING:
    from hpcasync.engines.mpi.groups import GroupWindow
    from hpcasync.engines.mpi.server import ServerWindow

NEVER = 2**62  # "no stop round agreed yet"


class MpiTransport(Collectives, FloodTransport, Transport):
    """Agent ``rank``'s endpoint. Collective to construct and to :meth:`free` (over ``comm``).

    ``payload`` is the algorithm's (``model``, ``delta`` or ``none``);
    ``synchronous`` builds the neighbour communicator of DSGD's exchange.
    ``message0`` is what a model slot holds before its writer's first
    publication (``Algorithm.initial_message()``: x0, or RFAST's [x0, 0] of
    length 2d); it sets the length of the pushed messages. Every agent's
    initial message is the same (x0 is common), so each rank initialises all
    its slots with its own.
    ``iteration()`` returns the agent's update count (the number of a pushed
    model). ``comm_delay()`` returns one injected transmission time in
    seconds, or is None to send at once.
    ``pair_model`` (AD-PSGD) builds the :class:`PairWindow` of live models,
    initialised with it, on the side of the bipartition given by
    ``pair_active``; the caller then uses ``pairs.x`` as the agent's model.
    ``yield_before_read``: give up the core (``sched_yield``) before reading
    the neighbours' models, for ranks that share cores (oversubscribed node).
    A neighbour waiting for this core then publishes first, so the models
    read are as fresh as on dedicated cores; without it a rank mixes, for a
    whole scheduler time slice, models that its core-mates cannot update
    (measured: RFAST on 4 ranks / 2 cores converged markedly slower). MPICH
    used to do this as a side effect of the ``Flush`` of its word fetches
    under ``MPI_THREAD_MULTIPLE``; those are plain loads now.
    ``shared_memory`` (``mpi.shared_memory``): "auto" puts the model slots in
    MPI-3 shared memory, same-node pushes being plain stores
    (:class:`~hpcasync.engines.mpi.shared_slots.SharedSlots`), and, when all
    ranks share one node, Alg. 3's deltas in per-writer running sums
    (:class:`~hpcasync.engines.mpi.shared_deltas.SharedDeltas`); "off": RMA only.
    """

    # no control channel yet: send_small / poll_small are simulator-only
    features = frozenset({"push_model", "push_delta", "allreduce", "neighbor_exchange", "barrier", "pair_average",
                          "await_deltas", "server", "flood", "wait_arrival", "group_average"})
    #: the parameter server's window (async-sgd, hogwild; ``server.py``), set by the runner
    server: ServerWindow | None = None
    #: Prague's group generator (``groups.py``), set by the runner
    groups: GroupWindow | None = None

    def __init__(self, comm: MPI.Comm, *, in_neighbors: Sequence[int], out_neighbors: Sequence[int],
                 x0: np.ndarray, payload: str, synchronous: bool, iteration: Callable[[], int],
                 comm_delay: Callable[[], float] | None = None, delta_target: np.ndarray | None = None,
                 message0: np.ndarray | None = None, clock: Callable[[], float] = time.perf_counter,
                 pair_model: np.ndarray | None = None, pair_active: bool = True,
                 yield_before_read: bool = False, flood: bool = False, shared_memory: str = "auto") -> None:
        self.comm = comm
        self.yield_before_read = bool(yield_before_read)
        self.rank = comm.Get_rank()
        self.n = comm.Get_size()
        self.in_neighbors = [int(j) for j in in_neighbors]
        self.out_neighbors = [int(j) for j in out_neighbors]
        self.dim = int(x0.size)
        self.dtype = model_dtype(x0)  # float64, or float32 for torch models: every buffer below follows
        message0 = np.asarray(x0 if message0 is None else message0, self.dtype)
        self.message_dim = int(message0.size)
        self.payload = payload
        self.iteration = iteration
        self.comm_delay = comm_delay
        self.clock = clock
        self.comm_s = 0.0  # seconds spent in RMA calls (sends, reads, drains)
        self._coll_bytes = 0
        self._coll_messages = 0
        self.slots: NumberedSlots | None = None
        self.trace: Any = None  # the rank's timing trace (engines/mpi/trace.py): immediate sends' time
        self.acc: DeltaAccumulator | SharedDeltas | None = None
        self.graph_comm: MPI.Comm | None = None
        self.pairs: PairWindow | None = None
        self.flood_channel: FloodChannel | None = None  # DASGD's gradients (messages.py)
        self.versions = np.zeros(len(self.in_neighbors), np.int64)  # model numbers last read
        self._snapshot = delta_target
        # local copies of the neighbours' models: latest_models(), and mix_latest's slow path
        self._latest = np.empty((0, self.message_dim), self.dtype)
        self._pushed: np.ndarray | None = None  # the array last pushed, while unchanged (mix_latest)
        self._backup = np.empty(0, self.dtype)  # mix_latest's copy of x when it cannot be fetched back
        self.zero_copy_mixes = 0  # mix_latest steps taken straight from the window
        self.redone_mixes = 0  # ... of which redone because a slot was overwritten meanwhile
        self._fused_x: np.ndarray | None = None  # the x mix_and_push has checked for its kernel
        self._fusable = False
        try:
            if payload == "model":
                self.slots = slots_class(comm, shared_memory)(comm, self.message_dim, self.in_neighbors,
                                                              self.out_neighbors, x0=message0, dtype=self.dtype,
                                                              defer_closing=True)
                if comm_delay is None and self.slots.common_x0:
                    # the initial model lies in every out-neighbour's window: "model 0" is pushed
                    self._pushed = message0
                # mix_and_push's one-kernel path: immediate sends, plain-store slots, and some
                # out-neighbour (a torn view restores x from the copy published there)
                self._fusable = (comm_delay is None and bool(self.out_neighbors)
                                 and getattr(self.slots, "fused", False))
            elif payload == "delta":
                initial = None if delta_target is None else np.array(delta_target, self.dtype)
                # a delta has the message's length (push-sum: d + 1 or more, Algorithm.initial_message)
                self.acc = delta_class(comm, shared_memory)(comm, self.message_dim, self.out_neighbors,
                                                            initial=initial, dtype=self.dtype)
            if pair_model is not None:
                self.pairs = PairWindow(comm, pair_model, self.out_neighbors, pair_active, clock=clock)
                self.versions = self.pairs.versions  # updated in place by the exchanges
            if flood:
                self.flood_channel = FloodChannel(comm, self.out_neighbors)
            if synchronous:
                self.graph_comm = comm.Create_dist_graph_adjacent(self.in_neighbors, self.out_neighbors,
                                                                  reorder=False)
        except BaseException:
            self.free()
            raise
        self.outbox = Outbox(self.message_dim, self._send_model,
                             self._send_delta, comm_delay, clock, dtype=self.dtype)
        self._init_collectives()

    # -- counters ----------------------------------------------------------------------
    @property
    def bytes_sent(self) -> int:  # type: ignore[override]
        b = self._coll_bytes
        if self.slots is not None:
            b += self.slots.bytes_sent
        if self.acc is not None:
            b += self.acc.bytes_sent
        if self.pairs is not None:
            b += self.pairs.bytes_sent
        if self.flood_channel is not None:
            b += self.flood_channel.bytes_sent
        return (b + (0 if self.server is None else self.server.bytes_sent)
                + (0 if self.groups is None else self.groups.bytes_sent))

    @property
    def messages_sent(self) -> int:  # type: ignore[override]
        m = self._coll_messages
        if self.slots is not None:
            m += self.slots.messages_sent
        if self.acc is not None:
            m += self.acc.messages_sent
        if self.pairs is not None:
            m += self.pairs.messages_sent
        if self.flood_channel is not None:
            m += self.flood_channel.messages_sent
        return (m + (0 if self.server is None else self.server.messages_sent)
                + (0 if self.groups is None else self.groups.messages_sent))

    @property
    def slot_retries(self) -> int:
        return 0 if self.slots is None else self.slots.retries

    # -- sends (called by the outbox) ------------------------------------------------------
    def _send_model(self, v: np.ndarray, number: int) -> None:
        assert self.slots is not None
        t0 = self.clock()
        self.slots.publish_as(v, number)
        dt = self.clock() - t0
        self.comm_s += dt
        if self.trace is not None and self.comm_delay is None:
            self.trace.pending_send_s += dt

    def _send_delta(self, j: int, delta: np.ndarray, scale: float) -> None:
        assert self.acc is not None
        t0 = self.clock()
        self.acc.accumulate(j, delta, scale)
        dt = self.clock() - t0
        self.comm_s += dt
        if self.trace is not None and self.comm_delay is None:
            self.trace.pending_send_s += dt

    # -- Transport: non-blocking -------------------------------------------------------------
    def push_model(self, v: np.ndarray) -> None:
        if self.slots is None:
            raise RuntimeError(f"push_model on a transport for payload {self.payload!r}")
        if self.outbox.immediate:  # the send itself is timed by _send_model
            self._pushed = None
            self.outbox.push_model(v, self.iteration())
            self._pushed = v  # published: every out-neighbour's window now holds a copy of v
            return
        t0 = self.clock()
        self.outbox.push_model(v, self.iteration())
        self.comm_s += self.clock() - t0

    def complete_pushes(self) -> None:
        """Every push so far visible at its targets (a deferred closing word, slots.py): before a
        barrier after which the neighbours must see this rank's last model."""
        if self.slots is not None:
            self.slots.complete()

    def _local_models(self) -> np.ndarray:
        if self._latest.shape[0] != len(self.in_neighbors):
            self._latest = np.empty((len(self.in_neighbors), self.message_dim), self.dtype)
        return self._latest

    def latest_models(self) -> np.ndarray:
        if self.slots is None:
            raise RuntimeError(f"latest_models on a transport for payload {self.payload!r}")
        t0 = self.clock()
        if self.yield_before_read:
            os.sched_yield()
        latest = self._local_models()
        self.versions = self.slots.read_all(latest)
        self.comm_s += self.clock() - t0
        return latest

    def mix_latest(self, x: np.ndarray, g: np.ndarray, w_nbrs: np.ndarray, w_self: float, alpha: float,
                   beta: float) -> None:
        """ADSGD's step, mixing straight from the window (module docstring)."""
        slots = self.slots
        if slots is None:
            raise RuntimeError(f"mix_latest on a transport for payload {self.payload!r}")
        if x.shape != (slots.dim,):
            raise ValueError(f"mix_latest: x has shape {x.shape}, the model slots hold ({slots.dim},)")
        pushed, self._pushed = self._pushed, None  # x changes now: no longer what was pushed
        published = pushed is x and bool(self.out_neighbors)
        if not published:
            if self._backup.shape != x.shape:
                self._backup = np.empty_like(x)
            np.copyto(self._backup, x)
        clock = self.clock
        t0 = clock()
        if self.yield_before_read:
            os.sched_yield()
        data, rows, versions = slots.open_views()
        t1 = clock()
        adsgd_step_rows(x, g, data, rows, w_nbrs, w_self, alpha, beta)
        t2 = clock()
        torn = slots.close_views()
        self.zero_copy_mixes += 1
        if not torn:
            self.versions = versions  # the slots' array: rewritten only by the next open_views
            self.comm_s += (t1 - t0) + (clock() - t2)
            return
        # A neighbour's buffer was rewritten under the kernel: undo, read consistent copies, redo.
        self.redone_mixes += 1
        if published:
            slots.fetch_published(x)
        else:
            np.copyto(x, self._backup)
        self.comm_s += (t1 - t0) + (clock() - t2)
        adsgd_step(x, g, self.latest_models(), w_nbrs, w_self, alpha, beta)

    def mix_and_push(self, x: np.ndarray, g: np.ndarray, w_nbrs: np.ndarray, w_self: float, alpha: float,
                     beta: float) -> None:
        """ADSGD's update after its gradient: on one node (every slot written with plain stores),
        immediate sends and x as last pushed, one kernel reads the slots, mixes and publishes
        (:meth:`SharedSlots.mix_publish`; kernels/seqlock.py); otherwise mix_latest + push_model."""
        slots = self.slots
        if not self._fusable or x is not self._pushed:
            self.mix_latest(x, g, w_nbrs, w_self, alpha, beta)
            self.push_model(x)
            return
        if x is not self._fused_x:  # checked once: the kernel writes x's bytes into the slots as is
            if x.dtype != slots.dtype or x.shape != (slots.dim,) or not x.flags.c_contiguous:
                raise ValueError(f"mix_and_push: x must be a C-contiguous ({slots.dim},) {slots.dtype} array")
            self._fused_x = x
        self.zero_copy_mixes += 1
        if slots.mix_publish_as(x, g, w_nbrs, w_self, alpha, beta, self.iteration()):
            self.versions = slots.view_versions  # rewritten only by the next read
            return
        # a neighbour's buffer was rewritten under the kernel, nothing published: undo, redo, publish
        self.redone_mixes += 1
        slots.fetch_published(x)
        self._pushed = None
        adsgd_step(x, g, self.latest_models(), w_nbrs, w_self, alpha, beta)
        self.push_model(x)

    def push_delta(self, j: int, delta: np.ndarray, scale: float = 1.0) -> None:
        if self.acc is None:
            raise RuntimeError(f"push_delta on a transport for payload {self.payload!r}")
        if self.outbox.immediate:
            self.outbox.push_delta(j, delta, scale)
            return
        t0 = self.clock()
        self.outbox.push_delta(j, delta, scale)
        self.comm_s += self.clock() - t0

    def drain_into(self, s: np.ndarray) -> None:
        if self.acc is None:
            raise RuntimeError(f"drain_into on a transport for payload {self.payload!r}")
        t0 = self.clock()
        if self._snapshot is not None:
            if s is not self._snapshot:
                raise RuntimeError("drain_into: this transport keeps s_i in its window; pass the same "
                                   "array it was built with (delta_target)")
            self.acc.snapshot_into(s)
        else:
            self.acc.drain_into(s)
        self.comm_s += self.clock() - t0

    def read_server(self, out: np.ndarray) -> int:
        if self.server is None:
            raise RuntimeError("read_server on a transport without a parameter server")
        return self.server.read(out)

    # -- pairwise averaging (AD-PSGD), performed by the runner --------------------------------
    def perform_pair_average(self, peer: int, v: np.ndarray, hold: Callable[[], None] | None = None) -> None:
        """x_i, x_peer ← (v + x_peer)/2 atomically (``v`` is this agent's x, updated in place).

        ``hold()``: the injected transfer time, run with the peer reserved but
        not locked (not counted in ``comm_s``); see :meth:`PairWindow.average`.
        """
        if self.pairs is None:
            raise RuntimeError("pair_average on a transport built without pair_model")
        t0 = self.clock()
        held = self.pairs.average(peer, v, self.iteration(), hold)
        self.comm_s += self.clock() - t0 - held

    def lock_own_model(self) -> None:
        """Passive AD-PSGD agent: take the LOCK word of its own live model before changing it."""
        if self.pairs is not None:
            t0 = self.clock()
            self.pairs.lock_own()
            self.comm_s += self.clock() - t0

    def unlock_own_model(self) -> None:
        """After :meth:`lock_own_model`: snapshot the model, publish the update count, unlock."""
        if self.pairs is not None:
            self.pairs.own_step_done(self.iteration())
            t0 = self.clock()
            self.pairs.unlock_own()
            self.comm_s += self.clock() - t0

    def progress(self) -> None:
        """Let MPI serve peers' lock requests on the live-model window (cheap; no-op without it)."""
        if self.pairs is not None:
            self.pairs.progress()

    # -- staleness ---------------------------------------------------------------------------
    def staleness(self, neighbor_iterations: np.ndarray) -> float:
        """Mean over in-neighbours of (their update count − number of their model last mixed here).

        AD-PSGD: the update count a neighbour had when its model was last
        averaged with this agent's (recorded by the exchange)."""
        if (self.slots is None and self.pairs is None) or not self.in_neighbors:
            return math.nan
        return float(np.mean(neighbor_iterations - self.versions))

    # -- teardown ------------------------------------------------------------------------------
    def free(self) -> None:
        """Free the windows and the graph communicator (collective). Idempotent; frees all on error."""
        first: BaseException | None = None
        for obj in (self.slots, self.acc, self.pairs, self.flood_channel):
            if obj is None:
                continue
            try:
                obj.free()
            except BaseException as exc:  # keep freeing
                first = first or exc
        if self.graph_comm is not None:
            try:
                self.graph_comm.Free()
            except BaseException as exc:
                first = first or exc
            self.graph_comm = None
        if first is not None:
            raise first
