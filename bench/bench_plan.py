"""Plan benchmark on ../shared/bench-instances (S, M, L, L-loaded, XL).

Each instance is converted to greencpn's config (bench/instances.py) and planned in its own
subprocess, so peak RSS is the instance's own. Reported per instance: config load, model build,
solver handoff, HiGHS solve, extract, job placement + node repair, baselines, report rendering,
end-to-end wall time and peak RSS; then a warm re-plan with new carbon on the built model, and
the 10×-nodes scaling ratio measured side by side in the same run.

    .venv/bin/python bench/bench_plan.py [--instances S M L L-loaded XL] [--window 4] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "plan.md"


def run_one(
    name: str,
    window: int,
    node_factor: int,
    report: bool,
    replan: bool,
    time_limit: float,
    reference_s: float = 0.0,
) -> dict:
    """Plan one instance in this process and return its timings (called in a subprocess)."""
    import numpy as np
    from instances import convert

    from greencpn.clock import SystemClock
    from greencpn.config import load_config
    from greencpn.controller.forecast import make_inputs
    from greencpn.optimize.checks import run_checks
    from greencpn.optimize.milp import PlanModel
    from greencpn.optimize.plan import finish_plan

    out: dict = {"instance": name, "window": window, "node_factor": node_factor}
    with tempfile.TemporaryDirectory() as tmp:
        path = convert(
            name, Path(tmp) / name, node_factor=node_factor, window=window, time_limit_s=time_limit
        )
        t_start = time.perf_counter()
        cfg = load_config(path)
        clock = SystemClock()
        inp = make_inputs(cfg, clock)
        out["load_s"] = time.perf_counter() - t_start
        model = PlanModel(inp)
        outcome = model.solve()
        t0 = time.perf_counter()
        sol = model.extract()
        outcome.extract_s = time.perf_counter() - t0
        res = finish_plan(cfg, clock, inp, model, outcome, sol, run_checks(inp))
        s = res.document["solver"]
        out.update(
            {
                k: s[k]
                for k in (
                    "status",
                    "mip_gap",
                    "build_s",
                    "handoff_s",
                    "solve_s",
                    "extract_s",
                    "placement_s",
                    "baselines_s",
                    "n_vars",
                    "n_constraints",
                    "n_job_groups",
                )
            }
        )
        out["gap_to_bound"] = res.document["executed"]["gap_to_bound"]
        out["reinsertion"] = s.get("reinsertion")
        out["candidates"] = s.get("candidates")
        doc = res.document
        out["plan_source"] = s["plan_source"]
        out["levels_placement_s"] = s.get("levels_placement_s", 0.0)
        out["joblevel"] = s.get("joblevel")
        out["carbon_kg"] = doc["totals"]["carbon_kg"]
        out["objective"] = doc["executed"]["objective"]
        out["fluid_bound"] = doc["executed"]["milp_bound"]
        out["budget_overrun_kwh"] = doc["totals"]["budget_overrun_kwh"]
        out["optimised_placement_carbon_kg"] = s["optimised_placement_totals"]["carbon_kg"]
        out["abandoned"] = s.get("abandoned")
        for key in ("carbon_aware_greedy", "shutdown_idle", "carbon_agnostic"):
            b = doc["baselines"][key]
            out[f"{key}_carbon_kg"] = b["carbon_kg"]
            out[f"{key}_late_jobs"] = b["late_jobs"]
            out[f"{key}_overrun_kwh"] = b["budget_overrun_kwh"]
            out[f"{key}_past_gpu_h"] = b["beyond_horizon_gpu_h"] + b["unserved_gpu_h"]
        out["late_jobs"] = res.document["totals"]["late_jobs"]
        out["carbon_pct_vs_agnostic"] = res.document["savings"]["carbon_pct_vs_carbon_agnostic"]
        out["carbon_pct_vs_shutdown_idle"] = res.document["savings"]["carbon_pct_vs_shutdown_idle"]
        tot, base = res.document["totals"], res.document["baselines"]["shutdown_idle"]
        out["baseline_late_jobs"] = base["late_jobs"]
        out["past_horizon_gpu_h"] = tot["beyond_horizon_gpu_h"] + tot["unserved_gpu_h"]
        out["baseline_past_horizon_gpu_h"] = base["beyond_horizon_gpu_h"] + base["unserved_gpu_h"]
        if report:
            from greencpn.report.render import render_report

            t0 = time.perf_counter()
            (Path(tmp) / "out").mkdir()
            (Path(tmp) / "out" / "plan.json").write_text(json.dumps(res.document))
            render_report(res.document, Path(tmp) / "out")
            out["report_s"] = time.perf_counter() - t0
        out["end_to_end_s"] = time.perf_counter() - t_start
        if replan:
            rng = np.random.default_rng(1)
            new = {
                s_.name: s_.intensity_g_per_kwh * rng.uniform(0.8, 1.2, inp.T) for s_ in inp.sites
            }
            inp2 = inp.with_intensity(new)
            t0 = time.perf_counter()
            o2 = model.resolve(inp2)
            sol2 = model.extract()
            # the whole second half of a plan: placements, baselines, candidates, document
            finish_plan(cfg, clock, inp2, model, o2, sol2, [])
            out["replan_s"] = time.perf_counter() - t0
            out["replan_solve_s"] = o2.solve_s
            out["replan_handoff_s"] = o2.handoff_s
            out["replan_status"] = o2.status.value
        if reference_s > 0:
            # the job-level reference, solved longer than production allows, warm-started
            # from the executed plan, then improved by fix-and-optimise
            from greencpn.optimize.evaluate import evaluate
            from greencpn.optimize.joblevel import fix_and_optimise, solve_joblevel

            t0 = time.perf_counter()
            ref = solve_joblevel(inp, time_limit_s=reference_s, rel_gap=0.01, start=res.schedule)
            if ref.schedule is not None:
                ref, _ = fix_and_optimise(inp, ref, block_jobs=15, time_budget_s=reference_s / 2)
                assert ref.schedule is not None and ref.n is not None and ref.u is not None
                ev = evaluate(inp, ref.schedule, ref.n, ref.u)
                out["reference"] = {
                    "status": ref.status,
                    "objective": ref.objective,
                    "evaluated_objective": ev.objective,
                    "carbon_kg": ev.totals["carbon_kg"],
                    "late_jobs": ev.totals["late_jobs"],
                    "bound": ref.bound,
                    "s": time.perf_counter() - t0,
                }
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def spawn(args: list[str]) -> dict:
    """Run one instance in a child process (its own peak RSS)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    import highspy
    import pyomo

    ver = highspy.Highs().version() if hasattr(highspy.Highs(), "version") else "?"
    return (
        f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"pyomo {pyomo.__version__}, highspy {ver}, load average at start {os.getloadavg()[0]:.1f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", nargs="*", default=["S", "M", "L", "L-loaded", "XL"])
    ap.add_argument("--window", type=int, default=4, help="window_rounding_slots for grouping")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--write", action="store_true")
    ap.add_argument(
        "--reference-s",
        type=float,
        default=300.0,
        help="time for the job-level reference on S (0 = skip)",
    )
    ap.add_argument(
        "--windows", type=int, nargs="*", help="windows to run (default 1 and --window)"
    )
    ap.add_argument("--child", nargs="*")
    ap.add_argument(
        "--no-extras",
        action="store_true",
        help="skip L's warm re-plan and the 10x-nodes scaling pair",
    )
    ap.add_argument(
        "--from-log",
        type=Path,
        help="render the tables from the JSON rows a previous run printed (no new runs)",
    )
    a = ap.parse_args()
    if a.child is not None:
        name, window, nf, report, replan, tl, ref = a.child
        print(
            json.dumps(
                run_one(
                    name, int(window), int(nf), report == "1", replan == "1", float(tl), float(ref)
                )
            )
        )
        return 0
    rows = []
    scaling = []
    if a.from_log is not None:
        for line in a.from_log.read_text().splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                (scaling if r.get("scaling") else rows).append(r)
        a.instances = []
    for name in a.instances:
        for window in a.windows or sorted({1, a.window}):
            ref = a.reference_s if (name == "S" and window == 1) else 0.0
            load = os.getloadavg()[0]
            r = spawn(
                [
                    name,
                    str(window),
                    "1",
                    "1",
                    "1" if name == "L" and not a.no_extras else "0",
                    str(a.time_limit),
                    str(ref),
                ]
            )
            r["load_avg_at_start"] = load
            rows.append(r)
            print(json.dumps(r), flush=True)
    if "L" in a.instances and not a.no_extras:
        for nf in (1, 10):
            r = spawn(["L", str(a.window), str(nf), "0", "0", str(a.time_limit), "0"])
            r["scaling"] = True
            r["load_avg_at_start"] = os.getloadavg()[0]
            scaling.append(r)
            print(json.dumps(r), flush=True)
    lines = [
        "## Plan (`bench/bench_plan.py`)",
        "",
        (
            f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
            if a.from_log is None
            else f"Machine: {machine().rsplit(', load', 1)[0]}. Rows measured in several runs "
            f"({a.from_log.name}), table written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        )
        + "The machine is shared: each row gives the 1-minute load average when it started "
        "(2 cores; above 2 the run had to share them, and its times are longer than alone).",
        "",
        "### Carbon: the executed plan against the carbon-aware greedy and the bounds",
        "",
        "All figures are kg CO2e priced by the same `evaluate()` (carbon-only weights). "
        "`plan / greedy` = executed plan carbon ÷ carbon-aware greedy carbon (target ≤ 0.95, "
        "never > 1). `fluid bound` = the aggregate MILP's proven lower bound on the objective; "
        "`above bound` = (plan objective − fluid bound) / fluid bound. `source` = which "
        "executable candidate won (plan_source). Late / overrun: late jobs and budget overrun "
        "(kWh) of the executed plan; the FIFO column is the shutdown-idle baseline's schedule "
        "(first in, first out, idle nodes off, spilling to the next allowed site, late jobs "
        "retried first).",
        "",
        "| instance | w | load | plan kg | greedy kg | plan / greedy | MILP-guided placement kg | fluid bound | above bound | late | overrun kWh | source | greedy late | FIFO kg | FIFO late | FIFO overrun kWh |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instance']} | {r['window']} | {r['load_avg_at_start']:.1f} | {r['carbon_kg']:,.1f} | "
            f"{r['carbon_aware_greedy_carbon_kg']:,.1f} | **{r['carbon_kg'] / r['carbon_aware_greedy_carbon_kg']:.3f}** | "
            f"{r['optimised_placement_carbon_kg']:,.1f} | {r['fluid_bound']:,.1f} | "
            f"{100 * (r['gap_to_bound'] or 0):.1f} % | {r['late_jobs']} | {r['budget_overrun_kwh']:,.1f} | "
            f"{r['plan_source']} | {r['carbon_aware_greedy_late_jobs']} | {r['shutdown_idle_carbon_kg']:,.1f} | "
            f"{r['shutdown_idle_late_jobs']} | {r['shutdown_idle_overrun_kwh']:,.1f} |"
        )
    for r in rows:
        jl = r.get("joblevel") or {}
        if jl.get("status") not in (None, "skipped"):
            lines += [
                "",
                f"Job-level MILP inside the plan of {r['instance']} (w={r['window']}): {jl['binaries']:,} "
                f"binaries, {jl['status']} after {jl['solve_s']:.1f} s, objective {jl['objective']:,.1f}, "
                f"HiGHS bound {jl['bound']:,.1f} (a bound for whole-slot GPU holding, the job-level "
                "model's own rules; not for the 15-minute placement grid).",
            ]
        ref = r.get("reference")
        if ref:
            lines += [
                "",
                f"Job-level reference on {r['instance']} (bench only: {ref['s']:.0f} s of HiGHS + "
                f"fix-and-optimise, warm-started from the executed plan): {ref['status']}, "
                f"{ref['carbon_kg']:,.1f} kg, {ref['late_jobs']} late, HiGHS bound {ref['bound']:,.1f}: "
                f"the executed plan ({r['carbon_kg']:,.1f} kg) is "
                f"{100 * (r['objective'] - ref['evaluated_objective']) / ref['evaluated_objective']:+.1f} % "
                f"from this reference's incumbent and "
                f"{100 * (r['objective'] - ref['bound']) / ref['bound']:+.1f} % above its bound.",
            ]
    lines += [
        "",
        "Caveats. The carbon-aware greedy is greencpn's own implementation of issue 11's "
        'definition (`mode="greedy"` in placement.py: earliest deadline first, the most '
        "efficient cap level — GPU board energy per unit of work — that is on time in some "
        "window, then that level's window with the lowest PUE × mean intensity; one level per "
        "pool-slot; idle nodes off while placing; nodes by the node repair; jobs it leaves late "
        "are retried first once). Issue 11 reported its own greedy at 189.7 kg on S, 1,883 kg "
        "on M and 5,039 kg on L under the old boot-energy model; this one measures higher "
        "(table), so the ratios above are against a weaker greedy than the issue's on L. The "
        "job-level HiGHS bound is a bound for the job-level model (GPUs held for whole slots), "
        "not for the 15-minute placement grid; the fluid bound is valid for both.",
        "",
        "### Time and memory",
        "",
        "Times in seconds. `w` = window_rounding_slots used to group jobs (1 = exact windows). "
        "End to end = config load → MILP → job placement + node repair → baselines → "
        "per-job-level placements → job-level MILP (small fleets) → report (plan.json, "
        "report.md/html with plots). RSS = peak resident memory of the whole process.",
        "",
        "| instance | w | load | vars | rows | groups | load cfg | build | handoff | solve | placement | baselines | per-job levels | re-insertion | job-level MILP | report | end to end | MIP gap | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        jl = r.get("joblevel") or {}
        lines.append(
            f"| {r['instance']} | {r['window']} | {r['load_avg_at_start']:.1f} | {r['n_vars']:,} | {r['n_constraints']:,} | {r['n_job_groups']} | "
            f"{r['load_s']:.1f} | {r['build_s']:.1f} | {r['handoff_s']:.1f} | {r['solve_s']:.1f} | "
            f"{r['placement_s']:.1f} | {r['baselines_s']:.1f} | {r['levels_placement_s']:.1f} | "
            f"{(r.get('reinsertion') or {}).get('s', 0.0):.1f} | "
            f"{jl.get('total_s', 0.0):.1f} | {r.get('report_s', 0):.1f} | **{r['end_to_end_s']:.1f}** | "
            f"{100 * (r['mip_gap'] or 0):.2f} % | {r['peak_rss_mb']:.0f} |"
        )
    for r in rows:
        if "replan_s" in r:
            lines += [
                "",
                f"Warm re-plan of {r['instance']} (w={r['window']}) with new carbon (±20 % noise) on the built "
                f"model: **{r['replan_s']:.1f} s** (handoff {r['replan_handoff_s']:.1f} s, solve "
                f"{r['replan_solve_s']:.1f} s, the rest extract + placements + baselines + document), "
                f"status {r['replan_status']} (target ≤ 3 s).",
            ]
    if len(scaling) == 2:
        t1 = scaling[0]["end_to_end_s"] - 0  # no report in the scaling runs
        t10 = scaling[1]["end_to_end_s"]
        lines += [
            "",
            f"Scaling, side by side: L at 1× nodes {t1:.1f} s, at 10× nodes (100,000 nodes, same pools and "
            f"jobs) {t10:.1f} s: ratio **{t10 / t1:.2f}×** (target < 1.5×); peak RSS "
            f"{scaling[0]['peak_rss_mb']:.0f} / {scaling[1]['peak_rss_mb']:.0f} MB.",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
