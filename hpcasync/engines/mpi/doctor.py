"""What ``hpcasync doctor`` finds out about the MPI it runs under.

* the MPI library (its version string, NUL bytes removed: Open MPI's ends in one);
* the one-sided component, where it can tell: Open MPI selects an ``osc``
  component per window (``--mca osc X`` reaches the ranks as ``OMPI_MCA_osc``);
  MPICH's device and ch4 netmod come from its version string and ``MPIR_CVAR_*``;
* the thread level provided (the progress thread needs ``MPI_THREAD_SERIALIZED`` or more;
  under SERIALIZED it polls only while the main thread computes);
* :func:`hpcasync.engines.mpi.probe.measure` without and with the progress thread;
* a verdict and the exact fix.

Everything but :func:`diagnose` is local and pure, so the verdict logic is
tested without MPI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mpi4py import MPI

from hpcasync.engines.mpi.probe import Measurement, measure
from hpcasync.engines.mpi.progress import thread_level_name


def library_version(raw: str | None = None) -> str:
    """The MPI library's version string without NUL bytes or surrounding blanks."""
    raw = MPI.Get_library_version() if raw is None else raw
    return raw.replace("\x00", "").strip()


def family(version: str) -> str:
    if "Open MPI" in version:
        return "openmpi"
    if "MPICH" in version:
        return "mpich"
    return "other"


def one_sided_component(version: str, env: Mapping[str, str] | None = None) -> str:
    """The one-sided component, as far as the environment and the version string tell."""
    env = os.environ if env is None else env
    fam = family(version)
    if fam == "openmpi":
        osc = env.get("OMPI_MCA_osc", "").strip()
        if osc:
            return f"osc {osc} (OMPI_MCA_osc / --mca osc)"
        return "osc default (Open MPI picks per window: sm or rdma on one node, ucx where UCX drives the network)"
    if fam == "mpich":
        device = ""
        for line in version.splitlines():
            if line.strip().lower().startswith("mpich device:"):
                device = line.split(":", 1)[1].strip()
        parts = [device or "device unknown"]
        netmod = env.get("MPIR_CVAR_CH4_NETMOD", "").strip()
        if netmod:
            parts.append(f"MPIR_CVAR_CH4_NETMOD={netmod}")
        if env.get("MPIR_CVAR_NOLOCAL", "").strip() in ("1", "yes", "true"):
            parts.append("MPIR_CVAR_NOLOCAL=1 (shared memory off: the network path)")
        if env.get("MPIR_CVAR_CH4_RMA_ENABLE_DYNAMIC_AM_PROGRESS", "").strip():
            parts.append("MPIR_CVAR_CH4_RMA_ENABLE_DYNAMIC_AM_PROGRESS="
                         + env["MPIR_CVAR_CH4_RMA_ENABLE_DYNAMIC_AM_PROGRESS"])
        return ", ".join(parts)
    return "unknown (not Open MPI or MPICH)"


@dataclass
class Diagnosis:
    version: str
    component: str
    thread_level: str
    multiple: bool  # the level allows the progress thread (SERIALIZED or MULTIPLE)
    size: int
    off: Measurement | None  # None when no window could be created (``error``)
    thread: Measurement | None  # None when the thread level does not allow the thread
    config_progress: str | None = None  # the config's mpi.progress, when a config was given
    error: str | None = None


def verdict(d: Diagnosis) -> tuple[str, str]:
    """(verdict, fix): one line each."""
    fam = family(d.version)
    if d.off is None:
        fix = "use another one-sided component"
        if fam == "openmpi":
            fix = ("Open MPI 4.1's osc pt2pt refuses MPI_THREAD_MULTIPLE: set MPI4PY_RC_THREAD_LEVEL=serialized "
                   "(the progress thread then polls while the main thread computes), or --mca osc sm/rdma/ucx")
        return f"BROKEN: no RMA window could be created under {d.thread_level} ({d.error})", fix
    if d.off.lost or (d.thread is not None and d.thread.lost):
        return ("BROKEN: values were lost or wrong after the probe (see the table above)",
                "report this MPI build; do not run hpcasync on it")
    if not d.off.waits:
        current = f' (your config: mpi.progress = "{d.config_progress}")' if d.config_progress else ""
        return ("OK: publishes, accumulates and drains complete while the target computes; "
                "no progress thread needed" + current,
                'none needed; mpi.progress = "auto" (the default) or "off" keeps the thread off')
    if d.thread is not None and not d.thread.waits:
        fix = 'set mpi.progress = "thread" in [mpi] (or keep "auto": its start-up probe turns the thread on)'
        if d.config_progress == "off":
            fix = 'your config has mpi.progress = "off": ' + fix
        if fam == "openmpi":
            fix += "; on one node --mca osc sm also avoids it"
        return ("WAITS: operations wait for a target that computes without calling MPI; "
                "the progress thread fixes it", fix)
    if d.thread is None:
        why = f"the progress thread needs MPI_THREAD_SERIALIZED or more, this MPI provides {d.thread_level}"
    else:
        why = "the progress thread does not fix it"
    fix = "use a one-sided component with asynchronous progress"
    if fam == "openmpi":
        fix = "--mca osc sm (one node) or --mca osc rdma; " + fix
    elif fam == "mpich":
        fix = "MPIR_CVAR_ASYNC_PROGRESS=1 (MPICH's own progress thread); " + fix
    if d.thread is None:
        fix = "unset MPI4PY_RC_THREAD_LEVEL (mpi4py asks for MPI_THREAD_MULTIPLE), or " + fix
    return f"WAITS: operations wait for a target that computes; {why}", fix


def _row(name: str, m: Measurement) -> str:
    def cell(seconds: float, waits: bool) -> str:
        return f"{1e3 * seconds:9.3f} ms {'WAITS' if waits else 'ok   '}"

    return (f"  {name:<15} {cell(m.publish_s, m.publish_waits)}  {cell(m.accumulate_s, m.accumulate_waits)}  "
            f"{cell(m.drain_s, m.drain_waits)}  {1e3 * m.push_total_s:9.1f} ms  {'LOST' if m.lost else 'ok'}")


def format_report(d: Diagnosis) -> list[str]:
    if d.off is None:
        v, fix = verdict(d)
        return [f"MPI library:        {d.version.splitlines()[0] if d.version else '?'}",
                f"one-sided:          {d.component}", f"thread level:       {d.thread_level}",
                f"ranks:              {d.size}", f"verdict: {v}", f"fix: {fix}"]
    lines = [
        f"MPI library:        {d.version.splitlines()[0] if d.version else '?'}",
        f"one-sided:          {d.component}",
        f"thread level:       {d.thread_level}"
        + ("" if d.multiple else " (the progress thread needs MPI_THREAD_SERIALIZED or more)"),
        f"ranks:              {d.size}",
        f"probe:              target sleeps {d.off.sleep_s:g} s without MPI; {d.off.ops} publishes + "
        f"{d.off.ops} accumulates into it, then {d.off.ops} reads + drains while its origins sleep; "
        f"an operation > {1e3 * d.off.limit_s:.0f} ms waited",
        f"  {'progress':<15} {'slowest publish':>18}  {'slowest accumulate':>18}  {'slowest drain':>18}  "
        f"{'all pushes':>12}  values",
        _row("off", d.off),
    ]
    if d.thread is not None:
        lines.append(_row("thread", d.thread))
    else:
        lines.append(f"  {'thread':<15} not measured: {d.thread_level} < MPI_THREAD_SERIALIZED")
    v, fix = verdict(d)
    lines += [f"verdict: {v}", f"fix: {fix}"]
    return lines


def diagnose(comm: MPI.Comm, sleep_s: float = 0.5, ops: int = 20, dim: int = 10_000,
             config_progress: str | None = None) -> Diagnosis:
    """Collective over ``comm`` (size ≥ 2): measure without, then with the progress thread."""
    version = library_version()
    multiple = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    off = thread = None
    error = None
    try:
        off = measure(comm, sleep_s, ops, dim, progress_thread=False)
        thread = measure(comm, sleep_s, ops, dim, progress_thread=True) if multiple else None
    except MPI.Exception as exc:  # window allocation fails alike on every rank (a component refusing)
        error = exc.Get_error_string().strip()
    return Diagnosis(version=version, component=one_sided_component(version), thread_level=thread_level_name(),
                     multiple=multiple, size=comm.Get_size(), off=off, thread=thread,
                     config_progress=config_progress, error=error)


__all__ = ["Diagnosis", "diagnose", "family", "format_report", "library_version", "one_sided_component", "verdict"]
