"""The simulator's checkpoint: its whole state at an event boundary, and how a fresh simulator takes it back.

A simulator is checkpointed between two events (``Simulator.run`` returns with
``interrupted`` set). At that moment every agent's generator is suspended at
the op it yielded last (``Simulator.ops``) and everything else is data: the
event heap (times, priorities, sequence numbers, payloads: gradients, means,
exchange results, packets in flight), the outboxes, slots and flood
state of the transports, the round bookkeeping of exchanges, collectives,
pair exchanges and Prague's pending groups, the clocks, the random streams of oracles and delays, and each
agent's :meth:`~hpcasync.algorithms.base.Algorithm.state_dict`.

Generators cannot be saved. A resumed simulator is built from the same
config, takes the state back, and restarts each agent's ``run()`` on the
restored attributes: a resumable algorithm (``Algorithm.resumable``) then
yields, before doing anything else, the very op its old generator was
suspended at (checked: same op type). That op is not performed again — its
answer is already in the heap — so the run continues bit for bit. The only
payloads holding a reference into an agent, a pair exchange's ``v`` (AD-PSGD's
x_i) and a pending group's joined models (Prague's x_i), are rebound to the
restarted generators' ops.
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from typing import Any

import numpy as np

from hpcasync.engines.sim.engine import AgentClock, Simulator
from hpcasync.engines.sim.events import DELIVER, GROUP, PAIR, RESUME, SERVE
from hpcasync.engines.sim.groups import Group
from hpcasync.engines.sim.transport import Packet, SimTransport
from hpcasync.errors import UserError

_CLOCK_FIELDS = ("compute_units", "wait_units", "blocked_since", "gradient_s", "last_loss", "last_grad_norm")
_TRANSPORT_FIELDS = ("bytes_sent", "messages_sent", "published", "received", "slots", "inbox", "busy", "fresh",
                     "arrival_waiting", "flood_bytes")


def _rng(g: np.random.Generator) -> str:
    return json.dumps(g.bit_generator.state)


def _set_rng(g: np.random.Generator, s: str) -> None:
    g.bit_generator.state = json.loads(s)


def _packet(p: Packet) -> dict[str, Any]:
    if any(not isinstance(obj, bool | int | float | str | type(None)) for _, obj in p.small):
        raise UserError("simulator checkpoint: a control message (send_small) is not a plain scalar")
    return {"model": None if p.model is None else p.model.copy(), "version": int(p.version),
            "deltas": {int(j): d.copy() for j, d in p.deltas.items()}, "delta_version": int(p.delta_version),
            "small": [[int(j), obj] for j, obj in p.small],
            "flood": [[int(o), int(q), v.copy(), int(skip)] for o, q, v, skip in p.flood]}


def _unpacket(s: dict[str, Any]) -> Packet:
    p = Packet()
    p.model = s["model"]
    p.version = s["version"]
    p.deltas = dict(s["deltas"])
    p.delta_version = s["delta_version"]
    p.small = [(int(j), obj) for j, obj in s["small"]]
    p.flood = [(int(o), int(q), v, int(skip)) for o, q, v, skip in s.get("flood", [])]
    return p


def _transport(tr: SimTransport) -> dict[str, Any]:
    state = {k: getattr(tr, k) for k in _TRANSPORT_FIELDS}
    state = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in state.items()}
    state["queued"] = _packet(tr.queued)
    state["inbox_small"] = [[int(j), obj] for j, obj in tr.inbox_small]
    fs = tr.flood_state
    state["flood"] = {"seen": fs.seen.copy(), "pending": [[int(o), int(q), v.copy()] for o, q, v in fs.pending],
                      "early": [[int(o), int(q), v.copy()] for (o, q), v in fs.early.items()],
                      "duplicates": int(fs.duplicates), "waiting": bool(fs.waiting)}
    return state


def _load_transport(tr: SimTransport, s: dict[str, Any]) -> None:
    for k in _TRANSPORT_FIELDS:
        if k not in s:  # a field added after this checkpoint was written: keep the fresh value
            continue
        current = getattr(tr, k)
        if isinstance(current, np.ndarray):
            current[...] = s[k]
        else:
            setattr(tr, k, type(current)(s[k]))
    tr.queued = _unpacket(s["queued"])
    tr.inbox_small = [(int(j), obj) for j, obj in s["inbox_small"]]
    fs, f = tr.flood_state, s.get("flood")
    if f is None:  # a checkpoint written before floods were kept: it has none
        return
    fs.seen[...] = f["seen"]
    fs.pending = [(int(o), int(q), v) for o, q, v in f["pending"]]
    fs.early = {(int(o), int(q)): v for o, q, v in f["early"]}
    fs.duplicates, fs.waiting = int(f["duplicates"]), bool(f["waiting"])


def _event(kind: int, b: Any, groups: dict[int, int]) -> Any:
    if kind == DELIVER:
        return _packet(b)
    if kind == PAIR:
        return int(b[0])  # (peer, v): v is the agent's x, rebound on restore
    if kind == GROUP:
        return groups[id(b)]  # the pending group's index in the checkpoint's list
    if kind == SERVE:
        return None  # the ServerStep op: the worker's own, rebound on restore
    return b.copy() if isinstance(b, np.ndarray) else b


def _groups(sim: Simulator) -> tuple[dict[str, Any], dict[int, int]]:
    """Prague's pending groups (a member's joined model is its x, rebound on restore) and their index."""
    pending = list({id(g): g for g in getattr(sim, "_group_of", []) if g is not None}.values())
    index = {id(g): k for k, g in enumerate(pending)}
    state = {"of": np.array([-1 if g is None else index[id(g)] for g in getattr(sim, "_group_of", [])], np.int64),
             "groups": [{"members": np.array(g.members, np.int64), "formed": float(g.formed),
                         "joined": np.array(list(g.joined), np.int64),
                         "arrival": np.array([t for t, _ in g.joined.values()], np.float64)} for g in pending],
             "log": [[float(f), float(d), np.array(m, np.int64)] for f, d, m in getattr(sim, "group_log", [])]}
    return state, index


def _load_groups(sim: Simulator, s: dict[str, Any]) -> list[Group]:
    pending = [Group([int(m) for m in g["members"]], float(g["formed"]),
                     {int(i): (float(t), sim.ops[int(i)].v) for i, t in zip(g["joined"], g["arrival"], strict=True)})
               for g in s["groups"]]
    if len(s["of"]):
        sim._group_of = [None if k < 0 else pending[k] for k in s["of"]]
        sim.group_log = [(f, d, tuple(int(m) for m in ms)) for f, d, ms in s["log"]]
    return pending


def capture(sim: Simulator) -> dict[str, Any]:
    """The state of ``sim`` between two events (after ``run()`` returned with ``interrupted`` set)."""
    if not sim.interrupted:
        raise RuntimeError("capture(): the simulator is not at an event boundary")
    refusing = sorted({type(a).name or type(a).__name__ for a in sim.agents if not type(a).resumable})
    if refusing:
        raise UserError(f"algorithm {', '.join(refusing)}: cannot be checkpointed (resumable = False)")
    heap = sorted(sim._heap)
    groups, group_index = _groups(sim)
    ex = sim._exchange
    d = sim.delays
    state: dict[str, Any] = {
        "now": float(sim.now), "gradients": int(sim.gradients), "events": int(sim.events), "seq": int(sim._seq),
        "wall": float(sim.wall()),
        "heap": {"t": np.array([e[0] for e in heap], np.float64),
                 "prio": np.array([e[1] for e in heap], np.int64), "seq": np.array([e[2] for e in heap], np.int64),
                 "kind": np.array([e[3] for e in heap], np.int64), "agent": np.array([e[4] for e in heap], np.int64),
                 "payload": [_event(e[3], e[5], group_index) for e in heap]},
        "groups": groups,
        "ops": ["" if op is None else type(op).__name__ for op in sim.ops],
        "agents": [a.state_dict() for a in sim.agents],
        "oracles": [o.state_dict() for o in sim.oracles],
        "transports": [_transport(tr) for tr in sim.transports],
        "clocks": np.array([[getattr(c, f) for f in _CLOCK_FIELDS] for c in sim.clocks], np.float64),
        "allreduce": [[int(i), float(t), v] for i, t, v in sim._allreduce],
        "exchange": {"rounds": list(ex.rounds),
                     "posts": [{int(r): [float(t), v.copy()] for r, (t, v) in p.items()} for p in ex.posts],
                     "consumed": [{int(r): int(c) for r, c in p.items()} for p in ex.consumed],
                     "waiting": {int(i): [int(r), *out.shape] for i, (r, out) in ex.waiting.items()}},
        "pair_busy": np.array(sim._pair_busy, np.bool_),
        "server": None if sim.server is None else sim.server.state_dict(),
        "awaiting": np.array(sorted(sim._awaiting), np.int64),
        "pair_queue": np.array([[i, peer] for i, peer, _ in sim._pair_queue], np.int64).reshape(-1, 2),
        "delays": {"compute": [_rng(g) for g in d.compute_rngs], "comm": [_rng(g) for g in d.comm_rngs],
                   "drop": "" if d.drop_rng is None else _rng(d.drop_rng)},
        "evaluations": {k: np.array([e.get(k, np.nan) for e in sim.evaluations], np.float64)
                        for k in (sim.evaluations[0] if sim.evaluations else {})},
    }
    if "torch" in sys.modules:  # dropout and other layers draw from torch's global stream
        state["torch_rng"] = sys.modules["torch"].get_rng_state().numpy().copy()
    return state


def _exchange_buffer(x: np.ndarray, shape: list[int]) -> np.ndarray:
    """A pending exchange's (degree, width) output: the width is x's, or longer (SGP exchanges (w, φ));
    checkpoints written before the width was saved hold the degree only."""
    width = int(shape[1]) if len(shape) > 1 else x.size
    return np.empty((int(shape[0]), width), x.dtype)


def restore(sim: Simulator, state: dict[str, Any]) -> None:
    """Make the fresh ``sim`` (built from the same config, not run yet) continue from ``state``."""
    refusing = sorted({type(a).name or type(a).__name__ for a in sim.agents if not type(a).resumable})
    if refusing:
        raise UserError(f"algorithm {', '.join(refusing)}: cannot resume from a checkpoint (resumable = False)")
    if len(state["agents"]) != sim.n:
        raise UserError(f"checkpoint: {len(state['agents'])} agents, the config has {sim.n}")
    for agent, s in zip(sim.agents, state["agents"], strict=True):
        agent.load_state_dict(s)
    for oracle, s in zip(sim.oracles, state["oracles"], strict=True):
        oracle.load_state_dict(s)
    for tr, s in zip(sim.transports, state["transports"], strict=True):
        _load_transport(tr, s)
    for clock, row in zip(sim.clocks, state["clocks"], strict=True):
        for f, v in zip(_CLOCK_FIELDS, row, strict=True):
            setattr(clock, f, float(v))
    d = sim.delays
    for g, s in zip(d.compute_rngs, state["delays"]["compute"], strict=True):
        _set_rng(g, s)
    for g, s in zip(d.comm_rngs, state["delays"]["comm"], strict=True):
        _set_rng(g, s)
    if d.drop_rng is not None and state["delays"]["drop"]:
        _set_rng(d.drop_rng, state["delays"]["drop"])
    if "torch_rng" in state:
        import torch

        torch.set_rng_state(torch.from_numpy(np.asarray(state["torch_rng"], np.uint8)))
    # restart each generator up to the op it was suspended at (not performed again: its answer is queued)
    for i, name in enumerate(state["ops"]):
        if not name:
            continue
        op = sim.gens[i].send(None)
        if type(op).__name__ != name:
            raise UserError(f"checkpoint: agent {i} restarted at {type(op).__name__}, was suspended at {name}; "
                            f"algorithm {type(sim.agents[i]).name!r} does not resume exactly")
        sim.ops[i] = op
    pending = _load_groups(sim, state.get("groups", {"of": [], "groups": [], "log": []}))
    h = state["heap"]
    sim._heap = []
    for t, prio, seq, kind, a, b in zip(h["t"], h["prio"], h["seq"], h["kind"], h["agent"], h["payload"],
                                        strict=True):
        kind, a = int(kind), int(a)
        if kind == DELIVER:
            b = _unpacket(b)
        elif kind == PAIR:
            b = (int(b), sim.ops[a].v)
        elif kind == GROUP:
            b = pending[int(b)]
        elif kind == SERVE:
            b = sim.ops[a]
        elif kind == RESUME and isinstance(b, list):  # a server step's (k, τ), stored as a list
            b = tuple(int(v) for v in b)
        elif kind == RESUME and isinstance(b, np.ndarray):
            b = b.copy()
        sim._heap.append((float(t), int(prio), int(seq), kind, a, b))
    heapq.heapify(sim._heap)
    sim.now, sim.gradients, sim.events, sim._seq = state["now"], state["gradients"], state["events"], state["seq"]
    sim._allreduce = [(int(i), float(t), v) for i, t, v in state["allreduce"]]
    ex, s = sim._exchange, state["exchange"]
    ex.rounds = [int(r) for r in s["rounds"]]
    ex.posts = [{int(r): (float(t), v) for r, (t, v) in p.items()} for p in s["posts"]]
    ex.consumed = [{int(r): int(c) for r, c in p.items()} for p in s["consumed"]]
    ex.waiting = {int(i): (int(r), _exchange_buffer(sim.agents[int(i)].x, shape))
                  for i, (r, *shape) in s["waiting"].items()}
    sim._pair_busy = [bool(b) for b in state["pair_busy"]]
    if sim.server is not None and state.get("server") is not None:
        sim.server.load_state_dict(state["server"])
    sim._awaiting = {int(i) for i in state.get("awaiting", ())}  # blocked in AwaitDeltas, no delta yet
    sim._pair_queue = [(int(i), int(peer), sim.ops[int(i)].v) for i, peer in state["pair_queue"]]
    ev = state["evaluations"]
    names = list(ev)
    sim.evaluations = [{k: float(ev[k][r]) for k in names} for r in range(len(ev[names[0]]) if names else 0)]
    sim._wall0 = time.perf_counter() - state["wall"]
    sim.restored = True


__all__ = ["AgentClock", "capture", "restore"]
