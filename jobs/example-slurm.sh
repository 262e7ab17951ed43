#!/bin/bash
# hpcasync on SLURM: 10 ranks (9 agents + monitor) for configs/digits-grid/case5-adsgd.toml
#SBATCH --job-name=case5-adsgd
#SBATCH --nodes=1
#SBATCH --ntasks=10
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=logs/%x-%j.out

set -euo pipefail
# one numba/BLAS thread pool per rank, sized by SLURM_CPUS_PER_TASK (hpcasync reads it)
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
module load openmpi
srun --ntasks=10 python -m hpcasync run configs/digits-grid/case5-adsgd.toml --out runs/digits-grid/case5-adsgd
python -m hpcasync report runs/digits-grid/case5-adsgd --out runs/digits-grid/case5-adsgd/report
