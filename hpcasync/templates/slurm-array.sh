#!/bin/bash
# hpcasync sweep on SLURM: one array task per config listed in ${list_file}
#SBATCH --job-name=${job_name}
#SBATCH --array=0-${last_index}
#SBATCH --nodes=${nodes}
#SBATCH --ntasks=${ranks}
#SBATCH --cpus-per-task=${cpus_per_task}
#SBATCH --time=${time}
#SBATCH --output=${log_dir}/%x-%A_%a.out
${scheduler_extra}
set -euo pipefail
export OMP_NUM_THREADS=$${SLURM_CPUS_PER_TASK:-1}
${env_setup}
config=$$(sed -n "$$((SLURM_ARRAY_TASK_ID + 1))p" ${list_file})
name=$$(basename "$$config" .toml)
srun --ntasks=${ranks} ${python} -m hpcasync run "$$config" --out ${out}/"$$name"${overrides}
