"""The end of an MPI run on the rank that writes run.h5: the final evaluation without a monitor, the summary."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcasync.engines.evaluation import evaluate_average, pairwise_staleness_row
from hpcasync.engines.mpi.rank_setup import RankResult, RunSetup
from hpcasync.engines.mpi.world import World
from hpcasync.results.analysis import time_to_target
from hpcasync.results.writer import RunWriter


def final_without_monitor(setup: RunSetup, world: World, run_writer: RunWriter, result: RankResult,
                          model: np.ndarray, clock: np.ndarray | None, totals: int, wall: float,
                          quiet: bool) -> None:
    assert world.workers is not None
    models = world.workers.gather(np.asarray(model), root=0)
    rows = np.ascontiguousarray(np.stack(models))
    head = {"virtual_time": setup.virtual(wall), "wall_time": wall, "gradients": float(totals)}
    row = evaluate_average(setup.problem.evaluate, head, np.empty(rows.shape[1], rows.dtype), rows)
    if clock is not None:
        row.update(pairwise_staleness_row(np.stack(world.workers.gather(clock, root=0))))
    run_writer.append_eval(**row)
    result.evaluations.append(row)
    result.final = row
    write_summary(setup, run_writer, totals, wall, monitor=False)
    if not quiet:
        print_summary(setup, result, wall, totals)


def write_summary(setup: RunSetup, run_writer: RunWriter, totals: int, wall: float, monitor: bool) -> None:
    summary: dict[str, Any] = {"gradients": int(totals), "wall_s": float(wall), "monitor": monitor,
                               "ranks": setup.world.comm.Get_size()}
    if setup.delays_on:
        summary["virtual_time"] = wall / setup.time_unit
        summary["time_unit_s"] = setup.time_unit
    run_writer.set_summary(**summary)


def print_summary(setup: RunSetup, result: RankResult, wall: float, totals: int) -> None:
    cfg = setup.cfg
    ev = result.evaluations
    times = [e["wall_time"] for e in ev]
    accs = [e.get("test_accuracy", math.nan) for e in ev]
    ttt = time_to_target(times, accs, cfg.eval.target_accuracy)
    reached = f"{ttt:.2f}s" if ttt is not None else "not reached"
    last = result.final
    print(f"{cfg.run.name}: {cfg.algorithm.name} on MPI wall={wall:.1f}s gradients={totals} "
          f"train_loss={last.get('train_loss', math.nan):.4f} test_acc={last.get('test_accuracy', math.nan):.4f} "
          f"time_to_{cfg.eval.target_accuracy:g}={reached} -> {result.out_dir}", flush=True)

