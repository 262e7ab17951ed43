#!/bin/bash
# hpcasync on PBS: 10 ranks (9 agents + monitor) for configs/digits-grid/case5-adsgd.toml
#PBS -N case5-adsgd
#PBS -l select=1:ncpus=10:mpiprocs=10
#PBS -l walltime=01:00:00
#PBS -j oe
#PBS -o logs/

set -euo pipefail
cd "${PBS_O_WORKDIR:-.}"
export OMP_NUM_THREADS=1
module load openmpi
# a rerun job (qrerun, or resubmitted) resumes from the checkpoint a signal left (SIGTERM: qdel, walltime)
if compgen -G runs/digits-grid/case5-adsgd'/checkpoint/rank-*.h5' > /dev/null; then
    run_args=(--resume runs/digits-grid/case5-adsgd)
else
    run_args=(--out runs/digits-grid/case5-adsgd)
fi
mpiexec -n 10 python -m hpcasync run configs/digits-grid/case5-adsgd.toml "${run_args[@]}"
python -m hpcasync report runs/digits-grid/case5-adsgd --out runs/digits-grid/case5-adsgd/report
