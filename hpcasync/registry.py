"""Name → object registries: algorithms, problems, datasets, topologies, delay models.

Every pluggable kind has one :class:`Registry`. A module registers what it
defines (``@ALGORITHMS.register`` style decorators in each kind's package);
the registry finds the modules itself, three ways, the first time a name is
looked up:

* **discovery**: every module of the kind's package (``pkgutil``), so adding
  a file is all it takes to add an algorithm;
* **entry points**: installed distributions may declare
  ``[project.entry-points."hpcasync.algorithms"] myalg = "mypkg.mod:MyAlg"``
  (groups ``hpcasync.algorithms``, ``hpcasync.problems``, ``hpcasync.datasets``);
* **plug-in paths**: a name ``"package.module:Object"`` imports that object,
  so a researcher's class runs without being registered anywhere.

Lookups that fail raise :class:`~hpcasync.errors.UserError` naming the
config field and the registered names (one line, exit status 2).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

from hpcasync.errors import UserError

T = TypeVar("T")


def _import_module(name: str) -> Any:
    """``import name``, also from the current directory: the ``hpcasync`` console script does not
    put it on ``sys.path`` as ``python -m`` does, and that is where a researcher's module often is."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if exc.name != name.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def import_object(spec: str, where: str) -> Any:
    """The object ``"package.module:attr.path"`` names; a :class:`UserError` if it cannot be imported.
    The module may be installed, on ``PYTHONPATH`` or in the current directory."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"config field {where}: {spec!r} is not of the form 'package.module:Object'")
    try:
        obj: Any = _import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of a user's module is a user error
        raise UserError(f"config field {where}: cannot import module {module_name!r} "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"config field {where}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Objects of one kind by name.

    ``kind`` ("algorithm") and ``field`` ("algorithm.name") word the errors;
    ``package`` is searched for modules to import on first use; ``group`` is
    an entry-point group; ``check(obj)`` returns why ``obj`` is not of this
    kind (or None), applied to plug-ins and entry points.
    """

    def __init__(self, kind: str, field: str, *, package: str | None = None, group: str | None = None,
                 check: Callable[[Any], str | None] | None = None, plugins: bool = False) -> None:
        self.kind = kind
        self.field = field
        self.package = package
        self.group = group
        self.check = check
        self.plugins = plugins
        self._items: dict[str, T] = {}
        self._entry_points: dict[str, metadata.EntryPoint] = {}
        #: modules of ``package`` skipped because an optional dependency is missing (module → why)
        self.unavailable: dict[str, str] = {}
        self._discovered = False

    # -- registering ----------------------------------------------------------------------------
    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name`` (a later registration of the same name replaces it)."""
        if not name or ":" in name:
            raise ValueError(f"{self.kind} name {name!r}: must be non-empty and contain no ':'")
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def deco(obj: T) -> T:
            return self.add(name, obj)
        return deco

    # -- discovery ------------------------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self.package is not None:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if info.name.startswith("_"):
                    continue
                try:
                    importlib.import_module(f"{self.package}.{info.name}")
                except ModuleNotFoundError as exc:
                    # an optional dependency (torch…) that is not installed hides that module only;
                    # a missing hpcasync module is a bug and stays loud
                    if exc.name is None or exc.name.split(".")[0] == "hpcasync":
                        raise
                    self.unavailable[info.name] = f"needs {exc.name}, which is not installed"
        if self.group is not None:
            for ep in metadata.entry_points(group=self.group):
                if ep.name not in self._items:
                    self._entry_points[ep.name] = ep

    def names(self) -> list[str]:
        """Every registered name: in registration order, then entry points."""
        self._discover()
        return [*self._items, *(n for n in self._entry_points if n not in self._items)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _expected(self) -> str:
        extra = ", or 'package.module:Object'" if self.plugins else ""
        skipped = "; not loaded: " + ", ".join(f"{m} ({why})" for m, why in self.unavailable.items()) \
            if self.unavailable else ""
        return f"expected one of {', '.join(self.names())}{extra}{skipped}"

    def _checked(self, obj: Any, what: str) -> T:
        problem = self.check(obj) if self.check is not None else None
        if problem is not None:
            article = "an" if self.kind[0] in "aeiou" else "a"
            raise UserError(f"config field {self.field}: {what} is not {article} {self.kind} ({problem})")
        return obj  # type: ignore[no-any-return]

    def get(self, name: str) -> T:
        """The object registered as ``name``, or the plug-in ``name`` names."""
        if not isinstance(name, str) or not name:
            raise UserError(f"config field {self.field}: expected a name, got {name!r}; {self._expected()}")
        if ":" in name:
            if not self.plugins:
                raise UserError(f"config field {self.field}: unknown name {name!r}; {self._expected()}")
            return self._checked(import_object(name, self.field), repr(name))
        self._discover()
        if name in self._items:
            return self._items[name]
        if name in self._entry_points:
            ep = self._entry_points[name]
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken installed plug-in is reported, not raised
                raise UserError(f"config field {self.field}: entry point {name!r} ({ep.value}) of group "
                                f"{self.group} cannot be loaded ({type(exc).__name__}: {exc})") from None
            return self.add(name, self._checked(obj, f"entry point {name!r} ({ep.value})"))
        raise UserError(f"config field {self.field}: unknown name {name!r}; {self._expected()}")

    def validate(self, name: str) -> None:
        """Raise the :class:`UserError` :meth:`get` would (importing a plug-in to check it)."""
        self.get(name)
