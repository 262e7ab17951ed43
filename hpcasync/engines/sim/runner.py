"""Run one simulated experiment from a config and stream it into the HDF5 layout of docs/design.md §8."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hpcasync import algorithms, problems
from hpcasync import delays as delay_models
from hpcasync.config import Config
from hpcasync.engines.build import build_agent, build_topology, check_supported
from hpcasync.engines.sim.checkpoint import capture, restore
from hpcasync.engines.sim.engine import Recorder, Simulator
from hpcasync.engines.sim.transport import SimTransport
from hpcasync.results import checkpoint
from hpcasync.results.schema import agent_filename
from hpcasync.results.writer import (
    AgentWriter,
    RunWriter,
    close_writers,
    now_iso,
    open_run_writer,
    software_versions,
)
from hpcasync.resume import check_same, config_from_toml

#: the simulator's checkpoint in ``RUN_DIR/checkpoint/``
SIM_CHECKPOINT = "sim.h5"


class HDF5Recorder:
    """Routes the simulator's records into one AgentWriter per agent and the RunWriter."""

    run: RunWriter
    agents: list[AgentWriter]

    def attach(self, run: RunWriter, agents: list[AgentWriter]) -> None:
        self.run = run
        self.agents = agents

    def update(self, agent: int, row: dict[str, float]) -> None:
        self.agents[agent].append(**row)

    def evaluation(self, row: dict[str, float]) -> None:
        self.run.append_eval(**row)


class MemoryRecorder:
    """Keeps the simulator's records in memory (the Python API's ``simulate`` without an output
    directory); as a ``tee`` of :func:`simulate` it receives the rows the HDF5 files get."""

    def __init__(self, n: int) -> None:
        self.rows: list[list[dict[str, float]]] = [[] for _ in range(n)]
        self.evaluations: list[dict[str, float]] = []

    def update(self, agent: int, row: dict[str, float]) -> None:
        self.rows[agent].append(row)

    def evaluation(self, row: dict[str, float]) -> None:
        self.evaluations.append(row)


class _Tee:
    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders

    def update(self, agent: int, row: dict[str, float]) -> None:
        for r in self.recorders:
            r.update(agent, row)

    def evaluation(self, row: dict[str, float]) -> None:
        for r in self.recorders:
            r.evaluation(row)


def build_simulator(cfg: Config, recorder: Recorder | None = None,
                    progress: Callable[[float], None] | None = None,
                    delays: delay_models.DelayModel | None = None) -> Simulator:
    """Everything ``cfg`` describes, wired into a :class:`Simulator` that has not run yet
    (``delays``: instead of the config's delay model, e.g. a trace replay's)."""
    check_supported(algorithms.get(cfg.algorithm.name), SimTransport.features, "sim", cfg.algorithm.name)
    topology = build_topology(cfg)
    problem = problems.build(cfg, topology.n)
    x0 = problem.init_params(cfg.run.seed)
    agents = [build_agent(cfg, topology, i, x0) for i in range(topology.n)]
    oracles = [problem.oracle(i, cfg.run.seed) for i in range(topology.n)]
    if delays is None:
        delays = delay_models.build(cfg.delays, topology.n, cfg.run.seed)
    sim = Simulator(agents, oracles, topology, delays, budget_time=cfg.budget.time,
                    budget_gradients=cfg.budget.gradients, evaluate=problem.evaluate,
                    eval_interval=cfg.eval.interval, log_every=cfg.eval.log_every,
                    recorder=recorder, progress=progress)
    sim.problem = problem
    return sim


def simulate(cfg: Config, out_dir: Path, progress: Callable[[float], None] | None = None,
             tee: Recorder | None = None, *, resume: bool = False, stop_requests: list[int] | None = None,
             interrupt_at_events: int = 0, delays: delay_models.DelayModel | None = None) -> Simulator:
    """Run ``cfg`` in the simulator, writing ``out_dir``; return the finished simulator.
    ``tee`` also receives every record written (e.g. a :class:`MemoryRecorder`).

    A signal number appended to ``stop_requests`` (by a signal handler), or
    ``interrupt_at_events`` events processed (tests), interrupts the run at
    the next event boundary: the files are closed with ``complete = False``
    and ``interrupted`` naming the cause, and ``out_dir/checkpoint/sim.h5``
    is written; ``resume=True`` continues from it, appending to the same
    files (engines/sim/checkpoint.py). If the run fails midway the files are
    closed with ``complete = False`` and keep everything recorded so far.
    """
    n = cfg.topology.n
    run = None
    writers: list[AgentWriter] = []
    complete = False
    try:
        recorder = HDF5Recorder()
        sim = build_simulator(cfg, recorder if tee is None else _Tee(recorder, tee), progress, delays)
        if stop_requests is not None:
            sim.stop_requests = stop_requests
        sim.interrupt_at_events = interrupt_at_events
        topology = sim.topology
        ck_path = checkpoint.checkpoint_dir(out_dir) / SIM_CHECKPOINT
        if resume:
            attrs, state = checkpoint.read(ck_path)
            check_same(cfg, config_from_toml(attrs["config"], str(ck_path)), f"checkpoint {ck_path}", out_dir)
            restore(sim, state)
            rows = state["rows"]
            run = RunWriter.reopen(out_dir, n, rows=rows["run"])
            writers = [AgentWriter.reopen(out_dir / agent_filename(i), i, rows=r, keep_open=False)
                       for i, r in enumerate(rows["agents"])]
        else:
            run = open_run_writer(out_dir, cfg, topology, "sim", versions=software_versions())
            writers = [AgentWriter(out_dir / agent_filename(i), i, attrs={"algorithm": cfg.algorithm.name},
                                   keep_open=False) for i in range(n)]
        recorder.attach(run, writers)
        sim.run()
        if sim.interrupted:
            _checkpoint(sim, cfg, ck_path, run, writers)
            return sim
        for i, (agent, clock) in enumerate(zip(sim.agents, sim.clocks, strict=True)):
            idle = max(sim.now - clock.compute_units - clock.wait_units, 0.0)
            writers[i].write_timings(compute_units=clock.compute_units, wait_units=clock.wait_units,
                                     idle_units=idle, gradient_s=clock.gradient_s)
            writers[i].write_final_model(agent.model)
            if sim.server is not None:
                writers[i].write_server_steps(sim.server.steps(i))
        run.set_summary(virtual_time=sim.now, gradients=sim.gradients, events=sim.events,
                        wall_s=sim.wall())
        complete = True
    except KeyboardInterrupt:  # Ctrl-C: the files say so, as an interrupted MPI run's do
        for w in [*writers, run]:
            if w is not None:
                w.set_final_attrs(interrupted="SIGINT")
        raise
    finally:
        close_writers([*writers, run], complete=complete)
    if resume:  # the run is complete: its checkpoint is spent
        ck_path.unlink(missing_ok=True)
    return sim


def _checkpoint(sim: Simulator, cfg: Config, path: Path, run: RunWriter, writers: list[AgentWriter]) -> None:
    """Close the files of the interrupted ``sim`` (every row on disk) and write its checkpoint."""
    t0 = time.perf_counter()
    for w in [*writers, run]:
        w.set_final_attrs(interrupted=sim.interrupted)
    if not all(type(a).resumable for a in sim.agents):  # stopped all the same, without a checkpoint
        close_writers([*writers, run], complete=False)
        return
    state = capture(sim)
    state["rows"] = {"run": run.rows, "agents": [w.rows for w in writers]}
    close_writers([*writers, run], complete=False)
    checkpoint.write(path, state, {"engine": "sim", "n_agents": sim.n, "algorithm": cfg.algorithm.name,
                                   "config": cfg.to_toml(), "virtual_time": sim.now, "events": sim.events,
                                   "created": now_iso()})
    sim.checkpoint_path = path
    sim.checkpoint_s = time.perf_counter() - t0
