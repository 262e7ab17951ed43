"""Checkpoints of an MPI run: one HDF5 file per rank in ``RUN_DIR/checkpoint/`` (docs/design.md,
"Preemption and resume").

A stop signal (SIGTERM, SIGUSR1 of SLURM's ``--signal``, SIGINT) ends a run
that can be checkpointed like a spent budget (``Worker.checkpoints``):
asynchronous ranks stop at their next gradient, synchronous ones after a
round agreed on like the budget's stop round. Every rank then takes the
end-of-run path — outbox flushed, a barrier (every one-sided operation has
completed at its target), the algorithm's ``finish`` (Alg. 3 takes in the
deltas that arrived: nothing is left in flight) — and, instead of the final
pieces, writes its checkpoint: the algorithm's ``state_dict``, the oracle's
sampling state, its delay streams, the loop's counters and the number of
rows in its files. This is the drained equivalent of the send queues: at the
checkpoint no message is in flight.

What lives in windows is put back before the resumed ranks start (a
barrier): Alg. 3's s_i is the accumulator window's initial content; AD-PSGD's
x_i its pair window's; the model slots (ADSGD, RFAST, ASBCD) are refilled by
each rank publishing again, under the same model number, the message it had
published last — read back from an out-neighbour's window at the
checkpoint (``fetch_published``) — so every slot holds what it held.
DASGD's flood is quiesced by its ``finish`` (every gradient applied
everywhere); the checkpoint keeps what the flood accepted of each origin, so
de-duplication and the rank's own sequence numbers go on from there. A
parameter server's x and version k (async-sgd, hogwild) are read from rank
0's window after every step completed and written back there, and each rank
keeps the steps it logged; every worker resumes from the server's model, which
its ``finish`` read into its x.
Synchronous runs continue exactly; asynchronous ones continue from this
consistent state (their interleaving depends on timing anyway).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpcasync.algorithms.base import Algorithm
from hpcasync.config import Config
from hpcasync.errors import UserError
from hpcasync.results import checkpoint
from hpcasync.results.schema import agent_filename
from hpcasync.results.writer import now_iso

#: Worker attributes a checkpoint keeps (counters and the loop's accounting)
WORKER_FIELDS = ("gradients", "rounds", "compute_units", "compute_s", "gradient_s", "mix_s", "idle_s",
                 "monitor_s", "log_s", "_pad_debt", "_logged_iteration", "last_loss", "last_grad_norm")


def refusal(cls: type[Algorithm]) -> str | None:
    """Why the MPI engine cannot checkpoint algorithm ``cls`` (None: it can)."""
    if not cls.resumable:
        return "it cannot resume from a checkpoint (resumable = False)"
    return None


def path_of(out: Path, rank: int) -> Path:
    return checkpoint.checkpoint_dir(out) / agent_filename(rank)


def _rng(g: np.random.Generator) -> str:
    return json.dumps(g.bit_generator.state)


def _attrs(cfg: Config, rank: int, ranks: int, signame: str) -> dict[str, Any]:
    return {"engine": "mpi", "rank": rank, "ranks": ranks, "n_agents": cfg.topology.n,
            "algorithm": cfg.algorithm.name, "config": cfg.to_toml(), "interrupted": signame, "created": now_iso()}


def save_worker(out: Path, w: Any, wall: float, signame: str, run_rows: int | None) -> float:
    """Write worker ``w``'s checkpoint (after the end-of-run drain); returns the seconds it took."""
    t0 = time.perf_counter()
    setup, rank = w.setup, w.rank
    state: dict[str, Any] = {
        "agent": w.agent.state_dict(), "oracle": w.oracle.state_dict(),
        "delays": {"compute": _rng(setup.delays.compute_rngs[rank]), "comm": _rng(setup.delays.comm_rngs[rank]),
                   "peer": _rng(w.peer_comm_rng)},
        "worker": {k: getattr(w, k) for k in WORKER_FIELDS},
        "wall": float(wall), "bytes_sent": int(w.bytes0 + w.t.bytes_sent),
        "messages_sent": int(w.messages0 + w.t.messages_sent), "rows": int(w.writer.rows),
        "run_rows": -1 if run_rows is None else int(run_rows),
        "versions": np.array(w.t.versions, np.int64),
        "trace": {"compute": np.array(w.trace.compute, np.float32), "comm": np.array(w.trace.comm, np.float32)},
    }
    slots = w.t.slots
    if slots is not None and w.t.out_neighbors:  # what the out-neighbours' slots hold of this rank
        message = np.empty(w.t.message_dim, w.t.dtype)
        state["published"] = {"message": message, "number": int(slots.fetch_published(message))}
    if w.t.flood_channel is not None:  # quiesced by the algorithm's finish: nothing in flight or early
        state["flood_seen"] = w.t.flood_channel.state.seen.copy()
    if w.t.server is not None:  # every step has completed: the host's x and k, each rank's logged steps
        state["server"] = w.t.server.state_dict()
    checkpoint.write(path_of(out, rank), state, _attrs(setup.cfg, rank, setup.world.comm.Get_size(), signame))
    return time.perf_counter() - t0


def save_monitor(out: Path, cfg: Config, rank: int, ranks: int, wall: float, run_rows: int, signame: str) -> None:
    state = {"wall": float(wall), "run_rows": int(run_rows)}
    checkpoint.write(path_of(out, rank), state, _attrs(cfg, rank, ranks, signame))


def load(out: Path, cfg: Config, rank: int, ranks: int, algorithm: type[Algorithm]) -> dict[str, Any]:
    """This rank's checkpoint state, checked against the job (rank count, config); UserError otherwise."""
    reason = refusal(algorithm)
    if reason is not None:
        raise UserError(f"--resume {out}: algorithm {cfg.algorithm.name!r} cannot resume on MPI: {reason}")
    path = path_of(out, rank)
    attrs, state = checkpoint.read(path)
    if attrs.get("engine") != "mpi":
        raise UserError(f"checkpoint {path}: written by the {attrs.get('engine')} engine, not by `hpcasync run`")
    if int(attrs.get("ranks", -1)) != ranks:
        raise UserError(f"--resume {out}: config mismatch: the checkpoint was written by {attrs.get('ranks')} "
                        f"ranks, this job has {ranks}")
    from hpcasync.resume import check_same, config_from_toml

    check_same(cfg, config_from_toml(attrs["config"], str(path)), f"checkpoint {path}", out)
    return state


def restore_rank(setup: Any, state: dict[str, Any]) -> None:
    """Put a worker's algorithm, oracle and delay streams back (before its transport is built)."""
    rank = setup.world.rank
    setup.agent.load_state_dict(state["agent"])
    setup.oracle.load_state_dict(state["oracle"])
    setup.delays.compute_rngs[rank].bit_generator.state = json.loads(state["delays"]["compute"])
    setup.delays.comm_rngs[rank].bit_generator.state = json.loads(state["delays"]["comm"])


def restore_windows(transport: Any, state: dict[str, Any]) -> None:
    """Refill the out-neighbours' slots with this rank's last message (collective: a barrier follows),
    put back what the flood has accepted of each origin (DASGD) and the parameter server's x and k."""
    if "published" in state and transport.slots is not None:
        transport.slots.publish_as(state["published"]["message"], state["published"]["number"])
        transport.complete_pushes()  # visible to the neighbours after the barrier that follows
    transport.versions[...] = state["versions"]
    if "flood_seen" in state and transport.flood_channel is not None:  # de-duplication and own numbers go on
        transport.flood_channel.state.seen[...] = state["flood_seen"]
    if "server" in state and transport.server is not None:
        transport.server.restore(state["server"])


def restore_worker(w: Any, state: dict[str, Any]) -> None:
    """Put the loop's counters back; the clock goes on from the checkpoint's wall time."""
    for k, v in state["worker"].items():
        setattr(w, k, type(getattr(w, k))(v))
    w.peer_comm_rng.bit_generator.state = json.loads(state["delays"]["peer"])
    w.bytes0, w.messages0 = int(state["bytes_sent"]), int(state["messages_sent"])
    w.elapsed0 = float(state["wall"])
    w._next_flush = w.elapsed0 + w.flush_interval
    w._next_publish = w.elapsed0
    if w.synchronous and w.budget_gradients:
        w.stop_after = -(-w.budget_gradients // w.n) - 1


def remove(out: Path, rank: int) -> None:
    """A run that completed after a resume: its checkpoint is spent."""
    path_of(out, rank).unlink(missing_ok=True)
