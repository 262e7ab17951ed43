#!/bin/bash
# hpcasync on SLURM: 10 ranks (9 agents + monitor) for configs/digits-grid/case5-adsgd.toml
#SBATCH --job-name=case5-adsgd
#SBATCH --nodes=1
#SBATCH --ntasks=10
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=logs/%x-%j.out
# SLURM does not create logs/: `hpcasync jobscript` did, in the directory to submit from
# 120 s before the time limit SLURM sends SIGUSR1 to this script, which passes it to the ranks:
# they stop, close their files (complete = false, interrupted = SIGUSR1) and exit
#SBATCH --signal=B:USR1@120
# a preempted job is requeued; `hpcasync run` then refuses the used runs/digits-grid/case5-adsgd (it cannot resume yet)
#SBATCH --requeue

set -euo pipefail
# one numba/BLAS thread pool per rank, sized by SLURM_CPUS_PER_TASK (hpcasync reads it)
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
module load openmpi
srun --ntasks=10 python -m hpcasync run configs/digits-grid/case5-adsgd.toml --out runs/digits-grid/case5-adsgd &
step=$!
trap 'kill -USR1 "$step" 2>/dev/null || true' USR1
trap 'kill -TERM "$step" 2>/dev/null || true' TERM
status=0
wait "$step" || status=$?
while kill -0 "$step" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the ranks to stop
    status=0
    wait "$step" || status=$?
done
python -m hpcasync report runs/digits-grid/case5-adsgd --out runs/digits-grid/case5-adsgd/report || true
exit "$status"
