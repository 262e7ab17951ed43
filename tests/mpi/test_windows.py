"""Multi-rank tests of the RMA layer (docs/design.md §5.1, §5.2).

Run: ``mpiexec -n 4 python -m pytest --with-mpi tests/mpi -q`` (any size ≥ 2).
Assertions are made on every rank from gathered results, so a failure on one
rank never leaves the others waiting in a collective.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.engines.mpi import progress
from hpcasync.engines.mpi.windows import DeltaAccumulator, ModelSlots
from hpcasync.kernels import adsgd_step, adsgd_step_rows

SEED = 20240611


def _neighbors(graph: str, rank: int, n: int) -> list[int]:
    if graph == "ring":
        return sorted({(rank - 1) % n, (rank + 1) % n} - {rank})
    if graph == "complete":
        return [j for j in range(n) if j != rank]
    raise ValueError(graph)


def _all_ok(comm: MPI.Comm, error: str | None) -> None:
    """Fail on every rank, naming the ranks at fault, if any rank reported an error."""
    errors = [f"rank {r}: {e}" for r, e in enumerate(comm.allgather(error)) if e]
    assert not errors, "\n".join(errors)


def _report(comm: MPI.Comm, text: str) -> None:
    """Measured numbers for the report; shown with ``pytest -s``."""
    lines = comm.gather(text)
    if comm.rank == 0:
        print("\n" + "\n".join(f"  [rank {r}] {t}" for r, t in enumerate(lines) if t), file=sys.stderr)


# -- DeltaAccumulator ---------------------------------------------------------------------


def _delta(sender: int, step: int, dim: int) -> np.ndarray:
    return np.random.default_rng([SEED, sender, step]).standard_normal(dim)


def _scale(sender: int, receiver: int, step: int) -> float:
    # Every third message takes the unscaled path (no scratch copy).
    return 1.0 if step % 3 == 0 else 1.0 / (1 + sender + 2 * receiver)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("mode", ["drain", "snapshot"])
@pytest.mark.parametrize("graph", ["ring", "complete"])
def test_lossless_accumulation(graph: str, mode: str) -> None:
    """Concurrent Accumulate(SUM) from all in-neighbours while the owner drains: nothing lost."""
    comm = MPI.COMM_WORLD
    n, r = comm.size, comm.rank
    dim, steps = 257, 300
    nb = _neighbors(graph, r, n)
    s0 = np.linspace(-1.0, 1.0, dim) * (r + 1) if mode == "snapshot" else None

    s = np.zeros(dim)
    with DeltaAccumulator(comm, dim, nb, initial=s0) as acc:
        comm.Barrier()
        for t in range(steps):
            d = _delta(r, t, dim)
            for j in nb:
                acc.accumulate(j, d, _scale(r, j, t))
            # The owner takes what has arrived so far while the others keep sending.
            if mode == "drain":
                acc.drain_into(s)
            else:
                acc.snapshot_into(s)
        comm.Barrier()  # every accumulate has been flushed, i.e. completed at its target
        if mode == "drain":
            acc.drain_into(s)
        else:
            acc.snapshot_into(s)
        sent = acc.messages_sent, acc.bytes_sent

    expected = np.zeros(dim) if s0 is None else s0.copy()
    for i in range(n):
        if r in _neighbors(graph, i, n):
            for t in range(steps):
                expected += np.multiply(_delta(i, t, dim), _scale(i, r, t))
    err = np.max(np.abs(s - expected)) / np.max(np.abs(expected))
    error = None if err <= 1e-12 else f"relative error {err:.3e} > 1e-12"
    if sent != (steps * len(nb), steps * len(nb) * dim * 8):
        error = f"counted {sent} messages/bytes"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
def test_drain_leaves_window_empty() -> None:
    comm = MPI.COMM_WORLD
    r, n = comm.rank, comm.size
    nb = _neighbors("ring", r, n)
    with DeltaAccumulator(comm, 4, nb) as acc:
        for j in nb:
            acc.accumulate(j, np.full(4, 1.0), scale=2.0)
        comm.Barrier()
        first, second = np.zeros(4), np.zeros(4)
        acc.drain_into(first)
        acc.drain_into(second)
    error = None
    if not (np.all(first == 2.0 * len(nb)) and np.all(second == 0.0)):
        error = f"drains {first} then {second}"
    _all_ok(comm, error)


# -- ModelSlots ---------------------------------------------------------------------------


@pytest.mark.mpi(min_size=2)
def test_initial_model_before_any_publication() -> None:
    comm = MPI.COMM_WORLD
    nb = _neighbors("complete", comm.rank, comm.size)
    x0 = np.arange(6.0) + 100 * comm.rank
    with ModelSlots(comm, 6, nb, nb, x0=x0) as slots:
        out = np.full((len(nb), 6), np.nan)
        versions = slots.read_all(out)
        one = np.empty(6)
        v1 = slots.read(nb[0], one)
    error = None
    if versions.tolist() != [0] * len(nb) or v1 != 0 or not (np.all(out == x0) and np.all(one == x0)):
        error = f"versions {versions}, {v1}; rows {out[:, 0]}"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize(("atomic_words", "defer_closing"), [(False, False), (True, False), (False, True)])
def test_no_torn_reads_single_writer(atomic_words: bool, defer_closing: bool, mpi_progress: Any) -> None:
    """Writer 2k publishes at full rate to reader 2k+1, whose every read must be one model
    (sequence words read with plain loads, the default, or with MPI atomics; closing words flushed
    at once, or by the next publication as the engine does, and by ``complete``). With plain loads the
    reader makes no MPI call while it spins: where the MPI needs the target's progress for a Put to
    land (the network path) it waits "computing", as a worker does, so ``make test-network``'s
    progress thread (``HPCASYNC_TEST_PROGRESS=thread``) can complete the writer's Puts."""
    comm = MPI.COMM_WORLD
    r, n = comm.rank, comm.size
    dim, models = 20_000, 3000
    pairs = n // 2
    writer = r % 2 == 0 and r // 2 < pairs
    reader = r % 2 == 1
    out_nb = [r + 1] if writer else []
    in_nb = [r - 1] if reader else []

    error = None
    reads = 0
    with (ModelSlots(comm, dim, in_nb, out_nb, atomic_words=atomic_words, defer_closing=defer_closing) as slots,
          mpi_progress(comm)):
        comm.Barrier()
        if writer:
            x = np.empty(dim)
            for u in range(1, models + 1):
                x.fill(float(u))  # every element is the model number
                slots.publish(x)
            slots.complete()  # the last model visible (a no-op unless defer_closing)
        elif reader:
            out = np.empty(dim)
            rows = np.empty((1, dim))
            last = 0
            deadline = time.monotonic() + 60.0
            while last < models and error is None:
                if reads % 2:
                    v = slots.read(r - 1, out)
                else:
                    v = int(slots.read_all(rows)[0])
                    out = rows[0]
                reads += 1
                if v < last:
                    error = f"version went back from {last} to {v}"
                elif not np.all(out == float(v)):
                    bad = np.unique(out)
                    error = f"torn read: version {v}, payload values {bad[:5]}"
                elif time.monotonic() > deadline:
                    error = f"reader saw only model {v} of {models} within 60 s"
                elif v == last and reads % 64 == 0:
                    with progress.computing():
                        time.sleep(5e-5)
                last = v
        stats = (slots.reads, slots.retries)
    _report(comm, f"reader: {reads} reads, {stats[1]} retries" if reader else "")
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("shared", [False, True])
def test_no_torn_reads_when_model_numbers_skip(shared: bool, mpi_progress: Any) -> None:
    """The transport publishes iteration counts, which skip when the outbox replaced a queued model
    (NumberedSlots.publish_as). Model u lives in buffer u mod 2, so a skip by an even count would write
    into the buffer readers are copying; it is published one number lower instead. Writer 2k skips by
    1–3 at random at full rate; reader 2k+1 must see whole models only, numbered as published (the
    requested number or one less), never going back."""
    from hpcasync.engines.mpi.paths import NumberedSharedSlots, NumberedSlots, shared_windows_work

    comm = MPI.COMM_WORLD
    racing = shared_windows_work(comm)  # False over osc rdma + TCP (make test-network)
    if shared and not racing:
        pytest.skip("no shared-memory windows (network-path run)")
    r, n = comm.rank, comm.size
    dim, changes_wanted, stop_tag = 2000, 300, 71
    writer = r % 2 == 0 and r // 2 < n // 2
    reader = r % 2 == 1
    cls = NumberedSharedSlots if shared else NumberedSlots
    error = None
    rng = np.random.default_rng([SEED, r])

    with cls(comm, dim, [r - 1] if reader else [], [r + 1] if writer else []) as slots, mpi_progress(comm):
        comm.Barrier()
        if writer:
            # Publishes until its reader has seen enough new models (on oversubscribed cores a fixed
            # count can end before the reader is first scheduled); over osc rdma + TCP, where a
            # Put needs the reader's progress, it stops after a fixed count (a reader-driven stop
            # hung there in Flush).
            stop, stopped = comm.irecv(source=r + 1, tag=stop_tag), False
            cap = None if racing else 3000
            x = np.empty(dim)
            last, number, count = 0, 0, 0
            while count != cap and not stopped:
                number += int(rng.integers(1, 4))
                x.fill(float(number))
                got = slots.publish_as(x, number)
                if got not in (number, number - 1) or got <= last:
                    error = error or f"publish_as({number}) gave {got} after {last}"
                last, count = got, count + 1
                if count % 64 == 0:
                    stopped = stop.test()[0]
            comm.send(last, dest=r + 1, tag=stop_tag + 1)
            if not stopped:
                stop.wait()
        elif reader:
            done, final = comm.irecv(source=r - 1, tag=stop_tag + 1), None
            out = np.empty(dim)
            last, reads, changes, deadline = 0, 0, 0, time.monotonic() + 60.0
            while error is None and changes < changes_wanted and (final is None or last < final):
                v = slots.read(r - 1, out)
                reads += 1
                c = out[0]
                if v < last:
                    error = f"version went back from {last} to {v}"
                elif not np.all(out == c):
                    error = f"torn read: version {v}, payload values {np.unique(out)[:5]}"
                elif v > 0 and c not in (float(v), float(v + 1)):
                    error = f"version {v} holds model {c}"
                elif time.monotonic() > deadline:
                    error = f"reader saw {changes} new models within 60 s, expected {changes_wanted}"
                elif v == last and reads % 64 == 0:  # let a Put that needs this rank's progress land
                    with progress.computing():
                        time.sleep(5e-5)
                changes += v != last
                last = v
                if final is None and reads % 64 == 0:
                    flag, final = done.test()
            comm.send(None, dest=r - 1, tag=stop_tag)
            if final is None:
                final = done.wait()
            if error is None and racing and changes < changes_wanted:
                error = f"the writer stopped at {final} after {changes} new models, expected {changes_wanted}"
        comm.Barrier()
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("defer_closing", [False, True])
def test_no_torn_reads_all_to_all(defer_closing: bool) -> None:
    """Every rank publishes and read_all()s on a complete graph; rows stay whole and monotone
    (with deferred closing words too: a word never goes back, the next opening rides behind)."""
    comm = MPI.COMM_WORLD
    r = comm.rank
    dim, models = 20_000, 300
    nb = _neighbors("complete", r, comm.size)
    error = None
    with ModelSlots(comm, dim, nb, nb, defer_closing=defer_closing) as slots:
        out = np.empty((len(nb), dim))
        last = np.zeros(len(nb), np.int64)
        x = np.empty(dim)
        comm.Barrier()
        for u in range(1, models + 1):
            x.fill(float(u))
            slots.publish(x)
            versions = slots.read_all(out)
            if np.any(versions < last):
                error = error or f"versions went back: {last} -> {versions}"
            if not np.all(out == versions[:, None].astype(np.float64)):
                error = error or f"torn row at versions {versions}"
            last = versions
        slots.complete()
        comm.Barrier()  # all publications complete
        final = slots.read_all(out)
        if final.tolist() != [models] * len(nb) or not np.all(out == float(models)):
            error = error or f"final versions {final}"
        retries = slots.retries
        sent = slots.messages_sent, slots.bytes_sent
    if sent != (models * len(nb), models * len(nb) * (dim + 2) * 8):
        error = error or f"counted {sent} messages/bytes"
    _report(comm, f"read_all: {models + 1} calls, {retries} slot retries")
    _all_ok(comm, error)


class _PausingSlots(ModelSlots):
    """Pauses the reader right after its first word fetch until the writer has
    published two more models, forcing the torn case that §5.1 must detect."""

    paused = False

    def _fetch_words(self, slots: list[int], buf: np.ndarray) -> np.ndarray:
        result = super()._fetch_words(slots, buf)
        if not self.paused:
            self.paused = True
            self.comm.Barrier()  # writer: go
            self.comm.Barrier()  # writer: done
        return result


@pytest.mark.mpi(min_size=2)
def test_torn_copy_is_detected_and_retried() -> None:
    comm = MPI.COMM_WORLD
    r = comm.rank
    dim = 1000
    in_nb, out_nb = ([0], []) if r == 1 else ([], [1] if r == 0 else [])
    error = None
    with _PausingSlots(comm, dim, in_nb, out_nb) as slots:
        if r == 0:
            slots.publish(np.full(dim, 1.0))
        comm.Barrier()
        if r == 1:
            # Word says model 1 (buffer 1); while paused, models 2 and 3 are
            # published and model 3 overwrites buffer 1: the copy must be rejected.
            out = np.empty(dim)
            v = slots.read(0, out)
            if v != 3 or not np.all(out == 3.0) or slots.retries != 1:
                error = f"read version {v}, payload {np.unique(out)}, retries {slots.retries}"
        else:
            comm.Barrier()
            if r == 0:
                slots.publish(np.full(dim, 2.0))
                slots.publish(np.full(dim, 3.0))
            comm.Barrier()
    _all_ok(comm, error)


class _BusyWriterSlots(ModelSlots):
    """A reader whose writer (scripted words, no real one) publishes two models during each of its
    first three copies and two during every back-off sleep, i.e. whenever the reader is away."""

    word = 2  # model 1 complete
    fetches = 0

    def _fetch_words(self, slots: list[int], buf: np.ndarray) -> list[int]:
        self.fetches += 1
        if self.fetches in (2, 3, 4):  # the word after each of the first three copies
            self.word += 4
        return [self.word] * len(slots)


@pytest.mark.mpi(min_size=2)
def test_a_read_after_backing_off_starts_from_a_fresh_word(monkeypatch) -> None:
    """After a back-off sleep the reader fetches the word again: the one from before the sleep would make
    every later copy look torn while the writer keeps publishing (a livelock, seen with a writer that
    publishes every ~5 µs)."""
    import hpcasync.engines.mpi.slots as slots_mod

    comm = MPI.COMM_WORLD
    r = comm.rank
    in_nb, out_nb = ([0], []) if r == 1 else ([], [1] if r == 0 else [])
    error = None
    with _BusyWriterSlots(comm, 10, in_nb, out_nb) as slots:
        if r == 1:
            sleeps = []

            def sleep(seconds: float) -> None:
                sleeps.append(seconds)
                if len(sleeps) > 20:
                    raise RuntimeError("still torn after 20 back-offs")
                slots.word += 4  # the writer published two models meanwhile

            monkeypatch.setattr(slots_mod.time, "sleep", sleep)
            try:
                v = slots.read(0, np.empty(10))
                if v != slots.word // 2 or len(sleeps) != 1:
                    error = f"read model {v} (word {slots.word}) after {len(sleeps)} back-offs"
            except RuntimeError as exc:
                error = str(exc)
        comm.Barrier()
    _all_ok(comm, error)


# -- zero-copy reads (open_views / close_views) ---------------------------------------------


def _mix_expected(x_value: float, versions: np.ndarray, w_nbrs: np.ndarray, w_self: float, alpha: float,
                  g_value: float) -> float:
    """The ADSGD step on one element, every neighbour's element equal to its model number."""
    x = np.array([x_value])
    adsgd_step(x, np.array([g_value]), versions.astype(np.float64)[:, None], w_nbrs, w_self, alpha, 1.0)
    return float(x[0])


@pytest.mark.mpi(min_size=2)
def test_zero_copy_mix_under_a_hammering_writer() -> None:
    """Writer 2k publishes at full rate (every element = the model number) to reader 2k+1,
    which mixes straight from its window with ``adsgd_step_rows`` meanwhile: each mix that
    ``close_views`` accepts is the mix of one complete model (every element alike, equal
    to the step computed from the model number it reports)."""
    comm = MPI.COMM_WORLD
    r, n = comm.rank, comm.size
    dim, seconds = 60_000, 1.0
    pairs = n // 2
    writer = r % 2 == 0 and r // 2 < pairs
    reader = r % 2 == 1
    out_nb = [r + 1] if writer else []
    in_nb = [r - 1] if reader else []
    error = None
    mixes = torn_mixes = published = 0
    w_nbrs, w_self, alpha = np.array([0.5]), 0.5, 0.25
    g = np.full(dim, 2.0)
    x = np.empty(dim)
    _mix_expected(7.0, np.zeros(1, np.int64), w_nbrs, w_self, alpha, 2.0)  # load the kernels first

    def mix(slots: ModelSlots) -> tuple[int, list[int]]:
        x.fill(7.0)
        data, rows, versions = slots.open_views()
        adsgd_step_rows(x, g, data, rows, w_nbrs, w_self, alpha, 1.0)
        torn = slots.close_views()
        return int(versions[0]), torn

    def check(v: int, last: int) -> str | None:
        expected = _mix_expected(7.0, np.array([v]), w_nbrs, w_self, alpha, 2.0)
        if v < last:
            return f"version went back from {last} to {v}"
        if not np.all(x == expected):
            return f"torn mix accepted: version {v}, values {np.unique(x)[:5]}, expected {expected}"
        return None

    with ModelSlots(comm, dim, in_nb, out_nb) as slots:
        comm.Barrier()
        stop = time.monotonic() + seconds
        if writer:
            u = 0
            while time.monotonic() < stop:
                u += 1
                x.fill(float(u))
                slots.publish(x)
            published = u
        elif reader:
            last = 0
            while time.monotonic() < stop and error is None:
                v, torn = mix(slots)
                mixes += 1
                if torn:
                    torn_mixes += 1
                    if torn != [0]:
                        error = f"close_views returned {torn}"
                    continue
                error = check(v, last)
                last = v
        comm.Barrier()  # every publication complete
        final = comm.allgather(published)
        if reader and error is None:
            v, torn = mix(slots)
            error = check(v, 0) if not torn else f"torn after the writer stopped: {torn}"
            if error is None and v != final[r - 1]:
                error = f"final view holds model {v}, the writer published {final[r - 1]}"
        if reader and error is None and mixes < 20:
            error = f"only {mixes} mixes in {seconds} s"
    _report(comm, f"reader: {mixes} zero-copy mixes, {torn_mixes} rejected as torn" if reader else
            (f"writer: {published} models" if writer else ""))
    _all_ok(comm, error)


class _PausingViews(ModelSlots):
    """Pauses the reader inside its first zero-copy read, after the caller's
    pass over the views, until the writer has published two more models."""

    paused = False

    def close_views(self) -> list[int]:
        if not self.paused:
            self.paused = True
            self.comm.Barrier()  # writer: go
            self.comm.Barrier()  # writer: done
        return super().close_views()


@pytest.mark.mpi(min_size=2)
def test_zero_copy_torn_view_is_detected() -> None:
    """The view of model 1 (buffer 1) is overwritten by model 3 while in use: close_views must
    report the slot, and a second zero-copy read must then see model 3 whole."""
    comm = MPI.COMM_WORLD
    r = comm.rank
    dim = 1000
    in_nb, out_nb = ([0], []) if r == 1 else ([], [1] if r == 0 else [])
    error = None
    with _PausingViews(comm, dim, in_nb, out_nb) as slots:
        if r == 0:
            slots.publish(np.full(dim, 1.0))
        comm.Barrier()
        if r == 1:
            data, rows, versions = slots.open_views()
            before = (int(versions[0]), int(rows[0]))
            torn = slots.close_views()  # pauses: models 2 and 3 are published meanwhile
            data, rows, versions = slots.open_views()
            row = data[rows[0]].copy()
            again = slots.close_views()
            if before != (1, 1) or torn != [0] or slots.retries != 1:
                error = f"first view (version, row) {before}, torn {torn}, retries {slots.retries}"
            elif int(versions[0]) != 3 or again or not np.all(row == 3.0):
                error = f"second view: version {versions[0]}, torn {again}, payload {np.unique(row)}"
        else:
            comm.Barrier()
            if r == 0:
                slots.publish(np.full(dim, 2.0))
                slots.publish(np.full(dim, 3.0))
            comm.Barrier()
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
def test_fetch_published_returns_the_last_model() -> None:
    """A rank gets back, bit for bit, its own last published model (x0 before the first)."""
    comm = MPI.COMM_WORLD
    r = comm.rank
    nb = _neighbors("ring", r, comm.size)
    dim = 5000
    x0 = np.linspace(0.0, 1.0, dim)
    error = None
    with ModelSlots(comm, dim, nb, nb, x0=x0) as slots:
        out = np.empty(dim)
        got = [slots.fetch_published(out)]
        ok = [np.array_equal(out, x0)]
        rng = np.random.default_rng([SEED, r])
        for _ in range(3):
            x = rng.standard_normal(dim)
            slots.publish(x)
            got.append(slots.fetch_published(out))
            ok.append(np.array_equal(out, x))
        comm.Barrier()
        common = slots.common_x0
    if got != [0, 1, 2, 3] or not all(ok) or not common:
        error = f"numbers {got}, equal {ok}, common x0 {common}"
    _all_ok(comm, error)


# -- wait-freedom, large messages, errors ---------------------------------------------------


@pytest.mark.mpi(min_size=2)
def test_operations_do_not_wait_for_a_computing_target(mpi_progress: Any) -> None:
    """Rank 1 sleeps 2 s without calling MPI; rank 0's 20 publishes and 20
    accumulates into it must complete meanwhile (docs/design.md §5)."""
    comm = MPI.COMM_WORLD
    r = comm.rank
    dim, ops, sleep_s = 10_000, 20, 2.0
    in_nb, out_nb = ([0], []) if r == 1 else ([], [1] if r == 0 else [])
    error = None
    timing = ""
    with ModelSlots(comm, dim, in_nb, out_nb) as slots, DeltaAccumulator(comm, dim, out_nb) as acc, \
            mpi_progress(comm):
        x = np.ones(dim)
        comm.Barrier()
        if r == 1:
            with progress.computing():  # no MPI call at all (a serialized progress thread may poll)
                time.sleep(sleep_s)
        elif r == 0:
            t_pub = t_acc = 0.0
            t_start = time.perf_counter()
            for u in range(1, ops + 1):
                x.fill(float(u))
                t0 = time.perf_counter()
                slots.publish(x)
                t1 = time.perf_counter()
                acc.accumulate(1, x, scale=0.5)
                t_pub += t1 - t0
                t_acc += time.perf_counter() - t1
            total = time.perf_counter() - t_start
            timing = (
                f"{ops} publishes: {1e3 * t_pub:.2f} ms ({1e3 * t_pub / ops:.3f} ms/op); "
                f"{ops} accumulates: {1e3 * t_acc:.2f} ms ({1e3 * t_acc / ops:.3f} ms/op); "
                f"all {2 * ops} ops {1e3 * total:.2f} ms while rank 1 slept {sleep_s} s"
            )
            if t_pub / ops >= 0.1 or t_acc / ops >= 0.1 or total >= sleep_s / 2:
                error = "blocked behind the sleeping target: " + timing
        comm.Barrier()
        if r == 1:
            out, s = np.empty(dim), np.zeros(dim)
            v = slots.read(0, out)
            acc.drain_into(s)
            expected = 0.5 * ops * (ops + 1) / 2
            if v != ops or not np.all(out == float(ops)) or not np.allclose(s, expected, rtol=1e-15):
                error = f"after the sleep: version {v}, model {out[0]}, sum {s[0]} (expected {expected})"
    _report(comm, timing)
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
def test_large_messages() -> None:
    """1e6 float64 (8 MB) in a single Put / Accumulate / Get_accumulate."""
    comm = MPI.COMM_WORLD
    r = comm.rank
    dim = 1_000_000
    nb = [1 - r] if r < 2 else []
    error = None
    with ModelSlots(comm, dim, nb, nb) as slots, DeltaAccumulator(comm, dim, nb) as acc:
        x = np.arange(dim, dtype=np.float64) * (r + 1)
        for _ in range(3):
            slots.publish(x)
        for j in nb:
            acc.accumulate(j, x, scale=0.5)
            acc.accumulate(j, x)
        comm.Barrier()
        if nb:
            out, s = np.empty(dim), np.zeros(dim)
            v = slots.read(nb[0], out)
            acc.drain_into(s)
            theirs = np.arange(dim, dtype=np.float64) * (nb[0] + 1)
            if v != 3 or not np.array_equal(out, theirs) or not np.array_equal(s, 1.5 * theirs):
                ok = np.array_equal(out, theirs), np.array_equal(s, 1.5 * theirs)
                error = f"version {v}, model/sum equal: {ok}"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("who", ["all", "rank0"])
def test_windows_freed_when_the_body_raises(who: str) -> None:
    """An exception inside ``with`` frees the windows and closes the epochs
    (a leaked epoch would hang MPI_Finalize at the end of the session)."""
    comm = MPI.COMM_WORLD
    nb = _neighbors("ring", comm.rank, comm.size)
    raises = who == "all" or comm.rank == 0

    class BoomError(Exception):
        pass

    slots = acc = None
    try:
        with ModelSlots(comm, 8, nb, nb) as slots, DeltaAccumulator(comm, 8, nb) as acc:
            slots.publish(np.ones(8))
            for j in nb:
                acc.accumulate(j, np.ones(8))
            if raises:
                raise BoomError()
    except BoomError:
        pass
    assert slots is not None and acc is not None
    error = None
    if not (slots.closed and acc.closed):
        error = "windows still open"
    else:
        slots.free()  # idempotent
        acc.free()
        try:
            slots.publish(np.ones(8))
            error = "publish after free() did not raise"
        except RuntimeError:
            pass
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
def test_inconsistent_graph_raises_on_every_rank() -> None:
    """A bad argument on one rank raises ValueError on all ranks instead of hanging."""
    comm = MPI.COMM_WORLD
    nb = _neighbors("ring", comm.rank, comm.size)
    in_nb = nb if comm.rank != 0 else []  # rank 0 forgets its in-neighbours
    with pytest.raises(ValueError, match="disagree"):
        ModelSlots(comm, 4, in_nb, nb)
    with pytest.raises(ValueError, match="rank 1: dim"):
        DeltaAccumulator(comm, 0 if comm.rank == 1 else 4, nb)
    with pytest.raises(ValueError, match="itself"):
        DeltaAccumulator(comm, 4, [comm.rank] if comm.rank == 0 else nb)
    # The communicator is still usable: nothing was left half-allocated.
    with DeltaAccumulator(comm, 4, nb) as acc:
        assert not acc.closed
