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
# SIGUSR1 120 s before the time limit, passed on to the ranks: they stop, write a checkpoint where
# the algorithm can be checkpointed on MPI, close their files; the task then requeues itself
#SBATCH --signal=B:USR1@120
# a preempted or requeued task resumes from its run directory's checkpoint if there is one
#SBATCH --requeue

set -euo pipefail
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

config=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" jobs/example-sweep.txt)
name=$(basename "$config" .toml)
run_dir=runs/case5/"$name"
if compgen -G "$run_dir/checkpoint/rank-*.h5" > /dev/null; then
    run_args=(--resume "$run_dir")
else
    run_args=(--out "$run_dir")
fi
srun --ntasks=10 python -m hpcasync run "$config" "${run_args[@]}" &
step=$!
trap 'kill -USR1 "$step" 2>/dev/null || true' USR1
trap 'kill -TERM "$step" 2>/dev/null || true' TERM
status=0
wait "$step" || status=$?
while kill -0 "$step" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the ranks to stop
    status=0
    wait "$step" || status=$?
done
if [ "$status" -eq 138 ] && compgen -G "$run_dir/checkpoint/rank-*.h5" > /dev/null; then
    scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"  # go on in a new allocation
    exit 0
fi
exit "$status"
