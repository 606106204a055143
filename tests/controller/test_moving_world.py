"""The controller driven by a simulated clock through days of hourly steps, jobs arriving from
a trace, on in-memory fakes, in enforce mode with a job actuator (the simulated scheduler)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from greencpn.config import load_config
from greencpn.controller import Mode, StepStatus
from greencpn.controller.fakes import FakeFleet
from tests.controller.conftest import SimWorld, make_controller, trace_jobs, write_tiny

pytestmark = pytest.mark.slow  # minutes of solves / wall time: xdist hands it out first


def run_days(tmp_path, sim_clock, *, days: int, jobs: int, **kw):
    path = write_tiny(tmp_path, days=days + 2, slots=12, **kw)
    cfg = load_config(path)
    fleet = FakeFleet(cfg, sim_clock)
    world = SimWorld(cfg, fleet, sim_clock, trace_jobs(jobs, hours=(days - 1) * 24))
    c = make_controller(
        path,
        sim_clock,
        tmp_path / "state",
        fleet,
        mode=Mode.ENFORCE,
        queue=world,
        job_actuator=world,
    )
    results = []
    for _ in range(days * 24):
        results.append(c.step())
        # the next step at the next slot boundary (+1 min), as the daemon's scheduler does
        sim_clock.set(results[-1].slot_start + timedelta(hours=1, minutes=1))
    return c, fleet, world, results


def test_three_days_of_hourly_steps(tmp_path, sim_clock):
    c, fleet, world, results = run_days(tmp_path, sim_clock, days=3, jobs=40)
    statuses = Counter(r.status for r in results)
    assert statuses[StepStatus.FAILED] == 0, [r.errors for r in results if r.errors][:3]
    assert all(r.plan_origin == "optimized" for r in results)
    # no deadline missed (the trace is feasible: slack of 6-20 h on a half-empty fleet)
    assert world.missed_deadlines() == []
    # no running job touched: the controller never deferred/steered/released a running job
    assert world.violations == []
    # no node powered off under a job
    assert fleet.killed_jobs() == 0
    # the fleet was actually switched: nodes went off and came back on
    cycles = c.ledger.power_cycles(10_000)
    assert {e.event for e in cycles} == {"on", "off"}
    # every action of every step is closed (none left intended/started)
    assert not c.ledger.actions(status="intended") and not c.ledger.actions(status="started")
    # jobs ran mostly at the clean site s2 (carbon-aware), all of them ran
    pools = Counter(sj.pool for sj in world.jobs.values())
    assert pools["p2"] > pools["p1"]
