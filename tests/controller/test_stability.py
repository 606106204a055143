"""Consecutive plans are stable: with nothing changed a second step makes the same plan and
switches nothing; with a small change only the jobs it touches move. Every candidate (the
MILP-guided placement, per-job cap levels, job-level MILP, greedy, the kept placement) is
scored with its stability cost against the newest plan."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest

from greencpn.config import load_config
from greencpn.controller import Mode, StepStatus
from greencpn.controller.fakes import FakeFleet
from tests.controller.conftest import make_controller, write_tiny
from tests.controller.test_replan import ListQueue, job

pytestmark = pytest.mark.slow  # minutes of solves / wall time: xdist hands it out first

POWER = ("power_off", "power_on", "set_power_cap")


def _jobs():
    return [
        job("j1", gpus=2, work=4.0, dl_h=10),
        job("j2", gpus=1, work=3.0, rel_h=1.0, dl_h=11),
        job("j3", gpus=2, work=6.0, rel_h=2.0, dl_h=12, ckpt=True),
        job("j4", gpus=1, work=2.0, rel_h=0.5, dl_h=6),
        job("j5", gpus=2, work=8.0, rel_h=3.0, dl_h=12),
        job("j6", gpus=1, work=5.0, dl_h=12, ckpt=True),
    ]


def _placement(doc):
    return {
        j["id"]: (j["pool"], j["start"], j["end"], [(s["slot"], s["gpus"]) for s in j["schedule"]])
        for j in doc["jobs"]
    }


def _nodes(doc):
    return {p["name"]: [(s["nodes_on"], s["cap_level"]) for s in p["slots"]] for p in doc["pools"]}


@pytest.mark.parametrize("joblevel", [True, False])
def test_two_steps_with_nothing_changed_make_the_same_plan(tmp_path, sim_clock, joblevel):
    # the job-level MILP candidate is off by default (docs/controller.md); on, it competes too
    path = write_tiny(tmp_path, controller=f"joblevel_candidate = {str(joblevel).lower()}")
    fleet = FakeFleet(load_config(path), sim_clock)
    q = ListQueue(pending=_jobs())
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=q, mode=Mode.ENFORCE)
    r1 = c.step()
    assert r1.status is StepStatus.OK, r1.errors
    assert [a for a in r1.actions if a["kind"] in POWER]  # the first step did switch things
    plans = [r1.plan]
    for _ in range(2):
        sim_clock.advance(timedelta(minutes=7))
        r = c.step()
        assert r.status is StepStatus.OK, r.errors
        plans.append(r.plan)
        assert not [a for a in r.actions if a["kind"] in POWER], r.actions
    for doc in plans[1:]:
        assert _placement(doc) == _placement(plans[0])
        assert _nodes(doc) == _nodes(plans[0])
    # the other candidates were tried and scored, the previous plan kept
    sv = plans[1]["solver"]
    names = {c["name"] for c in sv["candidates"]}
    assert {"kept placement", "optimised placement", "carbon-aware greedy"} <= names, names
    assert ("job-level MILP" in names) is joblevel, names
    assert (sv["joblevel"]["status"] == "skipped") is not joblevel, sv["joblevel"]
    assert sv["kept_placement"]["jobs_unchanged"] == 6
    kept = next(c for c in sv["candidates"] if c["name"] == "kept placement")
    assert kept["stability_cost"] == 0.0


def test_a_small_change_moves_only_the_jobs_it_touches(tmp_path, sim_clock):
    path = write_tiny(tmp_path)
    fleet = FakeFleet(load_config(path), sim_clock)
    jobs = _jobs()
    q = ListQueue(pending=jobs)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=q, mode=Mode.ENFORCE)
    before = _placement(c.step().plan)
    # one job gone, one new, one with a later deadline (changed)
    q.pending = [j for j in jobs if j.id != "j2"] + [job("n1", gpus=2, work=3.0, dl_h=9)]
    q.pending = [
        j.model_copy(update={"deadline": j.deadline + timedelta(hours=1)}) if j.id == "j5" else j
        for j in q.pending
    ]
    sim_clock.advance(timedelta(minutes=10))
    r = c.step()
    assert r.status is StepStatus.OK, r.errors
    after = _placement(r.plan)
    assert "j2" not in after and "n1" in after
    for jid in ("j1", "j3", "j4", "j6"):  # untouched: same pool, start, end and slots
        assert after[jid] == before[jid], (jid, before[jid], after[jid])
    assert r.plan["solver"]["kept_placement"]["jobs_unchanged"] == 4


def test_the_next_slot_keeps_jobs_not_yet_due(tmp_path, sim_clock):
    """An hour later the horizon has rolled by one slot and nothing else changed; no job was
    due to start before then (all released from 02:00) and every deadline lies inside both
    horizons, so every job keeps its pool, start and slots."""
    path = write_tiny(tmp_path, slots=24)
    fleet = FakeFleet(load_config(path), sim_clock)
    late = [
        j.model_copy(
            update={
                "release": j.release + timedelta(hours=2),
                "deadline": j.deadline + timedelta(hours=2),
            }
        )
        for j in _jobs()
    ]
    q = ListQueue(pending=late)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=q)
    r1 = c.step()
    sim_clock.set(r1.slot_start + timedelta(hours=1, minutes=1))
    r2 = c.step()
    before, after = _placement(r1.plan), _placement(r2.plan)
    assert all(start >= "2026-01-05T02:00:00Z" for _, start, _, _ in before.values()), before
    for jid in before:
        # same pool, start and end; the slot numbers moved down by one
        assert after[jid][:3] == before[jid][:3], (jid, before[jid], after[jid])
        assert after[jid][3] == [(t - 1, g) for t, g in before[jid][3]]
    assert r2.plan["solver"]["plan_source"] == "kept placement", r2.plan["solver"]["candidates"]


def test_stability_cost_is_zero_for_the_newest_plan_and_grows_with_moves(tmp_path, sim_clock):
    from greencpn.optimize.stability import stability_cost

    path = write_tiny(tmp_path)
    fleet = FakeFleet(load_config(path), sim_clock)
    q = ListQueue(pending=_jobs())
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=q)
    r1 = c.step()
    res = c.last_plan_result
    inp = res.inputs
    from greencpn.optimize.stability import Anchor, plan_nodes_on

    a = Anchor(
        flap_weight=0.5,
        site_weight_per_gpu_h=0.05,
        shift_weight_per_gpu_h_slot=0.005,
        latest=r1.plan,
        latest_nodes_on=plan_nodes_on(inp, r1.plan),
    )
    assert stability_cost(inp, a, res.schedule, res.nodes_on) == 0.0
    # one more node on in one slot: 0.5; j1 one slot later: 0.005 per GPU-h
    n2 = res.nodes_on.copy()
    n2[0, 3] += 1
    assert abs(stability_cost(inp, a, res.schedule, n2) - 0.5) < 1e-9
    s2 = res.schedule
    j = next(i for i, jj in enumerate(inp.jobs) if jj.id == "j1")
    start = s2.start_h.copy()
    start[j] += inp.slot_h
    moved = type(s2)(**{**s2.__dict__, "start_h": start})
    want = 0.005 * inp.jobs[j].required_gpu_h
    assert abs(stability_cost(inp, a, moved, res.nodes_on) - want) < 1e-9
    pool = s2.pool.copy()
    pool[j] = 1 - pool[j]  # the other site
    moved2 = type(s2)(**{**s2.__dict__, "pool": pool})
    assert (
        abs(stability_cost(inp, a, moved2, res.nodes_on) - 0.05 * inp.jobs[j].required_gpu_h) < 1e-9
    )
    assert np.isfinite(a.latest_nodes_on).all()


def test_node_flap_horizon_limits_the_flap_term_to_its_first_slots(tmp_path, sim_clock):
    """``[controller] node_flap_horizon_h = 1.5`` on hourly slots = the first 2 slots: the
    candidates' stability cost, the node repair's reference and the MILP's flap rows count
    nothing from slot 2 on; the kept placement still sees the whole newest plan."""
    from greencpn.optimize.stability import StablePlanModel, stability_cost

    path = write_tiny(tmp_path, controller="node_flap_horizon_h = 1.5")
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=ListQueue(_jobs()))
    r1 = c.step()
    res = c.last_plan_result
    inp = res.inputs
    a = c.anchor(inp, r1.plan, r1.slot_start, r1.plan)
    assert a.flap_slots == 2 and a.flap_weight == 0.5
    assert np.isfinite(a.latest_nodes_on).all()  # the kept placement's view: every slot
    ref = a.nodes().prev_nodes_on
    assert np.isfinite(ref[:, :2]).all() and np.isnan(ref[:, 2:]).all()
    n2 = res.nodes_on.copy()
    n2[0, 2] += 1  # slot 2: outside the window, free
    assert stability_cost(inp, a, res.schedule, n2) == 0.0
    n2[1, 1] += 1  # slot 1: inside, 0.5 per node
    assert abs(stability_cost(inp, a, res.schedule, n2) - 0.5) < 1e-9
    m = StablePlanModel(inp, a)
    assert m._flap_ids.size == 2 * len(inp.pools)  # 2 slots × pools, not T × pools
    whole = StablePlanModel(inp, replace(a, flap_slots=0))
    assert whole._flap_ids.size == inp.T * len(inp.pools)


def test_node_flap_horizon_rejects_a_non_positive_value(tmp_path):
    from greencpn.errors import ConfigError

    path = write_tiny(tmp_path, controller="node_flap_horizon_h = 0")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "node_flap_horizon_h" in str(e.value) and "greater than 0" in str(e.value)


def test_a_step_that_does_not_fit_does_not_make_later_windows_free():
    """The root of the defect above: a pool whose first step cannot take the job (its nodes
    still boot) had every later window priced ~0 (1e18 in the running sum of costs wiped out
    their low digits), so the dirtier pool won. Pool 0 costs 10× pool 1 per step."""
    from datetime import UTC, datetime

    from greencpn.optimize.inputs import JobIn
    from greencpn.optimize.options import _best_option

    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    job = JobIn("j", 1, 1.0, t0, t0, 0, 10, (0,), False, 1.0, 1.0)
    F = 12
    cap = np.ones((2, F))
    cap[0, 0] = 0.0  # pool 0: step 0 does not fit
    kw = dict(
        job=job,
        W=1.0,
        r=0,
        D=F - 1,
        mode="plan",
        T=F,
        T2=F,
        tidx=np.arange(F),
        thr=np.ones((2, F)),
        gpu_cost=np.array([[1.0] * F, [0.1] * F]),
        n_free=np.ones((2, F)),
        alloc=np.zeros((2, F)),
        gpn=np.ones(2),
        cap=cap,
        extra_kw=np.zeros((2, F)),
        pue=np.ones(2),
        idle_kw=np.zeros(2),
        head=np.full((2, F), np.inf),
        dt=0.25,
        w_late=0.0,
    )
    c, steps, fr = _best_option(**kw)
    assert c == 1, (c, steps)
    total, _, _ = _best_option(**kw, table=True)
    # pool 0 from step 1: 4 steps at 1.0 each — not ~0
    assert abs(total[0, 1] - 4.0) < 1e-6, total[0, :3]
    assert abs(total[1, 0] - 0.4) < 1e-6, total[1, :3]


def test_the_mip_start_from_the_newest_plan_is_accepted_by_highs(tmp_path, sim_clock):
    """The second step hands HiGHS the newest plan's nodes (and start-ups, stops) as a MIP
    start; HiGHS' log says it is feasible, and its objective bounds the final one. Without a
    newest plan (first step) or with warm_start=False nothing is handed over."""
    from greencpn.optimize.stability import StablePlanModel

    path = write_tiny(tmp_path)
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=ListQueue(_jobs()))
    r1 = c.step()
    assert r1.plan["solver"]["warm_start"]["given"] == 0
    sim_clock.advance(timedelta(minutes=5))
    r2 = c.step()
    ws = r2.plan["solver"]["warm_start"]
    assert ws["given"] > 0 and ws["set_solution"] == "kOk", ws
    assert ws["feasible"] is True, ws
    assert any("MIP start solution is feasible" in ln for ln in ws["log"]), ws
    assert ws["start_objective"] >= r2.plan["executed"]["milp_objective"] - 1e-6
    assert r2.metrics["warm_start_feasible"] is True
    # the same model without the start: HiGHS is told nothing
    model = c._model
    cold = StablePlanModel(model.inp, model.anchor, warm_start=False)
    out = cold.solve()
    assert out.usable
    assert cold.warm_start_info["given"] == 0 and cold.warm_start_info["feasible"] is None
    assert abs(out.objective - r2.plan["executed"]["milp_objective"]) <= 1e-6 * max(
        1.0, abs(out.objective)
    )


def test_incremental_replan_places_only_the_changed_jobs(tmp_path, sim_clock):
    """incremental_min_jobs = 0: every re-plan that can keep the newest plan for 75 % of the
    jobs places only the new one; the rest stay exactly, and the plan says so."""
    path = write_tiny(tmp_path, controller="incremental_min_jobs = 0")
    fleet = FakeFleet(load_config(path), sim_clock)
    q = ListQueue(pending=_jobs())
    c = make_controller(path, sim_clock, tmp_path / "state", fleet, queue=q)
    before = _placement(c.step().plan)
    q.pending = [*q.pending, job("n1", gpus=1, work=2.0, dl_h=8)]
    sim_clock.advance(timedelta(minutes=5))
    r = c.step()
    sv = r.plan["solver"]
    assert sv["plan_source"] == "kept placement"
    assert sv["kept_placement"]["incremental"] is True
    assert [x["name"] for x in sv["candidates"]] == ["kept placement"]
    after = _placement(r.plan)
    for jid, v in before.items():
        assert after[jid] == v, jid
    assert after["n1"][0] is not None and r.plan["totals"]["late_jobs"] == 0
