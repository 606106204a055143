"""The ``greencpn`` command line.

Subcommands live beside the code they drive; each area module exposes
``add_parser(subparsers)`` which registers its subcommand and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit status). User mistakes
(:class:`~greencpn.errors.ConfigError`) are printed without a traceback and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from greencpn import __version__
from greencpn.errors import ConfigError, GreencpnError

# Modules that register subcommands, in the order they appear in --help. A module that is
# missing (an area not built yet) is skipped, so the CLI always starts.
SUBCOMMAND_MODULES = (
    "greencpn.report.cli",  # plan
    "greencpn.sources.cli",  # forecast
    "greencpn.actuate.cli",  # apply
    "greencpn.agent.cli",  # agent
    "greencpn.daemon.cli",  # run, status
    "greencpn.whatif.cli",  # whatif
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greencpn",
        description="Carbon-aware planning and actuation for multi-site GPU/CPU fleets.",
    )
    parser.add_argument("--version", action="version", version=f"greencpn {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"greencpn: error: {exc}", file=sys.stderr)
        return 2
    except GreencpnError as exc:
        print(f"greencpn: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
