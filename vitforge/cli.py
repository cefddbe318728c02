"""The `vitforge` command line: one entry point; each area registers its own subcommands.

Each module in ``COMMAND_MODULES`` defines ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=...)``; ``func(args)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

#: Modules that contribute subcommands, in the order `vitforge --help` lists them.
COMMAND_MODULES = (
    "vitforge.quant.cli",
    "vitforge.hw.cli",
    "vitforge.sw.cli",
    "vitforge.sw.runtime",
    "vitforge.sw.projection",
    "vitforge.sim.cli",
    "vitforge.sw.coopt.cli",
    "vitforge.sw.reram.cli",
    "vitforge.boards.cli",
)


class CliError(Exception):
    """An error the user can fix: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitforge",
        description="Hardware-software co-design for 8-bit ViT accelerators: numerics, RTL, models, simulation.",
    )
    parser.add_argument("--version", action="version", version=f"vitforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"vitforge {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
