"""One control step on a tiny fleet: shadow changes nothing, enforce reaches the plan's slot,
the ledger records inputs, plan, actions and power cycles."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

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


def test_levers_caps_only_pool(tmp_path, sim_clock):
    from greencpn.controller import Levers

    path = write_tiny(tmp_path, jobs=[JOB])
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(
        path,
        sim_clock,
        tmp_path / "state",
        fleet,
        mode=Mode.ENFORCE,
        levers={"p1": Levers(power=False, jobs=False)},
    )
    r = c.step()
    # p1: caps only — no node switched, caps set to the plan's cap
    assert all(n.power == NodePower.ON for n in fleet.hooks["p1"].nodes.values())
    assert not [a for a in r.actions if a["pool"] == "p1" and a["kind"] == "power_off"]
    cap = r.plan["pools"][0]["slots"][0]["power_cap_w"]
    assert {g.power_limit_current_w for g in fleet.gpu("a1").list_gpus()} == {cap}
    # p2 still switched
    p2 = r.plan["pools"][1]["slots"][0]["nodes_on"]
    assert sum(1 for n in fleet.hooks["p2"].nodes.values() if n.power == NodePower.ON) == p2


def test_restore_wakes_nodes_and_sets_default_caps(tmp_path, sim_clock):
    path = write_tiny(tmp_path, jobs=[JOB])
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, mode=Mode.ENFORCE)
    c.step()
    assert any(n.power == NodePower.OFF for n in fleet.hooks["p1"].nodes.values())
    sim_clock.advance(timedelta(hours=4))  # past min down
    r = c.restore()
    assert r.plan_origin == "restore"
    for hook in fleet.hooks.values():
        assert all(n.power == NodePower.ON for n in hook.nodes.values())
    assert {g.power_limit_current_w for g in fleet.gpu("a1").list_gpus()} == {300.0}
    assert [a["kind"] for a in r.actions if a["target"] == "j1"] == ["job.release"]


def test_reload_keeps_the_old_config_on_error(tmp_path, sim_clock):

    from greencpn.errors import ConfigError

    path = write_tiny(tmp_path, jobs=[JOB])
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet)
    good = c.config
    path.write_text(path.read_text().replace("slots = 12", "slots = -1"))
    with pytest.raises(ConfigError, match="slots"):
        c.reload()
    assert c.config is good
    r = c.step()
    assert r.plan_origin == "optimized"


def test_greencpn_plan_goes_through_the_controller(tmp_path, monkeypatch, capsys):
    from greencpn.cli import main
    from greencpn.controller import step as stepmod

    path = write_tiny(tmp_path, jobs=[JOB])
    path.write_text(path.read_text().replace("[horizon]\n", f'[horizon]\nstart = "{iso(START)}"\n'))
    calls = []
    real = stepmod.Controller.plan

    def spy(self, **kw):
        calls.append(self.rolling)
        return real(self, **kw)

    monkeypatch.setattr(stepmod.Controller, "plan", spy)
    assert main(["plan", "--config", str(path), "--out", str(tmp_path / "out"), "--no-report"]) == 0
    assert calls == [False]  # the report: the config's horizon start, no rolling
    assert (tmp_path / "out" / "plan.json").is_file()
    assert "saving:" in capsys.readouterr().out


def test_a_second_step_in_the_slot_with_a_new_forecast_reuses_the_model(tmp_path, sim_clock):
    from tests.controller.conftest import carbon_rows

    path = write_tiny(tmp_path, jobs=[JOB])
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet)
    r1 = c.step()
    assert r1.metrics["model_reused"] is False
    (tmp_path / "carbon.csv").write_text(carbon_rows(4, {"Z1": (410, 90), "Z2": (160, 110)}))
    sim_clock.advance(timedelta(minutes=10))  # same slot, new forecast, same jobs and nodes
    r2 = c.step()
    assert r2.metrics["model_reused"] is True and r2.solver_status == "optimal"
    assert (
        r2.plan["sites"][0]["slots"][0]["intensity_g_per_kwh"]
        != r1.plan["sites"][0]["slots"][0]["intensity_g_per_kwh"]
    )
    # the next slot (the horizon rolled): a new model
    sim_clock.set(r1.slot_start + timedelta(hours=1, minutes=1))
    assert c.step().metrics["model_reused"] is False


def test_control_step_runs_with_the_collector_paused(tmp_path, sim_clock):
    """builder.paused_gc around the step: off inside (seen from its observe phase), back on
    after."""
    import gc

    gc.enable()
    path = write_tiny(tmp_path, jobs=[])
    c = make_controller(
        path, sim_clock, tmp_path / "state", FakeFleet(load_config(path), sim_clock)
    )
    seen: list[bool] = []
    observe = c.observe

    def spy(errors):
        seen.append(gc.isenabled())
        return observe(errors)

    c.observe = spy  # type: ignore[method-assign]
    r = c.step()
    assert r.status is StepStatus.OK, r.errors
    assert seen == [False]
    assert gc.isenabled()
