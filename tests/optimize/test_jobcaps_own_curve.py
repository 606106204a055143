"""Caps per job in the plan when a job's own curve differs from its pool's (issue #14.3).

The plan times every job on its pool's curve — at each cap the work-weighted mix of its jobs'
classes — so a job whose own class is slower at the pool's cap than the mix would really run
past its deadline. ``cap_mode = "job"`` moves such a job to the least-carbon level of its own
curve that meets the deadline (``jobs_corrected``), inside the site budget.

GPU "T3" (max 300 W, idle 0 W). Its own levels (jobs without a class, "elastic"): 300 W θ 1.0,
0.3 kW busy; 250 W θ 0.95, 0.225 kW; 200 W θ 0.9, 0.18 kW. Class "rigid": 300 W θ 1.0, 0.3 kW;
250 W θ 0.8, ``RIGID_250`` × 0.3 kW; 200 W θ 0.6, 0.186 kW. One pool, 1 node × 2 GPUs, node
idle 100 W, hourly slots, PUE 1, flat 500 g/kWh, no cost weight.

Jobs: E (elastic, 9 GPU-h, due 12 h) and R (rigid, 1 GPU-h, due 1.5 h), both released at 0.
The pool's mix at 200 W: θ = 10 / (9 / 0.9 + 1 / 0.6) = 0.857, busy power
(9 / 0.9 × 0.6 + 1 / 0.6 × 0.62) / 11.667 × 0.3 = 0.181 kW — energy per unit of work 0.211 kWh
against 0.3 at the top cap, so the pool runs at 200 W. On the mix R takes 1 / 0.857 = 1.17 h
(in time); on its own curve 1 / 0.6 = 1.67 h, past its 1.5 h deadline. At 250 W it needs
1 / 0.8 = 1.25 h, at 300 W 1 h.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_plan
from tests.optimize.conftest import START, iso, write_fleet

GPU3 = """
[[gpu_models]]
name = "T3"
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
cap_w = 250
throughput = 0.95
power_factor = 0.75
[[gpu_models.levels]]
cap_w = 200
throughput = 0.9
power_factor = 0.6
[[gpu_models.workload_classes]]
name = "rigid"
[[gpu_models.workload_classes.levels]]
cap_w = 300
throughput = 1.0
power_factor = 1.0
[[gpu_models.workload_classes.levels]]
cap_w = 250
throughput = 0.8
power_factor = {rigid_250}
[[gpu_models.workload_classes.levels]]
cap_w = 200
throughput = 0.6
power_factor = 0.62
"""

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
gpu_model = "T3"
gpus_per_node = 2
node_idle_w = 100.0
initial_on = 0
spares = 0
"""


def _plan(tmp: Path, *, rigid_250: float, mode: str = "job", site: str = "") -> dict:
    path = write_fleet(
        tmp,
        carbon={"Z": [500.0] * 14},
        sites=SITE.format(extra=site),
        pools=POOL,
        jobs=[],
        gpu=GPU3.format(rigid_250=rigid_250),
    )
    cols = ["id", "gpus", "work_gpu_h", "release", "deadline", "workload_class"]
    rows = [",".join(cols), f"E,1,9.0,{iso(0)},{iso(12)},", f"R,1,1.0,{iso(0)},{iso(1.5)},rigid"]
    (tmp / "jobs.csv").write_text("\n".join(rows) + "\n")
    text = path.read_text().replace("mip_rel_gap = 0.0", f'mip_rel_gap = 0.0\ncap_mode = "{mode}"')
    path.write_text(text)
    return make_plan(load_config(path), SimClock(START)).document


def _job(doc: dict, jid: str) -> dict:
    return next(j for j in doc["jobs"] if j["id"] == jid)


def test_pool_mode_times_the_rigid_job_on_the_pool_curve(tmp_path: Path) -> None:
    """The premise: in pool mode the pool runs at 200 W and the plan ends R at 1 / 0.857 =
    1.17 h = 70 min (its own curve would need 1.67 h, past 1.5 h). Carbon: node 0.1 kW × 11
    slots (E ends at 9 / 0.857 = 10.5 h) = 1.1 kWh, E 0.181 × 10.5 = 1.899, R 0.181 × 1.17 =
    0.211 → 3.21 kWh × 0.5 = 1.605 kg."""
    doc = _plan(tmp_path, rigid_250=0.78, mode="pool")
    r = _job(doc, "R")
    assert r["power_cap_w"] is None
    assert [s["power_cap_w"] for s in doc["pools"][0]["slots"][:2]] == [200.0, 200.0]
    assert (r["start"], r["end"]) == (iso(0), iso(70 / 60))
    assert doc["totals"]["carbon_kg"] == pytest.approx(1.605)


def test_a_tight_deadline_gives_the_job_the_deepest_cap_its_own_curve_allows(
    tmp_path: Path,
) -> None:
    """R rigid at 250 W 0.78 × 0.3 = 0.234 kW: 0.234 × 1.25 = 0.2925 kWh (0.146 kg) < 0.3 kWh
    (0.15 kg) at 300 W, and 200 W misses 1.5 h: R runs at 250 W, 0–1.25 h (a correction:
    kept although it costs more than the 0.181 × 1.17 = 0.211 kWh the pool curve claimed).
    E stays at the pool's 200 W on its own curve: 9 / 0.9 = 10 h × 0.18 kW = 1.8 kWh (the pool
    curve said 10.5 h, 1.899 kWh; its node stays on as planned). Carbon 1.605 + (0.2925 −
    0.211 + 1.8 − 1.899) × 0.5 = 1.596 kg. Old code: R kept the pool's 200 W and the 1.17 h the
    pool curve gives, E its 10.5 h."""
    doc = _plan(tmp_path, rigid_250=0.78)
    r, e = _job(doc, "R"), _job(doc, "E")
    assert r["power_cap_w"] == 250.0
    assert (r["start"], r["end"]) == (iso(0), iso(1.25))
    assert e["power_cap_w"] == 200.0 and e["end"] == iso(10)
    jc = doc["solver"]["job_caps"]
    assert (jc["jobs_recapped"], jc["jobs_corrected"], jc["jobs_on_own_curve"]) == (1, 1, 2)
    assert jc["jobs_own_curve_late"] == 0 and jc["kept"] is True
    assert doc["totals"]["carbon_kg"] == pytest.approx(1.59625)
    assert doc["totals"]["late_jobs"] == 0


def test_with_no_cheaper_cap_in_time_the_job_takes_the_top_cap(tmp_path: Path) -> None:
    """R rigid at 250 W 0.81 × 0.3 = 0.243 kW: 0.243 × 1.25 = 0.304 kWh > 0.3 at 300 W, so R
    takes 300 W, 0–1 h."""
    doc = _plan(tmp_path, rigid_250=0.81)
    r = _job(doc, "R")
    assert r["power_cap_w"] == 300.0
    assert (r["start"], r["end"]) == (iso(0), iso(1))


def test_the_site_budget_binds_the_correction(tmp_path: Path) -> None:
    """As above (300 W the free choice) with a 0.56 kW budget: in slot 0 the node (0.1 kW) and
    E at the pool's 200 W (0.181 kW) leave 0.279 kW for R — 300 W (0.3 kW) does not fit,
    250 W (0.243 kW) does: R runs at 250 W, 0–1.25 h, and the budget is not overrun."""
    doc = _plan(tmp_path, rigid_250=0.81, site="power_budget_kw = 0.56")
    r = _job(doc, "R")
    assert r["power_cap_w"] == 250.0
    assert (r["start"], r["end"]) == (iso(0), iso(1.25))
    assert doc["totals"]["budget_overrun_kwh"] == 0.0


def test_a_budget_that_fits_no_level_in_time_leaves_the_job_and_says_so(tmp_path: Path) -> None:
    """A 0.5 kW budget leaves 0.5 − 0.1 − 0.181 = 0.219 kW for R: neither 250 W (0.243 kW) nor
    300 W fits, 200 W misses the deadline — R keeps the pool's cap and plan.json counts it in
    ``jobs_own_curve_late`` (its own curve says it will be late)."""
    doc = _plan(tmp_path, rigid_250=0.81, site="power_budget_kw = 0.5")
    assert _job(doc, "R")["power_cap_w"] is None
    jc = doc["solver"]["job_caps"]
    assert (jc["jobs_corrected"], jc["jobs_own_curve_late"]) == (0, 1)
    assert doc["totals"]["budget_overrun_kwh"] == 0.0
