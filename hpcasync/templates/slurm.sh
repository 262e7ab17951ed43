#!/bin/bash
# hpcasync on SLURM: ${ranks} ranks (${agents} agents${monitor_note}) for ${config}
#SBATCH --job-name=${job_name}
#SBATCH --nodes=${nodes}
#SBATCH --ntasks=${ranks}
#SBATCH --cpus-per-task=${cpus_per_task}
#SBATCH --time=${time}
#SBATCH --output=${log_dir}/%x-%j.out
# SLURM does not create ${log_dir}/: `hpcasync jobscript` did, in the directory to submit from
# 120 s before the time limit SLURM sends SIGUSR1 to this script, which passes it to the ranks:
# they stop at an agreed point, write ${out}/checkpoint/ (algorithms that can be checkpointed on MPI;
# others just close their files, complete = false) and exit with 138; the script then requeues itself
#SBATCH --signal=B:USR1@120
# a preempted or requeued job starts this script again: it resumes from the checkpoint if there is one
#SBATCH --requeue
${scheduler_extra}
set -euo pipefail
# one numba/BLAS thread pool per rank, sized by SLURM_CPUS_PER_TASK (hpcasync reads it)
export OMP_NUM_THREADS=$${SLURM_CPUS_PER_TASK:-1}
${env_setup}
if compgen -G ${out}'/checkpoint/rank-*.h5' > /dev/null; then
    run_args=(--resume ${out})  # `run` checks that the config still matches the run's
else
    run_args=(--out ${out})
fi
srun --ntasks=${ranks} ${python} -m hpcasync run ${config}${overrides} "$${run_args[@]}" &
step=$$!
trap 'kill -USR1 "$$step" 2>/dev/null || true' USR1
trap 'kill -TERM "$$step" 2>/dev/null || true' TERM
status=0
wait "$$step" || status=$$?
while kill -0 "$$step" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the ranks to stop
    status=0
    wait "$$step" || status=$$?
done
if [ "$$status" -eq 138 ] && [ -n "$${SLURM_JOB_ID:-}" ] && compgen -G ${out}'/checkpoint/rank-*.h5' > /dev/null; then
    scontrol requeue "$$SLURM_JOB_ID"  # stopped by SIGUSR1 with a checkpoint: go on in a new allocation
    exit 0
fi
${python} -m hpcasync report ${out} --out ${out}/report || true
exit "$$status"
