"""The daemon driving the REAL controller for days on a simulated clock (no sleeping): a
tiny two-site fleet on fake nodes/GPUs, jobs arriving from a trace through the controller
tests' simulated world (queue + scheduler + job actuator)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.fakes import FakeFleet
from greencpn.daemon.cli import collect_status, format_status
from greencpn.daemon.core import Daemon
from tests.controller.conftest import START, SimWorld, trace_jobs, write_tiny

DAYS = 3


@dataclass
class Run:
    tmp: Path
    daemon: Daemon
    world: SimWorld
    results: list[Any]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp_path = tmp_path_factory.mktemp("daemon-real")
    trace = trace_jobs(24, hours=(DAYS - 1) * 24, seed=7)
    path = write_tiny(tmp_path, days=DAYS + 2, slots=12, time_limit_s=10)
    with (tmp_path / "control.toml").open("a") as fh:
        fh.write("allow_actuation = true\n[daemon]\nmode = 'enforce'\noffset_s = 60\n")
    clock = SimClock(START + timedelta(minutes=1))
    cfg = load_config(path)
    fleet = FakeFleet(cfg, clock)
    world = SimWorld(cfg, fleet, clock, trace)
    d = Daemon(
        path,
        state_dir=tmp_path / "state",
        clock=clock,
        backends=fleet.backends,
        controller_kwargs={
            "queue": world,
            "job_actuator": world,
            "sleep": lambda s: clock.advance(timedelta(seconds=s)),
        },
    )
    assert d.settings.mode == "enforce"
    # hourly fires at hh:01:00; a sleep inside a step (boot waits) moves the clock forward, and
    # the loop asks the trigger for the next fire after the last one, as APScheduler does
    return Run(tmp_path, d, world, d.simulate(clock, START + timedelta(days=DAYS)))


@pytest.mark.slow
def test_three_days_enforced_by_the_daemon_on_the_real_controller(run: Run) -> None:
    d, world, results, tmp_path = run.daemon, run.world, run.results, run.tmp
    assert len(results) == DAYS * 24
    assert all(r is not None for r in results)
    statuses = [str(r.status) for r in results]
    assert set(statuses) <= {"ok", "degraded"}, statuses
    assert [r.slot_start for r in results] == [START + timedelta(hours=h) for h in range(DAYS * 24)]
    # the world's rule: nothing done to a running job
    assert world.violations == []
    # every action the controller carried out was fenced with the single instance's epoch 0
    db = sqlite3.connect(d.controller.ledger_path)
    n_steps = db.execute("SELECT count(*) FROM steps").fetchone()[0]
    assert n_steps == DAYS * 24
    done_epochs = {
        e for (e,) in db.execute("SELECT DISTINCT epoch FROM actions WHERE status = 'done'")
    }
    assert done_epochs == {0}
    assert db.execute("SELECT count(*) FROM power_cycles").fetchone()[0] > 0
    # savings: the daemon's running sum is the sum of each slot's figure
    total = sum(r.metrics.get("saved_kg_co2e", 0.0) for r in results)
    assert d.state["savings"]["kg_co2e"] == pytest.approx(total)
    assert d.metrics.saved_co2e._value.get() == pytest.approx(total)
    doc = collect_status(tmp_path / "state", steps=3)
    assert doc["mode"] == "enforce" and len(doc["ledger_steps"]) == 3
    assert doc["power_cycles"], "recent power cycles come from the ledger"
    text = format_status(doc)
    assert "power cycles (recent)" in text and "kg CO2e" in text


@pytest.mark.slow
def test_no_deadline_missed_over_the_three_days(run: Run) -> None:
    """The trace is feasible (6-20 h of slack on a half-empty fleet): every job ends by its
    deadline, so no job was held past its latest start."""
    assert run.world.missed_deadlines() == []


def _tiny_daemon(tmp: Path, etcd: Any, key: str, name: str) -> tuple[Daemon, SimClock]:
    from greencpn.daemon.leader import Elector
    from greencpn.daemon.settings import EtcdSettings

    tmp.mkdir(parents=True, exist_ok=True)
    job = {
        "id": "j1",
        "gpus": 2,
        "work_gpu_h": 4,
        "release": "2026-01-05T00:00:00Z",
        "deadline": "2026-01-05T10:00:00Z",
    }
    path = write_tiny(tmp, jobs=[job])
    with (tmp / "control.toml").open("a") as fh:
        fh.write("allow_actuation = true\n[daemon]\nmode = 'enforce'\n")
    clock = SimClock(START + timedelta(minutes=1))
    fleet = FakeFleet(load_config(path), clock)
    elector = Elector(EtcdSettings(endpoints=[etcd.endpoint], key=key, ttl_s=5), name=name)
    d = Daemon(
        path,
        state_dir=tmp / "state",
        clock=clock,
        backends=fleet.backends,
        elector=elector,
        controller_kwargs={"sleep": lambda s: clock.advance(timedelta(seconds=s))},
    )
    return d, clock


def test_real_controller_acts_only_under_the_etcd_leaders_fence(
    tmp_path: Path, etcd: Any, etcd_key: str
) -> None:
    lead, _ = _tiny_daemon(tmp_path / "a", etcd, etcd_key, "a")
    follow, _ = _tiny_daemon(tmp_path / "b", etcd, etcd_key, "b")
    assert lead.elector.campaign_once() and not follow.elector.campaign_once()
    epoch = lead.elector.fence()
    ra, rb = lead.run_step(), follow.run_step()
    done_a = [a for a in ra.actions if a["status"] == "done"]
    assert done_a and {a["epoch"] for a in done_a} == {epoch}
    assert not [a for a in rb.actions if a["status"] == "done"]
    assert str(rb.status) in ("degraded", "skipped"), rb.status
    db = sqlite3.connect(follow.controller.ledger_path)
    assert db.execute("SELECT count(*) FROM actions WHERE status = 'done'").fetchone()[0] == 0
    lead.elector.stop()


def test_reused_baselines_are_labelled_in_the_state_metrics_and_status(tmp_path: Path) -> None:
    """``[controller] baselines_every = 3``: four hourly steps price the carbon-agnostic
    baseline in steps 1 and 4; steps 2 and 3 sum a saving against step 1's baseline, and the
    daemon's state, its Prometheus gauges and ``greencpn status`` say so, with its age."""
    trace = trace_jobs(6, hours=4, seed=3)
    path = write_tiny(tmp_path, days=3, slots=12, time_limit_s=10, controller="baselines_every = 3")
    clock = SimClock(START + timedelta(minutes=1))
    cfg = load_config(path)
    fleet = FakeFleet(cfg, clock)
    world = SimWorld(cfg, fleet, clock, trace)
    d = Daemon(
        path,
        state_dir=tmp_path / "state",
        clock=clock,
        backends=fleet.backends,
        controller_kwargs={
            "queue": world,
            "job_actuator": world,
            "sleep": lambda s: clock.advance(timedelta(seconds=s)),
        },
    )
    results = d.simulate(clock, START + timedelta(hours=4, minutes=30))  # fires hh:00:30
    assert len(results) == 4
    steps = d.state["steps"]
    assert [s["baseline"]["priced"] for s in steps] == [True, False, False, True]
    assert [s["baseline"]["step_id"] for s in steps] == [1, 1, 1, 4]
    assert [s["baseline"]["age_steps"] for s in steps] == [0, 1, 2, 0]
    # every step still counts its slot's saving, reused ones included
    total = sum(r.metrics["saved_kg_co2e"] for r in results)
    assert d.state["savings"]["kg_co2e"] == pytest.approx(total)
    assert len(d.state["savings"]["slots"]) == 4
    # the gauges describe the last step (priced): age 0
    assert d.metrics.baseline_age_steps._value.get() == 0
    assert d.metrics.baseline_age_s._value.get() == 0
    d.metrics.observe_step(results[2], reason="test")  # a reusing step: its age
    assert d.metrics.baseline_age_steps._value.get() == 2
    assert d.metrics.baseline_age_s._value.get() == results[2].metrics["baseline"]["age_s"] > 0
    text = format_status(collect_status(tmp_path / "state", steps=4))
    assert "last step's baseline: priced in step #4" in text, text
    d.state["steps"] = d.state["steps"][:3]
    d._write_state()
    text = format_status(collect_status(tmp_path / "state", steps=3))
    priced = steps[0]["baseline"]["priced_at"]
    assert (
        f"last step's baseline: reused from step #1 (priced {priced}, 2 step(s), 2 h old)" in text
    ), text
