"""Sweeps: a grid of settings expanded into runs, run several at a time, finished runs skipped.

A sweep file is TOML::

    # the config every run starts from: a path (relative to this file) and/or inline sections
    [base]
    config = "../digits-grid/case1-adsgd.toml"
    [base.data]
    partition = "heterogeneity"

    # axes: "section.field" = list of values; runs are the cartesian product
    [sweep]
    "algorithm.name" = ["adsgd", "dsgd"]
    delays.case = [1, 2, 3, 4, 5]          # unquoted dotted keys work too

    # optional: fields that vary together (one axis, equal-length lists)
    [[sweep.zip]]
    "topology.n" = [4, 9]
    "topology.shape" = [[2, 2], [3, 3]]

    # optional: drop the combinations that match every key (a value or a list of values)
    [[sweep.exclude]]
    "algorithm.name" = "adpsgd"
    "topology.n" = [1, 3]

    [sweep.options]
    name = "{algorithm.name}-case{delays.case}"   # run directory name; {key} or {key:spec}
    out = "runs/seed000/grid"                     # parent of the run directories (relative to cwd)
    jobs = 2                                      # runs at a time
    engine = "sim"                                # sim (in-process) | mpi (`hpcasync launch`, a subprocess)
    # command = "hpcasync launch {config} --out {out}"   # run each as this subprocess instead
    # timeout = 3600                              # seconds per subprocess run

    # optional: after the runs, `hpcasync report` on them (same meaning as its options)
    [report]
    out = "runs/seed000/grid/report"              # default: OUT/report (OUT as given by --out)
    target = 0.9                                  # default: the runs' eval.target_accuracy
    smooth = 5                                    # time to target on a 5-evaluation moving average
    xmax = 20000                                  # cut the curves' time axis
    time = "virtual"                              # virtual | wall
    loss_target = 0.6                             # scaling: also time to training loss <= 0.6

Every expanded config is validated (fields and graph) before any run starts,
so a typo fails at once. A run whose ``run.h5`` says ``complete = True`` and
whose stored config equals the expanded one is skipped; a partial run, or one
whose config changed, is run again. One run's failure is reported in one line
and does not stop the others. The expanded config of every run is written to
``OUT/_configs/NAME.toml`` (``hpcasync simulate`` runs it alone).
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hpcasync import config as config_mod
from hpcasync.config import Config
from hpcasync.errors import UserError, require

ENGINES = ("sim", "mpi")
OPTION_KEYS = ("name", "out", "jobs", "engine", "command", "timeout")
REPORT_KEYS = ("out", "target", "smooth", "xmax", "time", "loss_target")
RESERVED = ("options", "zip", "exclude")
CONFIGS_DIR = "_configs"
DEFAULT_COMMANDS = {"mpi": [sys.executable, "-m", "hpcasync", "launch", "{config}", "--out", "{out}"]}
# Sections whose fields name a run's setting; run.* is set by the sweep itself.
SWEEPABLE = tuple(f.name for f in fields(Config) if f.name != "run") + ("run",)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w]*\.[A-Za-z_][\w]*)(?::([^{}]*))?\}")
_BAD_NAME = re.compile(r"[^\w.+=,@-]")

# status of a run directory before the sweep runs
NEW, DONE, STALE, PARTIAL = "new", "done", "stale", "partial"


class RunFailedError(Exception):
    """A run's subprocess failed; the message says how (reported as is, without a traceback)."""


@dataclass
class RunSpec:
    """One expanded run: its name, directory, validated config and the axis values that made it."""

    name: str
    out_dir: Path
    config: Config
    values: dict[str, Any]
    config_file: Path

    def label(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.values.items())


@dataclass
class Sweep:
    path: Path
    runs: list[RunSpec]
    out: Path
    jobs: int
    engine: str
    command: list[str] | None
    timeout: float | None
    axes: list[list[str]] = field(default_factory=list)
    report: dict[str, Any] | None = None


@dataclass
class Outcome:
    name: str
    ok: bool
    message: str
    seconds: float = 0.0


@dataclass
class SweepResult:
    done: list[Outcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------- parsing


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"algorithm": {"name": [..]}}`` (unquoted dotted keys) → ``{"algorithm.name": [..]}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, full))
        else:
            out[full] = value
    return out


def _check_key(key: str, where: str) -> tuple[str, str]:
    """``section.field`` of :class:`Config` (run.name / run.out are the sweep's own)."""
    parts = key.split(".")
    require(len(parts) == 2, f"{where} key {key!r}: expected section.field, e.g. algorithm.name")
    section, name = parts
    cfg = Config()
    require(hasattr(cfg, section),
            f"{where} key {key!r}: unknown section [{section}]; expected one of {', '.join(SWEEPABLE)}")
    known = [f.name for f in fields(getattr(cfg, section))]
    require(name in known, f"{where} key {key!r}: unknown field {section}.{name}; expected one of {', '.join(known)}")
    require(key not in ("run.name", "run.out"),
            f"{where} key {key!r}: set by the sweep; use [sweep.options] name / out instead")
    return section, name


def _values(value: Any, key: str, where: str) -> list[Any]:
    require(isinstance(value, list) and len(value) > 0,
            f"{where} key {key!r}: expected a non-empty list of values, got {value!r}")
    return value


def _load_toml(path: Path, what: str) -> dict[str, Any]:
    require(path.is_file(), f"{what} {path}: not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{what} {path}: not valid TOML ({exc})") from None


def _base_raw(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """The base config as nested dicts: the file named by ``[base] config`` then inline sections."""
    base = doc.get("base", {})
    if isinstance(base, str):
        base = {"config": base}
    require(isinstance(base, dict), f"sweep file {path}: [base] must be a table or the path of a config")
    raw: dict[str, Any] = {}
    if "config" in base:
        ref = base["config"]
        require(isinstance(ref, str), f"sweep file {path}: [base] key 'config': expected a path, got {ref!r}")
        raw = _load_toml((path.parent / ref), f"sweep file {path}: [base] config")
    for section, values in base.items():
        if section == "config":
            continue
        require(isinstance(values, dict),
                f"sweep file {path}: [base] key {section!r}: expected a table [base.{section}] of fields")
        for name, value in values.items():
            _check_key(f"{section}.{name}", f"sweep file {path}: [base]")
            raw.setdefault(section, {})[name] = value
    return raw


def _format_value(value: Any, spec: str) -> str:
    if spec:
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)


def render_name(template: str, values: dict[str, Any], where: str) -> str:
    """Fill ``{section.field}`` / ``{section.field:spec}`` placeholders from the run's config values."""
    def sub(m: re.Match[str]) -> str:
        key, spec = m.group(1), m.group(2) or ""
        require(key in values, f"{where}: name placeholder {{{key}}} is not a config field")
        try:
            return _format_value(values[key], spec)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{where}: name placeholder {{{m.group(0)[1:-1]}}}: {exc}") from None
    name = _PLACEHOLDER.sub(sub, template)
    require("{" not in name and "}" not in name,
            f"{where}: name template {template!r} has a placeholder that is not {{section.field}}")
    return _BAD_NAME.sub("_", name)


def _default_name(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        short = key.split(".")[1]
        text = _format_value(value, "")
        parts.append(text if isinstance(value, str) else f"{short}{text}")
    return "-".join(parts) or "run"


def _matches(rule: dict[str, Any], values: dict[str, Any]) -> bool:
    """Every key of ``rule`` has its value (or one of its list of values) in ``values``."""
    for key, want in rule.items():
        have = values.get(key)
        wanted = want if isinstance(want, list) and not isinstance(have, list) else [want]
        if have not in wanted:
            return False
    return True


def _as_flat(cfg: Config) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, sec in cfg.to_dict().items() for k, v in sec.items()}


def load_sweep(path: str | Path, overrides: Iterable[str] = (), *, out: str | None = None,
               jobs: int | None = None, only: Iterable[str] = (), check_graphs: bool = True) -> Sweep:
    """Parse and expand a sweep file; every run's config is validated before this returns.

    ``overrides`` are ``section.field=value`` strings applied to the base
    (``--set``); ``out`` / ``jobs`` replace the file's options; ``only`` keeps
    the runs whose name matches one of the glob patterns. Raises UserError
    naming the key at fault.
    """
    path = Path(path)
    doc = _load_toml(path, "sweep file")
    unknown = set(doc) - {"base", "sweep", "report"}
    require(not unknown, f"sweep file {path}: unknown table(s) {', '.join(sorted(unknown))}; "
                         "expected [base], [sweep], [report]")
    raw_base = _base_raw(doc, path)
    for text in overrides:
        section, name, value = config_mod.parse_override(text)
        _check_key(f"{section}.{name}", "--set")
        raw_base.setdefault(section, {})[name] = value

    sweep_tbl = doc.get("sweep", {})
    require(isinstance(sweep_tbl, dict), f"sweep file {path}: [sweep] must be a table")
    options = sweep_tbl.get("options", {})
    require(isinstance(options, dict), f"sweep file {path}: [sweep.options] must be a table")
    for key in options:
        require(key in OPTION_KEYS,
                f"sweep file {path}: [sweep.options] key {key!r}: unknown option; expected one of "
                f"{', '.join(OPTION_KEYS)}")
    where = f"sweep file {path}: [sweep]"

    # axes: plain keys (file order), then each zip group as one axis
    axes: list[list[dict[str, Any]]] = []
    axis_keys: list[list[str]] = []
    plain = _flatten({k: v for k, v in sweep_tbl.items() if k not in RESERVED})
    for key, value in plain.items():
        _check_key(key, where)
        axes.append([{key: v} for v in _values(value, key, where)])
        axis_keys.append([key])
    zips = sweep_tbl.get("zip", [])
    require(isinstance(zips, list), f"sweep file {path}: sweep.zip must be an array of tables [[sweep.zip]]")
    for k, group in enumerate(zips):
        zwhere = f"sweep file {path}: [[sweep.zip]] #{k + 1}"
        require(isinstance(group, dict) and group, f"{zwhere}: expected a table of section.field = [values]")
        flat = _flatten(group)
        lengths = {}
        for key, value in flat.items():
            _check_key(key, zwhere)
            lengths[key] = len(_values(value, key, zwhere))
        require(len(set(lengths.values())) == 1,
                f"{zwhere}: lists differ in length ({', '.join(f'{k}: {n}' for k, n in lengths.items())})")
        n = next(iter(lengths.values()))
        axes.append([{key: flat[key][i] for key in flat} for i in range(n)])
        axis_keys.append(list(flat))
    seen: set[str] = set()
    for keys in axis_keys:
        for key in keys:
            require(key not in seen, f"sweep file {path}: key {key!r} appears on two axes")
            seen.add(key)
    excludes = sweep_tbl.get("exclude", [])
    require(isinstance(excludes, list), f"sweep file {path}: sweep.exclude must be an array of tables")
    exclude_rules = []
    for k, rule in enumerate(excludes):
        ewhere = f"sweep file {path}: [[sweep.exclude]] #{k + 1}"
        require(isinstance(rule, dict) and rule, f"{ewhere}: expected a table of section.field = value(s)")
        flat = _flatten(rule)
        for key in flat:
            _check_key(key, ewhere)
        exclude_rules.append(flat)

    engine = options.get("engine", "sim")
    require(engine in ENGINES, f"sweep file {path}: [sweep.options] key 'engine': expected one of "
                               f"{', '.join(ENGINES)}, got {engine!r}")
    out_dir = Path(out if out is not None else options.get("out", f"runs/{path.stem}"))
    n_jobs = jobs if jobs is not None else options.get("jobs", 1 if engine == "mpi" else 2)
    require(isinstance(n_jobs, int) and n_jobs >= 1,
            f"sweep file {path}: [sweep.options] key 'jobs': expected an integer >= 1, got {n_jobs!r}")
    command = options.get("command", DEFAULT_COMMANDS.get(engine))
    if isinstance(command, str):
        command = shlex.split(command)
    if isinstance(command, list) and command[:1] == ["hpcasync"]:
        command = [sys.executable, "-m", "hpcasync", *command[1:]]  # this installation's, whatever PATH says
    require(command is None or (isinstance(command, list) and all(isinstance(c, str) for c in command)),
            f"sweep file {path}: [sweep.options] key 'command': expected a list of strings or a command line")
    timeout = options.get("timeout")
    require(timeout is None or (isinstance(timeout, int | float) and timeout > 0),
            f"sweep file {path}: [sweep.options] key 'timeout': expected seconds > 0, got {timeout!r}")
    template = options.get("name")
    require(template is None or isinstance(template, str),
            f"sweep file {path}: [sweep.options] key 'name': expected a string template")

    patterns = list(only)
    defaults = _as_flat(Config())
    runs: list[RunSpec] = []
    names: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*axes) if axes else [()]:
        values: dict[str, Any] = {}
        for part in combo:
            values.update(part)
        raw = {s: dict(v) if isinstance(v, dict) else v for s, v in raw_base.items()}
        for key, value in values.items():
            section, name = key.split(".")
            raw.setdefault(section, {})[name] = value
        if exclude_rules:
            merged = {**defaults, **_flatten(raw)}
            if any(_matches(rule, merged) for rule in exclude_rules):
                continue
        label = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "the base config"
        rwhere = f"sweep file {path}: run ({label})"
        try:
            cfg = config_mod.from_dict(raw, source="config")
        except UserError as exc:
            raise UserError(f"{rwhere}: {exc}") from None
        name = render_name(template, _as_flat(cfg), rwhere) if template else _default_name(values)
        if name in names:
            other = ", ".join(f"{k}={v!r}" for k, v in names[name].items())
            raise UserError(f"sweep file {path}: runs ({label}) and ({other}) get the same name {name!r}; "
                            "put the fields that differ in [sweep.options] name")
        names[name] = values
        if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        cfg.run.name = name
        cfg.run.out = str(out_dir)
        if check_graphs:
            _check_graph(cfg, f"sweep file {path}: run {name}")
        runs.append(RunSpec(name=name, out_dir=out_dir / name, config=cfg, values=values,
                            config_file=out_dir / CONFIGS_DIR / f"{name}.toml"))
    require(runs or patterns, f"sweep file {path}: every combination is excluded; nothing to run")
    return Sweep(path=path, runs=runs, out=out_dir, jobs=n_jobs, engine=engine, command=command,
                 timeout=None if timeout is None else float(timeout), axes=axis_keys,
                 report=_report_options(doc, path, out_dir))


def _report_options(doc: dict[str, Any], path: Path, out_dir: Path) -> dict[str, Any] | None:
    """The [report] table, checked, with defaults filled in; None when the file has none."""
    if "report" not in doc:
        return None
    rep = doc["report"]
    where = f"sweep file {path}: [report]"
    require(isinstance(rep, dict), f"{where} must be a table")
    for key in rep:
        require(key in REPORT_KEYS, f"{where} key {key!r}: unknown option; expected one of {', '.join(REPORT_KEYS)}")
    target = rep.get("target")
    require(target is None or (isinstance(target, int | float) and 0 < target <= 1),
            f"{where} key 'target': expected an accuracy in (0, 1], got {target!r}")
    smooth = rep.get("smooth", 1)
    require(isinstance(smooth, int) and smooth >= 1 and smooth % 2 == 1,
            f"{where} key 'smooth': expected an odd number of evaluations >= 1, got {smooth!r}")
    xmax = rep.get("xmax")
    require(xmax is None or (isinstance(xmax, int | float) and xmax > 0),
            f"{where} key 'xmax': expected a time > 0, got {xmax!r}")
    time_key = rep.get("time")
    require(time_key in (None, "virtual", "wall"), f"{where} key 'time': expected virtual or wall, got {time_key!r}")
    loss_target = rep.get("loss_target")
    require(loss_target is None or (isinstance(loss_target, int | float) and loss_target > 0),
            f"{where} key 'loss_target': expected a loss > 0, got {loss_target!r}")
    out = rep.get("out", str(out_dir / "report"))
    require(isinstance(out, str), f"{where} key 'out': expected a directory path, got {out!r}")
    return {"out": Path(out), "target": None if target is None else float(target), "smooth": smooth,
            "xmax": None if xmax is None else float(xmax), "time_key": time_key,
            "loss_target": None if loss_target is None else float(loss_target)}


def report_sweep(sweep: Sweep, echo: Callable[[str], None] = print) -> Path | None:
    """``[report]`` of the sweep file on its finished runs (skipped without [report] or finished runs)."""
    if sweep.report is None:
        return None
    from hpcasync.results.report import make_report

    dirs = [spec.out_dir for spec in sweep.runs if (spec.out_dir / "run.h5").is_file()]
    if not dirs:
        echo(f"report: no finished runs under {sweep.out}; nothing to report")
        return None
    opts = sweep.report
    result = make_report(dirs, opts["out"], target=opts["target"], time_key=opts["time_key"], echo=False,
                         smooth=opts["smooth"], xmax=opts["xmax"], loss_target=opts["loss_target"])
    echo(f"report: {len(dirs)} runs -> {opts['out']} ({len(result['files'])} files)")
    return opts["out"]


def _check_graph(cfg: Config, where: str) -> None:
    """Build the topology (cheap) so graph errors (AD-PSGD on a non-bipartite graph…) fail before any run."""
    from hpcasync.engines.build import build_topology  # deferred: pulls in numpy/networkx

    try:
        build_topology(cfg)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- state of run directories


def run_status(spec: RunSpec) -> str:
    """new (no run.h5) | done (complete, same config) | stale (complete, config changed) | partial."""
    from hpcasync.results.reader import open_run

    if not (spec.out_dir / "run.h5").is_file():
        return NEW
    try:
        run = open_run(spec.out_dir)
    except UserError:
        return PARTIAL
    if not run.complete:
        return PARTIAL
    return DONE if run.config_toml == spec.config.to_toml() else STALE


def _clear_run_dir(out_dir: Path) -> None:
    """Remove the files a previous attempt left (run.h5, rank-*.h5); nothing else is touched."""
    if not out_dir.is_dir():
        return
    for p in [out_dir / "run.h5", *out_dir.glob("rank-*.h5")]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


# --------------------------------------------------------------------------- running one run (in a worker)


def _limit_threads() -> None:
    """One BLAS/numba thread per worker: the workers are the parallelism (DESIGN §5)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return
    threadpool_limits(1)


def _summary(evaluations: list[dict[str, float]], target: float) -> str:
    from hpcasync.results.analysis import time_to_target

    if not evaluations:
        return "no evaluations"
    last = evaluations[-1]
    ttt = time_to_target([e["virtual_time"] for e in evaluations],
                         [e.get("test_accuracy", float("nan")) for e in evaluations], target)
    reached = f"{ttt:g}" if ttt is not None else "not reached"
    return (f"t={last['virtual_time']:.0f} loss={last.get('train_loss', float('nan')):.4f} "
            f"acc={last.get('test_accuracy', float('nan')):.4f} t_{target:g}={reached}")


def execute_sim(config_toml: str, out_dir: str) -> str:
    """Run one simulated config (in this process); return a one-line summary."""
    from hpcasync.engines.sim.runner import simulate

    cfg = config_mod.from_dict(tomllib.loads(config_toml), source=f"run {out_dir}")
    sim = simulate(cfg, Path(out_dir))
    return _summary(sim.evaluations, cfg.eval.target_accuracy)


def execute_command(command: list[str], timeout: float | None) -> str:
    """Run one subprocess; on failure, RunFailedError with its exit status and last stderr line."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise RunFailedError(f"cannot start {command[0]!r}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise RunFailedError(f"timed out after {timeout:g} s: {shlex.join(command)}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else "no output"
        raise RunFailedError(f"exit status {proc.returncode}: {why}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "ok"


def _execute(job: dict[str, Any]) -> Outcome:
    """Worker entry point: never raises, so one run's failure cannot stop the others."""
    start = time.perf_counter()
    try:
        _limit_threads()
        _clear_run_dir(Path(job["out_dir"]))
        if job["command"] is None:
            message = execute_sim(job["config_toml"], job["out_dir"])
        else:
            message = execute_command(job["command"], job["timeout"])
        return Outcome(job["name"], True, message, time.perf_counter() - start)
    except (UserError, RunFailedError) as exc:
        return Outcome(job["name"], False, str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - reported, never re-raised: the sweep goes on
        where = traceback.extract_tb(exc.__traceback__)
        at = f" (at {Path(where[-1].filename).name}:{where[-1].lineno})" if where else ""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return Outcome(job["name"], False, f"{type(exc).__name__}: {text}{at}", time.perf_counter() - start)


def job_for(sweep: Sweep, spec: RunSpec) -> dict[str, Any]:
    """The picklable description of one run handed to a worker."""
    command = None
    if sweep.command is not None:
        command = [c.replace("{config}", str(spec.config_file)).replace("{out}", str(spec.out_dir))
                   .replace("{name}", spec.name) for c in sweep.command]
    return {"name": spec.name, "out_dir": str(spec.out_dir), "config_toml": spec.config.to_toml(),
            "command": command, "timeout": sweep.timeout}


def write_configs(sweep: Sweep, specs: Iterable[RunSpec]) -> None:
    for spec in specs:
        spec.config_file.parent.mkdir(parents=True, exist_ok=True)
        spec.config_file.write_text(f"# generated by `hpcasync sweep {sweep.path}`; run {spec.name}\n"
                                    + spec.config.to_toml())


# --------------------------------------------------------------------------- the sweep


def run_sweep(sweep: Sweep, *, force: bool = False, echo: Callable[[str], None] = print,
              progress: bool = True) -> SweepResult:
    """Run every run of ``sweep`` that is not finished yet, ``sweep.jobs`` at a time."""
    from tqdm import tqdm

    result = SweepResult()
    todo: list[RunSpec] = []
    for spec in sweep.runs:
        status = NEW if force else run_status(spec)
        if status == DONE:
            result.skipped.append(spec.name)
        else:
            if status in (STALE, PARTIAL):
                echo(f"rerun {spec.name}: {'its config changed' if status == STALE else 'it did not finish'}")
            todo.append(spec)
    if sweep.runs:
        write_configs(sweep, sweep.runs)
    echo(f"sweep {sweep.path}: {len(sweep.runs)} runs, {len(result.skipped)} already done, "
         f"{len(todo)} to run, {min(sweep.jobs, len(todo))} at a time -> {sweep.out}")
    if not todo:
        return result
    jobs = [job_for(sweep, spec) for spec in todo]
    start = time.perf_counter()
    show = progress and sys.stderr.isatty()
    with tqdm(total=len(jobs), unit="run", desc="sweep", disable=not show, dynamic_ncols=True) as bar:
        def record(outcome: Outcome) -> None:
            k = len(result.done) + len(result.failed) + 1
            where = f"[{k}/{len(jobs)}]"
            if outcome.ok:
                result.done.append(outcome)
                bar.write(f"{where} done   {outcome.name} ({outcome.seconds:.1f} s): {outcome.message}")
            else:
                result.failed.append(outcome)
                bar.write(f"{where} FAILED {outcome.name} ({outcome.seconds:.1f} s): {outcome.message}")
            bar.update(1)

        if sweep.jobs == 1:
            for job in jobs:
                record(_execute(job))
        else:
            _run_pool(jobs, sweep.jobs, record)
    if result.failed:
        echo(f"{len(result.failed)} of {len(jobs)} runs failed:")
        for o in result.failed:
            echo(f"  {o.name}: {o.message}")
    echo(f"sweep {sweep.path}: {len(result.done)} done, {len(result.skipped)} skipped, {len(result.failed)} failed "
         f"in {time.perf_counter() - start:.0f} s")
    return result


def _run_pool(jobs: list[dict[str, Any]], workers: int, record: Callable[[Outcome], None]) -> None:
    """At most ``workers`` runs in flight. A worker that dies (killed, segfault) breaks the pool: the runs
    in flight at that moment are reported failed, a new pool takes the rest (a re-run retries them)."""
    queue = list(jobs)
    pool = ProcessPoolExecutor(max_workers=workers)
    inflight: dict[Future[Outcome], dict[str, Any]] = {}
    try:
        while queue or inflight:
            while queue and len(inflight) < workers:
                job = queue.pop(0)
                inflight[pool.submit(_execute, job)] = job
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in finished:
                job = inflight.pop(fut)
                try:
                    record(fut.result())
                except BrokenProcessPool:
                    broken = True
                    record(Outcome(job["name"], False, "its worker process died (killed or crashed)"))
            if broken:
                for job in inflight.values():
                    record(Outcome(job["name"], False, "its worker process died (killed or crashed)"))
                inflight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(max_workers=workers)
    except BaseException:
        for fut in inflight:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
