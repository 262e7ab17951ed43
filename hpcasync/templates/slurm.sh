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
# they stop, close their files (complete = false, interrupted = SIGUSR1) and exit
#SBATCH --signal=B:USR1@120
# a preempted job is requeued; `hpcasync run` then refuses the used ${out} (it cannot resume yet)
#SBATCH --requeue
${scheduler_extra}
set -euo pipefail
# one numba/BLAS thread pool per rank, sized by SLURM_CPUS_PER_TASK (hpcasync reads it)
export OMP_NUM_THREADS=$${SLURM_CPUS_PER_TASK:-1}
${env_setup}
srun --ntasks=${ranks} ${python} -m hpcasync run ${config} --out ${out}${overrides} &
step=$$!
trap 'kill -USR1 "$$step" 2>/dev/null || true' USR1
trap 'kill -TERM "$$step" 2>/dev/null || true' TERM
status=0
wait "$$step" || status=$$?
while kill -0 "$$step" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for the ranks to stop
    status=0
    wait "$$step" || status=$$?
done
${python} -m hpcasync report ${out} --out ${out}/report || true
exit "$$status"
