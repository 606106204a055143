"""Issue #10.12: work pushed past the horizon end is charged — busy GPU power plus the nodes'
idle share, times PUE, at the site's mean intensity over the horizon's last 24 h — in the plan
and in the baselines; the in-horizon figures stay under ``*_in_horizon``."""

from __future__ import annotations

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_plan
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool

CARBON = [100.0, 500.0, 100.0, 500.0, 300.0, 200.0]


def test_work_past_the_horizon_is_charged_at_the_last_day_mean(tmp_path) -> None:
    # 3 GPU-h on the only GPU, released at hour 4 of a 6-hour horizon: 1 GPU-h runs past
    # the end (late)
    path = write_fleet(
        tmp_path,
        carbon={"Z": CARBON},
        sites=SITE,
        pools=pool(nodes=1, gpn=1, idle_w=100.0),
        jobs=[job(work=3.0, release=4.0, deadline=6.0)],
    )
    doc = make_plan(load_config(path), SimClock(START)).document
    agn = doc["baselines"]["carbon_agnostic"]
    assert agn["beyond_horizon_gpu_h"] == pytest.approx(1.0)
    # 1 h at 300 W busy + 100 W node idle, PUE 1.0, at the 6-slot mean 283.3 g/kWh
    assert agn["beyond_horizon_energy_kwh"] == pytest.approx(0.4)
    assert agn["beyond_horizon_carbon_kg"] == pytest.approx(0.4 * sum(CARBON) / 6 / 1000)
    for t in [doc["totals"], *doc["baselines"].values()]:
        assert t["carbon_kg"] == pytest.approx(
            t["carbon_kg_in_horizon"] + t["beyond_horizon_carbon_kg"]
        )
        assert t["energy_kwh"] == pytest.approx(
            t["energy_kwh_in_horizon"] + t["beyond_horizon_energy_kwh"]
        )
        if t["beyond_horizon_gpu_h"] > 1e-9:
            assert t["beyond_horizon_carbon_kg"] > 0
    # the in-horizon figure is the per-slot sum plan.json lists
    site_sum = sum(x["carbon_kg"] for x in doc["sites"][0]["slots"])
    assert doc["totals"]["carbon_kg_in_horizon"] == pytest.approx(site_sum, abs=1e-3)
    rule = doc["beyond_horizon_rule"]
    assert "last 24 h" in rule["rule"]
    assert rule["intensity_g_per_kwh"] == {"a": pytest.approx(sum(CARBON) / 6, abs=1e-3)}
    # the saving is on the charged figures
    sav = doc["savings"]["carbon_kg_vs_carbon_agnostic"]
    assert sav == pytest.approx(agn["carbon_kg"] - doc["totals"]["carbon_kg"])
