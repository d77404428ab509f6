"""The ``pynas`` command.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together and turns user errors into
one line on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pynas.errors import UsageError

# name -> (module, one-line help)
SUBCOMMANDS = {
    "info": ("pynas.info", "show the build (backends, CUDA architectures) and runtime"),
    "bench": ("pynas.bench_cli", "run kernel and search benchmarks"),
    "search": ("pynas.search.cli", "search for an architecture"),
    "show": ("pynas.search.show", "redraw the plots of a run and print its summary"),
    "train": ("pynas.train_cli", "retrain a found architecture from scratch, test and export it"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pynas", description="Neural architecture search for PyTorch.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.version:
            from pynas import __version__

            print(__version__)
            return 0
        if args.command is None:
            parser.print_help()
            return 2
        return int(importlib.import_module(args._module).run(args) or 0)
    except UsageError as error:
        print(f"pynas: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pynas: interrupted", file=sys.stderr)
        return 130
