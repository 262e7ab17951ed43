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
# a rerun job (qrerun, or resubmitted) resumes from the checkpoint a signal left (SIGTERM: qdel, walltime)
if compgen -G ${out}'/checkpoint/rank-*.h5' > /dev/null; then
    run_args=(--resume ${out})
else
    run_args=(--out ${out})
fi
mpiexec -n ${ranks} ${python} -m hpcasync run ${config}${overrides} "$${run_args[@]}"
${python} -m hpcasync report ${out} --out ${out}/report
