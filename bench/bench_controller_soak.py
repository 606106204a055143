"""Controller soak: many consecutive control steps on the example fleet — RSS after warm-up and
ledger bytes per step.

The example fleet (data/example: 4 sites, 8 pools, 224 nodes) with a rolling 24-slot horizon,
hourly steps on a simulated clock, enforce mode on in-memory fakes, jobs arriving from the
example's own job shapes at 3 an hour (a scheduler that starts released jobs, as in
tests/controller). Every step is a full step with the default `[controller]` settings (MILP
with warm start, candidates, kept placement, baselines, apply on fakes, ledger).

It runs ``--steps`` steps or until ``--budget-min`` minutes have passed, whichever comes first,
and says which: on a shared 2-core machine 10,000 example steps (~2 s each when idle) do not
fit a session, so the section states exactly how many were measured.

    .venv/bin/python bench/bench_controller_soak.py [--steps 10000] [--budget-min 25] [--write]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
RESULTS = HERE / "results" / "controller.md"
HEADER = "## Controller soak (`bench/bench_controller_soak.py`)"

from bench_controller import rss_mb  # noqa: E402  (bench/ is on sys.path when run)


def soak_trace(hours: int, per_hour: int = 3):
    """The example's job shapes (data/example/jobs.csv) cycled, ``per_hour`` released an hour,
    each with 12 h of slack beyond its run."""
    from greencpn.config import JobConfig
    from tests.controller.test_example_fleet import EXAMPLE, T0

    shapes = list(csv.DictReader((EXAMPLE / "jobs.csv").open()))
    out = []
    n = hours * per_hour
    for i in range(n):
        j = shapes[i % len(shapes)]
        rel = T0 + timedelta(hours=i / per_hour)
        run_h = float(j["work_gpu_h"]) / int(j["gpus"])
        out.append(
            JobConfig(
                id=f"s{i:06d}",
                gpus=int(j["gpus"]),
                work_gpu_h=float(j["work_gpu_h"]),
                release=rel,
                deadline=rel + timedelta(hours=run_h + 12),
                checkpointable=j["checkpointable"] == "true",
            )
        )
    return out


def soak(steps: int, budget_s: float, every: int, warmup_min: int, controller: str = "") -> dict:
    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller import Mode, StepStatus
    from greencpn.controller.fakes import FakeFleet
    from tests.controller.conftest import SimWorld, make_controller
    from tests.controller.test_example_fleet import T0, example_copy

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = example_copy(d, days=steps // 24 + 3, slots=24)
        if controller:  # [controller] lines (';'-separated) instead of the defaults
            lines = "\n".join(x.strip() for x in controller.split(";") if x.strip())
            text = path.read_text().replace("[carbon]", f"[controller]\n{lines}\n\n[carbon]", 1)
            path.write_text(text)
        cfg = load_config(path)
        clock = SimClock(T0 + timedelta(minutes=1))
        fleet = FakeFleet(cfg, clock)
        world = SimWorld(cfg, fleet, clock, soak_trace(steps + 24))
        c = make_controller(
            path, clock, d / "state", fleet, mode=Mode.ENFORCE, queue=world, job_actuator=world
        )
        rss: list[tuple[int, float]] = [(0, rss_mb())]
        walls: list[float] = []
        statuses: dict[str, int] = {}
        sources: dict[str, int] = {}
        t_start = time.perf_counter()
        ledger_at: dict[int, int] = {}
        done = 0
        stopped = "steps"
        for i in range(steps):
            t0 = time.perf_counter()
            r = c.step()
            walls.append(time.perf_counter() - t0)
            statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
            src = ((r.plan or {}).get("solver") or {}).get("plan_source", r.plan_origin)
            sources[src] = sources.get(src, 0) + 1
            assert r.status is not StepStatus.FAILED, r.errors
            fleet.forget_calls()
            world.calls.clear()
            clock.set(r.slot_start + timedelta(hours=1, minutes=1))
            done = i + 1
            if done % every == 0:
                rss.append((done, rss_mb()))
                c.ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                ledger_at[done] = c.ledger.bytes()
            if time.perf_counter() - t_start > budget_s:
                stopped = "budget"
                break
        wall = time.perf_counter() - t_start
        if done % every:
            rss.append((done, rss_mb()))
            c.ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            ledger_at[done] = c.ledger.bytes()
        now = clock.now()
        # jobs whose deadline has passed by the end (later ones have not had their chance)
        due = {jid for jid, sj in world.jobs.items() if sj.job.deadline <= now}
        missed = [m for m in world.missed_deadlines() if m.split(":", 1)[0] in due]
        n_due = len(due)
        violations = list(world.violations)
        c.close()
    # warm-up: the first 20 % of the steps measured (at least warmup_min), then RSS compared
    warm_step = max(warmup_min, done // 5)
    warm = next(((s, v) for s, v in rss if s >= warm_step), rss[-1])
    end = rss[-1]
    lsteps = sorted(ledger_at)
    lw = next((s for s in lsteps if s >= warm[0]), lsteps[0])
    per_step = (ledger_at[lsteps[-1]] - ledger_at[lw]) / max(1, lsteps[-1] - lw)
    walls_sorted = sorted(walls)
    return {
        "asked_steps": steps,
        "controller": controller,
        "steps": done,
        "stopped_by": stopped,
        "budget_s": budget_s,
        "wall_s": wall,
        "step_median_s": walls_sorted[len(walls_sorted) // 2],
        "step_max_s": walls_sorted[-1],
        "rss_start_mb": rss[0][1],
        "rss_warm_step": warm[0],
        "rss_warm_mb": warm[1],
        "rss_end_mb": end[1],
        "rss_max_mb": max(v for _, v in rss),
        "growth_pct": 100.0 * (end[1] - warm[1]) / warm[1],
        "rss_trace": rss,
        "ledger_bytes_end": ledger_at[lsteps[-1]],
        "ledger_bytes_per_step": per_step,
        "ledger_from_step": lw,
        "statuses": statuses,
        "plan_sources": sources,
        "missed_deadlines": len(missed),
        "jobs_due": n_due,
        "violations": len(violations),
    }


def section(res: dict, mach: str, when: str) -> str:
    tr = res["rss_trace"]
    pick = tr[:: max(1, len(tr) // 12)]
    if pick[-1] != tr[-1]:
        pick.append(tr[-1])
    stop = (
        f"stopped by the {res['budget_s'] / 60:.0f}-minute budget after {res['steps']:,} of "
        f"the {res['asked_steps']:,} steps asked"
        if res["stopped_by"] == "budget"
        else f"all {res['steps']:,} steps asked"
    )
    return "\n".join(
        [
            HEADER,
            "",
            f"Machine: {mach}. Measured {when}. The example fleet (224 nodes, 8 pools, 4 sites), "
            "rolling 24-slot horizon, hourly steps on a simulated clock, enforce mode on "
            "in-memory fakes, jobs from the example's shapes at 3 an hour, "
            + (
                f"`[controller]` {res['controller']!r} (the rest default)"
                if res.get("controller")
                else "default `[controller]` settings"
            )
            + "; one process.",
            "",
            f"**{res['steps']:,} full steps** ({stop}) in {res['wall_s']:.0f} s: step median "
            f"{res['step_median_s']:.2f} s, max {res['step_max_s']:.2f} s. RSS "
            f"{res['rss_warm_mb']:.1f} MB after the warm-up (step {res['rss_warm_step']}), "
            f"{res['rss_end_mb']:.1f} MB at step {res['steps']}: growth "
            f"**{res['growth_pct']:+.1f} %** (target < 10 %; 0 → warm-up "
            f"{res['rss_start_mb']:.1f} → {res['rss_warm_mb']:.1f} MB). RSS (MB) by step: "
            + ", ".join(f"{s}: {v:.1f}" for s, v in pick)
            + f"; peak {res['rss_max_mb']:.1f}.",
            "",
            f"**Ledger**: steps.sqlite + WAL after a checkpoint {res['ledger_bytes_end'] / 1024:.0f} "
            f"KiB at the end; growth **{res['ledger_bytes_per_step'] / 1024:.1f} KiB per step** "
            f"from step {res['ledger_from_step']} to {res['steps']} (plans are kept for the newest "
            "336 steps, zlib-compressed, so the growth flattens once the retention is full).",
            "",
            f"Step statuses {res['statuses']}; plan sources {res['plan_sources']}; deadlines "
            f"missed {res['missed_deadlines']} of the {res['jobs_due']} jobs due by the end; "
            f"job-actuation violations {res['violations']}.",
            "",
        ]
    )


def write_section(text: str) -> None:
    """Replace this bench's section (up to the next ``## `` heading; it cut off every section
    after it before 2026-12-03) or append it."""
    old = RESULTS.read_text() if RESULTS.is_file() else ""
    if HEADER in old:
        i = old.index(HEADER)
        j = old.find("\n## ", i + len(HEADER))
        old = old[:i] + (old[j + 1 :] if j >= 0 else "")
    RESULTS.write_text(old.rstrip() + "\n\n" + text.rstrip() + "\n")


def main() -> int:
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--budget-min", type=float, default=25.0)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--warmup-min", type=int, default=20)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", type=Path, help="write the section of an earlier --json run")
    ap.add_argument("--controller", default="", help="[controller] lines, ';'-separated")
    a = ap.parse_args()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = (
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    if a.from_json:
        res = json.loads(a.from_json.read_text())
        mach, when = res.get("machine", mach), res.get("when", "(not recorded)")
    else:
        res = soak(a.steps, a.budget_min * 60.0, a.every, a.warmup_min, a.controller)
        res["load_end"] = os.getloadavg()[0]
        res["machine"], res["when"] = mach, when
    text = section(res, mach + f", at the end {res['load_end']:.1f}", when)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(res, default=str))
    if a.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
