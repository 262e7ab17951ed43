"""The README's fault table: how a run ends under each signal or failure, on both engines.

    python benchmarks/fault_table.py [--out benchmarks/results/faults.json]

Each scenario starts a real run (4 agents, digits, a budget far longer than the
test), waits until every agent file holds rows, injects the fault, then
measures: seconds from the fault to the end of the process, its exit status,
whether every HDF5 file opens with h5py (and with ``h5dump -H`` where HDF5's
tools are installed), whether every agent file kept its rows, whether the files
say ``complete = false`` with the signal in ``interrupted``, and whether
``--resume`` continues the run to ``complete = true`` (where hpcasync has it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py

BIN = Path(sys.executable).parent
HPCASYNC = str(BIN / "hpcasync")
MPIEXEC = os.environ.get("MPIEXEC", str(BIN / "mpiexec"))

CONFIG = """
[run]
name = "faults"
seed = 3
[algorithm]
name = "adsgd"
alpha = 0.05
[topology]
name = "ring"
n = 4
[data]
name = "digits"
[delays]
model = "case"
case = 5
straggler = 3
[budget]
time = {budget}
[eval]
interval = {interval}
[mpi]
time_unit = 0.002
flush_interval = 0.25
status_interval = 0
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return e


def wait_for_rows(out: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(out.glob("rank-*.h5"))
        if len(files) >= n:
            try:
                if all(_rows(p) > 0 for p in files):
                    return
            except OSError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"no rows in {out} after {timeout} s")


def _rows(p: Path) -> int:
    with h5py.File(p, "r", swmr=True) as f:
        return int(f["updates/iteration"].shape[0]) if "updates/iteration" in f else 0


def rank_pids(cmdline_part: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", cmdline_part], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def inspect(out: Path, n: int) -> dict[str, Any]:
    files = [out / "run.h5", *sorted(out.glob("rank-*.h5"))]
    h5py_ok, rows_kept, flags, swmr_only = True, True, set(), 0
    for p in files:
        try:
            try:
                f = h5py.File(p, "r")
            except OSError:  # a writer killed in SWMR mode leaves the file flagged "open for write"
                f = h5py.File(p, "r", swmr=True)
                swmr_only += 1
            with f:
                flags.add((bool(f.attrs.get("complete", False)), str(f.attrs.get("interrupted", ""))))
                if p.name.startswith("rank-") and ("updates/iteration" not in f or f["updates/iteration"].size == 0):
                    rows_kept = False
        except OSError:
            h5py_ok = False
    h5dump = shutil.which("h5dump")
    dump_ok = None
    cleared = False
    if h5dump:
        def dumps(p: Path) -> bool:
            return subprocess.run([h5dump, "-H", str(p)], capture_output=True).returncode == 0

        dump_ok = all(dumps(p) for p in files)
        h5clear = shutil.which("h5clear")
        if not dump_ok and h5clear:  # a killed SWMR writer's flag: HDF5's own tool clears it
            for p in files:
                subprocess.run([h5clear, "-s", str(p)], capture_output=True)
            cleared = dump_ok = all(dumps(p) for p in files)
    return {"files": len(files), "agent_files": len(files) - 1 == n, "h5py": h5py_ok, "h5dump": dump_ok,
            "swmr_only": swmr_only, "after_h5clear": cleared, "rows_kept": rows_kept, "flags": sorted(flags)}


def supports_resume(command: str) -> bool:
    helptext = subprocess.run([HPCASYNC, command, "--help"], capture_output=True, text=True, env=env()).stdout
    return "--resume" in helptext


def resume(kind: str, out: Path, cfg: Path) -> bool | None:
    if kind == "mpi":
        if not supports_resume("run"):
            return None
        cmd = [MPIEXEC, "-n", "5", HPCASYNC, "run", "--resume", str(out), "--quiet"]
    else:
        if not supports_resume("simulate"):
            return None
        cmd = [HPCASYNC, "simulate", "--resume", str(out), "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    if res.returncode != 0:
        return False
    with h5py.File(out / "run.h5", "r") as f:
        return bool(f.attrs["complete"])


def scenario(name: str, kind: str, tmp: Path) -> dict[str, Any]:
    out = tmp / name.replace(" ", "_")
    cfg = tmp / f"{out.name}.toml"
    mpi = kind in ("mpi", "launch")
    # long enough to interrupt with rows written, short enough to resume to the end (~10-20 s)
    cfg.write_text(CONFIG.format(budget=15.0 if mpi else 1e5, interval=0.5 if mpi else 20.0))
    group = False
    if kind == "mpi":
        cmd = [MPIEXEC, "-n", "5", HPCASYNC, "run", str(cfg), "--out", str(out), "--quiet"]
    elif kind == "launch":
        cmd = [HPCASYNC, "launch", str(cfg), "--out", str(out)]
    elif kind == "sweep":
        sweep = tmp / "sweep.toml"
        sweep.write_text(f'[base]\nconfig = "{cfg}"\n[sweep]\n"run.seed" = [1, 2, 3]\n'
                         f'[sweep.options]\nname = "s{{run.seed}}"\nout = "{out}"\njobs = 2\n')
        cmd, group = [HPCASYNC, "sweep", str(sweep)], True
    else:
        cmd = [HPCASYNC, "simulate", str(cfg), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            start_new_session=group)
    watch = out if kind != "sweep" else None
    try:
        if kind == "sim":  # the simulator writes its rows at the end or at a stop: wait for its files
            deadline = time.monotonic() + 60
            while not (out / "rank-00003.h5").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
        elif watch is not None:
            wait_for_rows(watch, 4)
        else:
            time.sleep(8)
        t0 = time.monotonic()
        if "SIGKILL of one rank" in name:
            os.kill(max(rank_pids(f"hpcasync run {cfg}")), signal.SIGKILL)
        else:
            sig = getattr(signal, name.split()[0])
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        ended = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    row: dict[str, Any] = {"scenario": name, "engine": kind, "ends_s": round(ended, 1), "status": proc.returncode,
                           "traceback": "Traceback" in err}
    if row["traceback"]:
        row["stderr_tail"] = err[-1500:]
    if kind == "sweep":
        runs = [p for p in out.rglob("run.h5")]
        row.update(inspect(runs[0].parent, 4) if runs else {"files": 0})
        return row
    row.update(inspect(out, 4))
    row["resumed"] = resume("mpi" if mpi else "sim", out, cfg)
    return row


SCENARIOS = [
    ("SIGTERM to mpiexec", "mpi"), ("SIGUSR1 to mpiexec", "mpi"), ("SIGINT to mpiexec", "mpi"),
    ("SIGKILL of one rank", "mpi"), ("SIGTERM to launch", "launch"),
    ("SIGINT to simulate", "sim"), ("SIGTERM to simulate", "sim"), ("SIGUSR1 to simulate", "sim"),
    ("SIGINT to sweep -j 2", "sweep"),
]


def markdown(rows: list[dict[str, Any]]) -> str:
    def yn(v: Any) -> str:
        return "—" if v is None else ("yes" if v else "**no**")

    lines = ["| fault | ends in | exit status | no traceback | h5py | h5dump -H | rows kept | resumed |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        opened = yn(r.get("h5py")) + (f" ({r['swmr_only']} files with `swmr=True` only)" if r.get("swmr_only") else "")
        lines.append(f"| {r['scenario']} | {r['ends_s']} s | {r['status']} | {yn(not r['traceback'])} | "
                     f"{opened} | {yn(r.get('h5dump'))}{' (after `h5clear -s`)' if r.get('after_h5clear') else ''} | "
                     f"{yn(r.get('rows_kept'))} | "
                     f"{yn(r.get('resumed'))} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/faults.json")
    ap.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpcasync-faults-") as tmp:
        for name, kind in SCENARIOS:
            if args.only and name not in args.only:
                continue
            rows.append(scenario(name, kind, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
