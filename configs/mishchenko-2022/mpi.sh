#!/usr/bin/env bash
# Mishchenko et al. (2022) Fig. 1 on MPI: 40 worker ranks + the monitor, oversubscribed on this machine's cores,
# so the delays come from real scheduling (as in the authors' Ray run), not from a delay model.
# Usage: bash configs/mishchenko-2022/mpi.sh [OUT]   (about 3 x 20 s plus start-up; MPIEXEC=... to choose the launcher)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/mishchenko-2022-mpi}
MPIEXEC=${MPIEXEC:-.venv/bin/mpiexec}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
common=(--set delays.model=none --set budget.time=20.0 --set eval.interval=0.5 --set mpi.monitor=true)
run() {
  local name=$1; shift
  "$MPIEXEC" -n 41 "$PY" -m hpcasync run configs/mishchenko-2022/fig1.toml "${common[@]}" "$@" \
    --set run.name="$name" --out "$OUT/$name" --overwrite
}
run mpi-minibatch-0.19 --set algorithm.name=minibatch-sgd --set algorithm.alpha=0.19
run mpi-adaptive-0.43 --set algorithm.step_rule=adaptive --set algorithm.alpha=0.43
run mpi-async-0.43 --set algorithm.step_rule=constant --set algorithm.alpha=0.43
# One "bad worker" (rank 0) 100x slower, as in the authors' notebook where it sleeps: every computation is padded
# to 8 ms (about the pace of a rank among 40 on 2 cores, so the others barely change), rank 0's to 0.8 s.
bad=(--set delays.model=case --set delays.case=3 --set delays.straggler=0 --set delays.slowdown=100
     --set delays.compute_dist=constant --set delays.compute_mean=0.008 --set mpi.time_unit=1.0
     --set delays.comm_dist=constant --set delays.comm_mean=1e-6)
run mpi-bad-minibatch-0.19 "${bad[@]}" --set algorithm.name=minibatch-sgd --set algorithm.alpha=0.19
run mpi-bad-adaptive-0.43 "${bad[@]}" --set algorithm.step_rule=adaptive --set algorithm.alpha=0.43
run mpi-bad-async-0.43 "${bad[@]}" --set algorithm.step_rule=constant --set algorithm.alpha=0.43
run mpi-bad-adaptive-0.15 "${bad[@]}" --set algorithm.step_rule=adaptive --set algorithm.alpha=0.15
