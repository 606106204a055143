"""Slurm SuspendProgram / ResumeProgram / ResumeFailProgram entry point.

Slurm's power saving calls these programs with one argument, a hostlist expression of the
nodes to power down or up (``fake[1-3]``). greencpn powers the hardware with any of its node
hooks (``ipmi``, ``wol``, ``command``, ``agent``), named in a small TOML file::

    # /etc/greencpn/power-hook.toml
    kind = "ipmi"
    user = "admin"
    password_file = "/etc/greencpn/ipmi.pass"
    [bmcs]
    node01 = "10.0.0.101"

Usage (slurm.conf does not pass extra arguments, so point it at a 2-line wrapper)::

    #!/bin/sh
    exec /opt/greencpn/.venv/bin/python -m greencpn.actuate.suspend_resume \\
        --hook-config /etc/greencpn/power-hook.toml --record /var/log/greencpn/power.jsonl \\
        resume "$@"

``python -m greencpn.actuate.suspend_resume [--hook-config FILE] [--record FILE] [--log-file FILE]
suspend|resume|fail HOSTLIST``

* ``suspend`` → ``hook.power_off(nodes)``; ``resume`` → ``hook.power_on(nodes)``;
  ``fail`` (ResumeFailProgram) → records the nodes and does nothing else.
* Without ``--hook-config`` (or ``GREENCPN_POWER_HOOK_CONFIG``) the call is only recorded.
* ``--record`` appends one JSON line per call (UTC time, action, hostlist, nodes, changes, error).
* Exit status: 0 done, 1 the hook failed (logged), 2 bad usage or config.

A ``slurm`` hook is refused here: Slurm calling itself would loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from greencpn.actuate.base import Change
from greencpn.actuate.hooks import make_hook
from greencpn.actuate.hostlist import expand_unique
from greencpn.config import validate_hook_table
from greencpn.errors import ConfigError, GreencpnError

log = logging.getLogger("greencpn.suspend_resume")

ENV_HOOK_CONFIG = "GREENCPN_POWER_HOOK_CONFIG"
ENV_RECORD = "GREENCPN_POWER_RECORD"


def load_hook_table(path: Path) -> dict[str, object]:
    """Read the hook TOML file (top-level ``kind`` + keys, or a ``[hook]`` table)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            "file not found",
            source=str(path),
            fix=f"create it or fix --hook-config / {ENV_HOOK_CONFIG}",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"not valid TOML: {exc}", source=str(path), fix="check the quoting and brackets"
        ) from None
    table = data.get("hook", data)
    if not isinstance(table, dict) or "kind" not in table:
        raise ConfigError(
            "no hook 'kind'",
            source=str(path),
            field="kind",
            fix='write kind = "ipmi" (or command, wol, agent)',
        )
    if table["kind"] == "slurm":
        raise ConfigError(
            "a slurm hook cannot be Slurm's own Suspend/ResumeProgram",
            source=str(path),
            field="kind",
            fix="use the hook that powers the hardware: ipmi, wol, command, agent",
        )
    return table


def _record(path: Path | None, entry: dict[str, object]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, default=str) + "\n")


def run(
    action: str, hostlist: str, *, hook_config: Path | None, record: Path | None, now: datetime
) -> int:
    """Do one Suspend/Resume/ResumeFail call; return the process exit status."""
    entry: dict[str, object] = {
        "time": now.isoformat(),
        "action": action,
        "hostlist": hostlist,
        "pid": os.getpid(),
    }
    try:
        nodes = expand_unique(hostlist)
        entry["nodes"] = nodes
        changes: list[Change] = []
        if action != "fail" and hook_config is not None:
            table = load_hook_table(hook_config)
            # the hook models of [pools.hook]: the same checks, field names and fixes
            model = validate_hook_table(table, source=str(hook_config))
            hook = make_hook(model, source=str(hook_config))
            entry["hook"] = hook.name
            changes = hook.power_off(nodes) if action == "suspend" else hook.power_on(nodes)
        entry["changes"] = [asdict(c) for c in changes]
        log.info("%s %s: %d change(s)", action, hostlist, sum(c.changed for c in changes))
        _record(record, entry)
        return 0
    except ConfigError as exc:
        entry["error"] = str(exc)
        log.error("%s %s: %s", action, hostlist, exc)
        _record(record, entry)
        return 2
    except GreencpnError as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
        done = getattr(exc, "changes", None)
        if done:
            entry["changes"] = [asdict(c) for c in done]
        log.error("%s %s failed: %s", action, hostlist, exc)
        _record(record, entry)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m greencpn.actuate.suspend_resume",
        description="Slurm SuspendProgram/ResumeProgram/ResumeFailProgram backed by a greencpn hook",
    )
    parser.add_argument(
        "--hook-config",
        type=Path,
        default=os.environ.get(ENV_HOOK_CONFIG),
        help=f"TOML file with the hook (default: ${ENV_HOOK_CONFIG})",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=os.environ.get(ENV_RECORD),
        help=f"append one JSON line per call here (default: ${ENV_RECORD})",
    )
    parser.add_argument("--log-file", type=Path, help="log here (default: stderr)")
    parser.add_argument("action", choices=["suspend", "resume", "fail"])
    parser.add_argument("hostlist", nargs="+", help="Slurm hostlist expression, e.g. node[1-4]")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        filename=str(args.log_file) if args.log_file else None,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return run(
        args.action,
        ",".join(args.hostlist),
        hook_config=args.hook_config,
        record=args.record,
        now=datetime.now(UTC),
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


_CONSOLE = {
    "suspend": ("greencpn-slurm-suspend", "SuspendProgram", "powers HOSTLIST off"),
    "resume": ("greencpn-slurm-resume", "ResumeProgram", "powers HOSTLIST on"),
    "fail": ("greencpn-slurm-resume-fail", "ResumeFailProgram", "records HOSTLIST, does nothing"),
}


def _console(action: str, argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        prog, slurm_name, does = _CONSOLE[action]
        print(
            f"usage: {prog} [--hook-config FILE] [--record FILE] [--log-file FILE] HOSTLIST\n\n"
            f"slurm.conf {slurm_name}: {does} through the hook in --hook-config "
            f"(default ${ENV_HOOK_CONFIG}); --record (default ${ENV_RECORD}) appends one JSON "
            "line per call. Exit status: 0 done, 1 the hook failed, 2 bad usage or config.\n"
            f"Same as: python -m greencpn.actuate.suspend_resume [options] {action} HOSTLIST"
        )
        return 0
    return main([action, *args])


def suspend_main(argv: Sequence[str] | None = None) -> int:
    """``greencpn-slurm-suspend [--hook-config F] HOSTLIST`` (slurm.conf ``SuspendProgram``)."""
    return _console("suspend", argv)


def resume_main(argv: Sequence[str] | None = None) -> int:
    """``greencpn-slurm-resume [--hook-config F] HOSTLIST`` (slurm.conf ``ResumeProgram``)."""
    return _console("resume", argv)


def resume_fail_main(argv: Sequence[str] | None = None) -> int:
    """``greencpn-slurm-resume-fail HOSTLIST`` (slurm.conf ``ResumeFailProgram``)."""
    return _console("fail", argv)
