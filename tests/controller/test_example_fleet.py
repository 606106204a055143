"""The controller on the example fleet (data/example): days of hourly steps on a simulated
clock, jobs arriving from a trace, enforce mode on in-memory fakes."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.clock import SimClock
from greencpn.config import JobConfig, load_config
from greencpn.controller import Mode, StepStatus
from greencpn.controller.fakes import FakeFleet
from tests.controller.conftest import SimWorld, make_controller

pytestmark = pytest.mark.slow  # minutes of solves / wall time: xdist hands it out first

EXAMPLE = Path(__file__).resolve().parents[2] / "data" / "example"
T0 = datetime(2023, 4, 25, tzinfo=UTC)


def example_copy(tmp: Path, days: int, slots: int) -> Path:
    """The example fleet with a rolling horizon of ``slots`` and its 3-day carbon file repeated
    to ``days`` days (the jobs come from the trace, not the jobs file)."""
    rows = list(csv.reader((EXAMPLE / "carbon.csv").open()))
    head, body = rows[0], rows[1:]
    with (tmp / "carbon.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        for h in range(days * 24):
            src = body[h % len(body)]
            w.writerow([(T0 + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"), *src[1:]])
    (tmp / "jobs.csv").write_text("id,gpus,work_gpu_h,release,deadline\n")
    text = (EXAMPLE / "fleet.toml").read_text()
    text = re.sub(r'start = "2023-04-25T00:00:00Z"\n', "", text)
    text = re.sub(r"slots = 48", f"slots = {slots}", text)
    text = re.sub(r"power_budget_kw = \[[^\]]*\]", "power_budget_kw = 179.0", text)
    text = text.replace("time_limit_s = 60", "time_limit_s = 20")
    (tmp / "fleet.toml").write_text(text)
    (tmp / "control.toml").write_text(
        "[control]\nmax_power_ops_per_min = 100\npower_ops_burst = 100\n"
    )
    return tmp / "fleet.toml"


def trace(n: int, hours: int) -> list[JobConfig]:
    """The example's own job shapes (data/example/jobs.csv), arriving over ``hours``."""
    jobs = list(csv.DictReader((EXAMPLE / "jobs.csv").open()))[:n]
    out = []
    for i, j in enumerate(jobs):
        rel = T0 + timedelta(hours=hours * i / n)
        run_h = float(j["work_gpu_h"]) / int(j["gpus"])
        out.append(
            JobConfig(
                id=j["id"],
                gpus=int(j["gpus"]),
                work_gpu_h=float(j["work_gpu_h"]),
                release=rel,
                deadline=rel + timedelta(hours=run_h + 12),
                checkpointable=j["checkpointable"] == "true",
            )
        )
    return out


def test_three_days_on_the_example_fleet(tmp_path):
    days = 3
    path = example_copy(tmp_path, days=days + 2, slots=24)
    # 72 steps inside the suite's time: the MILP-guided and kept placements only (the other
    # candidates are covered on the tiny fleet, tests/controller/test_stability.py; the soak
    # bench runs the example with the defaults)
    text = path.read_text().replace(
        "[carbon]", "[controller]\ncandidates = false\njoblevel_candidate = false\n\n[carbon]", 1
    )
    path.write_text(text)
    cfg = load_config(path)
    clock = SimClock(T0 + timedelta(minutes=1))
    fleet = FakeFleet(cfg, clock)
    world = SimWorld(cfg, fleet, clock, trace(150, hours=(days - 1) * 24))
    c = make_controller(
        path, clock, tmp_path / "state", fleet, mode=Mode.ENFORCE, queue=world, job_actuator=world
    )
    results = []
    for _ in range(days * 24):
        results.append(c.step())
        fleet.forget_calls()
        clock.set(results[-1].slot_start + timedelta(hours=1, minutes=1))
    assert Counter(r.plan_origin for r in results) == {"optimized": days * 24}
    assert not [r for r in results if r.status is StepStatus.FAILED]
    assert world.missed_deadlines() == []
    assert world.violations == []
    assert fleet.killed_jobs() == 0
    assert sum(r.metrics["saved_kg_co2e"] for r in results) > 0
    cycles = Counter(e.event for e in c.ledger.power_cycles(100_000))
    assert cycles["off"] > 0
