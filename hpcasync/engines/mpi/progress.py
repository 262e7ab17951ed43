"""Passive-target progress: a thread that enters MPI while the main thread computes.

The engine's one-sided operations (``slots.py``, ``delta.py``, ``board.py``) are only
wait-free if the MPI library completes them at a target that is computing
and not calling MPI. That is a property of the MPI build, not of the
standard: the ``mpich`` wheel's ch4 and Open MPI's ``osc rdma``/``osc sm``
do, Open MPI 4.1's ``osc ucx`` and ``osc pt2pt`` do not (a publish then
waits until the target's next MPI call, measured 100 ms per publish in the
no-wait test). Where progress is missing, :class:`ProgressThread` supplies
it: a daemon thread that calls ``MPI_Iprobe`` on a private duplicate of the
communicator every ``poll_s`` seconds. ``Iprobe`` runs the library's
progress engine (Open MPI: ``opal_progress``, which polls UCX and the pt2pt
one-sided component's receive callbacks; MPICH: ``MPID_Progress_test``) and
never receives anything: nothing is ever sent on the duplicate.

``mpi.progress`` selects it:

* ``"off"``: no thread;
* ``"thread"``: a thread on every rank;
* ``"auto"``: ``probe.measure`` checks, once at start-up (about
  2 × ``PROBE_SLEEP_S``), whether a publish or an accumulate waits
  for a rank that sleeps without calling MPI (an operation longer than a
  quarter of the sleep); if it does on any rank, every rank starts the thread.

Thread level. The thread calls MPI from a second thread, so it needs
``MPI_THREAD_SERIALIZED`` or more. mpi4py requests ``MPI_THREAD_MULTIPLE`` by
default when ``mpi4py.MPI`` is first imported (``mpi4py.rc.thread_level =
"multiple"``; this code base never changes it; the environment variable
``MPI4PY_RC_THREAD_LEVEL`` overrides it). Open MPI 4.1's ``osc pt2pt``
refuses MULTIPLE (no window can be created), so it runs with
``MPI4PY_RC_THREAD_LEVEL=serialized``. Either way the main thread keeps an
MPI lock and lends it to the thread only inside :class:`computing` (the
gradient, padding sleeps, the monitor's sleeps): MPI calls never overlap,
and the thread never slows the main thread's own calls. Below SERIALIZED the
thread is refused with a :class:`UserError`.

Cost. The thread sleeps between polls (``Event.wait``, never a busy spin)
and only tries the lock (never blocks on it), so it wakes at most 1/``poll_s``
times a second whatever the gradient rate. Measured on 2 shared cores (load
average 15-20, ``bench_async_efficiency.py --ranks 2 --seconds 4``, off vs
thread, two runs each): digits with 1 ms gradients 0.77/0.72 vs 0.75/0.68,
digits flat out 0.32/0.33 vs 0.35/0.23 (the machine's noise is as large as
the cost). A thread that blocked on the lock (woken at every gradient) cost
20-25 %. While its rank computes the thread uses ~55 ms of CPU per second
at 200 µs polls (about 1 500 polls/s on this loaded machine; 1 ms polls: 25-45
ms/s, but 2-10× slower pushes under ``osc ucx``).

Lifetime. :func:`start` and :meth:`ProgressThread.stop` bracket the
windows: the runner stops (and joins) the thread before it frees any
window, on every exit path, and an ``atexit`` hook stops any thread still
running before mpi4py finalizes MPI (``atexit`` runs hooks last registered
first, and mpi4py registered its finalizer when it was imported).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from mpi4py import MPI

from hpcasync.errors import UserError

MODES = ("auto", "off", "thread")


def _poll_from_env(default: float = 2e-4) -> float:
    try:
        value = float(os.environ.get("HPCASYNC_PROGRESS_POLL_S", default))
    except ValueError:
        return default
    return value if 1e-5 <= value <= 1.0 else default


#: seconds between two polls of the progress thread (``HPCASYNC_PROGRESS_POLL_S``: a measurement knob)
POLL_S = _poll_from_env()
#: how long a probed target sleeps without calling MPI
PROBE_SLEEP_S = 0.1
_TAG = 32_001

_running: set[ProgressThread] = set()
_running_lock = threading.Lock()


def thread_level_name(level: int | None = None) -> str:
    level = MPI.Query_thread() if level is None else level
    names = {MPI.THREAD_SINGLE: "MPI_THREAD_SINGLE", MPI.THREAD_FUNNELED: "MPI_THREAD_FUNNELED",
             MPI.THREAD_SERIALIZED: "MPI_THREAD_SERIALIZED", MPI.THREAD_MULTIPLE: "MPI_THREAD_MULTIPLE"}
    return names.get(level, str(level))


def check_thread_level() -> None:
    """Raise :class:`UserError` unless MPI provides ``MPI_THREAD_SERIALIZED`` or more."""
    if MPI.Query_thread() < MPI.THREAD_SERIALIZED:
        raise UserError(
            f"mpi.progress = \"thread\" needs MPI_THREAD_MULTIPLE (or SERIALIZED); this MPI provides "
            f"{thread_level_name()} (unset MPI4PY_RC_THREAD_LEVEL, or use a one-sided component with "
            "asynchronous progress, e.g. Open MPI --mca osc sm on one node, and mpi.progress = \"off\")")


# The thread's owner (the main thread) holds this lock except inside computing(): the progress
# thread polls only while it has it. Under MPI_THREAD_SERIALIZED that keeps MPI calls from
# overlapping; under MULTIPLE it keeps the thread from contending with the main thread's own
# MPI calls (measured under Open MPI 4.1 osc ucx: 20 publishes into a computing target took
# 170-180 ms gated, 390-570 ms with the thread polling all the time, 2 s without a thread).
_mpi_lock = threading.RLock()
_gated: list[ProgressThread] = []  # the running thread, if any (at most one per process)


class computing:  # noqa: N801 - used like a function: ``with progress.computing():``
    """Marks a stretch in which the calling thread makes no MPI call (a gradient, a padding sleep).

    It lends the MPI lock to the progress thread for that stretch; without a thread it costs one
    list check.
    """

    __slots__ = ("_lent",)

    def __enter__(self) -> None:
        self._lent = bool(_gated) and _gated[0].owner is threading.current_thread()
        if self._lent:
            _mpi_lock.release()

    def __exit__(self, *exc: object) -> None:
        if self._lent:
            _mpi_lock.acquire()


class ProgressThread:
    """A daemon thread that enters MPI every ``poll_s`` seconds. Collective to construct (``Comm.Dup``).

    The constructing thread (the owner) holds the MPI lock except inside :class:`computing`, and
    the thread polls only while it has the lock: while the owner computes. So the thread works under
    MPI_THREAD_SERIALIZED (Open MPI 4.1's ``osc pt2pt`` supports no more) and never competes with
    the owner's own MPI calls, which make progress anyway.
    """

    def __init__(self, comm: MPI.Comm, poll_s: float = POLL_S) -> None:
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        check_thread_level()
        self.poll_s = float(poll_s)
        self.polls = 0
        self.serialized = MPI.Query_thread() < MPI.THREAD_MULTIPLE
        self.owner = threading.current_thread()
        if _gated:
            raise RuntimeError("a progress thread is already running in this process")
        self._comm = comm.Dup()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hpcasync-mpi-progress", daemon=True)
        with _running_lock:
            _running.add(self)
        _mpi_lock.acquire()
        _gated.append(self)
        self._thread.start()

    def _loop(self) -> None:
        comm, stop, poll = self._comm, self._stop, self.poll_s
        while not stop.wait(poll):
            # never block on the lock: a waiter would be woken at every computing() of the owner
            # (one context switch per gradient); a missed turn costs one poll interval
            if not _mpi_lock.acquire(blocking=False):
                continue
            try:
                if not stop.is_set():
                    comm.Iprobe(MPI.ANY_SOURCE, _TAG)
                    self.polls += 1
            finally:
                _mpi_lock.release()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop and join the thread, then free its communicator. Idempotent; local (no collective)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        with _running_lock:
            _running.discard(self)
        if self in _gated:
            _gated.remove(self)
            _mpi_lock.release()
        if self._comm != MPI.COMM_NULL and not MPI.Is_finalized():
            # Comm.Free is collective in name only: it completes locally once no operation is pending
            self._comm.Free()

    def __enter__(self) -> ProgressThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        threads = list(_running)
    for t in threads:
        t.stop()


def stop(progress: ProgressThread | None) -> None:
    """Stop ``progress`` if there is one (the runner's exit paths)."""
    if progress is not None:
        progress.stop()


def start(mode: str, comm: MPI.Comm, poll_s: float = POLL_S) -> ProgressThread | None:
    """Collective over ``comm``: the progress thread ``mode`` asks for, or None.

    ``"auto"`` runs :func:`hpcasync.engines.mpi.probe.measure` first (2 × ``PROBE_SLEEP_S``)
    and starts the thread on every rank iff an operation waited on any rank. Raises :class:`UserError` on every
    rank alike when the thread level is too low (it is the same on every rank).
    """
    if mode not in MODES:
        raise UserError(f"config field mpi.progress: unknown name {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "off":
        return None
    if mode == "auto":
        from hpcasync.engines.mpi.probe import measure

        if comm.Get_size() < 2 or not measure(comm, PROBE_SLEEP_S, ops=1, dim=1024, drains=False).waits:
            return None
        if MPI.Query_thread() < MPI.THREAD_SERIALIZED:
            if comm.Get_rank() == 0:
                print(f"hpcasync: warning: one-sided operations here wait for a target that computes, and the "
                      f"progress thread needs MPI_THREAD_MULTIPLE ({thread_level_name()} provided); runs will "
                      "not be wait-free: see `mpiexec -n 2 hpcasync doctor`", file=sys.stderr, flush=True)
            return None
    return ProgressThread(comm, poll_s)


__all__ = ["MODES", "POLL_S", "ProgressThread", "check_thread_level", "computing", "start", "stop",
           "thread_level_name"]
