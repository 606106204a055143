"""``greencpn run`` and ``greencpn status``.

``greencpn run --config fleet.toml [--state-dir D] [--control control.toml] [--once]`` runs the
control step every slot until SIGTERM (see :mod:`greencpn.daemon.core`); ``--once`` runs one
step and exits (cron): exit 0 when the step was ok/degraded/skipped, 1 when it failed.
``greencpn status [--state-dir D] [--json]`` prints what the daemon last did, from its state
file and the controller's ledger. User errors: ``greencpn: error: …``, exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from greencpn.errors import ConfigError

DEFAULT_STATE_DIR = ".greencpn"


#: the plan figures `greencpn status` prints (all of them are in `status --json`)
_STATUS_KEYS = {
    "totals": (
        "energy_kwh",
        "carbon_kg",
        "cost",
        "late_jobs",
        "late_h_max",
        "unserved_gpu_h",
        "beyond_horizon_gpu_h",
        "budget_overrun_kwh",
    ),
    "savings": (
        "carbon_kg_vs_carbon_agnostic",
        "carbon_pct_vs_carbon_agnostic",
        "energy_kwh_vs_carbon_agnostic",
        "cost_vs_carbon_agnostic",
    ),
}


def _state_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("GREENCPN_STATE_DIR") or DEFAULT_STATE_DIR)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the control step every slot (shadow mode unless control.toml enforces)",
        description=(
            "Run observe → forecast → optimise → reconcile → act → record at every slot "
            "boundary plus an offset. SIGHUP re-reads the config and steps; SIGTERM stops "
            "cleanly. Mode, levers, leader election (etcd), HTTP (/metrics /healthz /readyz) "
            "and exit behaviour come from [daemon] in control.toml beside the config. "
            "See docs/daemon.md."
        ),
    )
    p.add_argument("--config", required=True, help="fleet config (TOML)")
    p.add_argument(
        "--state-dir",
        default=None,
        help=f"ledger and state (default: $GREENCPN_STATE_DIR or ./{DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--control", default=None, help="control settings (default: control.toml beside config)"
    )
    p.add_argument("--once", action="store_true", help="run one step now and exit (for cron)")
    p.add_argument(
        "--at",
        default=None,
        metavar="TIME",
        help="with --once: step as if it were TIME (UTC ISO-8601, e.g. 2023-04-25T06:00:00Z), "
        "to try a config on past data",
    )
    p.add_argument("--http-port", type=int, default=None, help="override [daemon.http] port")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="log lines as text or one JSON object per line (default: [daemon] json_logs)",
    )
    p.add_argument(
        "--fake-backends",
        action="store_true",
        help="act on in-memory fake nodes and GPUs (all on, default caps): a demo / dry run",
    )
    p.set_defaults(func=run_daemon)

    s = subparsers.add_parser(
        "status",
        help="what the daemon is doing: mode, leader, last steps, plan, savings, failures",
        description="Read the daemon's state file and the controller's ledger in the state "
        "directory and print mode, leader, last steps, current plan summary, savings so far, "
        "held jobs, recent power cycles and failures.",
    )
    s.add_argument("--state-dir", default=None, help="as given to greencpn run")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.add_argument("--steps", type=int, default=5, help="how many recent steps to show")
    s.set_defaults(func=run_status)


def _setup_logging(json_logs: bool, verbose: int) -> None:
    from greencpn.daemon.logs import configure

    configure(json_logs=json_logs, level=logging.INFO if verbose == 0 else logging.DEBUG)


def run_daemon(args: argparse.Namespace) -> int:
    from greencpn.clock import SystemClock
    from greencpn.daemon.core import Daemon
    from greencpn.daemon.settings import load_settings

    config = Path(args.config)
    if not config.is_file():
        raise ConfigError(
            "config file not found", source=str(config), fix="give the fleet config with --config"
        )
    settings, _ = load_settings(config, args.control)
    json_logs = settings.json_logs if args.log_format is None else args.log_format == "json"
    _setup_logging(json_logs, getattr(args, "verbose", 0))
    clock: Any = SystemClock()
    if args.at is not None:
        if not args.once:
            raise ConfigError(
                "--at works only with --once", field="--at", fix="add --once, or drop --at"
            )
        from greencpn.clock import SimClock

        try:
            at = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
            clock = SimClock(at)
        except ValueError as exc:
            raise ConfigError(
                f"{args.at!r}: {exc}", field="--at", fix="write e.g. 2023-04-25T06:00:00Z"
            ) from None
    backends = None
    if args.fake_backends:
        from greencpn.config import load_config
        from greencpn.controller.fakes import FakeFleet

        backends = FakeFleet(load_config(config), clock).backends
    daemon = Daemon(
        config,
        state_dir=_state_dir(args.state_dir),
        clock=clock,
        control_path=args.control,
        http_port=args.http_port,
        backends=backends,
    )
    if args.once:
        result = daemon.run_once()
        if result is None:
            print("greencpn run --once: the step crashed (see the log)", file=sys.stderr)
            return 1
        print(
            f"step {result.step_id} slot {result.slot_start:%Y-%m-%dT%H:%MZ}: {result.status} "
            f"({result.mode}), {len(result.actions)} action(s), {len(result.errors)} error(s)"
        )
        return 1 if str(result.status) == "failed" else 0
    return daemon.serve()


# ---------------------------------------------------------------------------- status


#: ``greencpn status --json`` (docs/daemon.md lists the keys)
STATUS_SCHEMA = "greencpn.status/1"


def collect_status(state_dir: Path, steps: int = 5) -> dict[str, Any]:
    """Everything ``greencpn status`` shows, as one JSON-able document."""
    from greencpn.daemon.core import STATE_FILE

    path = state_dir / STATE_FILE
    if not path.is_file():
        raise ConfigError(
            "no daemon state here (daemon.json missing)",
            source=str(state_dir),
            fix="pass the --state-dir greencpn run uses, or start greencpn run first",
        )
    try:
        st = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(
            f"daemon.json is not valid JSON ({exc})",
            source=str(path),
            fix="it is rewritten after the next step",
        ) from None
    recent = st.get("steps", [])[-steps:]
    last = recent[-1] if recent else None
    doc: dict[str, Any] = {
        "schema": STATUS_SCHEMA,
        "state_dir": str(state_dir),
        "mode": st.get("mode"),
        "levers": st.get("levers"),
        "leader": st.get("leader"),
        "updated_at": st.get("updated_at"),
        "pid": st.get("pid"),
        "config": st.get("config"),
        "period_s": st.get("period_s"),
        "savings": {
            "kg_co2e": round(st.get("savings", {}).get("kg_co2e", 0.0), 3),
            "kwh": round(st.get("savings", {}).get("kwh", 0.0), 3),
            "slots_counted": len(st.get("savings", {}).get("slots", {})),
        },
        "last_steps": recent,
        "plan": last.get("plan") if last else None,
        "jobs": last.get("jobs") if last else None,
        "held_jobs": [],
        "power_cycles": [],
        "failures": st.get("failures", [])[-10:],
        "reload": st.get("reload"),
    }
    ledger = state_dir / "steps.sqlite"
    if ledger.is_file():
        doc.update(_from_ledger(ledger, steps))
    return doc


def _from_ledger(path: Path, steps: int) -> dict[str, Any]:
    """Read-only look at the controller's ledger (tables absent → nothing from them)."""
    import sqlite3

    out: dict[str, Any] = {"ledger": str(path)}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        out["ledger_error"] = str(exc)
        return out
    con.row_factory = sqlite3.Row

    def rows(sql: str, *params: Any) -> list[dict[str, Any]]:
        try:
            return [dict(r) for r in con.execute(sql, params)]
        except sqlite3.Error:
            return []

    try:
        out["ledger_steps"] = rows(
            "SELECT id, started_at, finished_at, slot_start, mode, status, plan_origin, "
            "solver_status, mip_gap, epoch FROM steps ORDER BY id DESC LIMIT ?",
            steps,
        )[::-1]
        out["power_cycles"] = rows(
            "SELECT node, pool, event, at, step_id, epoch FROM power_cycles ORDER BY id DESC LIMIT 10"
        )[::-1]
        # held jobs: the newest job decision per job is a defer (not yet released)
        last: dict[str, dict[str, Any]] = {}
        for r in rows(
            "SELECT target, kind, detail, status, epoch, intended_at FROM actions WHERE kind IN "
            "('job.defer', 'job.release') AND id > (SELECT coalesce(max(id), 0) - 20000 FROM "
            "actions) ORDER BY id"
        ):
            last[r["target"]] = r
        out["held_jobs"] = [
            {
                "job": t,
                "until": (_maybe_json(r["detail"]) or {}).get("until")
                if isinstance(_maybe_json(r["detail"]), dict)
                else None,
                "status": r["status"],
                "since": r["intended_at"],
            }
            for t, r in sorted(last.items())
            if r["kind"] == "job.defer" and r["status"] in ("done", "shadow", "started")
        ]
        fails = rows(
            'SELECT step_id, at, type, "where", message FROM failures ORDER BY id DESC LIMIT 10'
        )
        if fails:
            out["failures"] = fails[::-1]
    finally:
        con.close()
    return out


def _maybe_json(text: Any) -> Any:
    if isinstance(text, str):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def format_status(doc: dict[str, Any]) -> str:
    ld = doc.get("leader") or {}
    if not ld.get("enabled"):
        leader = "single instance (no etcd)"
    elif ld.get("is_leader"):
        leader = f"this instance leads (epoch {ld.get('epoch')})"
    else:
        leader = f"follower — {ld.get('detail')}"
    lines = [
        f"state dir   {doc['state_dir']}  (updated {doc.get('updated_at')}, pid {doc.get('pid')})",
        f"mode        {doc.get('mode')}"
        + (f"  levers {doc['levers']}" if doc.get("levers") else ""),
        f"leader      {leader}",
        f"savings     {doc['savings']['kg_co2e']:.1f} kg CO2e, {doc['savings']['kwh']:.1f} kWh "
        f"vs the carbon-agnostic baseline ({doc['savings']['slots_counted']} slot(s) counted)",
    ]
    base = next(
        (s["baseline"] for s in reversed(doc.get("last_steps") or []) if s.get("baseline")), None
    )
    if base:
        lines.append(f"            last step's baseline: {_baseline_label(base)}")
    lines.append("last steps")
    for s in doc.get("last_steps", []):
        acts = ", ".join(f"{k} {v}" for k, v in sorted((s.get("actions") or {}).items())) or "none"
        gap = f" gap {s['mip_gap']:.3%}" if isinstance(s.get("mip_gap"), int | float) else ""
        lines.append(
            f"  #{s['step_id']:<5} {s['slot_start']}  {s['status']:<8} {s['mode']:<7} "
            f"({s['reason']}) solver {s.get('solver_status')}{gap}; actions: {acts}; "
            f"errors {len(s.get('errors') or [])}"
        )
    jobs = doc.get("jobs") or {}
    if jobs:
        lines.append("jobs        " + ", ".join(f"{k} {v}" for k, v in jobs.items()))
    if doc.get("held_jobs"):
        held = doc["held_jobs"]
        lines.append(
            f"held jobs   {len(held)}: "
            + ", ".join(f"{h['job']} until {_short(h.get('until'))}" for h in held[:5])
            + (", …" if len(held) > 5 else "")
        )
    plan = doc.get("plan") or {}
    if plan:
        hz = plan.get("horizon") or {}
        lines.append(
            f"plan        from {hz.get('start')}, {hz.get('slots')} × {hz.get('slot_minutes')} min"
            f", {plan.get('jobs', '?')} job(s)"
        )
        for key, shown in _STATUS_KEYS.items():
            if plan.get(key):
                lines.append(
                    f"  {key:<9} "
                    + ", ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in plan[key].items()
                        if k in shown
                    )
                )
        for pool, s0 in list((plan.get("this_slot") or {}).items())[:12]:
            lines.append(
                f"  {pool:<12} this slot: "
                + ", ".join(
                    f"{k} {v:g}" if isinstance(v, int | float) else f"{k} {v}"
                    for k, v in s0.items()
                )
            )
    if doc.get("power_cycles"):
        lines.append("power cycles (recent)")
        for pc in doc["power_cycles"]:
            lines.append(f"  {pc['at']}  {pc['node']:<12} {pc['event']}  (epoch {pc.get('epoch')})")
    fails = doc.get("failures") or []
    lines.append(f"failures    {len(fails)} recent" + (":" if fails else ""))
    for f in fails[-5:]:
        lines.append(f"  {f.get('at')}  {f.get('type')} at {f.get('where')}: {f.get('message')}")
    if doc.get("reload") and not doc["reload"].get("ok"):
        lines.append(f"last reload REFUSED at {doc['reload']['at']}: {doc['reload']['error']}")
    return "\n".join(lines)


def _baseline_label(b: dict[str, Any]) -> str:
    """'priced in step #4' or 'reused from step #1 (priced 2026-…Z, 2 step(s), 2 h old)'."""
    if b.get("priced"):
        return f"priced in step #{b.get('step_id')} ({_short(b.get('priced_at'))})"
    return (
        f"reused from step #{b.get('step_id')} (priced {_short(b.get('priced_at'))}, "
        f"{b.get('age_steps')} step(s), {float(b.get('age_s') or 0) / 3600.0:.3g} h old)"
    )


def _short(ts: Any) -> str:
    """'2023-04-25T13:45:00+00:00' -> '2023-04-25T13:45Z' (status lines stay short)."""
    if not isinstance(ts, str):
        return str(ts)
    return ts.replace("+00:00", "Z").replace(":00Z", "Z") if len(ts) >= 19 else ts


def run_status(args: argparse.Namespace) -> int:
    doc = collect_status(_state_dir(args.state_dir), steps=args.steps)
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        print(format_status(doc))
    return 0
