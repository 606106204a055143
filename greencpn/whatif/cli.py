"""``greencpn whatif``: replay history under competing policies and write the comparison."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from greencpn.config import _parse_utc, load_config
from greencpn.errors import ConfigError
from greencpn.sources.files import read_carbon_file, read_watttime_forecasts
from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.engine import ReplaySettings, RunResult, run_replay
from greencpn.whatif.jobs import load_jobs
from greencpn.whatif.metrics import COLUMNS, compare, write
from greencpn.whatif.model import FleetSpec, SimJob
from greencpn.whatif.policies import available, parse_spec

DEFAULT_POLICIES = ["carbon-agnostic", "shutdown-idle", "lets-wait-awhile", "carbon-time"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "whatif",
        help="replay history under competing policies (energy, carbon, waits, misses)",
        description="Replay recorded carbon intensity and a job trace under several policies, "
        "on a simulated copy of the fleet; forecasts are issued at each step without seeing "
        "the future. Writes whatif.csv and whatif.json.",
    )
    p.add_argument("--config", required=True, type=Path, help="fleet TOML (sites, pools)")
    p.add_argument("--carbon", type=Path, help="carbon history file (default: the config's)")
    p.add_argument(
        "--forecasts",
        action="append",
        default=[],
        metavar="ZONE=PATH",
        help="real issued forecasts of a zone (WattTime request_time,forecast_time,... CSV)",
    )
    p.add_argument("--jobs", type=Path, help="Philly / GAIA-PAI trace or greencpn jobs file")
    p.add_argument("--from", dest="start", required=True, help="replay start, UTC ISO time")
    p.add_argument("--to", dest="end", required=True, help="replay end (exclusive), UTC")
    p.add_argument(
        "--policies",
        nargs="+",
        default=DEFAULT_POLICIES,
        metavar="SPEC",
        help="policies as name[:key=value,...]; perfect=1 gives one actual intensities "
        f"(available: {', '.join(available())})",
    )
    p.add_argument("--step-min", type=int, default=None, help="slot minutes (default: config)")
    p.add_argument(
        "--slack", default="+24h", help="deadline rule for traces: +8h, x2, next-workday"
    )
    p.add_argument("--assign", default="hash", help="home site: hash, round-robin or a site")
    p.add_argument("--residency", action="append", default=[], metavar="FRACTION:JURISDICTION")
    p.add_argument("--seed", type=int, default=0, help="seed of failures and residency tags")
    p.add_argument("--failure-rate", type=float, default=0.0, help="failures per node-hour")
    p.add_argument("--drain-h", type=float, default=48.0, help="hours accounted after --to")
    p.add_argument("--oracle", default=None, help="reference run for the share of its saving")
    p.add_argument("--out", type=Path, default=Path("whatif-out"), help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _carbon_sources(
    args: argparse.Namespace, fleet: FleetSpec, carbon: Path, step: timedelta
) -> tuple[ReplayCarbonSource, ReplayCarbonSource]:
    zones = sorted({s.zone for s in fleet.sites})
    actuals = {z: read_carbon_file(carbon, zone=z, slot=step) for z in zones}
    archives = {}
    for item in args.forecasts:
        zone, eq, path = item.partition("=")
        if not eq:
            raise ConfigError(f"--forecasts {item!r}", field="--forecasts", fix="write ZONE=PATH")
        archives[zone] = read_watttime_forecasts(path, zone=zone)
    return (
        ReplayCarbonSource(actuals, archives=archives),
        ReplayCarbonSource(actuals, mode="perfect"),
    )


def replay_all(
    fleet: FleetSpec,
    jobs: list[SimJob],
    policies: list[str],
    forecasts: ReplayCarbonSource,
    actuals: ReplayCarbonSource,
    settings: ReplaySettings,
    *,
    progress: bool = True,
) -> list[RunResult]:
    """Run every policy on the same replay (a tqdm bar over all slots of all policies)."""
    specs = [parse_spec(p) for p in policies]  # all errors before the first run
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.n_slots * len(specs), unit="slot", desc="whatif")
    runs = []
    try:
        for spec in specs:
            if bar is not None:
                bar.set_postfix_str(spec.label)
            runs.append(
                run_replay(
                    fleet,
                    jobs,
                    spec,
                    forecasts=forecasts,
                    actuals=actuals,
                    settings=settings,
                    progress=bar.update if bar is not None else None,
                )
            )
    finally:
        if bar is not None:
            bar.close()
    return runs


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    fleet = FleetSpec.from_config(cfg)
    start = _parse_utc(args.start, "--from")
    end = _parse_utc(args.end, "--to")
    step = timedelta(minutes=args.step_min or cfg.raw.horizon.slot_minutes)
    settings = ReplaySettings(
        start=start,
        end=end,
        step=step,
        drain=timedelta(hours=args.drain_h),
        seed=args.seed,
        failure_rate_per_node_h=args.failure_rate,
    )
    carbon = args.carbon or cfg.carbon_path
    forecasts, actuals = _carbon_sources(args, fleet, carbon, step)
    if args.jobs is not None:
        jobs = load_jobs(
            args.jobs,
            fleet,
            slack=args.slack,
            assign=args.assign,
            residency=args.residency,
            seed=args.seed,
            start=start,
            end=end,
        )
    elif cfg.raw.jobs_file:
        jobs = load_jobs(
            cfg.path.parent / cfg.raw.jobs_file,
            fleet,
            kind="greencpn",
            assign=args.assign,
            residency=args.residency,
            seed=args.seed,
        )
    else:
        raise ConfigError(
            "no jobs to replay",
            field="--jobs",
            fix="pass --jobs TRACE or set jobs_file in the config",
        )
    runs = replay_all(
        fleet, jobs, args.policies, forecasts, actuals, settings, progress=not args.no_progress
    )
    table = compare(runs, oracle=args.oracle)
    meta = {
        "config": str(cfg.path),
        "carbon": str(carbon),
        "from": start.isoformat(),
        "to": end.isoformat(),
        "step_min": step.total_seconds() / 60,
        "seed": args.seed,
        "jobs_file": str(args.jobs or cfg.raw.jobs_file),
    }
    csv_path, json_path = write(table, args.out, meta)
    _print(table)
    print(f"wrote {csv_path} and {json_path}")
    return 0


def _print(table: dict[str, Any]) -> None:
    cols = [
        c for c in COLUMNS if c not in ("wall_s", "killed_jobs", "node_failures", "job_restarts")
    ]
    rows = table["rows"]
    fmt = []
    for r in rows:
        line = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                line.append(f"{v:.4g}")
            else:
                line.append("-" if v is None else str(v))
        fmt.append(line)
    widths = [max(len(c), *(len(f[i]) for f in fmt)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for f in fmt:
        print("  ".join(v.ljust(w) for v, w in zip(f, widths, strict=True)))
    print(
        f"baseline: {table['baseline']}; oracle (share denominator): {json.dumps(table['oracle'])}"
    )
