"""``greencpn submit``: submit a Slurm batch job to the cluster whose site is greenest now.

A queued Slurm job cannot move between clusters (without federation), so the choice of
cluster is made at submission. ``greencpn submit -- <sbatch arguments>`` reads the current plan,
takes every ``kind = "slurm"`` cluster of ``[job_actuation]`` with a pool big enough for the
job, and picks the one whose site has the lowest mean carbon intensity (the plan's
``sites[].slots[].intensity_g_per_kwh``) over the job's run window ``[now, now + time limit]``.
It then runs ``sbatch`` with that cluster's ``SLURM_CONF`` (and ``--partition`` of the chosen
pool when the cluster steers by partition and the user gave none) and prints the choice.
Once queued, ``greencpn apply`` defers and steers the job inside that cluster.

Exit status: sbatch's own (0 submitted); 2 for bad input (no plan, no Slurm cluster).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greencpn.actuate.ledger import _dt
from greencpn.clock import Clock, SystemClock
from greencpn.errors import ConfigError

if TYPE_CHECKING:
    from greencpn.config import FleetConfig


@dataclass(frozen=True)
class ClusterChoice:
    cluster: str
    site: str
    pool: str
    slurm_conf: str | None
    partition: str | None
    mean_intensity_g_per_kwh: float
    others: tuple[tuple[str, float], ...]  # (cluster, mean intensity) of the ones not chosen


def _site_intensity(
    plan: Mapping[str, Any], site: str, start: datetime, end: datetime
) -> float | None:
    hz = plan.get("horizon") or {}
    starts = [_dt(s) for s in hz.get("slot_starts") or []]
    step = timedelta(minutes=int(hz.get("slot_minutes") or 60))
    entry = next((s for s in plan.get("sites") or [] if s.get("name") == site), None)
    if entry is None:
        return None
    by_slot = {int(s["slot"]): s.get("intensity_g_per_kwh") for s in entry.get("slots") or []}
    total = weight = 0.0
    for i, s in enumerate(starts):
        if s is None:
            continue
        lo, hi = max(s, start), min(s + step, end)
        value = by_slot.get(i)
        if hi > lo and value is not None:
            w = (hi - lo).total_seconds()
            total += float(value) * w
            weight += w
    return total / weight if weight else None


def choose_cluster(
    plan: Mapping[str, Any],
    config: FleetConfig,
    *,
    now: datetime,
    time_limit: timedelta,
    gpus: int,
) -> ClusterChoice:
    """The greenest Slurm cluster for a job of ``gpus`` GPUs running ``time_limit`` from ``now``."""
    ja = config.job_actuation
    src = str(config.path)
    if ja is None or not any(c.kind == "slurm" for c in ja.clusters):
        raise ConfigError(
            "no Slurm cluster in [job_actuation]",
            source=src,
            field="job_actuation.clusters",
            fix='add [[job_actuation.clusters]] with kind = "slurm" and slurm_conf',
        )
    scored: list[tuple[float, str, ClusterChoice]] = []
    for c in ja.clusters:
        if c.kind != "slurm":
            continue
        for pool in config.pools:
            if pool.site not in c.sites or pool.nodes * pool.gpus_per_node < gpus:
                continue
            mean = _site_intensity(plan, pool.site, now, now + time_limit)
            if mean is None:
                continue
            target = c.pools.get(pool.name)
            partition = target.partition if target is not None and c.steer == "partition" else None
            choice = ClusterChoice(c.name, pool.site, pool.name, c.slurm_conf, partition, mean, ())
            scored.append((mean, c.name, choice))
    if not scored:
        raise ConfigError(
            f"no Slurm cluster has a pool with {gpus} GPU(s) and carbon data in the plan for now",
            source=src,
            field="job_actuation.clusters",
            fix="make a fresh plan (its horizon must hold now) or ask for fewer GPUs",
        )
    scored.sort(key=lambda t: (t[0], t[1]))
    best = scored[0][2]
    others: dict[str, float] = {}
    for mean, name, _ in scored[1:]:
        if name != best.cluster:
            others.setdefault(name, mean)
    return ClusterChoice(
        best.cluster,
        best.site,
        best.pool,
        best.slurm_conf,
        best.partition,
        best.mean_intensity_g_per_kwh,
        tuple(sorted(others.items())),
    )


def _has_partition(args: Sequence[str]) -> bool:
    return any(
        a in ("-p",) or a.startswith("--partition") or (a.startswith("-p") and len(a) > 2)
        for a in args
    )


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "submit",
        help="sbatch to the Slurm cluster whose site is greenest for the job's run (multi-cluster)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--plan", required=True, help="the current plan.json")
    p.add_argument("--config", default=None, help="fleet config (default: the plan's)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs the job needs (default 1)")
    p.add_argument(
        "--time-limit-min", type=float, default=60.0, help="its run time in minutes (default 60)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the choice, do not submit")
    p.add_argument("sbatch_args", nargs=argparse.REMAINDER, help="-- then sbatch's arguments")
    p.set_defaults(func=run_submit)


def run_submit(args: argparse.Namespace, clock: Clock | None = None) -> int:
    from greencpn.actuate.apply import load_plan
    from greencpn.config import load_config

    plan = load_plan(args.plan)
    config = load_config(args.config or plan.get("config") or "")
    rest = [a for a in args.sbatch_args if a != "--"] if args.sbatch_args else []
    if not rest:
        raise ConfigError(
            "no sbatch arguments", field="submit", fix="write: greencpn submit --plan P -- job.sh"
        )
    now = (clock or SystemClock()).now()
    choice = choose_cluster(
        plan, config, now=now, time_limit=timedelta(minutes=args.time_limit_min), gpus=args.gpus
    )
    argv = ["sbatch"]
    if choice.partition and not _has_partition(rest):
        argv.append(f"--partition={choice.partition}")
    argv += rest
    others = ", ".join(f"{n} {v:.0f}" for n, v in choice.others) or "none"
    print(
        f"greencpn submit: cluster {choice.cluster} (site {choice.site}, pool {choice.pool}): "
        f"{choice.mean_intensity_g_per_kwh:.0f} gCO2/kWh mean over the next "
        f"{args.time_limit_min:g} min; other clusters: {others}",
        flush=True,
    )
    if args.dry_run:
        print("dry run: " + " ".join(argv))
        return 0
    env = dict(os.environ)
    if choice.slurm_conf:
        env["SLURM_CONF"] = str(Path(choice.slurm_conf))
    proc = subprocess.run(argv, env=env, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode
