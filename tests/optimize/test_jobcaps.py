"""Per-job cap levels (issue #14.3): one job, two levels, figures checkable by hand.

Job: W = 4 GPU-h on g = 1 GPU, starting at 0 h, hourly slots, PUE 1.
Level 0 (deep cap): θ = 0.8, ε = 0.2 kW → D = 4 / 0.8 = 5 h, E = 0.2 × 5 = 1.0 kWh.
Level 1 (top cap):  θ = 1.0, ε = 0.3 kW → D = 4 h,            E = 0.3 × 4 = 1.2 kWh.
At a flat 500 g/kWh: carbon 0.50 kg (deep) vs 0.60 kg (top).
"""

from __future__ import annotations

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs
from greencpn.optimize.evaluate import evaluate
from greencpn.optimize.jobcaps import choose_level, recap_jobs
from greencpn.optimize.placement import place_jobs
from greencpn.optimize.repair import repair_nodes
from tests.optimize.conftest import GPU, START, iso, write_fleet
from tests.optimize.test_plan_tiny import ONE_SITE, pool

JOB = {
    "work_gpu_h": 4.0,
    "gpus": 1,
    "throughput": [0.8, 1.0],
    "busy_extra_kw": [0.2, 0.3],
    "start_h": 0.0,
    "slot_h": 1.0,
}


def test_slack_and_flat_high_carbon_take_the_deep_cap() -> None:
    c = choose_level(**JOB, end_limit_h=6.0, intensity_g_per_kwh=[500.0] * 6)
    assert (c.level, c.ok) == (0, True)
    assert c.duration_h == pytest.approx(5.0)
    assert c.energy_kwh == pytest.approx(1.0)
    assert c.carbon_kg == pytest.approx(0.5)


def test_tight_deadline_keeps_the_shallow_cap() -> None:
    c = choose_level(**JOB, end_limit_h=4.5, intensity_g_per_kwh=[500.0] * 6)
    assert (c.level, c.ok) == (1, True)
    assert c.energy_kwh == pytest.approx(1.2)
    assert c.carbon_kg == pytest.approx(0.6)


def test_slack_into_a_dirty_hour_keeps_the_top_cap() -> None:
    """Intensity 100 for 4 h, then 1000: top = 1.2 × 0.1 = 0.12 kg; deep = 4 h × 0.2 kW × 0.1
    + 1 h × 0.2 kW × 1.0 = 0.28 kg — the slower run's last hour is dirty, so the top cap wins."""
    c = choose_level(**JOB, end_limit_h=6.0, intensity_g_per_kwh=[100.0] * 4 + [1000.0, 1000.0])
    assert c.level == 1
    assert c.carbon_kg == pytest.approx(0.12)


def test_budget_binds_the_deep_cap_even_when_it_costs_carbon() -> None:
    """Same dirty fifth hour, but only 0.25 kW of headroom: the top cap's 0.3 kW does not fit,
    the deep cap's 0.2 kW does (0.28 kg > 0.12 kg)."""
    c = choose_level(
        **JOB,
        end_limit_h=6.0,
        intensity_g_per_kwh=[100.0] * 4 + [1000.0, 1000.0],
        headroom_kw=[0.25] * 6,
    )
    assert (c.level, c.ok) == (0, True)
    assert c.carbon_kg == pytest.approx(0.28)


def test_nothing_fits_reports_not_ok() -> None:
    """Deadline 4.5 h needs the top cap, the 0.25 kW budget forbids it: the fastest level inside
    the budget (deep, 5 h) is returned with ok=False, for the caller to report."""
    c = choose_level(
        **JOB, end_limit_h=4.5, intensity_g_per_kwh=[500.0] * 6, headroom_kw=[0.25] * 6
    )
    assert (c.level, c.ok) == (0, False)
    assert c.duration_h == pytest.approx(5.0)


GPU7 = (
    GPU.replace('name = "T1"', 'name = "T7"')
    + """[[gpu_models.workload_classes]]
name = "cool"
[[gpu_models.workload_classes.levels]]
cap_w = 300
throughput = 1.0
power_factor = 0.5
"""
)


def test_recap_prices_each_job_on_its_own_curve_at_the_pools_cap(tmp_path) -> None:
    """GPU "T7" has one level, 300 W θ 1.0: busy 0.3 kW for jobs without a class, 0.15 kW
    for class "cool" (same speed, half the power). One pool of 1 node × 1 GPU, node idle
    100 W, 100 then 200 g/kWh. E (no class) and C ("cool"), 1 GPU-h each: E runs in slot 0,
    C (released 01:00) in slot 1. The pool's curve is the work-weighted mix, busy 0.225 kW,
    so placement prices both at it: (0.225 + 0.1) × 100 + (0.225 + 0.1) × 200 g = 0.0975 kg.
    The pass keeps both at the pool's cap (same speed: nothing moves, ``recapped`` 0) but
    each on its own curve, since the busy power differs there (0.3 and 0.15 kW, not 0.225):
    (0.3 + 0.1) × 100 + (0.15 + 0.1) × 200 g = 0.09 kg."""
    path = write_fleet(
        tmp_path,
        carbon={"Z": [100, 200, 300]},
        sites=ONE_SITE,
        pools=pool(gpu="T7"),
        jobs=[],
        gpu=GPU7,
    )
    (tmp_path / "jobs.csv").write_text(
        "id,gpus,work_gpu_h,release,deadline,workload_class\n"
        f"E,1,1.0,{iso(0)},{iso(3)},\nC,1,1.0,{iso(1)},{iso(3)},cool\n"
    )
    inp = make_inputs(load_config(path), SimClock(START))
    assert inp.pools[0].level_extra_kw.tolist() == pytest.approx([0.225])
    sched = place_jobs(inp, np.zeros((1, inp.T)), np.zeros((1, inp.T), dtype=int), mode="asap")
    assert sched.start_h.tolist() == [0.0, 1.0]
    n, u, _ = repair_nodes(inp, sched)
    ev = evaluate(inp, sched, n, u)
    assert ev.totals["carbon_kg"] == pytest.approx(0.0975)
    rc = recap_jobs(inp, sched, n, ev, {"E": None, "C": "cool"}, u)
    assert (rc.considered, rc.recapped, rc.on_own_curve) == (2, 0, 2)
    assert rc.schedule.job_cap == {
        0: (300.0, 1.0, pytest.approx(0.3)),
        1: (300.0, 1.0, pytest.approx(0.15)),
    }
    assert rc.schedule.start_h.tolist() == [0.0, 1.0]
    assert evaluate(inp, rc.schedule, n, u).totals["carbon_kg"] == pytest.approx(0.09)
