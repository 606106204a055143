"""``greencpn check --config F``: validate a fleet without solving.

Runs everything ``greencpn plan`` reads before the solver: the TOML and every field, the GPU
profiles, node hooks and hostlists (as ``apply`` would build them, without credentials or
network calls to hardware), the jobs file, the carbon data for every slot of the horizon
(file, or each site's ``carbon_source`` through its fallback chain) and the load reserves.
The first problem is printed as ``greencpn: error: …`` (exit 2); a clean config prints a
short inventory (exit 0), with warnings for jobs the horizon cannot run.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from greencpn.clock import Clock, SystemClock


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="validate config, hooks, hostlists, carbon coverage and jobs (no solve)",
        description="Load and cross-check everything `greencpn plan` reads, without solving.",
    )
    p.add_argument("--config", required=True, type=Path, help="fleet config (TOML)")
    p.set_defaults(func=run)


def check(config: Path, clock: Clock) -> list[str]:
    """Validate ``config``; return the report lines (raise ConfigError on the first problem)."""
    from greencpn.config import load_config
    from greencpn.controller.forecast import make_inputs
    from greencpn.optimize.plan import horizon_start

    cfg = load_config(config)
    start = horizon_start(cfg, clock)
    slot = timedelta(minutes=cfg.horizon.slot_minutes)
    end = start + cfg.horizon.slots * slot
    inp = make_inputs(cfg, clock)  # carbon for every slot, reserves, job windows
    nodes = sum(p.nodes for p in cfg.pools)
    gpus = sum(p.nodes * p.gpus_per_node for p in cfg.pools)
    hooks = sorted({p.hook.kind for p in cfg.pools})
    lines = [
        f"{cfg.path}: ok",
        f"  horizon: {cfg.horizon.slots} × {cfg.horizon.slot_minutes} min, "
        f"{start:%Y-%m-%dT%H:%MZ} – {end:%Y-%m-%dT%H:%MZ}",
        f"  {len(cfg.sites)} site(s), {len(cfg.pools)} pool(s), {nodes} nodes, {gpus} GPUs; "
        f"hooks: {', '.join(hooks)}",
    ]
    prov = inp.extras.get("carbon_provenance", {})
    for s in inp.sites:
        ci = s.intensity_g_per_kwh
        src = prov.get(s.name, {}).get("source", "?")
        lines.append(
            f"  carbon {s.name} ({s.zone}): {len(ci)} slots covered, "
            f"{float(ci.min()):.0f}–{float(ci.max()):.0f} g/kWh, from {src}"
        )
    before = [j.id for j in cfg.jobs if j.deadline <= start]
    after = [j.id for j in cfg.jobs if j.release >= end]
    lines.append(f"  jobs: {len(cfg.jobs)} ({sum(j.work_gpu_h for j in cfg.jobs):,.0f} GPU-h)")
    if not cfg.jobs:
        lines.append("  warning: no jobs: the plan only decides node power and caps")
    if before:
        lines.append(
            f"  warning: {len(before)} job(s) have a deadline at or before the horizon start "
            f"(e.g. {', '.join(before[:3])}): they can only run late"
        )
    if after:
        lines.append(
            f"  warning: {len(after)} job(s) are released after the horizon end "
            f"(e.g. {', '.join(after[:3])}): the plan cannot run them"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    for line in check(args.config, SystemClock()):
        print(line)
    sys.stdout.flush()
    return 0
