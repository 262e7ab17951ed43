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
# they stop at an agreed point, write runs/digits-grid/case5-adsgd/checkpoint/ (algorithms that can be checkpointed on MPI;
# others just close their files, complete = false) and exit with 138; the script then requeues itself
#SBATCH --signal=B:USR1@120
# a preempted or requeued job starts this script again: it resumes from the checkpoint if there is one
#SBATCH --requeue

set -euo pipefail
# one numba/BLAS thread pool per rank, sized by SLURM_CPUS_PER_TASK (hpcasync reads it)
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
module load openmpi
if compgen -G runs/digits-grid/case5-adsgd'/checkpoint/rank-*.h5' > /dev/null; then
    run_args=(--resume runs/digits-grid/case5-adsgd)  # `run` checks that the config still matches the run's
else
    run_args=(--out runs/digits-grid/case5-adsgd)
fi
srun --ntasks=10 python -m hpcasync run configs/digits-grid/case5-adsgd.toml "${run_args[@]}" &
step=$!
trap 'kill -USR1 "$step" 2>/dev/null || true' USR1
trap 'kill -TERM "$step" 2>/dev/null || true' TERM
status=0
wait "$step" || status=$?
while kill -0 "$step" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the ranks to stop
    status=0
    wait "$step" || status=$?
done
if [ "$status" -eq 138 ] && [ -n "${SLURM_JOB_ID:-}" ] && compgen -G runs/digits-grid/case5-adsgd'/checkpoint/rank-*.h5' > /dev/null; then
    scontrol requeue "$SLURM_JOB_ID"  # stopped by SIGUSR1 with a checkpoint: go on in a new allocation
    exit 0
fi
python -m hpcasync report runs/digits-grid/case5-adsgd --out runs/digits-grid/case5-adsgd/report || true
exit "$status"
