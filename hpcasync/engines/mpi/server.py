"""The parameter server on MPI (async-sgd, hogwild): x and its version in one window on rank 0, fully one-sided.

Mishchenko et al. (2022) Alg. 1 needs a server that applies each arriving
gradient at once. No server rank is spent on it: rank 0 (also a worker)
hosts one ``Win.Allocate`` window (displacement unit 8 bytes), every other rank
allocates none::

    disp 0        SEQ (int64): 2k while the model is version k (k steps applied),
                  2k + 1 while a step is being applied to it
    disp 1 ..     x (d elements of the model dtype)

It lives, like every window of the engine, in one ``Lock_all(MODE_NOCHECK)``
epoch; each operation is completed by ``Flush(0)`` before the next is issued.
The window spans every rank of the job (the monitor included, which reads x).

Atomic step (async-sgd), a seqlock whose writers exclude each other by CAS:

1. lock: read SEQ (``Fetch_and_op`` NO_OP); if it is odd a step is under way:
   back off (``sched_yield``, then sleeps of 20 µs doubling to 200 µs: never a
   busy spin); else ``Compare_and_swap`` SEQ 2k → 2k + 1 (retry if another
   writer won). Now this rank alone writes x, and k is the version.
2. τ = k − prev, γ = rule(k, τ); ``Get_accumulate`` (SUM) adds −γ·g into x
   and returns the old x in the same call; the worker's new model is old − γ·g
   (the same rounding as the target's sum). ``Flush``.
3. unlock: ``Compare_and_swap`` SEQ 2k + 1 → 2k + 2 (checked to be this
   rank's). The step completed at the target before SEQ says so.

A reader (the monitor, ``read``) takes SEQ (even s₁; odd: back off), reads x
with ``Get_accumulate`` NO_OP (atomic per element against the writers'
SUM, so no undefined concurrent access), then SEQ again; s₂ = s₁ means no step
started or ended meanwhile, so x is exactly version s₁/2 — never half a step.
A rank never holds SEQ while waiting for anything, so there is no deadlock;
a SEQ still held on an error path is released by :meth:`free`.

Hogwild! (``atomic = False``): no lock. The version is taken with
``Fetch_and_op`` SUM +2 (so SEQ stays even and τ is still k − prev), and
−γ·g is added with the same ``Get_accumulate`` SUM: atomic element by element
only, so the model a worker gets back may hold parts of other steps under way.
Reads of a Hogwild! server are not consistent either (no writer ever marks SEQ).

Measured cost and alternatives: docs/algorithms.md ("async-sgd on MPI").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcasync import algorithms
from hpcasync.engines.mpi.dtypes import model_dtype, mpi_type, words_for
from hpcasync.engines.mpi.epoch import WORD, Epoch
from hpcasync.engines.mpi.monitor import AverageModelEvaluator
from hpcasync.engines.mpi.rank_setup import RunSetup
from hpcasync.results.schema import SERVER_STEPS, row_dtype

__all__ = ["ServerEvaluator", "ServerWindow"]

_I = MPI.INT64_T
_BACKOFF_S = 2e-5
_BACKOFF_MAX_S = 2e-4
SEQ = 0


class ServerWindow(Epoch):
    """x and SEQ on ``host``; collective over ``comm`` (every rank) to construct and to free."""

    def __init__(self, comm: MPI.Comm, x0: np.ndarray, host: int = 0) -> None:
        super().__init__(comm)
        self.host = int(host)
        self.dim = int(np.size(x0))
        self.dtype = model_dtype(x0)
        self._D = mpi_type(self.dtype)
        nbytes = (1 + words_for(self.dim, self.dtype)) * WORD if self.rank == self.host else 0
        self._neg = np.empty(self.dim, self.dtype)
        self._word = np.zeros(1, np.int64)
        self._cmp = np.zeros(1, np.int64)
        self._seen = np.zeros(1, np.int64)
        self._held: int | None = None  # SEQ value this rank wrote (odd) while it holds the lock
        self.retries = 0  # lock or read attempts that found a step under way
        self.wait_s = 0.0
        self.steps = 0
        self.bytes_sent = 0
        self.messages_sent = 0
        self._rows: list[tuple[int, int, float, float]] = []
        self._win: MPI.Win | None = None

        def initialise() -> None:
            self._win, mem = self.allocate(nbytes, np.uint8, relaxed_ordering=False)
            if nbytes:
                np.frombuffer(mem, np.int64, count=1)[0] = 0
                np.frombuffer(mem, self.dtype, offset=WORD, count=self.dim)[:] = np.asarray(x0, self.dtype)

        self.build(initialise)

    def _check_open(self) -> MPI.Win:
        if self._win is None:
            raise RuntimeError("ServerWindow used after free()")
        return self._win

    # -- the SEQ word --------------------------------------------------------------------
    def _fetch(self, win: MPI.Win, op: MPI.Op, value: int = 0) -> int:
        self._word[0] = value
        win.Fetch_and_op([self._word, 1, _I], [self._seen, 1, _I], self.host, SEQ, op=op)
        win.Flush(self.host)
        return int(self._seen[0])

    def _cas(self, win: MPI.Win, new: int, expected: int) -> int:
        self._word[0], self._cmp[0] = new, expected
        win.Compare_and_swap([self._word, 1, _I], [self._cmp, 1, _I], [self._seen, 1, _I], self.host, SEQ)
        win.Flush(self.host)
        return int(self._seen[0])

    def _even_seq(self, win: MPI.Win) -> int:
        """SEQ once no step is under way (backing off while one is)."""
        sleep = 0.0
        t0 = time.perf_counter()
        while True:
            s = self._fetch(win, MPI.NO_OP)
            if s % 2 == 0:
                if sleep:
                    self.wait_s += time.perf_counter() - t0
                return s
            self._back_off(sleep)
            sleep = _BACKOFF_S if sleep == 0.0 else min(2 * sleep, _BACKOFF_MAX_S)

    def _back_off(self, sleep: float) -> None:
        self.retries += 1
        if sleep == 0.0:
            os.sched_yield()  # the holder may be waiting for this core
        else:
            time.sleep(sleep)

    def _lock(self, win: MPI.Win) -> int:
        while True:
            s = self._even_seq(win)
            if self._cas(win, s + 1, s) == s:
                self._held = s + 1
                return s
            self._back_off(0.0)

    def _unlock(self, win: MPI.Win) -> None:
        held, self._held = self._held, None
        assert held is not None
        seen = self._cas(win, held + 1, held)
        if seen != held:
            raise RuntimeError(f"rank {self.rank}: the server's SEQ was {seen}, not this rank's {held}")

    # -- operations ----------------------------------------------------------------------
    def step(self, g: np.ndarray, version: int, rule: Callable[[int, int], float], out: np.ndarray,
             atomic: bool = True) -> tuple[int, int]:
        """x ← x − rule(k, τ)·g at the server, τ = k − ``version``; ``out`` ← the new x; returns (k + 1, τ)."""
        win = self._check_open()
        d, D = self.dim, self._D
        # Hogwild!: no lock, the version by fetch-and-add (SEQ stays even)
        k = self._lock(win) // 2 if atomic else self._fetch(win, MPI.SUM, 2) // 2
        try:
            tau = k - int(version)
            np.multiply(g, -rule(k, tau), out=self._neg)
            win.Get_accumulate([self._neg, d, D], [out, d, D], self.host, target=(1, d, D), op=MPI.SUM)
            win.Flush(self.host)
            out += self._neg
        finally:
            if atomic:
                self._unlock(win)
        self.steps += 1
        self.bytes_sent += self._neg.nbytes + 3 * WORD
        self.messages_sent += 3 if atomic else 2
        self._last = (k, tau)
        return k + 1, tau

    def record(self, wall: float, virtual: float) -> None:
        """Log the step just taken (``schema.SERVER_STEPS``) at these times."""
        self._rows.append((*self._last, wall, virtual))

    def rows(self) -> np.ndarray:
        return np.array(self._rows, dtype=row_dtype(SERVER_STEPS))

    def read(self, out: np.ndarray) -> int:
        """out ← x, a complete version (seqlock read); returns the version k."""
        win = self._check_open()
        d, D = self.dim, self._D
        while True:
            s = self._even_seq(win)
            win.Rget_accumulate([self._neg, d, D], [out, d, D], self.host, target=(1, d, D),
                                op=MPI.NO_OP).Wait()  # a read (epoch.py, "Reads")
            if self._fetch(win, MPI.NO_OP) == s:
                return s // 2
            self._back_off(0.0)

    # -- checkpoints (engines/mpi/checkpoint.py) -------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This rank's logged steps, and on the host x and k. Called once every step has completed
        (after the end-of-run barrier), so the read is of the last version."""
        state: dict[str, Any] = {"rows": np.array(self._rows, np.float64).reshape(-1, 4)}
        if self.rank == self.host:
            x = np.empty(self.dim, self.dtype)
            state["x"], state["k"] = x, self.read(x)
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Put x and SEQ = 2k back on the host (a barrier must follow before anyone steps) and the rows."""
        self._rows = [(int(k), int(tau), float(w), float(v)) for k, tau, w, v in state["rows"]]
        self.steps = len(self._rows)
        if self.rank != self.host:
            return
        win = self._check_open()
        d, D = self.dim, self._D
        x = np.ascontiguousarray(state["x"], self.dtype)
        win.Accumulate([x, d, D], self.host, target=(1, d, D), op=MPI.REPLACE)
        win.Flush(self.host)
        self._fetch(win, MPI.REPLACE, 2 * int(state["k"]))

    def free(self) -> None:
        """Release SEQ if still held (an error mid-step), close the epoch, free the window (collective)."""
        first: BaseException | None = None
        if self._win is not None and self._held is not None:
            try:
                self._unlock(self._win)
            except BaseException as exc:
                first = exc
        self._win = None
        try:
            super().free()
        except BaseException as exc:
            first = first or exc
        if first is not None:
            raise first


def open_server(setup: RunSetup, comm: MPI.Comm) -> ServerWindow | None:
    """The job's server window when the algorithm needs one (collective over every rank), else None."""
    if "server" not in algorithms.get(setup.cfg.algorithm.name).requires:
        return None
    return ServerWindow(comm, setup.x0)


class ServerEvaluator(AverageModelEvaluator):
    """The monitor's evaluator for a parameter server: evaluates the server's x (read with :meth:`ServerWindow.read`)
    instead of an average of the workers' models; gradients are still the workers' counters."""

    def __init__(self, problem: object, board: object, server: ServerWindow, workers: int, dim: int,
                 virtual: Callable[[float], float]) -> None:
        super().__init__(problem, board, 1, dim, virtual)  # type: ignore[arg-type]
        self.server = server
        self.iterations = np.zeros(workers, np.int64)

    def collect(self) -> None:
        t0 = time.perf_counter()
        self.server.read(self.rows[0])
        self.board.read_iterations(range(len(self.iterations)), self.iterations)
        self.read_s += time.perf_counter() - t0
