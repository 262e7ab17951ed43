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
