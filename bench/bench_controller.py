"""Controller benchmark: the control step (observe → forecast → optimise → reconcile → act →
record) on in-memory fakes.

1. **L re-plan step** — the L instance (../shared/bench-instances/L, converted as bench_plan
   does, each pool given a hostlist so its nodes are actuated on fakes), a first step at slot 0,
   then one slot later a step with 5 % of the jobs changed (2.5 % removed, 2.5 % new) and a new
   forecast (±20 % noise): phases of that second step.
2. **Step overhead on the example fleet** — hourly steps on data/example (fakes, enforce):
   wall time of the step minus the optimiser's own reported work, minus the whole optimise
   phase, and minus only HiGHS' own solve time.
3. **Memory** — RSS over many steps after a warm-up, on a tiny fleet (full steps: MILP,
   placement, apply on fakes, ledger).
4. **Ledger bytes per step** — growth of steps.sqlite (+ WAL) per step, for both fleets.

    .venv/bin/python bench/bench_controller.py [--tiny-steps 2000] [--example-steps 24] [--write]

``--example-compare OLD_DIR [--runs 2]``: only part 2, for an older tree (``git archive <hash> |
tar -x -C OLD_DIR``, run with its own bench script) and this one, alternating in one run, each
in its own process; ``--write`` replaces that section of bench/results/controller.md.
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
RESULTS = HERE / "results" / "controller.md"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def machine() -> str:
    from importlib.metadata import version

    import highspy
    import pyomo

    ver = getattr(highspy, "__version__", None) or version("highspy")
    return (
        f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, pyomo {pyomo.__version__}, highspy {ver}, load average at "
        f"start {os.getloadavg()[0]:.1f}"
    )


class ListQueue:
    def __init__(self, jobs):
        self.jobs = list(jobs)

    def observe(self, now):
        from greencpn.controller import QueueState

        return QueueState(pending=list(self.jobs), source="bench")


# ----------------------------------------------------------------------------- 1. L step
def bench_l(window: int, controller: str = "") -> dict:
    import instances
    from instances import START, convert

    if not instances.INSTANCES.is_dir():  # a worktree one level deeper than the main checkout
        for cand in (ROOT.parent.parent / "shared" / "bench-instances",):
            if cand.is_dir():
                instances.INSTANCES = cand

    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller import Controller, Mode
    from greencpn.controller.fakes import FakeFleet

    out: dict = {"window": window}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = convert("L", d, window=window, time_limit_s=120.0)
        text = path.read_text()
        # hostlists so the fakes actuate every node; a rolling horizon
        n = iter(range(10_000))

        def add_host(m: re.Match) -> str:
            return f'{m.group(0)}\nhostlist = "l{next(n)}n[1-{m.group(1)}]"'

        text = re.sub(r"(?m)^nodes = (\d+)$", add_host, text)
        text = re.sub(r'start = "[^"]*"\n', "", text, count=1)
        if controller:  # extra [controller] settings (e.g. baselines = "all")
            text += "\n[controller]\n" + controller.replace(";", "\n") + "\n"
        path.write_text(text)
        (d / "control.toml").write_text(
            "[control]\nmax_power_ops_per_min = 100000\npower_ops_burst = 100000\nwait_for_boot = false\n"
        )
        # carbon one slot longer (the horizon rolls by one), and a noisy copy for step 2
        rows = list(csv.reader((d / "carbon.csv").open()))
        head, body = rows[0], rows[1:]
        last = body[-1]
        t_next = datetime.fromisoformat(last[0].replace("Z", "+00:00")) + timedelta(hours=1)
        body.append([t_next.strftime("%Y-%m-%dT%H:%M:%SZ"), *last[1:]])

        def write_carbon(rows_, noise: float, seed: int) -> None:
            rnd = random.Random(seed)
            with (d / "carbon.csv").open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(head)
                for r in rows_:
                    w.writerow(
                        [
                            r[0],
                            *[f"{float(v) * (1 + rnd.uniform(-noise, noise)):.2f}" for v in r[1:]],
                        ]
                    )

        write_carbon(body, 0.0, 0)
        cfg = load_config(path)
        clock = SimClock(START + timedelta(minutes=1))
        fleet = FakeFleet(cfg, clock, boot_delay_s=60)
        jobs = list(cfg.jobs)
        queue = ListQueue(jobs)
        c = Controller(
            path,
            clock=clock,
            state_dir=d / "state",
            mode=Mode.ENFORCE,
            backends=fleet.backends,
            queue=queue,
            sleep=lambda s: clock.advance(timedelta(seconds=s)),
        )
        out["nodes"] = sum(p.nodes for p in cfg.pools)
        out["jobs"] = len(jobs)
        t0 = time.perf_counter()
        r1 = c.step()
        out["first_step_s"] = time.perf_counter() - t0
        out["first_phases"] = r1.phase_s
        out["first_solver"] = r1.solver_status
        # 5 % of the jobs changed: 2.5 % removed, 2.5 % new (copies released now), new forecast
        rnd = random.Random(7)
        k = max(1, round(0.025 * len(jobs)))
        removed = set(rnd.sample(range(len(jobs)), k))
        kept = [j for i, j in enumerate(jobs) if i not in removed]
        now = START + timedelta(hours=1)
        new = []
        for i, j in enumerate(rnd.sample(kept, k)):
            span = j.deadline - j.release
            new.append(
                j.model_copy(update={"id": f"new{i}", "release": now, "deadline": now + span})
            )
        queue.jobs = kept + new
        write_carbon(body, 0.2, 1)
        clock.set(START + timedelta(hours=1, minutes=1))
        gc_s = [0.0, 0.0, 0.0]  # seconds of cyclic collections in the step, by generation
        gc_t0 = [0.0]

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                gc_t0[0] = time.perf_counter()
            else:
                gc_s[info["generation"]] += time.perf_counter() - gc_t0[0]

        gc.callbacks.append(on_gc)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            r2 = c.step()
        finally:
            gc.callbacks.remove(on_gc)
        out["step_s"] = time.perf_counter() - t0
        out["step_cpu_s"] = time.process_time() - c0  # this process, all its threads
        out["step_gc_s"] = gc_s
        out["baseline"] = r2.metrics.get("baseline")
        out["phases"] = r2.phase_s
        out["solver"] = r2.solver_status
        out["gap"] = r2.mip_gap
        out["status"] = r2.status.value
        out["actions"] = len(r2.actions)
        out["solve_s"] = r2.metrics.get("solve_s")
        out["plan_solver"] = (r2.plan or {}).get("solver", {})
        out["executed_objective"] = ((r2.plan or {}).get("executed") or {}).get("objective")
        out["plan_carbon_kg"] = ((r2.plan or {}).get("totals") or {}).get("carbon_kg")
        out["model_reused"] = r2.metrics.get("model_reused")
        out["changed_jobs"] = 2 * k
        c.close()
    return out


# ----------------------------------------------------------------------------- 2./4. example
#: plan.json solver-block timings main at 6b1d551 had (the step overhead subtracts them)
OLD_KEYS = (
    "build_s",
    "handoff_s",
    "solve_s",
    "extract_s",
    "placement_s",
    "baselines_s",
    "levels_placement_s",
    "greedy_anchor_repair_s",
)
#: solver work timed since (2026-12-03): the FIFO candidate's node repair (HiGHS) and pricing,
#: the HiGHS solution loaded into Pyomo, a re-plan's stability rows and its MIP start values
#: (plus ``joblevel.repair_s``, the job-level candidate's node repair)
NEW_KEYS = ("fifo_anchor_repair_s", "load_s", "stability_rows_s", "start_values_s")


def _plan_digest(doc: dict | None, tmp: Path) -> str:
    """The plan without its timings, paths and creation time (same plan = same digest)."""
    import json

    if doc is None:
        return "-"
    keep = {k: v for k, v in doc.items() if k not in ("created_at", "solver", "config")}
    text = json.dumps(keep, sort_keys=True, default=str).replace(str(tmp), "<tmp>")
    return hashlib.sha1(text.encode()).hexdigest()


#: ledger rows compared between trees (everything but timings: the clock is simulated, so
#: every timestamp is the same in two runs of the same code; the steps' phase times, metrics
#: (solve seconds) and MIP gap and the plans' blobs (solver timings inside) are left out)
LEDGER_TABLES = {
    "steps.sqlite": {
        "steps": "id, started_at, finished_at, slot_start, mode, status, plan_origin, "
        "solver_status, epoch, sources, errors",
        "actions": "*",
        "power_cycles": "*",
        "failures": "*",
        "inputs": "*",
        "kv": "*",
    },
    "ledger.sqlite": {
        "applies": "*",
        "steps": "*",
        "nodes": "*",
        "jobs": "*",
        "kv": "*",
    },
}


def _ledger_digest(state: Path, tmp: Path) -> str:
    """sha1 over the step ledger's and the apply ledger's rows (:data:`LEDGER_TABLES`), the
    run's temporary folder written ``<tmp>``: the same actuation and ledger records give the
    same digest."""
    import sqlite3

    h = hashlib.sha1()
    for fname, tables in LEDGER_TABLES.items():
        db = sqlite3.connect(f"file:{state / fname}?mode=ro", uri=True)
        try:
            for table, cols in tables.items():
                order = "key" if table == "kv" else ("name" if table == "nodes" else "rowid")
                for row in db.execute(f"SELECT {cols} FROM {table} ORDER BY {order}"):
                    h.update(repr((table, tuple(row))).replace(str(tmp), "<tmp>").encode())
        finally:
            db.close()
    return h.hexdigest()


def bench_example(steps: int, controller: str = "") -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "controller"))
    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller import Mode
    from greencpn.controller.fakes import FakeFleet
    from tests.controller.conftest import SimWorld, make_controller
    from tests.controller.test_example_fleet import T0, example_copy, trace

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        days = steps // 24 + 3
        path = example_copy(d, days=days, slots=48)
        if controller:  # [controller] lines (';'-separated) instead of the defaults
            lines = "\n".join(x.strip() for x in controller.split(";") if x.strip())
            text = path.read_text().replace("[carbon]", f"[controller]\n{lines}\n\n[carbon]", 1)
            path.write_text(text)
        cfg = load_config(path)
        clock = SimClock(T0 + timedelta(minutes=1))
        fleet = FakeFleet(cfg, clock)
        world = SimWorld(cfg, fleet, clock, trace(600, hours=max(24, steps)))
        world_s = [0.0]

        def timed(fn):
            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    world_s[0] += time.perf_counter() - t

            return wrapper

        for name in ("observe", "defer", "steer", "release"):
            setattr(world, name, timed(getattr(world, name)))
        c = make_controller(
            path, clock, d / "state", fleet, mode=Mode.ENFORCE, queue=world, job_actuator=world
        )
        rows = []
        over_old_def: list[float] = []
        plan_keys: list[str] = []
        b0 = None
        for i in range(steps):
            world_s[0] = 0.0
            t0 = time.perf_counter()
            r = c.step()
            wall = time.perf_counter() - t0 - world_s[0]  # the simulated scheduler's own time out
            fleet.forget_calls()
            sv = (r.plan or {}).get("solver") or {}
            # the solver block's timed regions as main at 6b1d551 had them ("old keys") ...
            opt_old = sum(float(sv.get(k) or 0.0) for k in OLD_KEYS)
            # the other candidates: kept placement, job-level MILP
            opt_old += float((sv.get("kept_placement") or {}).get("s") or 0.0)
            jl = sv.get("joblevel") or {}
            opt_old += float(jl.get("total_s") or 0.0)
            # ... and the solver work timed since (labelled; OLD trees lack them: 0)
            opt_own = opt_old + sum(float(sv.get(k) or 0.0) for k in NEW_KEYS)
            opt_own += float(jl.get("repair_s") or 0.0)
            over_old_def.append(wall - opt_old)
            plan_keys.append(_plan_digest(r.plan, d))
            rows.append((wall, r.phase_s, r.metrics.get("solve_s") or 0.0, len(r.actions), opt_own))
            if i == 0:
                c.ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                b0 = c.ledger.bytes()
            clock.set(r.slot_start + timedelta(hours=1, minutes=1))
        c.ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        b1 = c.ledger.bytes()
        c.close()
        ledger_sha1 = _ledger_digest(d / "state", d)
    over = sorted(w - o for w, _, _, _, o in rows)
    over_old_def.sort()
    over_phase = sorted(w - p["optimize"] for w, p, _, _, _ in rows)
    over_solve = sorted(w - s for w, _, s, _, _ in rows)
    med = lambda xs: xs[len(xs) // 2]  # noqa: E731
    return {
        "steps": steps,
        "wall_median_s": med(sorted(w for w, *_ in rows)),
        "overhead_excl_optimize_median_s": med(over),
        "overhead_excl_optimize_max_s": over[-1],
        "overhead_old_keys_median_s": over_old_def[len(over_old_def) // 2],
        "overhead_old_keys_max_s": over_old_def[-1],
        "plans_sha1": hashlib.sha1("".join(plan_keys).encode()).hexdigest(),
        "ledger_sha1": ledger_sha1,
        "controller": controller,
        "overhead_excl_optimize_phase_median_s": med(over_phase),
        "overhead_excl_highs_median_s": med(over_solve),
        "phase_median_s": {k: med(sorted(r[1][k] for r in rows)) for k in rows[0][1]},
        "actions_median": med(sorted(r[3] for r in rows)),
        "ledger_bytes_per_step": (b1 - (b0 or 0)) / max(1, steps - 1),
        "ledger_bytes_total": b1,
    }


# ----------------------------------------------------------------------------- 3. memory
def bench_memory(steps: int, warmup: int) -> dict:
    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller import Mode
    from greencpn.controller.fakes import FakeFleet
    from tests.controller.conftest import START, SimWorld, make_controller, trace_jobs, write_tiny

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        days = steps // 24 + 3
        path = write_tiny(d, days=days, slots=12)
        cfg = load_config(path)
        clock = SimClock(START + timedelta(minutes=1))
        fleet = FakeFleet(cfg, clock)
        world = SimWorld(cfg, fleet, clock, trace_jobs(steps // 2, hours=steps - 24))
        c = make_controller(
            path, clock, d / "state", fleet, mode=Mode.ENFORCE, queue=world, job_actuator=world
        )
        rss = []
        t0 = time.perf_counter()
        b_warm = 0
        for i in range(steps):
            r = c.step()
            fleet.forget_calls()
            world.calls.clear()
            clock.set(r.slot_start + timedelta(hours=1, minutes=1))
            if i + 1 == warmup:
                c.ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                b_warm = c.ledger.bytes()
            if (i + 1) % 50 == 0:
                rss.append((i + 1, rss_mb()))
        wall = time.perf_counter() - t0
        c.ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        b_end = c.ledger.bytes()
        c.close()
    warm = next(v for s, v in rss if s >= warmup)
    end = rss[-1][1]
    return {
        "steps": steps,
        "warmup": warmup,
        "wall_s": wall,
        "rss_warm_mb": warm,
        "rss_end_mb": end,
        "rss_max_mb": max(v for _, v in rss),
        "growth_pct": 100.0 * (end - warm) / warm,
        "ledger_bytes_per_step": (b_end - b_warm) / max(1, steps - warmup),
        "trace": rss,
    }


def child(kind: str, args: list[str]) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["peak_rss_mb"] = res.get("peak_rss_mb")
    return res


L_HEADER = "## Controller L re-plan step (`bench/bench_controller.py --l-only`)"


def l_compare(a) -> int:
    """The L step once per ``--l-compare`` setting, phases side by side (one bench run)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine()
    runs = []
    for ctl in a.l_compare:
        up0 = os.getloadavg()[0]
        L = child("l", ["--window", str(a.window), "--controller", ctl])
        runs.append((ctl or "(defaults)", L, up0, os.getloadavg()[0]))
    keys = ["step_s", *runs[0][1]["phases"]]
    ps_keys = [
        ("build_s", "MILP build"),
        ("handoff_s", "Pyomo→HiGHS handoff"),
        ("solve_s", "HiGHS"),
        ("extract_s", "extract"),
        ("placement_s", "full re-placement"),
        ("kept_s", "kept placement (fix kept jobs, place changed, node repair)"),
        ("baselines_s", "baselines"),
        ("levels_placement_s", "per-job cap-level candidates"),
        ("first_step_s", "first (cold) step, whole"),
    ]
    head = "| | " + " | ".join(f"`{r[0]}`" for r in runs) + " |"
    lines = [
        L_HEADER,
        "",
        f"Machine: {mach}. Measured {when}, one bench run, the settings one after the other "
        "(each its own process). On in-memory fakes, enforce mode, simulated clock.",
        "",
        f"L re-plan step ({runs[0][1]['nodes']:,} nodes, {runs[0][1]['jobs']:,} jobs, "
        f"window_rounding_slots = {a.window}): one slot after a first step, "
        f"{runs[0][1]['changed_jobs']} jobs changed and a new forecast (±20 % noise). Seconds; "
        "target ≤ 6 s for the whole step, stretch ≤ 3 s.",
        "",
        head,
        "|---" * (len(runs) + 1) + "|",
    ]

    def val(L: dict, k: str) -> float:
        if k == "step_s":
            return L["step_s"]
        if k == "first_step_s":
            return L["first_step_s"]
        if k == "kept_s":
            return float((L["plan_solver"].get("kept_placement") or {}).get("s") or 0.0)
        if k in L["phases"]:
            return L["phases"][k]
        return float(L["plan_solver"].get(k) or 0.0)

    for k in keys:
        name = "**whole step**" if k == "step_s" else f"phase {k}"
        lines.append(f"| {name} | " + " | ".join(f"{val(r[1], k):.2f}" for r in runs) + " |")
        if k == "step_s":
            lines.append(
                "| whole step, CPU s (the process, all threads) | "
                + " | ".join(
                    f"{r[1]['step_cpu_s']:.2f}" if "step_cpu_s" in r[1] else "n/a" for r in runs
                )
                + " |"
            )

    def base_label(L: dict) -> str:
        b = L.get("baseline")
        if not isinstance(b, dict):
            return "priced (no label)" if "baseline" not in L else "none"
        if b.get("priced"):
            return "priced this step"
        return f"reused (step #{b.get('step_id')}, {b.get('age_steps')} step(s) old)"

    lines.append(
        "| carbon-agnostic baseline | " + " | ".join(base_label(r[1]) for r in runs) + " |"
    )
    for k, name in ps_keys:
        lines.append(f"| {name} | " + " | ".join(f"{val(r[1], k):.2f}" for r in runs) + " |")
    lines.append(
        "| plan source | "
        + " | ".join(str(r[1]["plan_solver"].get("plan_source")) for r in runs)
        + " |"
    )
    lines.append(
        "| executed plan objective | "
        + " | ".join(f"{r[1].get('executed_objective') or 0:,.2f}" for r in runs)
        + " |"
    )
    lines.append(
        "| plan carbon, kg (horizon) | "
        + " | ".join(f"{r[1].get('plan_carbon_kg') or 0:,.1f}" for r in runs)
        + " |"
    )
    lines.append(
        "| status / solver | "
        + " | ".join(f"{r[1]['status']} / {r[1]['solver']}" for r in runs)
        + " |"
    )
    lines.append(
        "| load average before → after | "
        + " | ".join(f"{r[2]:.1f} → {r[3]:.1f}" for r in runs)
        + " |"
    )
    lines.append("| peak RSS MB | " + " | ".join(f"{r[1]['peak_rss_mb']:.0f}" for r in runs) + " |")
    lines.append("")
    if a.note:
        lines += [a.note, ""]
    _print_and_write(lines, L_HEADER if a.write else None)
    return 0


def _print_and_write(lines: list[str], header: str | None) -> None:
    """Print the section; with ``header``, replace that section of RESULTS with it (or append)."""
    text = "\n".join(lines)
    print(text)
    if header is None:
        return
    old = RESULTS.read_text() if RESULTS.is_file() else ""
    if header in old:
        head, rest = old.split(header, 1)
        nxt = rest.find("\n## ")
        old = head + (rest[nxt + 1 :] if nxt >= 0 else "")
    RESULTS.write_text(old.rstrip() + "\n\n" + text + "\n")


def l_only(a) -> int:
    import json

    if a.l_compare:
        return l_compare(a)

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine()
    if a.l_json:
        L = json.loads(a.l_json.read_text().strip().splitlines()[-1])
        when += f" (JSON of a run finished at {datetime.fromtimestamp(a.l_json.stat().st_mtime, UTC):%H:%M} UTC)"
    else:
        L = child("l", ["--window", str(a.window)])
    ps = L["plan_solver"]
    kp = ps.get("kept_placement") or {}
    ws = ps.get("warm_start") or {}
    lines = [
        L_HEADER,
        "",
        f"Machine: {mach}. Measured {when}. On in-memory fakes, enforce mode, simulated clock.",
        "",
        f"**L re-plan step** ({L['nodes']:,} nodes, {L['jobs']:,} jobs, window_rounding_slots = "
        f"{L['window']}, default `[controller]`): one slot after a first step, {L['changed_jobs']} "
        f"jobs changed ({L['changed_jobs'] // 2} removed, {L['changed_jobs'] // 2} new) and a new "
        f"forecast (±20 % noise): **{L['step_s']:.1f} s** for the whole step (target ≤ 6 s, "
        f"stretch ≤ 3 s); status {L['status']}, solver {L['solver']}, plan source "
        f"{ps.get('plan_source')}, incremental re-plan {kp.get('incremental')} "
        f"({kp.get('jobs_kept')} of {L['jobs']} jobs kept), MIP start feasible "
        f"{ws.get('feasible')} (start objective {ws.get('start_objective')}, final "
        f"{ps.get('objective')}), {L['actions']:,} actions.",
        "",
        "| phase | s |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in L["phases"].items()],
        "",
        f"Inside optimise: MILP build {ps.get('build_s', 0):.1f} s, handoff "
        f"{ps.get('handoff_s', 0):.1f} s, HiGHS {ps.get('solve_s', 0):.1f} s, kept placement "
        f"(fix {kp.get('jobs_kept')} jobs, place the changed ones, node repair) {kp.get('s', 0):.1f} s, full "
        f"re-placement {ps.get('placement_s', 0):.1f} s (skipped: incremental), baselines "
        f"{ps.get('baselines_s', 0):.1f} s. First (cold) step {L['first_step_s']:.1f} s. Peak RSS "
        f"{L['peak_rss_mb']:.0f} MB.",
        "",
    ]
    if a.note:
        lines += [a.note, ""]
    _print_and_write(lines, L_HEADER if a.write else None)
    return 0


LT_HEADER = "## Controller L re-plan step, OLD vs NEW (`bench/bench_controller.py --l-trees`)"


def ctl_args(a) -> list[str]:
    return ["--controller", a.controller] if a.controller else []


def speed_probe_s() -> float:
    """CPU seconds of a fixed pure-Python loop (20 M additions): how fast this VM ran just
    then. On the shared VM it varied 2.9–4.3 s within minutes at load < 1, so step times
    measured minutes apart are compared only with their probes beside them."""
    t = time.process_time()
    s = 0
    for i in range(20_000_000):
        s += i
    return time.process_time() - t


def _probe_loop(_: int = 0) -> float:
    return speed_probe_s()


def pair_probe() -> float:
    """Wall seconds of two :func:`speed_probe_s` loops run at once in two processes over one
    run alone (1.0: the VM gave two real cores just then; 2.0: one). The baseline worker
    (``[solver] baselines_worker``) gains only what the second core gives."""
    import multiprocessing

    t = time.perf_counter()
    speed_probe_s()
    alone = time.perf_counter() - t
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_probe_loop, [0, 1])  # start both processes first
        t = time.perf_counter()
        pool.map(_probe_loop, [0, 1], chunksize=1)
        pair = time.perf_counter() - t
    return pair / alone


def tree_child(root: Path, label: str, args: list[str]) -> dict:
    """``root``'s own ``bench/bench_controller.py --child ARGS`` (its greencpn on the path):
    the JSON it prints last."""
    import json

    out = subprocess.run(
        [sys.executable, str(root / "bench" / "bench_controller.py"), "--child", *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"{label} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def l_trees(a) -> int:
    """The L step (part 1) for ``--l-trees OLD_DIR`` and this tree, alternating OLD, NEW,
    ``--runs`` rounds; each tree runs its own ``bench/bench_controller.py --child l`` (copy this
    one into OLD to measure both the same way)."""

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine()
    trees = [("OLD", Path(a.l_trees).resolve()), ("NEW", ROOT)]
    runs = []
    for run in range(1, a.runs + 1):
        for label, root in trees:
            load0 = os.getloadavg()[0]
            args = ["l", "--window", str(a.window)]
            probe0, pair0 = speed_probe_s(), pair_probe()
            res = tree_child(root, label, [*args, *ctl_args(a)])
            res["speed_probe_s"] = (probe0, speed_probe_s())
            res["pair_probe"] = (pair0, pair_probe())
            runs.append((f"{label} ({run})", res, load0, os.getloadavg()[0]))
            print(label, run, f"{res['step_s']:.2f} s", file=sys.stderr, flush=True)
    first = runs[0][1]
    rows = [
        ("whole step, wall s", lambda L: L["step_s"]),
        ("whole step, CPU s (process_time)", lambda L: L["step_cpu_s"]),
        (
            "cyclic GC inside the step, s (gen 0 / 1 / 2)",
            lambda L: "/".join(f"{x:.2f}" for x in L["step_gc_s"]) if "step_gc_s" in L else "—",
        ),
        *[(f"phase {k}", lambda L, k=k: L["phases"][k]) for k in first["phases"]],
        *[
            (f"optimise: {label}", lambda L, k=k: float(L["plan_solver"].get(k) or 0))
            for k, label in (
                ("build_s", "MILP build"),
                ("handoff_s", "Pyomo→HiGHS hand-off"),
                ("solve_s", "HiGHS"),
                ("load_s", "solution into Pyomo"),
                ("stability_rows_s", "stability rows"),
                ("baselines_s", "baselines"),
            )
        ],
        (
            "optimise: kept placement",
            lambda L: float((L["plan_solver"].get("kept_placement") or {}).get("s") or 0),
        ),
        (
            "baselines priced (`baselines_where`)",
            lambda L: str(L["plan_solver"].get("baselines_where") or "in-process (no key)"),
        ),
        (
            "baselines worker: own wall s / CPU s / peak RSS MB",
            lambda L: (
                "—"
                if L["plan_solver"].get("baselines_where") != "worker"
                else "{:.2f} / {:.2f} / {:.0f}".format(
                    *(
                        float(L["plan_solver"][k])
                        for k in (
                            "baselines_worker_s",
                            "baselines_worker_cpu_s",
                            "baselines_worker_peak_rss_mb",
                        )
                    )
                )
            ),
        ),
        (
            "whole step, CPU s of the step and its worker",
            lambda L: L["step_cpu_s"] + float(L["plan_solver"].get("baselines_worker_cpu_s") or 0),
        ),
        ("first (cold) step, wall s", lambda L: L["first_step_s"]),
        ("peak RSS MB", lambda L: L["peak_rss_mb"]),
        ("executed objective", lambda L: L["executed_objective"]),
        ("actions", lambda L: L["actions"]),
        ("1-min load before → after", None),
        (
            "speed probe before → after, CPU s (`speed_probe_s`)",
            lambda L: "{:.2f} → {:.2f}".format(*L["speed_probe_s"]),
        ),
        (
            "two cores? two probe loops at once / one alone, wall (`pair_probe`; 1.0 = two real "
            "cores)",
            lambda L: "{:.2f} → {:.2f}".format(*L["pair_probe"]),
        ),
    ]
    ctl = f"`[controller]` {a.controller!r}" if a.controller else "default `[controller]`"
    lines = [
        LT_HEADER,
        "",
        f"Machine: {mach}. Measured {when}. OLD = `{trees[0][1]}`, NEW = this tree, each run its "
        f"own process, in the order of the columns; {ctl}. L re-plan step "
        f"({first['nodes']:,} nodes, {first['jobs']:,} jobs, window_rounding_slots = "
        f"{a.window}): one slot after a first step, {first['changed_jobs']} jobs changed and a "
        "new forecast (±20 % noise); fakes, enforce mode, simulated clock. Target ≤ 6 s for the "
        "whole step, stretch ≤ 3 s.",
        "",
        "| | " + " | ".join(r[0] for r in runs) + " |",
        "|---" * (len(runs) + 1) + "|",
    ]
    for label, f in rows:
        cells = []
        for _, L, l0, l1 in runs:
            if f is None:
                cells.append(f"{l0:.1f} → {l1:.1f}")
                continue
            v = f(L)
            cells.append(v if isinstance(v, str) else f"{v:,.3f}" if abs(v) < 100 else f"{v:,.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    if a.note:
        lines += [a.note, ""]
    _print_and_write(lines, LT_HEADER if a.write else None)
    return 0


EX_HEADER = (
    "## Controller step overhead, OLD vs NEW (`bench/bench_controller.py --example-compare`)"
)


def example_compare(a) -> int:
    """Part 2 for ``--example-compare OLD_DIR`` and this tree, alternating, ``--runs`` times."""
    import json

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine()
    trees = [("OLD", Path(a.example_compare).resolve()), ("NEW", ROOT)]
    rows = []
    for run in range(1, a.runs + 1):
        for label, root in trees:
            load0 = os.getloadavg()[0]
            t0 = datetime.now(UTC)
            args = ["example", "--example-steps", str(a.example_steps)]
            res = tree_child(root, label, [*args, *ctl_args(a)])
            rows.append((f"{label} ({run})", res, load0, os.getloadavg()[0], t0))
            print(label, run, json.dumps(res), file=sys.stderr)
    ms = lambda v: f"{1000 * v:.0f}"  # noqa: E731
    ctl = f"`[controller]` {a.controller!r}" if a.controller else "default `[controller]`"
    lines = [
        EX_HEADER,
        "",
        f"Machine: {mach}. Measured {when}. OLD = `{trees[0][1]}`, NEW = this tree; each tree "
        f"runs its own `bench/bench_controller.py --child example --example-steps "
        f"{a.example_steps}` (copy this one into the OLD tree to measure both the same way), "
        f"same venv, each run its own process, in the order of the rows; {ctl}. "
        f"{a.example_steps} hourly steps on the example fleet (224 nodes, 600 trace jobs; fakes, "
        "enforce mode, simulated clock; the simulated scheduler's own time is subtracted). "
        "Overhead = step wall − the optimiser's own work as plan.json's solver block reports it "
        "(target ≤ 200 ms): **(a)** with the timings main had at 6b1d551 (`OLD_KEYS`), **(b)** "
        "also minus the solver work timed since (`NEW_KEYS` + `joblevel.repair_s`: the FIFO "
        "candidate's node repair, the HiGHS solution loaded into Pyomo, the stability rows, the "
        'MIP start values; 0 in an OLD tree); "excl. the optimise phase" = step wall − the whole '
        "optimise phase. Plans = sha1 over every step's plan document without its solver "
        "block, path and creation time (equal = the same plans); ledger rows = sha1 over the "
        "step ledger's actions, power cycles, failures, inputs, kv and steps (without phase "
        "times, metrics, MIP gap) and the apply ledger's rows (`LEDGER_TABLES`; equal = the "
        "same actuation and ledger records).",
        "",
        "| run | overhead (a) median ms | (a) max ms | overhead (b) median ms | (b) max ms "
        "| excl. the optimise phase, median ms | median step s | observe ms | forecast ms "
        "| reconcile ms | act ms | record ms | median actions | ledger KiB/step | plans "
        "| ledger rows | 1-min load before → after | started (UTC) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r, l0, l1, t0 in rows:
        ph = r["phase_median_s"]
        a_med = r.get("overhead_old_keys_median_s", r["overhead_excl_optimize_median_s"])
        a_max = r.get("overhead_old_keys_max_s", r["overhead_excl_optimize_max_s"])
        lines.append(
            f"| {name} | {ms(a_med)} | {ms(a_max)} | "
            f"{ms(r['overhead_excl_optimize_median_s'])} | "
            f"{ms(r['overhead_excl_optimize_max_s'])} | "
            f"{ms(r['overhead_excl_optimize_phase_median_s'])} | {r['wall_median_s']:.2f} | "
            + " | ".join(ms(ph[k]) for k in ("observe", "forecast", "reconcile", "act", "record"))
            + f" | {r['actions_median']} | {r['ledger_bytes_per_step'] / 1024:.1f} | "
            f"{str(r.get('plans_sha1', '—'))[:10]} | {str(r.get('ledger_sha1', '—'))[:10]} | "
            f"{l0:.2f} → {l1:.2f} | {t0:%H:%M:%S} |"
        )
    lines.append("")
    if a.note:
        lines += [a.note, ""]
    _print_and_write(lines, EX_HEADER if a.write else None)
    return 0


def main() -> int:
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--tiny-steps", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--example-steps", type=int, default=24)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--skip-l", action="store_true")
    ap.add_argument(
        "--l-only",
        action="store_true",
        help="run only the L step and write its section (replacing an earlier one)",
    )
    ap.add_argument("--l-json", type=Path, help="with --l-only: format this child's JSON output")
    ap.add_argument("--note", help="with --l-only: a line of context (e.g. the load while it ran)")
    ap.add_argument(
        "--controller",
        help="[controller] lines for the L fleet, ';'-separated (child; see --l-compare)",
    )
    ap.add_argument(
        "--l-compare",
        action="append",
        help="with --l-only: run the L step once per value ([controller] lines, ';'-separated; "
        "'' = the defaults) and print the phases side by side",
    )
    ap.add_argument(
        "--example-compare",
        metavar="OLD_DIR",
        help="run only part 2 for the tree in OLD_DIR and this one, alternating (see the doc)",
    )
    ap.add_argument(
        "--l-trees",
        metavar="OLD_DIR",
        help="run only the L step for the tree in OLD_DIR and this one, alternating",
    )
    ap.add_argument(
        "--runs", type=int, default=2, help="with --example-compare / --l-trees: rounds"
    )
    a = ap.parse_args()
    if a.example_compare:
        return example_compare(a)
    if a.l_trees:
        return l_trees(a)
    if a.l_only:
        return l_only(a)
    if a.child:
        if a.child == "l":
            res = bench_l(a.window, a.controller or "")
        elif a.child == "example":
            res = bench_example(a.example_steps, a.controller or "")
        else:
            res = bench_memory(a.tiny_steps, a.warmup)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(json.dumps(res, default=str))
        return 0

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine()
    L = None if a.skip_l else child("l", ["--window", str(a.window)])
    ex = child("example", ["--example-steps", str(a.example_steps)])
    mem = child("memory", ["--tiny-steps", str(a.tiny_steps), "--warmup", str(a.warmup)])
    lines = [
        "## Controller (`bench/bench_controller.py`)",
        "",
        f"Machine: {mach}. Measured {when}. Everything on in-memory fakes (FakeNodeHook, fake "
        "GPUs), enforce mode, simulated clock; each part in its own process.",
        "",
    ]
    if L is not None:
        ph = L["phases"]
        ps = L["plan_solver"]
        gap = "n/a" if L["gap"] is None else f"{100 * L['gap']:.2f} %"
        lines += [
            f"**L re-plan step** ({L['nodes']:,} nodes, {L['jobs']:,} jobs, window_rounding_slots = "
            f"{L['window']}): one slot after a first step, with {L['changed_jobs']} jobs changed "
            f"(5 %: {L['changed_jobs'] // 2} removed, {L['changed_jobs'] // 2} new) and a new "
            f"forecast (±20 % noise): **{L['step_s']:.1f} s** for the whole step (target ≤ 6 s, "
            f"stretch ≤ 3 s); status {L['status']}, solver {L['solver']}, MIP gap "
            f"{gap}, {L['actions']:,} "
            f"actions recorded, model reused: {L['model_reused']}.",
            "",
            "| phase | s |",
            "|---|---|",
            *[f"| {k} | {v:.2f} |" for k, v in ph.items()],
            "",
            f"Inside optimise: MILP build {ps.get('build_s', 0):.1f} s, handoff "
            f"{ps.get('handoff_s', 0):.1f} s, HiGHS {ps.get('solve_s', 0):.1f} s, placement + node "
            f"repair {ps.get('placement_s', 0):.1f} s, baselines {ps.get('baselines_s', 0):.1f} s. "
            f"First (cold) step: {L['first_step_s']:.1f} s. Peak RSS {L['peak_rss_mb']:.0f} MB.",
            "",
        ]
    lines += [
        f"**Step overhead, example fleet** ({ex['steps']} hourly steps, 224 nodes, 600 trace jobs; "
        f"the simulated scheduler's own time — the test world answering the queue and job calls — "
        f"is subtracted): step wall time minus the optimiser's own work as plan.json's solver "
        f"block reports it (MILP build, handoff, HiGHS, extract, placement + node repair, "
        f"baselines): median **{1000 * ex['overhead_excl_optimize_median_s']:.0f} ms**, max "
        f"{1000 * ex['overhead_excl_optimize_max_s']:.0f} ms (target ≤ 200 ms); minus the whole "
        f"optimise phase: median {1000 * ex['overhead_excl_optimize_phase_median_s']:.0f} ms; "
        f"minus only HiGHS' "
        f"solve time: median {1000 * ex['overhead_excl_highs_median_s']:.0f} ms. Median step "
        f"{ex['wall_median_s']:.2f} s; median phases: "
        + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in ex["phase_median_s"].items())
        + f". Median actions per step {ex['actions_median']}.",
        "",
        f"**Memory**: {mem['steps']:,} full steps on the tiny 2-site fleet (tests/controller: 8 "
        f"nodes, {mem['steps'] // 2} trace jobs; MILP, placement, apply on fakes, ledger) in "
        f"{mem['wall_s']:.0f} s: RSS {mem['rss_warm_mb']:.1f} MB after a {mem['warmup']}-step "
        f"warm-up, {mem['rss_end_mb']:.1f} MB at the end: growth **{mem['growth_pct']:+.1f} %** "
        f"(target < 10 %). The issue asks for 10,000 steps on the example fleet; a full example "
        f"step takes ~{ex['wall_median_s']:.0f} s here, so 10,000 would take hours: this is "
        f"{mem['steps']:,} steps on the tiny fleet (the same code path). RSS (MB) by step: "
        + ", ".join(f"{st}: {v:.1f}" for st, v in mem["trace"][:: max(1, len(mem["trace"]) // 10)])
        + f"; peak {mem['rss_max_mb']:.1f}.",
        "",
        f"**Ledger bytes per step** (steps.sqlite + WAL after a checkpoint, growth per step): "
        f"example fleet {ex['ledger_bytes_per_step'] / 1024:.1f} KiB/step over {ex['steps'] - 1} "
        f"steps ({ex['ledger_bytes_total'] / 1024:.0f} KiB in all; plans are kept "
        f"zlib-compressed for the newest 336 steps, older plans pruned — the file keeps its size, SQLite reuses the pages), tiny fleet "
        f"{mem['ledger_bytes_per_step'] / 1024:.1f} KiB/step over steps {mem['warmup']}–{mem['steps']}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.write:
        # keep the soak section (bench/bench_controller_soak.py writes it into this file)
        old = RESULTS.read_text() if RESULTS.is_file() else ""
        marks = [
            old.index(m) for m in ("## Controller L re-plan", "## Controller soak") if m in old
        ]
        tail = old[min(marks) :] if marks else ""
        RESULTS.write_text(text + "\n" + ("\n" + tail if tail else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
