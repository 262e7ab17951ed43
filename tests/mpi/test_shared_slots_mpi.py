"""Multi-rank tests of the shared-memory model slots (shared_slots.py, docs/design.md §5.6).

Run: ``mpiexec -n 4 python -m pytest -q --with-mpi -p no:cacheprovider tests/mpi/test_shared_slots_mpi.py``.
``split`` runs every test twice: all ranks on one node (every push a plain store), and the
ranks split into fake nodes of two (``HPCASYNC_TEST_NODE_SPLIT=2``), so that a rank has
same-node neighbours (shared memory) and other-node ones (RMA) in one job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
from mpi4py import MPI

from hpcasync.engines.mpi import shared_slots
from hpcasync.engines.mpi.paths import shared_windows_work
from hpcasync.engines.mpi.shared_deltas import SharedDeltas
from hpcasync.engines.mpi.shared_slots import NODE_SPLIT_ENV, SharedSlots, node_comm
from hpcasync.engines.mpi.transport import MpiTransport
from hpcasync.kernels import adsgd_step_rows


def _one_node() -> bool:
    """Whether the MPI puts every rank of the job on one node (not so under ``MPIR_CVAR_NOLOCAL=1``)."""
    node = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size() == MPI.COMM_WORLD.Get_size()
    finally:
        node.Free()


# `make test-network` (MPICH: every rank its own node; Open MPI: no osc sm) exercises the RMA path instead
if not (_one_node() and shared_windows_work(MPI.COMM_WORLD)):
    pytest.skip("no shared-memory windows across the job's ranks (network-path run)", allow_module_level=True)


def _all_ok(comm: MPI.Comm, error: str | None) -> None:
    errors = [f"rank {r}: {e}" for r, e in enumerate(comm.allgather(error)) if e]
    assert not errors, "\n".join(errors)


@pytest.fixture(params=[0, 2], ids=["one-node", "split-nodes"])
def split(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.environ.get(NODE_SPLIT_ENV)
    os.environ[NODE_SPLIT_ENV] = str(request.param)
    try:
        yield int(request.param)
    finally:
        if old is None:
            os.environ.pop(NODE_SPLIT_ENV, None)
        else:
            os.environ[NODE_SPLIT_ENV] = old


def _kinds(slots: SharedSlots) -> tuple[int, int]:
    """(same-node targets, RMA targets) of this rank."""
    return len(slots._peers), len(slots._word_targets)


@pytest.mark.mpi(min_size=3)
def test_node_split_override_gives_a_mixed_job(split: int) -> None:
    """With the override some rank has both kinds of neighbour; without it the MPI's own node split
    decides (one node here; every rank alone under ``MPIR_CVAR_NOLOCAL=1``, ``make test-network``)."""
    comm = MPI.COMM_WORLD
    nb = [j for j in range(comm.size) if j != comm.rank]
    with SharedSlots(comm, 8, nb, nb) as slots:
        kinds = comm.allgather(_kinds(slots))
    if split == 0:
        node = node_comm(comm)
        local = node.Get_size()
        node.Free()
        assert all(k == (local - 1, comm.size - local) for k in kinds), kinds
    else:
        assert any(s > 0 and r > 0 for s, r in kinds), kinds
        assert all(s + r == comm.size - 1 for s, r in kinds), kinds


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize(("fenced", "defer_closing"), [(False, False), (True, False), (False, True)])
def test_hammering_writers_never_tear_a_read(split: int, fenced: bool, defer_closing: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With and without the fences on x86-64 (TSO: skipped on one node; fenced: as on aarch64),
    with the RMA neighbours' closing words flushed at once or by the next publication (the engine's),
    every rank publishes back to back on a complete graph while it reads all slots, copying
    (read_all) and in place (open/close_views + the mix kernel): every accepted read is one
    complete published model (every element equals the model number), numbers never go back."""
    if fenced:
        monkeypatch.setattr(shared_slots, "TSO", False)
    comm = MPI.COMM_WORLD
    r = comm.rank
    dim, models = 20_000, 600
    nb = [j for j in range(comm.size) if j != r]
    error = None
    with SharedSlots(comm, dim, nb, nb, defer_closing=defer_closing) as slots:
        out = np.empty((len(nb), dim))
        last = np.zeros(len(nb), np.int64)
        x = np.empty(dim)
        comm.Barrier()
        for u in range(1, models + 1):
            x.fill(float(u))
            slots.publish(x)
            versions = slots.read_all(out)
            if np.any(versions < last) or not np.all(out == versions[:, None].astype(np.float64)):
                error = error or f"torn or stale copy at versions {versions} (last {last})"
            last = versions.copy()
            # zero-copy: mix = mean of the neighbours' rows; must equal the mean of their numbers
            data, rows, vs = slots.open_views()
            y = np.zeros(dim)
            w = np.full(len(nb), 1.0 / max(len(nb), 1))
            adsgd_step_rows(y, np.zeros(dim), data, rows, w, 0.0, 0.0, 1.0)
            torn = slots.close_views()
            if not torn and not np.allclose(y, float(np.mean(vs)), rtol=0, atol=1e-9):
                error = error or f"accepted torn view: versions {vs}, mix {np.unique(y)[:4]}"
        slots.complete()
        comm.Barrier()
        final = slots.read_all(out)
        if final.tolist() != [models] * len(nb) or not np.all(out == float(models)):
            error = error or f"final versions {final}"
        shared, rma = _kinds(slots)
        if slots.shared_pushes != models * shared or slots.rma_ops != 3 * models * rma:
            error = error or f"counted {slots.shared_pushes} shared pushes, {slots.rma_ops} RMA ops"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("fenced", [False, True])
def test_single_writer_full_rate(split: int, fenced: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer 2k publishes as fast as it can to reader 2k+1 (the torn case is forced often):
    every read is whole, and the reader ends on the last model."""
    if fenced:
        monkeypatch.setattr(shared_slots, "TSO", False)
    comm = MPI.COMM_WORLD
    r, n = comm.rank, comm.size
    dim, models = 50_000, 2000
    writer = r % 2 == 0 and r + 1 < n
    reader = r % 2 == 1
    out_nb, in_nb = ([r + 1] if writer else []), ([r - 1] if reader else [])
    error = None
    with SharedSlots(comm, dim, in_nb, out_nb) as slots:
        comm.Barrier()
        if writer:
            x = np.empty(dim)
            for u in range(1, models + 1):
                x.fill(float(u))
                slots.publish(x)
        elif reader:
            out, last, deadline = np.empty(dim), 0, time.monotonic() + 60
            while last < models and error is None:
                v = slots.read(r - 1, out)
                if v < last or not np.all(out == float(v)):
                    error = f"torn read: version {v} (last {last}), values {np.unique(out)[:4]}"
                elif time.monotonic() > deadline:
                    error = f"saw only model {v} of {models} in 60 s"
                last = v
        comm.Barrier()
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("graph", ["complete", "chain"])
def test_fused_update_mixes_complete_models(split: int, graph: str) -> None:
    """ADSGD's update through ``MpiTransport.mix_and_push``, every rank back to back on a complete
    graph (torn views are frequent): on one node one kernel reads, mixes and publishes
    (kernels/seqlock.py), with fake nodes the RMA neighbours make it mix_latest + push_model. Every
    update's x is exactly the mix of the neighbours' models of the numbers it reports, as their
    writers published them, so no read was torn and no publication lost or mislabelled. The directed
    chain 0 → 1 → … has a rank without in-neighbours and one without out-neighbours (the last takes the
    two-call path: with no out-neighbour it has no published copy to restore x from)."""
    comm = MPI.COMM_WORLD
    r, n = comm.rank, comm.size
    dim, steps = 20_000, 400
    if graph == "complete":
        nb = out = [j for j in range(n) if j != r]
    else:
        nb, out = ([r - 1] if r > 0 else []), ([r + 1] if r < n - 1 else [])
    it = [0]
    t = MpiTransport(comm, in_neighbors=nb, out_neighbors=out, x0=np.zeros(dim), payload="model",
                     synchronous=False, iteration=lambda: it[0])
    error = None
    try:
        fused = t.slots.fused
        w = np.full(len(nb), 1.0 / max(len(nb), 1))
        g = np.full(dim, -1.0)  # x <- mean of the neighbours + 1: models keep changing
        x = np.zeros(dim)
        t.push_model(x)  # model 0 again (x0): from here on x is "as last pushed"
        it[0] = 1
        history = [0.0, 0.0]  # this rank's published value by model number (0: x0; 1: the push above)
        seen = []
        comm.Barrier()
        for u in range(2, steps + 2):
            it[0] = u
            t.mix_and_push(x, g, w, 0.0, 1.0, 1.0)
            if t.slots.published != u or not np.all(x == x[0]):
                error = error or f"update {u}: published {t.slots.published}, x not uniform {np.unique(x)[:3]}"
            history.append(float(x[0]))
            seen.append((np.array(t.versions), float(x[0])))
        comm.Barrier()
        histories = comm.allgather(history)
        for versions, value in seen:
            mixed = sum(wk * histories[j][v] for wk, j, v in zip(w, nb, versions, strict=True)) + 1.0
            if abs(mixed - value) > 1e-9 * max(1.0, abs(value)):
                error = error or f"x = {value}, but the models {versions.tolist()} mix to {mixed}"
        if fused != (split == 0) or t.zero_copy_mixes != steps:
            error = error or f"fused {fused} (split {split}), {t.zero_copy_mixes} zero-copy mixes of {steps}"
        redone = t.redone_mixes
    finally:
        t.free()
    _all_ok(comm, error)
    if r == 0:
        print(f"fused={fused}: {sum(comm.allgather(redone))} of {n * steps} updates redone (torn views)")
    else:
        comm.allgather(redone)


@pytest.mark.mpi(min_size=2)
def test_fetch_published_and_windows_freed(split: int) -> None:
    """fetch_published returns this rank's last model (checkpoint needs it); free() frees every
    window and the node communicator, twice is harmless, and use after free raises."""
    comm = MPI.COMM_WORLD
    nb = [(comm.rank + 1) % comm.size]
    prev = [(comm.rank - 1) % comm.size]
    x0 = np.arange(16.0)
    slots = SharedSlots(comm, 16, prev, nb, x0=x0)
    got = np.empty(16)
    error = None
    if slots.fetch_published(got) != 0 or not np.array_equal(got, x0):
        error = "model 0 is not x0"
    for u in (1, 2, 3):
        slots.publish(np.full(16, 10.0 * u + comm.rank))
        if slots.fetch_published(got) != u or not np.all(got == 10.0 * u + comm.rank):
            error = error or f"fetch_published after {u}: {got[:3]}"
    slots.free()
    slots.free()
    if not slots.closed or slots._windows or slots._node != MPI.COMM_NULL:
        error = error or "windows or node communicator left after free()"
    with pytest.raises(RuntimeError):
        slots.publish(x0)
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
def test_node_comm_respects_the_override(split: int) -> None:
    comm = MPI.COMM_WORLD
    node = node_comm(comm)
    members = node.allgather(comm.rank)
    node.Free()
    expected = list(range(comm.size)) if split == 0 else [
        j for j in range(comm.size) if j // split == comm.rank // split]
    assert members == expected


# -- SharedDeltas (Alg. 3 on shared memory) ----------------------------------------------------


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("mode", ["drain", "snapshot"])
def test_concurrent_writers_lose_no_delta(mode: str) -> None:
    """Every rank hammers every other with integer-valued deltas (exact in float64) while it
    drains or snapshots its own window: what it takes in equals exactly what was sent to it."""
    comm = MPI.COMM_WORLD
    r, n = comm.rank, comm.size
    dim, steps = 4096, 400
    nb = [j for j in range(n) if j != r]
    initial = np.full(dim, 7.0) if mode == "snapshot" else None
    rng = np.random.default_rng([r, 11])
    sent = {j: np.zeros(dim) for j in nb}
    s = np.zeros(dim) if mode == "drain" else np.empty(dim)
    with SharedDeltas(comm, dim, nb, initial=initial) as acc:
        comm.Barrier()
        for t in range(steps):
            for j in nb:
                delta = rng.integers(-50, 50, dim).astype(np.float64)
                scale = 1.0 if t % 2 else 2.0  # both paths: in place, and scaled through the scratch
                acc.accumulate(j, delta, scale)
                sent[j] += scale * delta
            if mode == "drain":
                acc.drain_into(s)
            else:
                acc.snapshot_into(s)
        comm.Barrier()  # every accumulate has returned
        if mode == "drain":
            acc.drain_into(s)
        else:
            acc.snapshot_into(s)
    expected = np.zeros(dim) if initial is None else initial.copy()
    for j, total in enumerate(comm.alltoall([sent.get(j) for j in range(n)])):
        if j != r:
            expected += total
    error = None if np.array_equal(s, expected) else f"took {s[:4]}, sent {expected[:4]}"
    _all_ok(comm, error)


@pytest.mark.mpi(min_size=2)
def test_transport_picks_the_delta_path(split: int) -> None:
    """One node: SharedDeltas; fake nodes: the RMA DeltaAccumulator (no plain loads of RMA sums)."""
    comm = MPI.COMM_WORLD
    nb = [(comm.rank + 1) % comm.size]
    t = MpiTransport(comm, in_neighbors=[(comm.rank - 1) % comm.size], out_neighbors=nb, x0=np.zeros(8),
                     payload="delta", synchronous=False, iteration=lambda: 0)
    try:
        kind = type(t.acc).__name__
    finally:
        t.free()
    assert kind == ("SharedDeltas" if split == 0 or comm.size <= split else "DeltaAccumulator")
