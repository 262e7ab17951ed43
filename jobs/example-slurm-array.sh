#!/bin/bash
# hpcasync sweep on SLURM: one array task per config listed in jobs/example-sweep.txt
#SBATCH --job-name=case5-adsgd
#SBATCH --array=0-3
#SBATCH --nodes=1
#SBATCH --ntasks=10
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=logs/%x-%A_%a.out

set -euo pipefail
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

config=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" jobs/example-sweep.txt)
name=$(basename "$config" .toml)
srun --ntasks=10 python -m hpcasync run "$config" --out runs/case5/"$name"
