"""Defects found on the way (issue 11, section 4) and tiny fleets with exact answers by hand.

Each defect test reproduced the defect before its fix (see the commit messages)."""

from __future__ import annotations

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs, make_plan
from greencpn.optimize.placement import place_jobs
from greencpn.optimize.repair import net_switches
from tests.optimize.conftest import START, iso

SITE = """
[[sites]]
name = "a"
zone = "Z"
jurisdictions = ["EU"]
pue = 1.0
"""


def gpu_two_levels(slow_thr: float, name: str = "T2") -> str:
    """A GPU model with two levels: 300 W at θ 1.0, power factor 1.0; 150 W at θ
    ``slow_thr``, power factor 0.5."""
    return f"""
[[gpu_models]]
name = "{name}"
power_limit_min_w = 100
power_limit_max_w = 300
power_limit_default_w = 300
idle_w = 0
source = "test profile"
[[gpu_models.levels]]
cap_w = 300
throughput = 1.0
power_factor = 1.0
[[gpu_models.levels]]
cap_w = 150
throughput = {slow_thr}
power_factor = 0.5
"""


TWO_LEVELS = gpu_two_levels(0.5)


def pool(name="p", nodes=1, gpn=1, idle_w=100.0, initial=0, gpu="T1", extra=""):
    return f"""
[[pools]]
name = "{name}"
site = "a"
nodes = {nodes}
gpu_model = "{gpu}"
gpus_per_node = {gpn}
node_idle_w = {idle_w}
min_up_h = 1.0
min_down_h = 1.0
initial_on = {initial}
spares = 0
{extra}
"""


def job(id="j", gpus=1, work=1.0, release=0.0, deadline=4.0, ckpt=False):
    return {
        "id": id,
        "gpus": gpus,
        "work_gpu_h": work,
        "release": iso(release),
        "deadline": iso(deadline),
        "checkpointable": str(ckpt).lower(),
    }


def plan(path):
    return make_plan(load_config(path), SimClock(START))


def work_done(inp, sched, j):
    """GPU-h a job's runs deliver at the cap levels of the slots they run in."""
    p = int(sched.pool[j])
    thr = inp.pools[p].level_thr
    return sum(g * thr[sched.level[p, t]] * inp.slot_h * f for t, g, f in sched.runs[j])


def the_job(doc, jid="j"):
    return next(j for j in doc["jobs"] if j["id"] == jid)


def test_raising_a_cap_retimes_the_jobs_already_there(fleet):
    """Placement's fast path raises a pool-slot to full power for a late job; a job placed
    there before must then end when its work is done, not keep its slow-level run time."""
    path = fleet(
        carbon={"Z": [100, 100, 500, 500]},
        sites=SITE,
        pools=pool(gpn=2, gpu="T2"),
        jobs=[job("a", work=1.0, deadline=4), job("b", work=1.0, deadline=1)],
        gpu=TWO_LEVELS,
    )
    inp = make_inputs(load_config(path), SimClock(START))
    slow = np.ones((1, inp.T), dtype=int)  # the 150 W level everywhere
    on = np.ones((1, inp.T), dtype=int)
    sched = place_jobs(inp, on, slow, mode="plan", job_order=[0, 1])  # a first, then b
    assert sched.level[0, 0] == 0  # b needed full power in slot 0 to be on time
    for j, jb in enumerate(inp.jobs):
        assert work_done(inp, sched, j) == pytest.approx(jb.work_gpu_h, abs=1e-6), jb.id
    # a: 1 GPU-h in slot 0 at full power: done at 01:00 (it used to be held until 02:00)
    assert sched.end_h[0] == pytest.approx(1.0)
    assert sched.end_h[1] == pytest.approx(1.0)


def test_rigid_job_takes_the_cleanest_contiguous_window_and_gap_is_over_the_bound(fleet):
    """A 2-hour job that cannot be split: the cleanest contiguous window is 04:00–06:00 (500
    g/kWh summed over two hours; slots 0 and 2 are cleaner but not adjacent). The fluid MILP
    bound uses slots 0 and 2, so the plan lies (0.2 − 0.08) / 0.08 = 150 % above it."""
    path = fleet(
        carbon={"Z": [100, 500, 100, 500, 300, 200]},
        sites=SITE,
        pools=pool(),
        jobs=[job(work=2.0, deadline=6)],
    )
    doc = plan(path).document
    j = the_job(doc)
    assert (j["start"], j["end"]) == (iso(4), iso(6))
    # node 100 W + GPU 300 W for 2 h: 0.4 kWh/h × (300 + 200) g/kWh
    assert doc["totals"]["carbon_kg"] == pytest.approx(0.2)
    ex = doc["executed"]
    assert ex["milp_bound"] == pytest.approx(0.08, rel=1e-6)
    assert ex["gap_to_bound"] == pytest.approx((0.2 - 0.08) / 0.08)
    # the carbon-aware greedy finds the same window here
    assert doc["baselines"]["carbon_aware_greedy"]["carbon_kg"] == pytest.approx(0.2)


BOOT = "node_boot_w = 400.0\nboot_time_min = 6.0"


def test_no_work_on_gpus_of_a_booting_node_and_boot_energy(fleet):
    """The node is off at the start and boots for 6 minutes: the job cannot start at 00:00
    on a 15-minute grid, only at 00:15. Boot energy: the node counts as idle (100 W) for the
    whole slot and draws 400 W instead while booting, so the start-up adds (400 − 100) W ×
    0.1 h = 0.03 kWh. Energy: 0.1 idle + 0.3 kW × 0.5 h busy + 0.03 boot = 0.28 kWh."""
    path = fleet(
        carbon={"Z": [100, 500, 500, 500]},
        sites=SITE,
        pools=pool(extra=BOOT),
        jobs=[job(work=0.5, deadline=4)],
    )
    res = plan(path)
    doc = res.document
    j = the_job(doc)
    assert (j["start"], j["end"]) == (iso(0.25), iso(0.75))
    assert doc["totals"]["energy_kwh"] == pytest.approx(0.28)
    assert doc["totals"]["carbon_kg"] == pytest.approx(0.028)
    assert doc["pools"][0]["slots"][0]["startups"] == 1


def test_job_released_inside_a_slot_starts_at_its_release(fleet):
    """Released 00:15, due 01:15, one GPU-hour: it fits exactly, on the 15-minute grid, in the
    plan and in the baselines (it used to be held until 01:00 and end late)."""
    path = fleet(
        carbon={"Z": [300, 300, 300]},
        sites=SITE,
        pools=pool(initial=1),
        jobs=[job(work=1.0, release=0.25, deadline=1.25)],
    )
    res = plan(path)
    j = the_job(res.document)
    assert (j["start"], j["end"], j["late_h"]) == (iso(0.25), iso(1.25), 0)
    for name, (sched, _n, _u) in res.baseline_schedules.items():
        assert sched.start_h[0] == pytest.approx(0.25), name
        assert res.document["baselines"][name]["late_jobs"] == 0, name


def test_two_jobs_that_fit_together_only_on_one_pool(fleet):
    """Two one-GPU jobs due in the first hour; pool 'big' has a 2-GPU node, 'small' a 1-GPU
    node. Together on 'big': one idle node (0.1) + 2 × 0.3 kWh = 0.7 kWh; split: 0.8 kWh."""
    path = fleet(
        carbon={"Z": [100, 100]},
        sites=SITE,
        pools=pool("big", gpn=2) + pool("small", gpn=1),
        jobs=[job("x", deadline=1), job("y", deadline=1)],
    )
    doc = plan(path).document
    assert {the_job(doc, "x")["pool"], the_job(doc, "y")["pool"]} == {"big"}
    assert doc["totals"]["energy_kwh"] == pytest.approx(0.7)
    small = next(p for p in doc["pools"] if p["name"] == "small")
    assert [s["nodes_on"] for s in small["slots"]] == [0, 0]


def test_a_start_and_a_stop_in_the_same_slot_cancel():
    n = np.array([[2, 2, 1]])
    u = np.array([[1, 1, 0]])
    d = np.array([[0, 1, 1]])
    n2, u2, d2 = net_switches(n, u, d)
    assert u2.tolist() == [[1, 0, 0]] and d2.tolist() == [[0, 0, 1]]
    assert (n2 == n).all()


def test_power_figures_in_the_document_are_to_the_watt(fleet):
    """plan.json gives every kW figure to 3 decimals (1 W), the pool's like the site's. The
    node idles at 123.45 W and the 1 GPU-h job runs in slot 0 (due 01:00) at 300 W, then the
    node is off: pool and site IT power 123.45 + 300 = 423.45 W → 0.423 kW in slot 0, 0 after;
    PUE 1, so the meter reads the same."""
    path = fleet(
        carbon={"Z": [100, 100, 100]},
        sites=SITE,
        pools=pool(idle_w=123.45),
        jobs=[job(work=1.0, deadline=1)],
    )
    doc = plan(path).document
    assert [s["it_power_kw"] for s in doc["pools"][0]["slots"]] == [0.423, 0.0, 0.0]
    site = doc["sites"][0]["slots"]
    assert [s["it_power_kw"] for s in site] == [0.423, 0.0, 0.0]
    assert [s["meter_power_kw"] for s in site] == [0.423, 0.0, 0.0]
