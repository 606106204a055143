"""Faults injected in sources, solver, actuators and the fence lead to the documented behaviour
(docs/controller.md, "When things fail")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from greencpn.actuate.base import NodePower
from greencpn.config import load_config
from greencpn.controller import Mode, NotLeaderError, StepStatus
from greencpn.controller import step as stepmod
from greencpn.controller.fakes import FakeFleet
from greencpn.errors import PermanentError, SolverError, TemporaryError
from greencpn.optimize.milp import SolveStatus
from tests.controller.conftest import START, iso, make_controller, write_tiny

JOB = {
    "id": "j1",
    "gpus": 2,
    "work_gpu_h": 4,
    "release": iso(START),
    "deadline": iso(START + timedelta(hours=30)),
}


def setup(tmp_path, sim_clock, mode=Mode.ENFORCE, **kw):
    path = write_tiny(tmp_path, jobs=[JOB], **kw)
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, mode=mode)
    return path, fleet, c


def next_slot(clock, r):
    clock.set(r.slot_start + timedelta(hours=1, minutes=1))


def on_count(fleet, pool):
    return sum(1 for n in fleet.hooks[pool].nodes.values() if n.power == NodePower.ON)


def failures(c, step_id):
    return [f["type"] for f in c.ledger.failures(step_id)]


# ------------------------------------------------------------------ sources
def test_source_down_uses_the_previous_forecast_flagged(tmp_path, sim_clock):
    path, fleet, c = setup(tmp_path, sim_clock)
    r1 = c.step()
    assert r1.status is StepStatus.OK
    (tmp_path / "carbon.csv").write_text("datetime_utc,Z1,Z2\n")  # the source is gone
    next_slot(sim_clock, r1)
    r2 = c.step()
    assert r2.status is StepStatus.DEGRADED
    assert r2.plan_origin == "optimized"  # planned on the fallback forecast
    assert {s["freshness"] for s in r2.sources.values()} == {"fallback"}
    assert r2.sources["s1"]["issued_at"] == iso(r1.slot_start)
    assert "source" in [e["type"] for e in r2.errors]
    assert "source" in failures(c, r2.step_id)
    # the fallback is the old forecast moved one slot forward
    old = [s["intensity_g_per_kwh"] for s in r1.plan["sites"][0]["slots"]]
    new = [s["intensity_g_per_kwh"] for s in r2.plan["sites"][0]["slots"]]
    assert new[:-1] == old[1:] and new[-1] == old[-1]


def test_source_down_on_the_first_step_applies_the_safe_plan(tmp_path, sim_clock):
    path, fleet, c = setup(tmp_path, sim_clock)
    fleet.hooks["p1"].nodes["a1"].power = NodePower.OFF
    cap = fleet.gpu("b1").list_gpus()[0]
    fleet.gpu("b1").set_power_limit_w(0, 150.0)
    (tmp_path / "carbon.csv").write_text("datetime_utc,Z1,Z2\n")
    r = c.step()
    assert r.status is StepStatus.FAILED and r.plan_origin == "safe"
    # all needed nodes on, default caps, jobs released
    assert on_count(fleet, "p1") == 4 and on_count(fleet, "p2") == 4
    assert fleet.gpu("b1").list_gpus()[0].power_limit_current_w == cap.power_limit_default_w
    assert [a["kind"] for a in r.actions if a["target"] == "j1"] == ["job.release"]
    assert "source" in failures(c, r.step_id)


# ------------------------------------------------------------------ solver
def test_solver_error_shifts_the_previous_plan(tmp_path, sim_clock, monkeypatch):
    path, fleet, c = setup(tmp_path, sim_clock)
    r1 = c.step()
    assert r1.plan_origin == "optimized"

    def broken(*a, **k):
        raise SolverError("injected: HiGHS crashed")

    monkeypatch.setattr(stepmod.planmod, "make_plan", broken)
    next_slot(sim_clock, r1)
    r2 = c.step()
    assert r2.status is StepStatus.DEGRADED and r2.plan_origin == "previous_shifted"
    assert r2.solver_status == "error"
    assert "solver" in failures(c, r2.step_id)
    for p1, p2 in zip(r1.plan["pools"], r2.plan["pools"], strict=True):
        assert [s["nodes_on"] for s in p2["slots"]] == [s["nodes_on"] for s in p1["slots"][1:]]
    assert r2.plan["horizon"]["slot_starts"][0] == r1.plan["horizon"]["slot_starts"][1]


def test_solver_error_without_a_valid_previous_plan_applies_the_safe_plan(
    tmp_path, sim_clock, monkeypatch
):
    path, fleet, c = setup(tmp_path, sim_clock)
    r1 = c.step()
    assert on_count(fleet, "p1") == 0  # the dirty site was switched off
    monkeypatch.setattr(
        stepmod.planmod, "make_plan", lambda *a, **k: (_ for _ in ()).throw(SolverError("x"))
    )
    # 20 slots later the 12-slot previous plan no longer covers now
    sim_clock.set(r1.slot_start + timedelta(hours=20, minutes=1))
    r2 = c.step()
    assert r2.status is StepStatus.FAILED and r2.plan_origin == "safe"
    assert on_count(fleet, "p1") == 4  # woken again: all needed nodes on


def test_solver_time_limit_uses_the_incumbent(tmp_path, sim_clock, monkeypatch):
    path, fleet, c = setup(tmp_path, sim_clock)
    real = stepmod.StablePlanModel.solve

    def at_limit(self):
        out = real(self)
        out.status = SolveStatus.TIME_LIMIT  # as HiGHS reports an incumbent at the limit
        return out

    monkeypatch.setattr(stepmod.StablePlanModel, "solve", at_limit)
    r = c.step()
    assert r.status is StepStatus.DEGRADED and r.plan_origin == "optimized"
    assert r.solver_status == "time_limit"
    assert "solver_time_limit" in [e["type"] for e in r.errors]
    assert "solver_time_limit" in failures(c, r.step_id)
    assert on_count(fleet, "p1") == 0  # the incumbent was acted on


def test_real_tiny_time_limit_never_fails_the_step(tmp_path, sim_clock):
    jobs = [
        {
            "id": f"j{i}",
            "gpus": 1 + i % 3,
            "work_gpu_h": 2 + i % 5,
            "release": iso(START),
            "deadline": iso(START + timedelta(hours=8 + i % 6)),
        }
        for i in range(30)
    ]
    path = write_tiny(tmp_path, jobs=jobs, time_limit_s=0.01)
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, mode=Mode.ENFORCE)
    r = c.step()
    # either HiGHS found an incumbent in time (optimal / time_limit) or none (then the safe plan)
    assert r.solver_status in ("optimal", "time_limit", "error"), r.solver_status
    if r.solver_status == "error":
        assert r.plan_origin == "safe" and r.status is StepStatus.FAILED
    else:
        assert r.plan_origin == "optimized"
    assert not c.ledger.actions(status="intended")


# ------------------------------------------------------------------ actuators
def test_temporary_actuator_error_is_retried_inside_the_step(tmp_path, sim_clock):
    path, fleet, c = setup(tmp_path, sim_clock)
    fleet.hooks["p1"].fail("power_off", TemporaryError("BMC busy"), times=2)
    r = c.step()
    assert on_count(fleet, "p1") == 0
    temp = [e for e in r.errors if e["type"] == "actuator_temporary"]
    assert len(temp) == 2 and "retry 1/3" in temp[0]["message"]
    off = [a for a in r.actions if a["kind"] == "power_off"]
    assert off and all(a["status"] == "done" for a in off)
    assert r.status is StepStatus.OK


def test_permanent_actuator_error_degrades_the_pool_others_continue(tmp_path, sim_clock):
    path, fleet, c = setup(tmp_path, sim_clock, controller="degraded_cooldown_s = 7200")
    fleet.hooks["p1"].fail("drain", PermanentError("no permission"), node="a1")
    r = c.step()
    assert r.status is StepStatus.DEGRADED
    assert "p1" in r.metrics["degraded_pools"]
    assert "actuator_permanent" in failures(c, r.step_id)
    # the other pool's actions were carried out (caps on p2)
    assert any(a["pool"] == "p2" and a["status"] == "done" for a in r.actions)
    # the next step leaves the degraded pool alone (cooldown), the others continue
    next_slot(sim_clock, r)
    r2 = c.step()
    p1 = [a for a in r2.actions if a["pool"] == "p1" and not a["kind"].startswith("job.")]
    assert p1 and all(a["status"] == "skipped" for a in p1)
    assert "degraded" in p1[0]["detail"]
    assert r2.metrics["degraded_pools"] == ["p1"]
    # after the cooldown the pool is tried again
    sim_clock.set(r2.slot_start + timedelta(hours=2, minutes=1))
    fleet.hooks["p1"]._failures.clear()
    r3 = c.step()
    assert r3.metrics["degraded_pools"] == []
    assert on_count(fleet, "p1") == 0


def test_not_leader_stops_acting_and_epoch_is_recorded(tmp_path, sim_clock):
    path = write_tiny(tmp_path, jobs=[JOB])
    fleet = FakeFleet(load_config(path), sim_clock)
    calls = {"n": 0}

    def fence():
        calls["n"] += 1
        if calls["n"] > 2:
            raise NotLeaderError("lease lost")
        return 7

    c = make_controller(path, sim_clock, tmp_path / "state", fleet, mode=Mode.ENFORCE, fence=fence)
    r = c.step()
    done = [a for a in r.actions if a["status"] == "done"]
    skipped = [a for a in r.actions if a["status"] == "skipped"]
    assert done and all(a["epoch"] == 7 for a in done)
    assert skipped and "not the leader" in str(skipped[0]["detail"])
    assert calls["n"] == 3  # once refused, no further fence calls and no further actions
    assert "not_leader" in [e["type"] for e in r.errors]
    assert r.status is StepStatus.DEGRADED


def test_shadow_jobs_recorded_without_a_job_actuator(tmp_path, sim_clock):
    path, fleet, c = setup(tmp_path, sim_clock)
    r = c.step()
    jobs = [a for a in r.actions if a["kind"].startswith("job.")]
    assert jobs and {a["status"] for a in jobs} == {"shadow"}
    assert "no job actuator configured" in str(jobs[0]["detail"])


def test_bad_controller_config_is_a_config_error(tmp_path, sim_clock):
    from greencpn.errors import ConfigError

    path = write_tiny(tmp_path, jobs=[JOB], controller="retries = -1")
    with pytest.raises(ConfigError, match="retries"):
        make_controller(path, sim_clock, tmp_path / "state", None)  # type: ignore[arg-type]
