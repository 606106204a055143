"""One control step on a tiny fleet: shadow changes nothing, enforce reaches the plan's slot,
the ledger records inputs, plan, actions and power cycles."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from greencpn.actuate.base import NodePower
from greencpn.config import load_config
from greencpn.controller import Mode, StepStatus
from greencpn.controller.fakes import FakeFleet
from tests.controller.conftest import START, iso, make_controller, write_tiny

JOB = {
    "id": "j1",
    "gpus": 2,
    "work_gpu_h": 4,
    "release": iso(START),
    "deadline": iso(START + timedelta(hours=10)),
}


def test_shadow_step_records_and_changes_nothing(tmp_path, sim_clock):
    path = write_tiny(tmp_path, jobs=[JOB])
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet)
    r = c.step()
    assert r.status is StepStatus.OK, r.errors
    assert r.mode is Mode.SHADOW and r.plan_origin == "optimized"
    assert r.solver_status == "optimal"
    # a plan was made and the job placed on the clean site s2
    job = next(j for j in r.plan["jobs"] if j["id"] == "j1")
    assert job["site"] == "s2"
    # nothing changed on the fakes: every node on, no power call
    for hook in fleet.hooks.values():
        assert all(n.power == NodePower.ON for n in hook.nodes.values())
        assert not [c for c in hook.calls if c[0] != "status"]
    statuses = {a["status"] for a in r.actions}
    assert statuses == {"shadow"}, statuses
    kinds = {a["kind"] for a in r.actions}
    assert "power_off" in kinds  # the idle dirty pool would be switched off
    assert "job.release" in kinds or "job.defer" in kinds
    # ledger: one finished step with provenance, plan, actions
    db = sqlite3.connect(c.ledger_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = db.execute("SELECT status, plan_origin, solver_status FROM steps").fetchall()
    assert row == [("ok", "optimized", "optimal")]
    inputs = db.execute("SELECT site, freshness FROM inputs ORDER BY site").fetchall()
    assert inputs == [("s1", "fresh"), ("s2", "fresh")]
    assert c.ledger.plan(r.step_id)["jobs"][0]["id"] == "j1"
    assert set(r.phase_s) == {"observe", "forecast", "optimize", "reconcile", "act", "record"}


def test_enforce_step_reaches_the_slot_and_records_power_cycles(tmp_path, sim_clock):
    path = write_tiny(tmp_path, jobs=[JOB])
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, mode=Mode.ENFORCE)
    r = c.step()
    assert r.status is StepStatus.OK, r.errors
    for p in r.plan["pools"]:
        want = p["slots"][0]["nodes_on"]
        hook = fleet.hooks[p["name"]]
        on = sum(1 for n in hook.nodes.values() if n.power == NodePower.ON)
        assert on == want, (p["name"], on, want)
        cap = p["slots"][0]["power_cap_w"]
        for n, node in hook.nodes.items():
            if node.power == NodePower.ON:
                limits = {g.power_limit_current_w for g in fleet.gpu(n).list_gpus()}
                assert limits == {cap}, (n, limits, cap)
    off = [a for a in r.actions if a["kind"] == "power_off"]
    assert off and all(a["status"] == "done" for a in off)
    db = sqlite3.connect(c.ledger_path)
    cycles = db.execute("SELECT node, event FROM power_cycles ORDER BY node").fetchall()
    assert sorted(a["target"] for a in off) == [n for n, e in cycles if e == "off"]
    # a second step in the same slot: nothing left to do
    sim_clock.advance(timedelta(minutes=5))
    r2 = c.step()
    assert not [a for a in r2.actions if a["kind"] in ("power_off", "power_on", "set_power_cap")]
