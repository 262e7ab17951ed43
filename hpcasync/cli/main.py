"""The ``hpcasync`` command: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import importlib
import sys

from hpcasync.errors import EXIT_USER_ERROR, UserError

# subcommand -> module in hpcasync.cli exposing add_parser(subparsers) and run(args) -> int
SUBCOMMANDS = {
    "simulate": "simulate",
    "check": "check",
    "run": "run",
    "launch": "launch",
    "report": "report",
    "sweep": "sweep",
    "jobscript": "jobscript",
    "doctor": "doctor",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` just that subcommand's module is imported.

    Every MPI rank parses the command line, and importing all subcommands
    (report pulls in matplotlib) would cost each rank most of a second.
    """
    parser = argparse.ArgumentParser(prog="hpcasync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = {only: SUBCOMMANDS[only]} if only in SUBCOMMANDS else SUBCOMMANDS
    for module in wanted.values():
        try:
            mod = importlib.import_module(f"hpcasync.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hpcasync.cli.{module}":
                continue
            raise
        p = mod.add_parser(sub)
        p.set_defaults(handler=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"hpcasync {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"hpcasync {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
