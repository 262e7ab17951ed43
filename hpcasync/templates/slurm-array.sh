#!/bin/bash
# hpcasync sweep on SLURM: one array task per config listed in ${list_file}
#SBATCH --job-name=${job_name}
#SBATCH --array=0-${last_index}
#SBATCH --nodes=${nodes}
#SBATCH --ntasks=${ranks}
#SBATCH --cpus-per-task=${cpus_per_task}
#SBATCH --time=${time}
#SBATCH --output=${log_dir}/%x-%A_%a.out
# SLURM does not create ${log_dir}/: `hpcasync jobscript` did, in the directory to submit from
# SIGUSR1 120 s before the time limit, passed on to the ranks: they stop and close their files
#SBATCH --signal=B:USR1@120
# a preempted task is requeued; `hpcasync run` then refuses its used run directory (no resume yet)
#SBATCH --requeue
${scheduler_extra}
set -euo pipefail
export OMP_NUM_THREADS=$${SLURM_CPUS_PER_TASK:-1}
${env_setup}
config=$$(sed -n "$$((SLURM_ARRAY_TASK_ID + 1))p" ${list_file})
name=$$(basename "$$config" .toml)
srun --ntasks=${ranks} ${python} -m hpcasync run "$$config" --out ${out}/"$$name"${overrides} &
step=$$!
trap 'kill -USR1 "$$step" 2>/dev/null || true' USR1
trap 'kill -TERM "$$step" 2>/dev/null || true' TERM
status=0
wait "$$step" || status=$$?
while kill -0 "$$step" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the ranks to stop
    status=0
    wait "$$step" || status=$$?
done
exit "$$status"
