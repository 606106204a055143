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
import os
import sys

from greencpn import __version__
from greencpn.errors import ConfigError, GreencpnError
from greencpn.logs import StderrHandler

# Modules that register subcommands, in the order they appear in --help. A module that is
# missing (an area not built yet) is skipped, so the CLI always starts.
SUBCOMMAND_MODULES = (
    "greencpn.report.cli",  # plan
    "greencpn.sources.cli",  # forecast
    "greencpn.actuate.cli",  # apply
    "greencpn.agent.cli",  # agent
    "greencpn.check",  # check
    "greencpn.daemon.cli",  # run, status
    "greencpn.whatif.cli",  # whatif
    "greencpn.gpumodels.cli",  # models fit
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greencpn",
        description="Carbon-aware planning and actuation for multi-site GPU/CPU fleets.",
    )
    parser.add_argument("--version", action="version", version=f"greencpn {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v progress, -vv debug, -vvv also Pyomo/HiGHS internals (also after the command)",
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


def _take_verbosity(argv: list[str]) -> tuple[int, list[str]]:
    """Count ``-v``/``-vv``/``--verbose`` anywhere before ``--`` (so ``greencpn plan -v``
    works as ``greencpn -v plan``) and return the other arguments."""
    count, rest = 0, []
    for i, arg in enumerate(argv):
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg == "--verbose":
            count += 1
        elif len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"}:
            count += len(arg) - 1
        else:
            rest.append(arg)
    return count, rest


def setup_logging(verbose: int) -> None:
    """``-v``: greencpn's progress (INFO); ``-vv``: greencpn's debug; ``-vvv``: also Pyomo's
    and other libraries' debug logs and HiGHS's solver log. Libraries stay at WARNING below
    ``-vvv`` (their debug output is tens of thousands of lines on the demo)."""
    root_level = logging.DEBUG if verbose >= 3 else logging.WARNING
    if not logging.getLogger().handlers:
        handler = StderrHandler()  # the current sys.stderr at each record
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(root_level)
    # 0: inherit the root's WARNING (NOTSET keeps a caller's own capture, e.g. pytest's, working)
    own = {0: logging.NOTSET, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.getLogger("greencpn").setLevel(own)
    if verbose >= 3:
        os.environ.setdefault("GREENCPN_SOLVER_LOG", "1")  # read by greencpn.optimize.milp


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    verbose, rest = _take_verbosity(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    args.verbose = verbose
    setup_logging(verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    out = getattr(args, "out", None) if args.command == "plan" else None
    if isinstance(out, str | os.PathLike) and os.path.exists(out) and not os.path.isdir(out):
        print(
            f"greencpn: error: --out {out}: is a file, not a directory — fix: "
            "pass a directory (it is created if missing)",
            file=sys.stderr,
        )
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"greencpn: error: {exc}", file=sys.stderr)
        return 2
    except GreencpnError as exc:
        print(f"greencpn: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path the user gave that cannot be read or written
        print(f"greencpn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
