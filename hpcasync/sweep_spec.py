"""Sweep files: parsing, validation and the expansion of a grid of settings into runs.

The file format is described in :mod:`hpcasync.sweep`, which re-exports
everything public here.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import shlex
import sys
import tomllib
from collections.abc import Iterable
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


def _check_graph(cfg: Config, where: str) -> None:
    """Build the topology (cheap) so graph errors (AD-PSGD on a non-bipartite graph…) fail before any run."""
    from hpcasync.engines.build import build_topology  # deferred: pulls in numpy/networkx

    try:
        build_topology(cfg)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
