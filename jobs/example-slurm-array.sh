#!/bin/bash
# hpcasync sweep on SLURM: one array task per config listed in jobs/example-sweep.txt
#SBATCH --job-name=case5-adsgd
#SBATCH --array=0-3
#SBATCH --nodes=1
#SBATCH --ntasks=10
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=logs/%x-%A_%a.out
# SLURM does not create logs/: `hpcasync jobscript` did, in the directory to submit from
# SIGUSR1 120 s before the time limit, passed on to the ranks: they stop and close their files
#SBATCH --signal=B:USR1@120
# a preempted task is requeued; `hpcasync run` then refuses its used run directory (no resume yet)
#SBATCH --requeue

set -euo pipefail
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

config=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" jobs/example-sweep.txt)
name=$(basename "$config" .toml)
srun --ntasks=10 python -m hpcasync run "$config" --out runs/case5/"$name" &
step=$!
trap 'kill -USR1 "$step" 2>/dev/null || true' USR1
trap 'kill -TERM "$step" 2>/dev/null || true' TERM
status=0
wait "$step" || status=$?
while kill -0 "$step" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the ranks to stop
    status=0
    wait "$step" || status=$?
done
exit "$status"
