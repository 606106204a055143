"""Caps per job in the plan (issue #14.3, ``solver.cap_mode = "job"``): tiny fleets by hand.

GPU "T2" (max 300 W, idle 0 W), two caps. Its own levels (jobs without a class, "elastic"):
300 W θ 1.0, 0.3 kW busy; 200 W θ 0.8, 0.2 kW — 0.30 vs 0.25 kWh per GPU-h, the deep cap is
the efficient one. Class "rigid": 300 W θ 1.0, 0.3 kW; 200 W θ 0.5, 0.18 kW — 0.36 kWh per
GPU-h at the deep cap, so rigid work wants the top cap. One pool of 1 node × 2 GPUs, node idle
100 W, hourly slots, PUE 1, no cost weight.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greencpn.actuate.plan_file import load_plan_file
from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_plan
from tests.optimize.conftest import GPU, START, iso, write_fleet

GPU2 = (
    GPU.replace('name = "T1"', 'name = "T2"')
    + """[[gpu_models.levels]]
cap_w = 200
throughput = 0.8
power_factor = 0.6666666666666666
[[gpu_models.workload_classes]]
name = "rigid"
[[gpu_models.workload_classes.levels]]
cap_w = 300
throughput = 1.0
power_factor = 1.0
[[gpu_models.workload_classes.levels]]
cap_w = 200
throughput = 0.5
power_factor = 0.6
"""
)

SITE = """
[[sites]]
name = "a"
zone = "Z"
jurisdictions = ["EU"]
pue = 1.0
{extra}
"""

POOL = """
[[pools]]
name = "p"
site = "a"
nodes = 1
gpu_model = "T2"
gpus_per_node = {gpn}
node_idle_w = 100.0
initial_on = 0
spares = 0
"""


def _fleet(tmp: Path, jobs: list[dict], carbon: list[float], *, mode: str | None, gpn=2, site=""):
    path = write_fleet(
        tmp,
        carbon={"Z": carbon},
        sites=SITE.format(extra=site),
        pools=POOL.format(gpn=gpn),
        jobs=[],
        gpu=GPU2,
    )
    cols = ["id", "gpus", "work_gpu_h", "release", "deadline", "checkpointable", "workload_class"]
    rows = [",".join(cols)] + [",".join(str(j.get(c, "")) for c in cols) for j in jobs]
    (tmp / "jobs.csv").write_text("\n".join(rows) + "\n")
    if mode is not None:
        text = path.read_text().replace(
            "mip_rel_gap = 0.0", f'mip_rel_gap = 0.0\ncap_mode = "{mode}"'
        )
        path.write_text(text)
    return path


def _job(id, work, deadline, cls=""):
    return {
        "id": id,
        "gpus": 1,
        "work_gpu_h": work,
        "release": iso(0),
        "deadline": iso(deadline),
        "checkpointable": "false",
        "workload_class": cls,
    }


#: Y (rigid, 6 GPU-h, due at 6 h) must run 0–6 h at the top cap, so the pool's cap is 300 W
#: in slots 0–5 and its node is on for 6 h. X (no class: elastic, 4 GPU-h) runs beside it.
SLACK_CARBON = [400.0] + [500.0] * 5 + [1000.0, 1000.0]


def _plan(path: Path) -> dict:
    return make_plan(load_config(path), SimClock(START)).document


def _job_doc(doc: dict, jid: str) -> dict:
    return next(j for j in doc["jobs"] if j["id"] == jid)


def test_slack_and_high_carbon_give_the_job_a_deeper_cap_than_its_pool(tmp_path: Path) -> None:
    """X due at 5 h. Pool caps (both modes' MILP and placement): X at 300 W from 0 to 4 h.
      node idle 0.1 kW × 6 h = 0.6 kWh, 0.1 × (400 + 5 × 500) / 1000 = 0.29 kg
      Y 0.3 kW × 6 h      = 1.8 kWh, 0.3 × 2,900 / 1000         = 0.87 kg
      X 0.3 kW × 4 h      = 1.2 kWh, 0.3 × (400 + 3 × 500) / 1000 = 0.57 kg  → 3.6 kWh, 1.73 kg
    cap_mode = "job": X's own deep cap, 4 / 0.8 = 5 h (0–5 h, by its deadline, on the GPU its
    node has free while Y runs): 0.2 kW × 5 h = 1.0 kWh, 0.2 × (400 + 4 × 500) / 1000 = 0.48 kg
    → 3.4 kWh, 1.64 kg. The pool's cap stays 300 W (Y needs it)."""
    jobs = [_job("Y", 6.0, 6.0, "rigid"), _job("X", 4.0, 5.0)]
    pool_doc = _plan(_fleet(tmp_path, jobs, SLACK_CARBON, mode="pool"))
    assert pool_doc["totals"]["energy_kwh"] == pytest.approx(3.6)
    assert pool_doc["totals"]["carbon_kg"] == pytest.approx(1.73)
    doc = _plan(_fleet(tmp_path, jobs, SLACK_CARBON, mode="job"))
    x = _job_doc(doc, "X")
    assert x["power_cap_w"] == 200.0
    assert (x["start"], x["end"]) == (iso(0), iso(5))
    assert _job_doc(doc, "Y")["power_cap_w"] is None
    assert doc["totals"]["energy_kwh"] == pytest.approx(3.4)
    assert doc["totals"]["carbon_kg"] == pytest.approx(1.64)
    assert [s["power_cap_w"] for s in doc["pools"][0]["slots"][:6]] == [300.0] * 6
    jc = doc["solver"]["job_caps"]
    assert (jc["mode"], jc["jobs_recapped"], jc["kept"]) == ("job", 1, True)
    assert jc["carbon_kg_before"] == pytest.approx(1.73)
    assert jc["carbon_kg_after"] == pytest.approx(1.64)
    assert doc["totals"]["late_jobs"] == 0


def test_a_tight_deadline_keeps_the_shallow_cap(tmp_path: Path) -> None:
    """X due at 4.5 h: its deep cap needs 5 h, so it keeps the pool's 300 W (3.6 kWh, 1.73 kg
    as in pool mode)."""
    jobs = [_job("Y", 6.0, 6.0, "rigid"), _job("X", 4.0, 4.5)]
    doc = _plan(_fleet(tmp_path, jobs, SLACK_CARBON, mode="job"))
    assert [j["power_cap_w"] for j in doc["jobs"]] == [None, None]
    assert doc["solver"]["job_caps"]["jobs_recapped"] == 0
    assert doc["totals"]["carbon_kg"] == pytest.approx(1.73)


def test_a_binding_site_budget_keeps_the_job_off_the_faster_cap(tmp_path: Path) -> None:
    """One elastic job (4 GPU-h, due at 6 h) on a 1-GPU pool; 100 g/kWh for 4 h, then 1000.
    Budget 0.35 kW: node 0.1 + top 0.3 = 0.4 kW does not fit, deep 0.1 + 0.2 = 0.3 does, so
    the plan runs it at 200 W, 0–5 h: node 0.1 × (400 + 1000) / 1000 = 0.14 kg + busy 0.2 ×
    1,400 / 1000 = 0.28 kg = 0.42 kg. Without the budget its own top cap (0–4 h, 0.3 × 400 /
    1000 = 0.12 kg busy) would beat that; the headroom 0.35 − 0.1 = 0.25 kW < 0.3 forbids it."""
    jobs = [_job("X", 4.0, 6.0)]
    carbon = [100.0] * 4 + [1000.0] * 2
    doc = _plan(_fleet(tmp_path, jobs, carbon, mode="job", gpn=1, site="power_budget_kw = 0.35"))
    assert [s["power_cap_w"] for s in doc["pools"][0]["slots"][:5]] == [200.0] * 5
    assert _job_doc(doc, "X")["power_cap_w"] is None
    jc = doc["solver"]["job_caps"]
    # the headroom decided it: no job was even proposed to the objective check
    assert (jc["jobs_considered"], jc["jobs_recapped"], jc["kept"]) == (1, 0, False)
    assert "objective_recapped" not in jc
    assert doc["totals"]["budget_overrun_kwh"] == 0.0
    assert doc["totals"]["carbon_kg"] == pytest.approx(0.42)


def test_a_pass_that_would_make_the_plan_worse_is_dropped(tmp_path, monkeypatch) -> None:
    """The budget fleet above with the chooser blind to the budget: it re-caps X to 300 W
    (0.12 kg busy < 0.28 kg), which overruns the 0.35 kW budget (0.4 kW for 4 h); the evaluated
    objective rises, so the plan keeps the pool caps (0.42 kg, no overrun)."""
    from greencpn.optimize import jobcaps

    real = jobcaps.choose_level
    monkeypatch.setattr(jobcaps, "choose_level", lambda **kw: real(**{**kw, "headroom_kw": None}))
    jobs = [_job("X", 4.0, 6.0)]
    carbon = [100.0] * 4 + [1000.0] * 2
    doc = _plan(_fleet(tmp_path, jobs, carbon, mode="job", gpn=1, site="power_budget_kw = 0.35"))
    jc = doc["solver"]["job_caps"]
    assert jc["kept"] is False and jc["jobs_recapped"] == 0
    assert jc["objective_recapped"] > jc["objective_before"]
    assert _job_doc(doc, "X")["power_cap_w"] is None
    assert doc["totals"]["carbon_kg"] == pytest.approx(0.42)
    assert doc["totals"]["budget_overrun_kwh"] == 0.0


def test_pool_mode_is_the_default_and_writes_no_job_caps(tmp_path: Path) -> None:
    """No cap_mode key and cap_mode = "pool" give the same plan (the numbers of the first
    test's pool plan), every jobs[].power_cap_w null."""
    jobs = [_job("Y", 6.0, 6.0, "rigid"), _job("X", 4.0, 5.0)]
    docs = []
    for mode in (None, "pool"):
        d = _plan(_fleet(tmp_path, jobs, SLACK_CARBON, mode=mode))
        for k in ("created_at", "solver", "config"):
            d.pop(k)
        docs.append(d)
    assert docs[0] == docs[1]
    assert [j["power_cap_w"] for j in docs[0]["jobs"]] == [None, None]
    assert docs[0]["totals"]["carbon_kg"] == pytest.approx(1.73)


def test_job_caps_in_plan_json_validate_with_the_apply_schema(tmp_path: Path) -> None:
    jobs = [_job("Y", 6.0, 6.0, "rigid"), _job("X", 4.0, 5.0)]
    doc = _plan(_fleet(tmp_path, jobs, SLACK_CARBON, mode="job"))
    out = tmp_path / "plan.json"
    out.write_text(json.dumps(doc))
    loaded = load_plan_file(out)
    assert [j["power_cap_w"] for j in loaded["jobs"]] == [None, 200.0]


def test_the_caps_lever_undoes_a_job_cap_too(tmp_path: Path) -> None:
    """The report's caps lever (every GPU at the top cap, the same work at full speed, same
    slots) on the first test's job-capped plan: X's 5 busy hours at θ 0.8 are 0.8 GPU at 0.3 kW
    in slots 0–4, 0.24 × (400 + 4 × 500) / 1000 = 0.576 kg; with node 0.29 and Y 0.87 kg the
    plan with caps undone is 1.736 kg (not the 1.64 kg of the capped plan)."""
    from greencpn.optimize.levers import lever_savings

    jobs = [_job("Y", 6.0, 6.0, "rigid"), _job("X", 4.0, 5.0)]
    res = make_plan(load_config(_fleet(tmp_path, jobs, SLACK_CARBON, mode="job")), SimClock(START))
    assert res.schedule.job_cap
    lv = lever_savings(res.inputs, res.schedule, res.nodes_on, res.startups, 0.0)
    caps = next(r for r in lv["levers"] if r["lever"] == "caps")
    assert lv["plan_carbon_kg_in_horizon"] == pytest.approx(1.64)
    assert caps["carbon_kg_with_lever_undone"] == pytest.approx(1.736)


def test_no_deeper_cap_that_would_keep_a_node_on_longer(tmp_path: Path) -> None:
    """Y (rigid, 4 GPU-h) due at 4 h, X (elastic, 4 GPU-h) due at 8 h: both run 0–4 h at
    300 W and the node is on for 4 h — node 0.1 × (400 + 3 × 500) / 1000 = 0.19 kg, Y and X
    0.3 × 1,900 / 1000 = 0.57 kg each, 1.33 kg. X's deep cap (5 h) would meet its deadline but
    needs the node in slot 4, which the plan has off: X keeps 300 W (no added node-hours)."""
    jobs = [_job("Y", 4.0, 4.0, "rigid"), _job("X", 4.0, 8.0)]
    doc = _plan(_fleet(tmp_path, jobs, SLACK_CARBON, mode="job"))
    assert [s["nodes_on"] for s in doc["pools"][0]["slots"]] == [1] * 4 + [0] * 4
    assert _job_doc(doc, "X")["power_cap_w"] is None
    assert _job_doc(doc, "X")["end"] == iso(4)
    assert doc["totals"]["carbon_kg"] == pytest.approx(1.33)


def test_a_schedule_without_a_placement_grid_is_recapped_too(tmp_path: Path) -> None:
    """The job-level MILP's schedules have no placement grid (``fine_runs`` None, one step per
    slot); on larger fleets they are often the plan (the Zeus bench's slack fleet). The first
    test's pool plan rebuilt that way — X 0–4 h, Y 0–6 h, whole slots — gets X's deep cap
    as before: 4 / 0.8 = 5 h, 0–5 h. Old code: the pass looked at no job of such a plan."""
    from dataclasses import replace

    from greencpn.optimize.jobcaps import recap_jobs

    jobs = [_job("Y", 6.0, 6.0, "rigid"), _job("X", 4.0, 5.0)]
    res = make_plan(load_config(_fleet(tmp_path, jobs, SLACK_CARBON, mode="pool")), SimClock(START))
    ids = [j.id for j in res.inputs.jobs]
    s = res.schedule
    assert [[(t, g, f) for t, g, f in s.runs[ids.index(x)]] for x in ("X", "Y")] == [
        [(t, 1, 1.0) for t in range(4)],
        [(t, 1, 1.0) for t in range(6)],
    ]
    coarse = replace(s, subslots=1, fine_runs=None, alloc_fine=None)
    rc = recap_jobs(
        res.inputs, coarse, res.nodes_on, res.executed, {"Y": "rigid", "X": None}, res.startups
    )
    assert (rc.considered, rc.recapped) == (2, 1)
    x = ids.index("X")
    assert rc.schedule.job_cap == {x: (200.0, 0.8, pytest.approx(0.2))}
    assert rc.schedule.runs[x] == [(t, 1, pytest.approx(1.0)) for t in range(5)]
    assert float(rc.schedule.end_h[x]) == pytest.approx(5.0)
    assert rc.schedule.fine_runs is None


def test_three_jobs_on_one_node_one_recapped_and_one_deferred(tmp_path: Path) -> None:
    """The first test's fleet with a node of 3 GPUs, a second rigid job Z like Y, and a job W
    due beyond the horizon (deferred: no runs). Y and Z hold the pool at 300 W for 0–6 h, X
    takes its deep cap, 0–5 h:
      node idle 0.1 kW × 6 h        = 0.6 kWh, 0.29 kg
      Y, Z 0.3 kW × 6 h each        = 3.6 kWh, 2 × 0.87 = 1.74 kg
      X 0.2 kW × 5 h                = 1.0 kWh, 0.48 kg          → 5.2 kWh, 2.51 kg
    GPUs held per slot: 3 while all three run (0–5 h), 2 in slot 5 (Y, Z), none after; W
    has no start. The MILP-guided placement is the plan, so no "schedule scores" line."""
    jobs = [
        _job("Y", 6.0, 6.0, "rigid"),
        _job("Z", 6.0, 6.0, "rigid"),
        _job("X", 4.0, 5.0),
        _job("W", 1.0, 30.0),
    ]
    doc = _plan(_fleet(tmp_path, jobs, SLACK_CARBON, mode="job", gpn=3))
    slots = doc["pools"][0]["slots"]
    assert [s["busy_gpus"] for s in slots] == [3, 3, 3, 3, 3, 2, 0, 0]
    assert [s["nodes_on"] for s in slots] == [1] * 6 + [0, 0]
    x, w = _job_doc(doc, "X"), _job_doc(doc, "W")
    assert (x["start"], x["end"], x["power_cap_w"]) == (iso(0), iso(5), 200.0)
    assert (w["deferred"], w["start"], w["end"]) == (True, None, None)
    assert doc["totals"]["energy_kwh"] == pytest.approx(5.2)
    assert doc["totals"]["carbon_kg"] == pytest.approx(2.51)
    assert doc["solver"]["job_caps"]["jobs_recapped"] == 1
    assert doc["solver"]["plan_source"] == "optimised placement"
    assert doc["diagnostics"] == []


@pytest.mark.parametrize(("slot4_budget_kw", "x2_cap_w"), [(0.70, 200.0), (0.62, None)])
def test_a_recapped_jobs_part_slot_counts_in_the_next_jobs_headroom(
    tmp_path: Path, slot4_budget_kw: float, x2_cap_w: float | None
) -> None:
    """Node of 3 GPUs; Y (rigid) holds 300 W for 0–6 h; X1 (elastic, 3.5 GPU-h) and X2
    (elastic, 4 GPU-h) both due at 5 h, re-capped in that order. X1 at 200 W: 3.5 / 0.8 =
    4.375 h, 0:00–4:22:30, 0.2 kW — in slot 4 only 0.375 h of it, 0.075 kW on average. X2 at
    200 W: 5 h, 0.2 kW in slots 0–4. Meter in slot 4 with both deep: 0.1 node + 0.3 Y + 0.075
    X1 + 0.2 X2 = 0.675 kW: under a 0.70 kW budget there X2 takes 200 W too; under 0.62 it
    keeps the pool's 300 W (0–4 h). Both deep: slots 0–3 0.8 kW × (400 + 3 × 500) = 1.52 kg,
    slot 4 0.675 × 500 = 0.3375 kg, slot 5 (Y alone) 0.4 × 500 = 0.2 kg: 2.0575 kg."""
    budget = [1.0] * 4 + [slot4_budget_kw] + [1.0] * 3
    jobs = [_job("Y", 6.0, 6.0, "rigid"), _job("X1", 3.5, 5.0), _job("X2", 4.0, 5.0)]
    site = f"power_budget_kw = {budget}"
    doc = _plan(_fleet(tmp_path, jobs, SLACK_CARBON, mode="job", gpn=3, site=site))
    x1, x2 = _job_doc(doc, "X1"), _job_doc(doc, "X2")
    assert (x1["power_cap_w"], x1["end"]) == (200.0, "2026-01-05T04:22:30Z")
    assert x2["power_cap_w"] == x2_cap_w
    assert doc["totals"]["budget_overrun_kwh"] == 0.0
    meter = [s["meter_power_kw"] for s in doc["sites"][0]["slots"]]
    if x2_cap_w == 200.0:
        assert x2["end"] == iso(5)
        assert meter == pytest.approx([0.8] * 4 + [0.675, 0.4, 0.0, 0.0])
        assert doc["totals"]["carbon_kg"] == pytest.approx(2.0575)
    else:
        assert x2["end"] == iso(4)
        assert meter[4] == pytest.approx(0.475) and meter[4] <= slot4_budget_kw
