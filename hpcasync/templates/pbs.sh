#!/bin/bash
# hpcasync on PBS: ${ranks} ranks (${agents} agents${monitor_note}) for ${config}
#PBS -N ${job_name}
#PBS -l select=${nodes}:ncpus=${cpus_per_node}:mpiprocs=${ranks_per_node}
#PBS -l walltime=${time}
#PBS -j oe
#PBS -o ${log_dir}/
${scheduler_extra}
set -euo pipefail
cd "$${PBS_O_WORKDIR:-.}"
export OMP_NUM_THREADS=${cpus_per_task}
${env_setup}
mpiexec -n ${ranks} ${python} -m hpcasync run ${config} --out ${out}${overrides}
${python} -m hpcasync report ${out} --out ${out}/report
