"""Render SLURM and PBS job scripts for an experiment config from ``hpcasync/templates``.

The rank count follows the config: one rank per agent, plus one for the
average-model monitor when ``mpi.monitor`` is true. Scripts use ``srun``
(SLURM) or ``mpiexec`` (PBS) so the cluster's own MPI launches the ranks.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

from hpcasync.config import Config
from hpcasync.errors import require

SCHEDULERS = ("slurm", "pbs", "slurm-array")


@dataclass
class JobSpec:
    scheduler: str = "slurm"
    nodes: int = 1
    cpus_per_task: int = 1
    time: str = "01:00:00"
    partition: str = ""
    account: str = ""
    env_setup: str = ""  # e.g. "module load openmpi; source ~/venv/bin/activate"
    python: str = "python"
    log_dir: str = "logs"
    overrides: list[str] = field(default_factory=list)
    list_file: str = "configs.txt"  # slurm-array: one config path per line
    array_size: int = 1


def ranks_for(cfg: Config) -> int:
    return cfg.topology.n + (1 if cfg.mpi.monitor else 0)


def render(cfg: Config, config_path: str, out: str, spec: JobSpec) -> str:
    """The job script text for running ``config_path`` with ``spec``."""
    require(spec.scheduler in SCHEDULERS,
            f"--scheduler {spec.scheduler!r}: expected one of {', '.join(SCHEDULERS)}")
    require(spec.nodes >= 1, f"--nodes {spec.nodes}: expected >= 1")
    require(spec.cpus_per_task >= 1, f"--cpus-per-task {spec.cpus_per_task}: expected >= 1")
    parts = spec.time.split(":")
    require(len(parts) == 3 and all(p.isdigit() for p in parts),
            f"--time {spec.time!r}: expected HH:MM:SS")
    ranks = ranks_for(cfg)
    require(spec.nodes <= ranks, f"--nodes {spec.nodes}: more nodes than the {ranks} ranks the config needs")
    ranks_per_node = math.ceil(ranks / spec.nodes)
    extra = []
    directive = "#SBATCH" if spec.scheduler.startswith("slurm") else "#PBS"
    if spec.partition:
        extra.append(f"{directive} --partition={spec.partition}" if directive == "#SBATCH"
                     else f"#PBS -q {spec.partition}")
    if spec.account:
        extra.append(f"{directive} --account={spec.account}" if directive == "#SBATCH"
                     else f"#PBS -A {spec.account}")
    text = resources.files("hpcasync.templates").joinpath(f"{spec.scheduler}.sh").read_text()
    return Template(text).substitute(
        job_name=cfg.run.name, nodes=spec.nodes, ranks=ranks, agents=cfg.topology.n,
        monitor_note=" + monitor" if cfg.mpi.monitor else "", cpus_per_task=spec.cpus_per_task,
        cpus_per_node=ranks_per_node * spec.cpus_per_task, ranks_per_node=ranks_per_node,
        time=spec.time, log_dir=spec.log_dir, scheduler_extra="\n".join(extra),
        env_setup=spec.env_setup, python=spec.python, config=shlex.quote(config_path),
        out=shlex.quote(out), overrides="".join(f" --set {shlex.quote(o)}" for o in spec.overrides),
        list_file=shlex.quote(spec.list_file), last_index=max(spec.array_size - 1, 0),
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
