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
    name: str, window: int, node_factor: int, report: bool, replan: bool, time_limit: float
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
            from greencpn.optimize.plan import place_and_repair

            place_and_repair(inp2, model, sol2)
            out["replan_s"] = time.perf_counter() - t0
            out["replan_solve_s"] = o2.solve_s
            out["replan_handoff_s"] = o2.handoff_s
            out["replan_status"] = o2.status.value
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def spawn(args: list[str]) -> dict:
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
    ap.add_argument("--child", nargs="*")
    a = ap.parse_args()
    if a.child is not None:
        name, window, nf, report, replan, tl = a.child
        print(
            json.dumps(run_one(name, int(window), int(nf), report == "1", replan == "1", float(tl)))
        )
        return 0
    rows = []
    for name in a.instances:
        for window in sorted({1, a.window}):
            r = spawn([name, str(window), "1", "1", "1" if name == "L" else "0", str(a.time_limit)])
            rows.append(r)
            print(json.dumps(r), flush=True)
    scaling = []
    if "L" in a.instances:
        for nf in (1, 10):
            r = spawn(["L", str(a.window), str(nf), "0", "0", str(a.time_limit)])
            scaling.append(r)
            print(json.dumps(r), flush=True)
    lines = [
        "## Plan (`bench/bench_plan.py`)",
        "",
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "Times in seconds. `w` = window_rounding_slots used to group jobs (1 = exact windows). "
        "End to end = config load → MILP → job placement + node repair → baselines → report (plan.json, "
        "report.md/html with plots). RSS = peak resident memory of the whole process.",
        "",
        "| instance | w | vars | rows | groups | load | build | handoff | solve | extract | placement | baselines | report | end to end | MIP gap | executed vs bound | late | CO2 vs agnostic | CO2 vs shutdown-idle | late in baselines | GPU-h past horizon (plan / baseline) | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instance']} | {r['window']} | {r['n_vars']:,} | {r['n_constraints']:,} | {r['n_job_groups']} | "
            f"{r['load_s']:.1f} | {r['build_s']:.1f} | {r['handoff_s']:.1f} | {r['solve_s']:.1f} | {r['extract_s']:.2f} | "
            f"{r['placement_s']:.1f} | {r['baselines_s']:.1f} | {r.get('report_s', 0):.1f} | **{r['end_to_end_s']:.1f}** | "
            f"{100 * (r['mip_gap'] or 0):.2f} % | {100 * (r['gap_to_bound'] or 0):.2f} % | {r['late_jobs']} | "
            f"{-r['carbon_pct_vs_agnostic']:+.1f} % | {-r['carbon_pct_vs_shutdown_idle']:+.1f} % | "
            f"{r['baseline_late_jobs']} | {r['past_horizon_gpu_h']:,.0f} / {r['baseline_past_horizon_gpu_h']:,.0f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    for r in rows:
        if "replan_s" in r:
            lines += [
                "",
                f"Warm re-plan of {r['instance']} (w={r['window']}) with new carbon (±20 % noise) on the built "
                f"model: **{r['replan_s']:.1f} s** (handoff {r['replan_handoff_s']:.1f} s, solve "
                f"{r['replan_solve_s']:.1f} s, the rest extract + placement + repair), status {r['replan_status']}.",
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
