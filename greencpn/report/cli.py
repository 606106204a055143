"""``greencpn plan``: the one-off optimisation report.

Writes ``plan.json`` (schema ``greencpn.plan/1``), ``report.md``, ``report.html`` and the PNG
plots into ``--out``, and prints a short summary (or the whole plan with ``--json``).

Exit status: 0 a plan was written; 3 the solver found no feasible solution in its time limit
(no incumbent) and the **safe plan** was written instead (every usable node on, default caps,
jobs at release; ``plan.json`` has ``"origin": "safe"``); 2 bad input; 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from greencpn.clock import SystemClock

#: exit status of ``greencpn plan`` when the safe plan was written (no incumbent)
EXIT_SAFE_PLAN = 3


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="plan the fleet over the horizon and report the saving",
        description="Solve the joint placement / shutdown / power-cap plan and write plan.json, "
        "report.md and report.html with plots.",
        epilog=f"exit status: 0 plan written; {EXIT_SAFE_PLAN} no feasible solution within the "
        "time limit, the safe plan (all usable nodes on, default caps, jobs at release) was "
        "written instead; 2 bad input; 1 other failure",
    )
    p.add_argument("--config", required=True, type=Path, help="fleet config (TOML)")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out/)")
    p.add_argument(
        "--json", action="store_true", help="print the plan as JSON instead of a summary"
    )
    p.add_argument("--no-report", action="store_true", help="write plan.json only (no plots)")
    p.add_argument("--time-limit", type=float, default=None, help="override solver.time_limit_s")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="apply ledger folder: nodes marked failed there are planned without (re-plans their work)",
    )
    p.set_defaults(func=run)


def _fmt(v: float | None, unit: str = "", decimals: int = 1) -> str:
    if v is None:
        return "—"
    return f"{v:,.{decimals}f}{unit}"


def summary(doc: dict[str, Any], paths: dict[str, Path], wall_s: float) -> str:
    s = doc["solver"]
    ex = doc["executed"]
    tot = doc["totals"]
    base = doc["baselines"]
    sav = doc["savings"]
    h = doc["horizon"]
    lines = []
    if doc.get("origin") == "safe":
        sf = doc.get("safe_fallback") or {}
        lines += [
            f"SAFE PLAN — no optimised plan: {sf.get('reason', 'no incumbent')}.",
            f"  The plan is the safe plan: {sf.get('rule', '')}; exit status {EXIT_SAFE_PLAN}.",
            "",
        ]
    lines += [
        f"greencpn plan — {doc['fleet']}: {len(doc['sites'])} sites, {len(doc['pools'])} pools, "
        f"{sum(p['nodes'] for p in doc['pools'])} nodes, {len(doc['jobs'])} jobs, "
        f"{h['slots']} × {h['slot_minutes']} min from {h['start']}",
        f"solver: {s['status']} (MILP gap {_fmt(100 * s['mip_gap'] if s['mip_gap'] is not None else None, ' %', 2)}), "
        f"{s['n_vars']:,} variables, {s['n_constraints']:,} rows, {s['n_job_groups']} job groups; "
        f"build {s['build_s']:.1f} s, handoff {s['handoff_s']:.1f} s, solve {s['solve_s']:.1f} s, "
        f"placement {s['placement_s']:.1f} s",
        f"executed plan: objective {ex['objective']:,.1f}, {_fmt(100 * ex['gap_to_bound'] if ex['gap_to_bound'] is not None else None, ' %', 2)} "
        "above the MILP bound ((objective − bound) / bound)"
        + (
            "; the carbon-aware greedy schedule scored better than the optimised placement, "
            "so it is the plan"
            if s.get("plan_source") == "carbon-aware greedy"
            else ""
        ),
        "",
        f"{'':24}{'energy kWh':>12}{'carbon kg':>12}{'cost':>12}{'late jobs':>11}{'GPU-h past horizon':>20}",
    ]
    rows = [
        ("plan", tot),
        ("carbon-agnostic", base["carbon_agnostic"]),
        ("shutdown-idle", base["shutdown_idle"]),
    ]
    if "carbon_aware_greedy" in base:
        rows.append(("carbon-aware greedy", base["carbon_aware_greedy"]))
    for name, t in rows:
        lines.append(
            f"{name:24}{t['energy_kwh']:>12,.0f}{t['carbon_kg']:>12,.0f}{t['cost']:>12,.0f}{t['late_jobs']:>11}"
            f"{t.get('beyond_horizon_gpu_h', 0.0) + t.get('unserved_gpu_h', 0.0):>20,.0f}"
        )
    sub = (doc.get("baseline_rules") or {}).get("submit_site") or {}
    if sub:
        lines.append(
            "(carbon-agnostic and shutdown-idle start each job at its submit site: "
            + ", ".join(f"{n} job(s) by {r}" for r, n in sub.get("jobs_by_rule", {}).items())
            + ")"
        )
    lines += [
        "(energy, carbon and cost include work pushed past the horizon, charged at each site's "
        f"last-24 h mean: {tot.get('beyond_horizon_carbon_kg', 0.0):,.1f} kg for the plan, "
        f"{base['carbon_agnostic'].get('beyond_horizon_carbon_kg', 0.0):,.1f} kg carbon-agnostic;"
        " that work is the right column)",
        "",
        f"saving: {sav['carbon_kg_vs_carbon_agnostic']:,.0f} kg CO2e "
        f"({sav['carbon_pct_vs_carbon_agnostic']:.1f} %) vs carbon-agnostic, "
        f"{sav['carbon_kg_vs_shutdown_idle']:,.0f} kg ({sav['carbon_pct_vs_shutdown_idle']:.1f} %) vs shutdown-idle"
        + (
            f", {sav['carbon_kg_vs_carbon_aware_greedy']:,.0f} kg "
            f"({sav['carbon_pct_vs_carbon_aware_greedy']:.1f} %) vs carbon-aware greedy "
            f"(plan / greedy carbon = {tot['carbon_kg'] / base['carbon_aware_greedy']['carbon_kg']:.3f})"
            if "carbon_aware_greedy" in base and base["carbon_aware_greedy"]["carbon_kg"]
            else ""
        ),
    ]
    lines += signal_lines(doc)
    if doc["diagnostics"]:
        lines.append(f"diagnostics ({len(doc['diagnostics'])}):")
        lines += [f"  - {d}" for d in doc["diagnostics"][:8]]
        if len(doc["diagnostics"]) > 8:
            lines.append(f"  … {len(doc['diagnostics']) - 8} more in plan.json")
    if doc.get("tradeoff"):
        lines.append(
            "carbon/cost trade-off (MILP figures: the stage-1 model before placement, "
            "not executed plans):"
        )
        for pt in doc["tradeoff"]:
            lines.append(
                f"  w_carbon={pt['carbon_weight_per_kg']:.3g} w_cost={pt['cost_weight']:.3g}: "
                f"MILP {pt['carbon_kg']:,.0f} kg, MILP cost {pt['cost']:,.0f}"
            )
    lines.append("")
    lines.append("wrote " + ", ".join(str(p) for p in paths.values()) + f" in {wall_s:.1f} s")
    return "\n".join(lines)


def _price_on_actuals(cfg: Any, result: Any) -> None:
    """With ``[carbon] actuals_file``: the plan and baselines priced on the measured values
    too (plan.json ``on_actuals``)."""
    from greencpn.controller.forecast import load_actuals
    from greencpn.optimize.document import reprice

    actuals = load_actuals(cfg, result.inputs.start, result.inputs.T)
    if actuals is not None:
        src = f"csv:{cfg.actuals_path}"
        result.document["on_actuals"] = reprice(result, actuals, src)


def _short(source: str | None) -> str:
    """A ``csv:PATH`` source with the path relative to the working directory when it is below
    it (the summary line; plan.json keeps the full path)."""
    if not source:
        return "?"
    if source.startswith("csv:"):
        path = Path(source[4:])
        try:
            return f"csv:{path.relative_to(Path.cwd())}"
        except ValueError:
            return source
    return source


def signal_lines(doc: dict[str, Any]) -> list[str]:
    """The carbon signal the plan decided on, and the saving on actuals when there are some."""
    sig = doc.get("carbon_signal") or {}
    out = []
    if sig:
        groups: dict[str, list[str]] = {}
        for n, v in sig.get("sites", {}).items():
            desc = f"{v['kind']}, {_short(v['source'])}, {v.get('accounting') or 'accounting not stated'}"
            groups.setdefault(desc, []).append(n)
        sites = "; ".join(
            f"{'all ' + str(len(ns)) + ' sites' if len(ns) == len(sig['sites']) > 1 else ', '.join(ns)}: {d}"
            for d, ns in groups.items()
        )
        out.append(f"carbon signal: {sig.get('summary', '')} [{sites}]")
    act = doc.get("on_actuals")
    if act:
        sv = act["savings"]
        out.append(
            f"on actuals ({act['source']}): plan {act['totals']['carbon_kg']:,.0f} kg, saving "
            + ", ".join(
                f"{sv[f'carbon_kg_vs_{k}']:,.0f} kg ({sv[f'carbon_pct_vs_{k}']:.1f} %) vs {k.replace('_', '-')}"
                for k in ("carbon_agnostic", "shutdown_idle", "carbon_aware_greedy")
                if f"carbon_kg_vs_{k}" in sv
            )
        )
    return out


def run(args: argparse.Namespace) -> int:
    from greencpn.actuate.apply import Backends
    from greencpn.controller import Controller
    from greencpn.optimize.document import report_extras
    from greencpn.report.progress import PlanProgress

    t0 = time.perf_counter()
    verbose = int(getattr(args, "verbose", 0) or 0)
    # progress on stderr: on a terminal, or with -v; not on --json without -v
    show = (sys.stderr.isatty() and not args.json) or verbose >= 1
    # the report is the control step's observe → forecast → optimise, strictly (a fault is an
    # error here, not a fallback), with no hardware: the config's initial state, and the nodes
    # the apply ledger in --state-dir marks failed
    with (
        PlanProgress(enabled=show) as progress,
        tempfile.TemporaryDirectory(prefix="greencpn-plan-") as scratch,
    ):
        controller = Controller(
            args.config,
            clock=SystemClock(),
            state_dir=args.state_dir or Path(scratch),
            backends=Backends(hooks={}, gpus=lambda node: None),
            rolling=False,
        )
        if args.time_limit is not None:
            controller.override_solver(time_limit_s=args.time_limit)
        try:
            result = controller.plan(safe_fallback=True)
        finally:
            controller.close()  # its ledger and the baseline worker process
        cfg = controller.config
        doc = result.document
        progress.phase("report figures (lever split, energy breakdown, work per site)")
        doc.update(report_extras(cfg, result))
        _price_on_actuals(cfg, result)
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        plan_path = out / "plan.json"
        tmp = plan_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(plan_path)  # never a half-written plan
        paths: dict[str, Path] = {"plan": plan_path}
        if not args.no_report:
            from greencpn.report.render import render_report

            progress.phase("report (plots, report.md, report.html)")
            rendered = render_report(doc, out)
            paths["md"] = rendered["md"]
            paths["html"] = rendered["html"]
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(summary(doc, paths, time.perf_counter() - t0))
    return EXIT_SAFE_PLAN if doc.get("origin") == "safe" else 0
