"""``greencpn apply``: show the diff between a plan slot and the fleet, then apply it safely.

Exit status: 0 applied, nothing to do, dry run or shadow mode; 1 partial (some step failed,
was skipped or deferred — all recorded in the ledger); 2 user error (bad plan, config, slot);
3 fleet not observable (some nodes' status unknown; shown and counted, in every mode).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greencpn.actuate.apply import Backends, apply_plan, load_plan
from greencpn.actuate.base import GpuBackend, NodePowerHook
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.plan_file import check_plan_against_config
from greencpn.actuate.safety import ControlSettings
from greencpn.clock import SystemClock
from greencpn.config import FleetConfig, load_config
from greencpn.errors import ConfigError

DEFAULT_STATE_DIR = ".greencpn"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "apply",
        help="apply one slot of a plan (node power, GPU caps) safely; shadow mode by default",
        description=(
            "Show the diff between a plan's slot and the observed fleet, then apply it in a safe "
            "order (lower caps, drain+power off, power on, wait for boot, resume, raise caps). "
            "Nothing is changed unless actuation is allowed (--allow-actuation or "
            "allow_actuation = true in control.toml beside the config). See docs/apply.md."
        ),
    )
    p.add_argument("plan", help="plan.json written by 'greencpn plan'")
    p.add_argument("--slot", default="now", help="slot index or 'now' (default: now)")
    p.add_argument(
        "--dry-run", action="store_true", help="show the diff only; change and record nothing"
    )
    p.add_argument(
        "--state-dir",
        default=None,
        help=f"where the ledger lives (default: $GREENCPN_STATE_DIR or ./{DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--config", default=None, help="fleet config (default: the one named in the plan)"
    )
    p.add_argument(
        "--control",
        default=None,
        help="control settings TOML (default: control.toml beside the config, if any)",
    )
    p.add_argument(
        "--allow-actuation",
        action="store_true",
        help="act on hardware (otherwise shadow mode unless control.toml allows it)",
    )
    p.add_argument(
        "--allow-other-slot",
        action="store_true",
        help="with actuation allowed, apply a --slot N that is not the current slot "
        "(otherwise refused; dry run and shadow mode only warn)",
    )
    p.add_argument(
        "--clear-failed",
        action="append",
        default=[],
        metavar="NODE",
        help="forget that NODE failed to boot (operator fixed it); repeatable",
    )
    p.add_argument(
        "--undo-jobs",
        action="store_true",
        help="restore every scheduler job greencpn changed ([job_actuation]) and exit",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON document (schema greencpn.apply-report/1); "
        "progress goes to stderr",
    )
    p.add_argument(
        "--fake-backends",
        action="store_true",
        help="use in-memory fake nodes (all on, idle) and GPUs (at default caps): a demo",
    )
    p.set_defaults(func=run_apply)
    from greencpn.actuate.jobs.submit import add_parser as add_submit_parser

    add_submit_parser(subparsers)  # greencpn submit: multi-cluster job submission
    from greencpn.actuate.jobs.failsafe import add_parser as add_jobs_parser

    add_jobs_parser(subparsers)  # greencpn jobs release-expired | restore


def _gpu_lookup(
    config: FleetConfig, hooks: dict[str, NodePowerHook | None]
) -> Callable[[str], GpuBackend | None]:
    """Node -> GPU backend: the hook's own (e.g. the agent's) if it offers one, else NVML for
    this host; other nodes are unreachable (``None``)."""
    local = {socket.gethostname(), socket.gethostname().split(".")[0], "localhost"}
    cache: dict[str, GpuBackend | None] = {}
    node_pool: dict[str, NodePowerHook | None] = {}
    from greencpn.actuate.hostlist import expand

    for pool in config.pools:
        for n in expand(pool.hostlist) if pool.hostlist else []:
            node_pool[n] = hooks.get(pool.name)

    def lookup(node: str) -> GpuBackend | None:
        if node in cache:
            return cache[node]
        hook = node_pool.get(node)
        gb: GpuBackend | None = None
        provider = getattr(hook, "gpu_backend", None)
        if callable(provider):
            gb = provider(node)
        elif node in local:
            from greencpn.actuate.gpu import get_gpu_backend

            try:
                gb = get_gpu_backend("nvml")
            except Exception as exc:
                print(f"greencpn apply: {node}: no NVML ({exc}); caps not set", file=sys.stderr)
                gb = None
        cache[node] = gb
        return gb

    return lookup


def _fake_backends(
    plan: dict[str, Any], config: FleetConfig, job_gpus: Callable[[str], Any] | None = None
) -> Backends:
    from greencpn.actuate.fake_nodes import FakeNodeHook
    from greencpn.actuate.gpu.fake import FakeFleetGpus, FakeGpu
    from greencpn.actuate.hostlist import expand

    clock = SystemClock()
    hooks: dict[str, NodePowerHook | None] = {}
    fleets: dict[str, FakeFleetGpus] = {}
    node_fleet: dict[str, FakeFleetGpus] = {}
    cfg_pools = {p.name: p for p in config.pools}
    for pool in plan["pools"]:
        hostlist = cfg_pools[pool["name"]].hostlist
        nodes = expand(hostlist) if hostlist else []
        kind = cfg_pools[pool["name"]].hook.kind
        hooks[pool["name"]] = (
            None if kind == "none" else FakeNodeHook(nodes, clock, name=f"fake-{kind}")
        )
        fleet = FakeFleetGpus(
            gpus_per_node=int(pool.get("gpus_per_node", 1)),
            template=FakeGpu(
                name=str(pool.get("gpu_model", "fake")),
                min_w=float(pool["power_limit_min_w"]),
                max_w=float(pool["power_limit_max_w"]),
                default_w=float(pool["power_limit_default_w"]),
            ),
        )
        fleets[pool["name"]] = fleet
        for n in nodes:
            node_fleet[n] = fleet
    return Backends(
        hooks=hooks,
        gpus=lambda n: node_fleet[n].backend(n) if n in node_fleet else None,
        job_gpus=job_gpus,  # the jobs' GPU indices still come from the real scheduler
    )


def run_apply(args: argparse.Namespace) -> int:
    # the config is the authority (and its errors come first when it is given)
    given = load_config(args.config) if args.config else None
    plan = load_plan(args.plan)
    config_path = args.config or plan.get("config")
    if not config_path:
        raise ConfigError(
            "the plan names no config", source=args.plan, field="config", fix="pass --config PATH"
        )
    config = given if given is not None else load_config(config_path)
    check_plan_against_config(plan, config, str(args.plan))
    settings = ControlSettings.for_config(config.path, args.control).with_actuation(
        args.allow_actuation
    )
    state_dir = Path(args.state_dir or os.environ.get("GREENCPN_STATE_DIR") or DEFAULT_STATE_DIR)

    if args.clear_failed:
        if args.dry_run:
            raise ConfigError(
                "--clear-failed changes the ledger", field="--clear-failed", fix="drop --dry-run"
            )
        with Ledger.open(state_dir) as ledger:
            for node in args.clear_failed:
                was = ledger.clear_failed(node)
                print(
                    f"{node}: {'failed mark cleared' if was else 'was not marked failed'}",
                    file=sys.stderr if args.json else sys.stdout,
                )

    from greencpn.actuate.jobs import make_job_backends

    job_backends = make_job_backends(config.job_actuation, source=str(config.path))
    job_gpus = None if job_backends is None else job_backends.job_gpu_lookup()
    if args.undo_jobs:
        from greencpn.actuate.jobs.apply_step import undo_step

        if args.dry_run:
            raise ConfigError("--undo-jobs changes jobs", field="--undo-jobs", fix="drop --dry-run")
        if job_backends is None:
            raise ConfigError(
                "no [job_actuation] section",
                source=str(config.path),
                field="job_actuation",
                fix="add [job_actuation] (docs/jobs.md) or drop --undo-jobs",
            )
        undo = undo_step(job_backends, str(state_dir), clock_now=SystemClock().now)
        print(undo.format() or "  jobs: nothing to restore")
        return 1 if undo.problems else 0

    if args.fake_backends:
        backends = _fake_backends(plan, config, job_gpus)
    else:
        from greencpn.actuate.hooks import make_hook

        if any(p.hook.kind == "agent" for p in config.pools):
            # the agent kind registers itself when its module is imported; if it is missing,
            # make_hook reports that the kind is not available
            with contextlib.suppress(ModuleNotFoundError):
                importlib.import_module("greencpn.actuate.agent_hook")
        hooks: dict[str, NodePowerHook | None] = {}
        for pool in config.pools:
            hooks[pool.name] = (
                None if pool.hook.kind == "none" else make_hook(pool.hook, source=str(config.path))
            )
        backends = Backends(hooks=hooks, gpus=_gpu_lookup(config, hooks), job_gpus=job_gpus)

    report = apply_plan(
        plan,
        args.slot,
        config,
        backends,
        clock=SystemClock(),
        state_dir=state_dir,
        settings=settings,
        dry_run=args.dry_run,
        plan_path=str(args.plan),
        sleep=time.sleep,
        echo=lambda text: print(
            text + "\n", flush=True, file=sys.stderr if args.json else sys.stdout
        ),
        allow_other_slot=args.allow_other_slot,
        jobs=job_backends,
    )
    if args.dry_run and job_backends is not None:
        from greencpn.actuate.apply import resolve_slot
        from greencpn.actuate.jobs.apply_step import preview_step

        clock = SystemClock()
        ref = resolve_slot(plan, args.slot, clock, source=str(args.plan))
        lines = preview_step(
            plan, job_backends, str(state_dir), now=clock.now(), next_step_at=ref.end
        )
        preview = "\n".join(lines) or "  jobs: nothing to do"
        print(preview, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(report.format())
    return report.exit_code
