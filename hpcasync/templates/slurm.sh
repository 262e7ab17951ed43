#!/bin/bash
# hpcasync on SLURM: ${ranks} ranks (${agents} agents${monitor_note}) for ${config}
#SBATCH --job-name=${job_name}
#SBATCH --nodes=${nodes}
#SBATCH --ntasks=${ranks}
#SBATCH --cpus-per-task=${cpus_per_task}
#SBATCH --time=${time}
#SBATCH --output=${log_dir}/%x-%j.out
${scheduler_extra}
set -euo pipefail
# one numba/BLAS thread pool per rank, sized by SLURM_CPUS_PER_TASK (hpcasync reads it)
export OMP_NUM_THREADS=$${SLURM_CPUS_PER_TASK:-1}
${env_setup}
srun --ntasks=${ranks} ${python} -m hpcasync run ${config} --out ${out}${overrides}
${python} -m hpcasync report ${out} --out ${out}/report
