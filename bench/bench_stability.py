"""Plan stability of the control step (issue #7 §2): how much two consecutive plans differ.

1. **Same slot** — data/example as shipped (600 jobs, 48 hourly slots, default ``[controller]``),
   shadow mode on in-memory fakes, simulated clock: a step at 00:01 and one at 00:11 with
   nothing changed. Carbon (kg, the executed plan's total) of both plans, jobs whose pool or
   start moved, nodes switched differently, the chosen candidate and the kept placement's score.
2. **A simulated day** — the example fleet with a rolling 24-slot horizon and 150 of its job
   shapes arriving from a trace (tests/controller/test_example_fleet.py), enforce mode on fakes
   with the simulated scheduler starting released jobs; hourly steps. Per step against the
   newest plan: jobs moved (all; and those not yet due to start), node changes, plan source.
   ``[controller] candidates = false`` here (the MILP-guided and the kept placement compete) so
   that a day fits in minutes on the shared machine.

``--src DIR`` runs another checkout's greencpn (e.g. ``git worktree``/``git archive`` of main) with
the same bench, so before/after are measured side by side.

    .venv/bin/python bench/bench_stability.py [--part same|day|all] [--day-steps 24] [--src DIR]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _moves(old: dict | None, new: dict) -> dict:
    """Jobs placed by both plans whose (pool, start) differ; of them those ``old`` planned to
    start at or after ``new``'s horizon start; Σ |Δ nodes on| over the pool-slots both cover."""
    out = {"compared": 0, "moved": 0, "moved_not_due": 0, "node_changes": 0}
    if not old:
        return out
    h0 = new["horizon"]["start"]
    before = {j["id"]: (j["pool"], j["start"]) for j in old["jobs"] if j.get("start")}
    for j in new["jobs"]:
        b = before.get(j["id"])
        if b is None or not j.get("start"):
            continue
        out["compared"] += 1
        if b != (j["pool"], j["start"]):
            out["moved"] += 1
            out["moved_not_due"] += int(b[1] >= h0)
    ts_old = old["horizon"]["slot_starts"]
    ts_new = new["horizon"]["slot_starts"]
    nodes = {
        (p["name"], ts_old[s["slot"]]): s["nodes_on"] for p in old["pools"] for s in p["slots"]
    }
    for p in new["pools"]:
        for s in p["slots"]:
            n0 = nodes.get((p["name"], ts_new[s["slot"]]))
            out["node_changes"] += 0 if n0 is None else abs(s["nodes_on"] - n0)
    return out


def _summary(doc: dict, wall_s: float) -> dict:
    sv = doc.get("solver") or {}
    cands = sv.get("candidates") or []
    kept = next((c for c in cands if c["name"] == "kept placement"), None)
    return {
        "wall_s": round(wall_s, 1),
        "carbon_kg": round(doc["totals"]["carbon_kg"], 2),
        "objective": round(doc["executed"]["objective"], 2),
        "plan_source": sv.get("plan_source"),
        "kept": kept,
        "kept_info": sv.get("kept_placement"),
        "chosen": next((c for c in cands if c["name"] == sv.get("plan_source")), None),
    }


def same_slot() -> dict:
    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller import Controller, Mode
    from greencpn.controller.fakes import FakeFleet

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "example"
        shutil.copytree(ROOT / "data" / "example", d)
        path = d / "fleet.toml"
        clock = SimClock(datetime(2023, 4, 25, 0, 1, tzinfo=UTC))
        fleet = FakeFleet(load_config(path), clock)
        c = Controller(
            path,
            clock=clock,
            state_dir=d / "state",
            backends=fleet.backends,
            mode=Mode.SHADOW,
            sleep=lambda s: clock.advance(timedelta(seconds=s)),
        )
        out = {}
        docs = []
        for name in ("first", "second"):
            t = time.perf_counter()
            r = c.step()
            docs.append(r.plan)
            out[name] = _summary(r.plan, time.perf_counter() - t)
            clock.advance(timedelta(minutes=10))
        out["moves"] = _moves(docs[0], docs[1])
        c.close()
    return out


def day(steps: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller import Mode
    from greencpn.controller.fakes import FakeFleet
    from tests.controller.conftest import SimWorld, make_controller
    from tests.controller.test_example_fleet import T0, example_copy, trace

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = example_copy(d, days=steps // 24 + 3, slots=24)
        text = path.read_text().replace(
            "[carbon]",
            "[controller]\ncandidates = false\njoblevel_candidate = false\n\n[carbon]",
            1,
        )
        path.write_text(text)
        cfg = load_config(path)
        clock = SimClock(T0 + timedelta(minutes=1))
        fleet = FakeFleet(cfg, clock)
        world = SimWorld(cfg, fleet, clock, trace(150, hours=max(24, steps)))
        c = make_controller(
            path, clock, d / "state", fleet, mode=Mode.ENFORCE, queue=world, job_actuator=world
        )
        prev = None
        for _ in range(steps):
            t = time.perf_counter()
            r = c.step()
            row = {**_summary(r.plan, time.perf_counter() - t), **_moves(prev, r.plan)}
            rows.append(row)
            prev = r.plan
            fleet.forget_calls()
            clock.set(r.slot_start + timedelta(hours=1, minutes=1))
        c.close()
    tot = {k: sum(r[k] for r in rows[1:]) for k in ("compared", "moved", "moved_not_due")}
    src: dict[str, int] = {}
    for r in rows[1:]:
        src[r["plan_source"]] = src.get(r["plan_source"], 0) + 1
    return {"steps": rows, "totals_after_first": tot, "plan_sources": src}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("same", "day", "all"), default="all")
    ap.add_argument("--day-steps", type=int, default=24)
    ap.add_argument("--src", type=Path, help="run this checkout's greencpn instead")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.src:
        sys.path.insert(0, str(a.src.resolve()))
        globals()["ROOT"] = a.src.resolve()
    import greencpn

    out: dict = {
        "greencpn": str(Path(greencpn.__file__).parent),
        "load_at_start": os.getloadavg()[0],
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if a.part in ("same", "all"):
        out["same_slot"] = same_slot()
    if a.part in ("day", "all"):
        out["day"] = day(a.day_steps)
    out["load_at_end"] = os.getloadavg()[0]
    text = json.dumps(out, indent=1)
    if a.json:
        a.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
