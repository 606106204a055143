"""optimize/candidates.py ``kept_candidate`` and the incremental re-plan of ``finish_plan``,
directly on a tiny fleet (until now only tests/controller exercised them).

The fleet: one site (PUE 1, 100, 110, 120, 130 g/kWh in 4 hourly slots), one pool ``p`` of 1 node × 1
GPU "T2" (300 W θ 1.0, busy 0.3 kW; 150 W θ 0.5, busy 0.15 kW), node idle 100 W, no boot
power; one 1-GPU job ``a`` of 1 GPU-h, released at 00:00, due 04:00.

* A fresh plan runs ``a`` at 300 W in slot 0, the cleanest: busy 0.3 kWh + node 0.1 kWh =
  0.4 kWh × 100 g/kWh = 0.04 kg (at 150 W it would take 2 h: 0.25 kWh in each of slots 0
  and 1, 0.25 × (100 + 110) g = 0.0525 kg).
* The newest plan (a hand document) had ``a`` from 00:00 on ``p`` with the pool at
  ``cap_level`` 1 (150 W) in every slot. The kept placement keeps the job's start *and the
  newest plan's cap levels*: ``a`` runs 00:00–02:00 at 150 W, node on in slots 0–1 only:
  0.0525 kg.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.candidates import job_orders, kept_candidate
from greencpn.optimize.milp import PlanModel
from greencpn.optimize.plan import make_plan
from greencpn.optimize.stability import Anchor, StablePlanModel, plan_nodes_on
from tests.optimize.conftest import START, iso, plan_horizon, write_fleet
from tests.optimize.test_plan_exact import SITE, TWO_LEVELS, job, pool


def _cfg(tmp: Path):
    path = write_fleet(
        tmp,
        carbon={"Z": [100.0, 110.0, 120.0, 130.0]},
        sites=SITE,
        pools=pool(gpu="T2"),
        jobs=[job("a", work=1.0, release=0, deadline=4)],
        gpu=TWO_LEVELS,
    )
    return load_config(path)


def _newest_plan() -> dict:
    return {
        "horizon": plan_horizon(4),
        "jobs": [
            {
                "id": "a",
                "pool": "p",
                "gpus": 1,
                "work_gpu_h": 1.0,
                "checkpointable": False,
                "release": iso(0),
                "deadline": iso(4),
                "start": iso(0),
                "schedule": [
                    {"slot": 0, "gpus": 1, "busy_fraction": 1.0},
                    {"slot": 1, "gpus": 1, "busy_fraction": 1.0},
                ],
            }
        ],
        "pools": [
            {
                "name": "p",
                "slots": [
                    {"slot": t, "nodes_on": int(t < 2), "cap_level": 1, "power_cap_w": 150.0}
                    for t in range(4)
                ],
            }
        ],
    }


def _anchor(inp) -> Anchor:
    doc = _newest_plan()
    return Anchor(latest=doc, latest_nodes_on=plan_nodes_on(inp, doc))


def test_kept_candidate_keeps_start_and_the_newest_plans_cap_levels(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    inp = make_inputs(cfg, SimClock(START))
    model = PlanModel(inp)
    model.solve()
    sol = model.extract()
    assert sol.level[0, 0] == 0  # the MILP alone would run the job at 300 W
    sched, n, _u, _d, ev, kept, unchanged = kept_candidate(inp, model, sol, _anchor(inp))
    assert (kept, unchanged) == (1, 1)
    assert int(sched.pool[0]) == 0
    assert sched.level[0, : inp.T].tolist() == [1, 1, 1, 1]  # the newest plan's 150 W
    assert (float(sched.start_h[0]), float(sched.end_h[0])) == pytest.approx((0.0, 2.0))
    assert n[0].tolist() == [1, 1, 0, 0]
    assert ev.totals["carbon_kg"] == pytest.approx(0.0525)


def test_a_slot_without_cap_level_takes_the_milps_level(tmp_path: Path) -> None:
    """The newest plan's slot 0 has no ``cap_level`` (a document written without it): the
    kept placement takes the MILP's level there (0, 300 W) and the newest plan's 150 W in
    slots 1–3. ``a`` keeps its start 00:00 and, at 300 W (θ 1.0), does its 1 GPU-h in slot 0:
    00:00–01:00, node on in slot 0 only (min up 1 h): busy 0.3 kWh + node 0.1 kWh = 0.4 kWh
    × 100 g/kWh = 0.04 kg."""
    cfg = _cfg(tmp_path)
    inp = make_inputs(cfg, SimClock(START))
    model = PlanModel(inp)
    model.solve()
    sol = model.extract()
    assert sol.level[0, 0] == 0
    doc = _newest_plan()
    del doc["pools"][0]["slots"][0]["cap_level"]
    anchor = Anchor(latest=doc, latest_nodes_on=plan_nodes_on(inp, doc))
    sched, n, _u, _d, ev, kept, unchanged = kept_candidate(inp, model, sol, anchor)
    assert (kept, unchanged) == (1, 1)
    assert sched.level[0, : inp.T].tolist() == [0, 1, 1, 1]
    assert (float(sched.start_h[0]), float(sched.end_h[0])) == pytest.approx((0.0, 1.0))
    assert n[0].tolist() == [1, 0, 0, 0]
    assert ev.totals["carbon_kg"] == pytest.approx(0.04)


def test_no_unchanged_job_no_kept_candidate(tmp_path: Path) -> None:
    """The newest plan knew ``a`` with 2 GPU-h of work: nothing to keep (None)."""
    cfg = _cfg(tmp_path)
    inp = make_inputs(cfg, SimClock(START))
    model = PlanModel(inp)
    model.solve()
    doc = _newest_plan()
    doc["jobs"][0]["work_gpu_h"] = 2.0
    anchor = Anchor(latest=doc, latest_nodes_on=plan_nodes_on(inp, doc))
    assert kept_candidate(inp, model, model.extract(), anchor) is None


@pytest.mark.parametrize("incremental", [True, False])
def test_incremental_replan_is_the_kept_placement(tmp_path: Path, incremental: bool) -> None:
    """Every job (1 of 1 ≥ INCREMENTAL_MIN_SHARE = 75 %) is unchanged: an incremental re-plan
    *is* the kept placement (0.0525 kg, ``a`` until 02:00), no other candidate. Without
    ``incremental`` the candidates compete and, with no stability weights, the fresh placement
    at 300 W wins (0.04 kg, ``a`` until 01:00)."""
    cfg = _cfg(tmp_path)
    inp = make_inputs(cfg, SimClock(START))
    anchor = _anchor(inp)
    res = make_plan(
        cfg,
        SimClock(START),
        inputs=inp,
        new_model=lambda i: StablePlanModel(i, anchor),
        tradeoff_curve=False,
        joblevel=False,
        incremental=incremental,
        improve=False,
    )
    doc = res.document
    kp = doc["solver"]["kept_placement"]
    assert (kp["status"], kp["jobs_kept"], kp["jobs_unchanged"]) == ("built", 1, 1)
    assert kp["incremental"] is incremental
    a = next(j for j in doc["jobs"] if j["id"] == "a")
    if incremental:
        assert doc["solver"]["plan_source"] == "kept placement"
        assert (a["start"], a["end"]) == (iso(0), iso(2))
        assert doc["totals"]["carbon_kg"] == pytest.approx(0.0525)
    else:
        assert doc["solver"]["plan_source"] != "kept placement"
        assert (a["start"], a["end"]) == (iso(0), iso(1))
        assert doc["totals"]["carbon_kg"] == pytest.approx(0.04)


def test_job_orders_largest_first_and_earliest_deadline_first(fleet):
    """Three 1-GPU jobs: a 3 GPU-h due 10:00, b 1 GPU-h due 02:00, c 2 GPU-h due 02:00.
    Largest first: a (3), c (2), b (1). Earliest deadline first: b and c (02:00) before a,
    the larger c first of the two (seed-20261206 sample: x_job_orders__mutmut_12 sorted
    largest-first smallest first, b, c, a)."""
    path = fleet(
        carbon={"Z": [100.0] * 12},
        sites=SITE,
        pools=pool("p"),
        jobs=[
            job("a", work=3.0, release=0, deadline=10),
            job("b", work=1.0, release=0, deadline=2),
            job("c", work=2.0, release=0, deadline=2),
        ],
    )
    inp = make_inputs(load_config(path), SimClock(START))
    ids = {name: [inp.jobs[i].id for i in order] for name, order in job_orders(inp).items()}
    assert ids == {
        "largest-first": ["a", "c", "b"],
        "earliest-deadline-first": ["c", "b", "a"],
    }


def test_joblevel_skipped_at_a_zero_time_limit_says_so(fleet):
    """``solver.joblevel_time_limit_s = 0`` on a fleet small enough for the job-level MILP:
    the plan records it as skipped for that reason, not "too large" nor "not in the control
    step" (seed-20261206 sample: x_finish_plan__mutmut_563 upper-cased the reason)."""
    path = fleet(
        carbon={"Z": [100.0] * 4},
        sites=SITE,
        pools=pool("p"),
        jobs=[job("a", work=1.0, release=0, deadline=4)],
    )
    path.write_text(
        path.read_text().replace(
            "mip_rel_gap = 0.0", "mip_rel_gap = 0.0\njoblevel_time_limit_s = 0"
        )
    )
    from greencpn.controller.forecast import make_plan as plan_with_forecasts

    jl = plan_with_forecasts(load_config(path), SimClock(START)).document["solver"]["joblevel"]
    assert (jl["status"], jl["reason"]) == ("skipped", "joblevel_time_limit_s = 0")
