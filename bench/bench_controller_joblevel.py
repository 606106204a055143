"""`[controller] joblevel_candidate` on vs off: what the job-level MILP candidate buys the control
step on the example fleet, and what it costs.

The soak's world (bench/bench_controller_soak.py: the example fleet, a rolling 24-slot horizon,
hourly steps on a simulated clock, enforce mode on in-memory fakes, jobs from the example's
shapes at 3 an hour) run ``--steps`` steps twice, each in its own process: once with
``joblevel_candidate = true``, once with ``false`` (the rest default), in the order given.

Per step it records the wall time, the job-level MILP's own time (plan.json
``solver.joblevel.total_s``), which candidate became the plan and, when the job-level MILP
was built, its score (objective + stability cost, the step's ranking) against the best other
candidate's. Per run: the acted carbon (the sum over steps of each plan's first slot,
``sites[*].slots[0].carbon_kg`` — the slot the step carries out), the horizon carbon of the
last plan, late / unserved jobs and missed deadlines.

    .venv/bin/python bench/bench_controller_joblevel.py [--steps 24] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
RESULTS = HERE / "results" / "controller.md"
HEADER = "## `[controller] joblevel_candidate` on vs off (`bench/bench_controller_joblevel.py`)"
JL = "job-level MILP"


def run(steps: int, joblevel: bool) -> dict:
    from bench_controller_soak import soak_trace

    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller import Mode
    from greencpn.controller.fakes import FakeFleet
    from tests.controller.conftest import SimWorld, make_controller
    from tests.controller.test_example_fleet import T0, example_copy

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = example_copy(d, days=steps // 24 + 3, slots=24)
        flag = "true" if joblevel else "false"
        text = path.read_text().replace(
            "[carbon]", f"[controller]\njoblevel_candidate = {flag}\n\n[carbon]", 1
        )
        path.write_text(text)
        cfg = load_config(path)
        clock = SimClock(T0 + timedelta(minutes=1))
        fleet = FakeFleet(cfg, clock)
        world = SimWorld(cfg, fleet, clock, soak_trace(steps + 24))
        c = make_controller(
            path, clock, d / "state", fleet, mode=Mode.ENFORCE, queue=world, job_actuator=world
        )
        last = None
        for _ in range(steps):
            t0 = time.perf_counter()
            r = c.step()
            wall = time.perf_counter() - t0
            doc = r.plan or {}
            sv = doc.get("solver") or {}
            jl = sv.get("joblevel") or {}
            cands = sv.get("candidates") or []
            score = {x["name"]: x["objective"] + x["stability_cost"] for x in cands}
            others = [v for k, v in score.items() if k != JL]
            rows.append(
                {
                    "wall_s": wall,
                    "optimize_s": r.phase_s.get("optimize", 0.0),
                    "jobs": len(doc.get("jobs") or []),
                    "source": sv.get("plan_source", r.plan_origin),
                    "jl_status": jl.get("status"),
                    "jl_s": float(jl.get("total_s") or 0.0),
                    "jl_score": score.get(JL),
                    "best_other_score": min(others) if others else None,
                    "slot_carbon_kg": sum(
                        float(s["slots"][0]["carbon_kg"]) for s in doc.get("sites") or []
                    ),
                    "late_jobs": (doc.get("totals") or {}).get("late_jobs"),
                }
            )
            last = doc
            fleet.forget_calls()
            world.calls.clear()
            clock.set(r.slot_start + timedelta(hours=1, minutes=1))
        now = clock.now()
        due = {jid for jid, sj in world.jobs.items() if sj.job.deadline <= now}
        missed = [m for m in world.missed_deadlines() if m.split(":", 1)[0] in due]
        out = {
            "joblevel": joblevel,
            "steps": steps,
            "rows": rows,
            "last_horizon_carbon_kg": (last or {}).get("totals", {}).get("carbon_kg_in_horizon"),
            "missed_deadlines": len(missed),
            "jobs_due": len(due),
            "violations": len(world.violations),
        }
        c.close()
    return out


def child(steps: int, joblevel: bool) -> tuple[dict, float, float, datetime]:
    load0, t0 = os.getloadavg()[0], datetime.now(UTC)
    out = subprocess.run(
        [sys.executable, __file__, "--child", "on" if joblevel else "off", "--steps", str(steps)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1]), load0, os.getloadavg()[0], t0


def table(results: list) -> list[str]:
    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else float("nan")

    lines = [
        "| | "
        + " | ".join(
            f"`joblevel_candidate = {str(r['joblevel']).lower()}` ({i + 1})"
            for i, (r, *_) in enumerate(results)
        )
        + " |",
        "|---|" + "---|" * len(results),
    ]

    def row(name, f):
        lines.append(f"| {name} | " + " | ".join(f(r) for r, *_ in results) + " |")

    row("steps", lambda r: str(r["steps"]))
    row("step wall, median s", lambda r: f"{med([x['wall_s'] for x in r['rows']]):.2f}")
    row("step wall, max s", lambda r: f"{max(x['wall_s'] for x in r['rows']):.2f}")
    row("step wall, sum s", lambda r: f"{sum(x['wall_s'] for x in r['rows']):.1f}")
    row(
        "job-level MILP built (steps)",
        lambda r: str(sum(1 for x in r["rows"] if x["jl_score"] is not None)),
    )
    row("job-level MILP time, sum s", lambda r: f"{sum(x['jl_s'] for x in r['rows']):.1f}")
    row("job-level MILP time, max s", lambda r: f"{max([x['jl_s'] for x in r['rows']] + [0]):.1f}")
    row("job-level MILP won (steps)", lambda r: str(sum(x["source"] == JL for x in r["rows"])))

    def margin(r):
        m = [
            x["best_other_score"] - x["jl_score"]
            for x in r["rows"]
            if x["source"] == JL and x["best_other_score"] is not None
        ]
        return f"{sum(m):.2f}" + (f" (max {max(m):.2f})" if m else "")

    row("its margin when it won, sum (score units ≈ kg)", margin)
    row(
        "acted carbon, sum of the steps' first slots, kg",
        lambda r: f"{sum(x['slot_carbon_kg'] for x in r['rows']):.1f}",
    )
    row(
        "last plan's horizon carbon, kg",
        lambda r: f"{r['last_horizon_carbon_kg']:.1f}" if r["last_horizon_carbon_kg"] else "—",
    )
    row("deadlines missed (jobs due)", lambda r: f"{r['missed_deadlines']} ({r['jobs_due']})")
    row("job-actuation violations", lambda r: str(r["violations"]))
    lines.append(
        "| plan sources | "
        + " | ".join(
            ", ".join(
                f"{k}: {v}"
                for k, v in sorted(
                    {
                        s: sum(x["source"] == s for x in r["rows"])
                        for s in {x["source"] for x in r["rows"]}
                    }.items()
                )
            )
            for r, *_ in results
        )
        + " |"
    )
    lines.append(
        "| 1-min load before → after | "
        + " | ".join(f"{a:.2f} → {b:.2f}" for _, a, b, _ in results)
        + " |"
    )
    lines.append("| started (UTC) | " + " | ".join(f"{t:%H:%M:%S}" for *_, t in results) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["on", "off"])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--order", default="on,off", help="the runs, in order (on / off)")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", type=Path, help="format an earlier --json output")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run(a.steps, a.child == "on")))
        return 0
    from bench_controller import machine

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if a.from_json:
        saved = json.loads(a.from_json.read_text())
        results = [(r, l0, l1, datetime.fromisoformat(t)) for r, l0, l1, t in saved["runs"]]
        when, mach = saved["when"], saved["machine"]
    else:
        mach = machine()
        results = [child(a.steps, x == "on") for x in a.order.split(",")]
        if a.json:
            a.json.write_text(
                json.dumps(
                    {
                        "when": when,
                        "machine": mach,
                        "runs": [(r, l0, l1, t.isoformat()) for r, l0, l1, t in results],
                    }
                )
            )
    lines = [
        HEADER,
        "",
        f"Machine: {mach}. Measured {when}. The soak's world (example fleet, 224 nodes; rolling "
        "24-slot horizon; hourly steps on a simulated clock; enforce mode on fakes; the example's "
        "job shapes at 3 an hour), each run its own process, in the order of the columns; the "
        "rest of `[controller]` default. Score = objective + stability cost, the step's ranking "
        "(objective: 1 per kg CO2e + 0.05 per EUR + lateness). Acted carbon = the sum of each "
        "step's plan for its own (first) slot: what the steps carried out.",
        "",
        *table(results),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.write:
        old = RESULTS.read_text() if RESULTS.is_file() else ""
        if HEADER in old:
            i = old.index(HEADER)
            j = old.find("\n## ", i + len(HEADER))
            old = old[:i] + (old[j + 1 :] if j >= 0 else "")
        RESULTS.write_text(old.rstrip() + "\n\n" + text.rstrip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
