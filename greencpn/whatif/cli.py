"""``greencpn whatif``: replay history under competing policies and write the comparison."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from greencpn.config import _parse_utc, load_config
from greencpn.errors import ConfigError
from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.attribution import attribute, attribution_specs
from greencpn.whatif.carbon import carbon_sources
from greencpn.whatif.engine import ReplaySettings, RunResult
from greencpn.whatif.jobs import load_jobs, parse_slack
from greencpn.whatif.metrics import COLUMNS, compare, write
from greencpn.whatif.model import FleetSpec, SimJob
from greencpn.whatif.parallel import run_policies
from greencpn.whatif.policies import available, parse_spec

DEFAULT_POLICIES = ["carbon-agnostic", "shutdown-idle", "lets-wait-awhile", "carbon-time"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "whatif",
        help="replay history under competing policies (energy, carbon, waits, misses)",
        description="Replay recorded carbon intensity and a job trace under several policies, "
        "on a simulated copy of the fleet; forecasts are issued at each step without seeing "
        "the future. Writes whatif.csv, whatif.json and whatif.html. "
        "`greencpn whatif sweep -h`: a grid of configs x slack x policies.",
    )
    p.add_argument("--config", type=Path, help="fleet TOML (sites, pools); required")
    p.add_argument("--carbon", type=Path, help="carbon history file (default: the config's)")
    p.add_argument(
        "--forecasts",
        action="append",
        default=[],
        metavar="ZONE=PATH",
        help="real issued forecasts of a zone (WattTime request_time,forecast_time,... CSV)",
    )
    p.add_argument("--jobs", type=Path, help="Philly / GAIA-PAI trace or greencpn jobs file")
    p.add_argument("--from", dest="start", help="replay start, UTC ISO time; required")
    p.add_argument("--to", dest="end", help="replay end (exclusive), UTC; required")
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
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="policies in this many processes (same numbers as 1; default 1)",
    )
    p.add_argument(
        "--attribution",
        nargs="?",
        const="milp",
        default=None,
        metavar="MILP_SPEC",
        help="add the lever attribution runs of this milp spec (default milp): levers=none, "
        "each of time/space/power/caps alone, all",
    )
    p.add_argument(
        "--leave-one-out", action="store_true", help="attribution: also all-but-one-lever runs"
    )
    p.add_argument("--no-html", action="store_true", help="do not write whatif.html")
    p.set_defaults(func=run)
    wsub = p.add_subparsers(dest="whatif_command", metavar="SUBCOMMAND")
    sw = wsub.add_parser(
        "sweep",
        help="configs x slack rules x policies in parallel (process pool or Dask)",
        description="Replay every (config, slack, policy) cell and write one table (sweep.csv). "
        "Runs on a Dask cluster with --scheduler tcp://HOST:8786 (workers read the files by "
        "path), a local Dask cluster with --dask-local N, else a process pool (--workers).",
    )
    sw.add_argument("--config", action="append", required=True, type=Path, help="repeatable")
    sw.add_argument("--slack", nargs="+", default=["+24h"], help="deadline rules, e.g. +8h +24h")
    sw.add_argument("--policies", nargs="+", default=DEFAULT_POLICIES, metavar="SPEC")
    sw.add_argument("--carbon", type=Path)
    sw.add_argument("--forecasts", action="append", default=[], metavar="ZONE=PATH")
    sw.add_argument("--jobs", type=Path)
    sw.add_argument("--from", dest="start", required=True)
    sw.add_argument("--to", dest="end", required=True)
    sw.add_argument("--assign", default="hash")
    sw.add_argument("--residency", action="append", default=[], metavar="FRACTION:JURISDICTION")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--failure-rate", type=float, default=0.0)
    sw.add_argument("--drain-h", type=float, default=48.0)
    sw.add_argument("--step-min", type=int, default=None)
    sw.add_argument("--scheduler", default=None, help="Dask scheduler address, tcp://HOST:PORT")
    sw.add_argument("--dask-local", type=int, default=0, metavar="N", help="LocalCluster of N")
    sw.add_argument("--workers", type=int, default=1, help="process pool size without Dask")
    sw.add_argument("--out", type=Path, default=Path("whatif-out"))
    sw.add_argument("--no-progress", action="store_true")
    sw.set_defaults(func=run_sweep_cli)


def replay_all(
    fleet: FleetSpec,
    jobs: list[SimJob],
    policies: list[str],
    forecasts: ReplayCarbonSource,
    actuals: ReplayCarbonSource,
    settings: ReplaySettings,
    *,
    progress: bool = True,
    workers: int = 1,
) -> list[RunResult]:
    """Run every policy on the same replay (a tqdm bar over all slots of all policies;
    ``workers`` > 1: a process pool, the same numbers)."""
    specs = [parse_spec(p) for p in policies]  # all errors before the first run
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.n_slots * len(specs), unit="slot", desc="whatif")
    try:
        return run_policies(
            fleet,
            jobs,
            specs,
            forecasts=forecasts,
            actuals=actuals,
            settings=settings,
            workers=workers,
            progress=bar.update if bar is not None else None,
            on_start=bar.set_postfix_str if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()


def _replay_times(args: argparse.Namespace) -> tuple[datetime, datetime]:
    """--from / --to as UTC datetimes; a bad value is a ConfigError naming the option."""
    out = []
    for opt, val in (("--from", args.start), ("--to", args.end)):
        try:
            out.append(_parse_utc(val, opt))
        except ValueError as exc:
            raise ConfigError(
                str(exc), field=opt, fix=f"write {opt} as 2026-03-02T00:00:00Z (UTC)"
            ) from None
    return out[0], out[1]


def run(args: argparse.Namespace) -> int:
    for opt, val, fix in (
        ("--config", args.config, "pass --config FLEET.toml"),
        ("--from", args.start, "pass --from 2023-03-01T00:00Z"),
        ("--to", args.end, "pass --to 2023-03-08T00:00Z"),
    ):
        if val is None:
            raise ConfigError(f"greencpn whatif needs {opt}", field=opt, fix=fix)
    parse_slack(args.slack)  # refused even when the jobs carry their own deadlines
    cfg = load_config(args.config)
    fleet = FleetSpec.from_config(cfg)
    start, end = _replay_times(args)
    step = timedelta(minutes=args.step_min or cfg.horizon.slot_minutes)
    settings = ReplaySettings(
        start=start,
        end=end,
        step=step,
        drain=timedelta(hours=args.drain_h),
        seed=args.seed,
        failure_rate_per_node_h=args.failure_rate,
    )
    carbon = args.carbon or cfg.carbon_path
    forecasts, actuals = carbon_sources(args.forecasts, fleet, carbon, step)
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
    elif cfg.jobs_file_path is not None:
        jobs = load_jobs(
            cfg.jobs_file_path,
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
    policies = list(args.policies)
    if args.attribution:
        parse_spec(args.attribution)
        if not args.attribution.startswith("milp"):
            raise ConfigError(
                f"--attribution {args.attribution!r} is not a milp spec",
                field="--attribution",
                fix="give a milp spec, e.g. --attribution milp:time_limit_s=20",
            )
        extra = attribution_specs(args.attribution, leave_one_out=args.leave_one_out)
        policies += [p for p in extra if p not in policies]
    runs = replay_all(
        fleet,
        jobs,
        policies,
        forecasts,
        actuals,
        settings,
        progress=not args.no_progress,
        workers=args.workers,
    )
    table = compare(runs, oracle=args.oracle)
    att = attribute(table["rows"], args.attribution) if args.attribution else None
    if att is not None:
        table["attribution"] = att
    meta = {
        "config": str(cfg.path),
        "carbon": str(carbon),
        "from": start.isoformat(),
        "to": end.isoformat(),
        "step_min": step.total_seconds() / 60,
        "seed": args.seed,
        "jobs_file": str(args.jobs or cfg.jobs_file),
        "drain_h": args.drain_h,
        "workers": args.workers,
    }
    csv_path, json_path = write(table, args.out, meta)
    _print(table)
    if att is not None:
        _print_attribution(att)
    wrote = [str(csv_path), str(json_path)]
    if not args.no_html:
        from greencpn.whatif.report import write_report

        wrote.append(str(write_report(runs, table, args.out, meta, att)))
    print("wrote " + ", ".join(wrote))
    return 0


def _print_attribution(att: dict[str, Any]) -> None:
    print(
        f"lever attribution (reference {att['reference']}: {att['reference_carbon_kg']:.4g} kg; "
        f"all levers save {att['all_saving_kg']:.4g} kg)"
    )
    for r in att["levers"]:
        share = r["alone_share_of_all_saving"]
        loo = r["leave_one_out_saving_kg"]
        print(
            f"  {r['lever']:<6} alone saves {r['alone_saving_kg']:.4g} kg"
            + ("" if share is None else f" ({100 * share:.1f} % of the all-lever saving)")
            + ("" if loo is None else f"; without it {loo:.4g} kg is lost")
        )
    print(
        f"  sum of alone savings {att['sum_alone_kg']:.4g} kg, interaction "
        f"{att['interaction_kg']:+.4g} kg (alone savings need not add up)"
    )


def run_sweep_cli(args: argparse.Namespace) -> int:
    from greencpn.whatif.sweep import make_tasks, run_sweep, write_sweep

    start, end = _replay_times(args)
    for c in args.config:
        load_config(c)  # config errors before anything runs
    tasks = make_tasks(
        [str(c) for c in args.config],
        args.slack,
        args.policies,
        start=start,
        end=end,
        carbon=str(args.carbon) if args.carbon else None,
        jobs=str(args.jobs) if args.jobs else None,
        assign=args.assign,
        residency=tuple(args.residency),
        seed=args.seed,
        failure_rate=args.failure_rate,
        drain_h=args.drain_h,
        step_min=args.step_min,
        forecasts=tuple(args.forecasts),
    )
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="replay", desc="sweep")
    try:
        res = run_sweep(
            tasks,
            scheduler=args.scheduler,
            dask_local=args.dask_local,
            workers=args.workers,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    path = write_sweep(res, args.out)
    cols = [
        "config",
        "slack",
        "policy",
        "carbon_kg",
        "carbon_saved_pct",
        "share_of_oracle_saving",
        "mean_wait_h",
        "deadline_misses",
    ]
    print("  ".join(cols))
    for r in res.rows:
        vals = [r.get(c) for c in cols]
        vals[0] = Path(str(vals[0])).name
        print(
            "  ".join(
                "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals
            )
        )
    print(
        f"{res.tasks} replays on {res.executor}; saved % denominator: the carbon-agnostic row "
        f"of the same config and slack; wrote {path}"
    )
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
