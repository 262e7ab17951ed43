"""Helpers shared by the MPI engine's benchmarks (bench_straggler, bench_bytes, bench_async_efficiency,
bench_memory_mpi): launching ``hpcasync run`` under mpiexec, reading the runs, writing the JSON.

Benchmarks never assert timings; each JSON records the exact command that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
MPIEXEC = os.environ.get("MPIEXEC", str(BIN / "mpiexec"))
HPCASYNC = str(BIN / "hpcasync")
RESULTS = Path(__file__).parent / "results"


def one_thread_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, "1")
    env["MPLBACKEND"] = "Agg"
    return env


def digits_config(name: str, algorithm: str, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Zhou & Pu's (2025) 3×3 digits setting (α = 0.01, batch 32) with the given sections' fields replaced."""
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": name, "seed": 0},
        "algorithm": {"name": algorithm, "alpha": 0.01, "batch_size": 32},
        "topology": {"name": "grid", "n": 9, "shape": [3, 3]},
        "data": {"name": "digits"},
        "problem": {"name": "softmax"},
        "delays": {"model": "case", "case": 1, "straggler": 4},
        "budget": {"time": 10.0},
        "eval": {"interval": 2.0, "log_every": 1},
        "mpi": {"time_unit": 0.002, "monitor": False, "flush_interval": 2.0},
    }
    for section, fields in sections.items():
        raw.setdefault(section, {}).update(fields)
    return raw


def write_config(raw: dict[str, dict[str, Any]], path: Path) -> Path:
    from hpcasync.config import dump_toml, from_dict

    from_dict(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_toml(raw))
    return path


def mpirun(ranks: int, argv: list[str], timeout: float = 600) -> tuple[float, str]:
    """Run ``mpiexec -n ranks argv…``; return (wall seconds, the command); raise on failure."""
    cmd = [MPIEXEC, "-n", str(ranks), *argv]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=one_thread_env())
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return wall, shlex.join(cmd)


def run_config(raw: dict[str, dict[str, Any]], work: Path, ranks: int | None = None) -> tuple[Path, str]:
    """``mpiexec -n N hpcasync run`` of ``raw`` into ``work/<name>``; returns (run dir, command)."""
    name = raw["run"]["name"]
    cfg = write_config(raw, work / f"{name}.toml")
    out = work / name
    n = raw["topology"]["n"] + (1 if raw["mpi"].get("monitor", True) else 0)
    _, cmd = mpirun(ranks or n, [HPCASYNC, "run", str(cfg), "--out", str(out), "--quiet"])
    return out, cmd


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor(),
                            "cpus": os.cpu_count(), "python": platform.python_version()}
    # the library mpi4py loads (MPICH, Open MPI, a vendor MPI), read without initialising MPI
    code = "import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; print(MPI.Get_library_version())"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        lines = out.stdout.replace("\0", "").strip().splitlines()
        info["mpi"] = lines[0].strip() if lines else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def save(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": shlex.join([sys.executable, *sys.argv]), "machine": machine(),
               **payload}
    path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)
