"""Issue #10.13: what operators asked the report for — where and when work moved (work per
site and hour, plan against carbon-agnostic), cumulative carbon, the saving split by lever,
the energy breakdown, per-job delay, residency placements, the currency of cost and a warning
for pools greencpn cannot actuate — checked on a real plan."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from greencpn import cli
from tests.optimize.conftest import write_fleet
from tests.optimize.test_baseline_submit_site import BIG, CARBON, POOLS, SMALL
from tests.optimize.test_plan_exact import job


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    tmp = tmp_path_factory.mktemp("additions")
    pools = POOLS.replace(
        'name = "p-small"', 'name = "p-small"\nhook = { kind = "none" }'
    )  # p-big has no hook table (planning only), p-small cannot be switched
    path = write_fleet(
        tmp,
        carbon={"DIRTY": [500.0, 450.0, 400.0, 300.0, 200.0, 150.0], "CLEAN": CARBON["CLEAN"]},
        sites=BIG + SMALL,
        pools=pools,
        jobs=[
            job(id="eu", work=2.0, deadline=6) | {"jurisdictions": "EU"},
            job(id="late", gpus=4, work=8.0, deadline=6, ckpt=True),
        ],
        extra="",
    )
    text = path.read_text().replace('name = "tiny"', 'name = "tiny"\ncurrency = "EUR"', 1)
    path.write_text(text)
    out = tmp / "out"
    assert cli.main(["plan", "--config", str(path), "--out", str(out)]) == 0
    return json.loads((out / "plan.json").read_text()), (out / "report.md").read_text(), out


def test_levers_split_the_saving(planned: tuple[dict, str, Path]) -> None:
    doc, md, _ = planned
    lev = doc["lever_savings"]
    assert [r["lever"] for r in lev["levers"]] == ["time", "space", "sleep", "caps"]
    agn = doc["baselines"]["carbon_agnostic"]["carbon_kg_in_horizon"]
    assert lev["saving_kg"] == pytest.approx(agn - doc["totals"]["carbon_kg_in_horizon"])
    assert lev["interaction_kg"] == pytest.approx(
        lev["saving_kg"] - sum(r["saving_kg"] for r in lev["levers"])
    )
    # every node on costs carbon here (idle nodes at 100 W): sleeping nodes is a real saving
    sleep = next(r for r in lev["levers"] if r["lever"] == "sleep")
    assert sleep["saving_kg"] > 0
    assert "## Saving by lever" in md and "| sleeping nodes |" in md


def test_energy_breakdown_adds_up(planned: tuple[dict, str, Path]) -> None:
    doc, md, _ = planned
    for key, totals in [("plan", doc["totals"]), *doc["baselines"].items()]:
        eb = doc["energy_breakdown_kwh"][key]
        parts = eb["gpu_busy"] + eb["node_idle"] + eb["node_off"] + eb["boot"]
        assert parts == pytest.approx(eb["it_total"], abs=1e-3)
        assert eb["it_total"] + eb["pue_overhead"] == pytest.approx(
            totals["energy_kwh_in_horizon"], abs=1e-3
        )
    assert "## Energy breakdown (kWh)" in md and "| PUE overhead |" in md


def test_work_and_cumulative_carbon_series(planned: tuple[dict, str, Path]) -> None:
    doc, _, out = planned
    for key, totals in [("plan", doc["totals"]), *doc["baselines"].items()]:
        assert sum(doc["carbon_by_slot_kg"][key]) == pytest.approx(
            totals["carbon_kg_in_horizon"], abs=1e-3
        )
    busy = sum(s["busy_gpu_avg"] for p in doc["pools"] for s in p["slots"])  # 1-h slots
    assert sum(sum(v) for v in doc["work_by_site_gpu_h"]["plan"].values()) == pytest.approx(
        busy, abs=1e-2
    )
    assert set(doc["work_by_site_gpu_h"]["carbon_agnostic"]) == {"big", "small"}
    for png in ("work_by_site.png", "cumulative_carbon.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_delay_residency_currency_and_actuation(planned: tuple[dict, str, Path]) -> None:
    doc, md, _ = planned
    for j in doc["jobs"]:
        start = datetime.fromisoformat(j["start"].replace("Z", "+00:00"))
        release = datetime.fromisoformat(j["release"].replace("Z", "+00:00"))
        assert j["delay_h"] == pytest.approx((start - release).total_seconds() / 3600)
    assert "## Job delay (start − release)" in md
    (res,) = doc["residency"]
    assert res["job"] == "eu" and res["jurisdictions"] == ["EU"]
    assert res["site"] in res["allowed_sites"] and "EU" in res["site_jurisdictions"]
    assert "## Data residency placements" in md
    assert doc["currency"] == "EUR" and "| Cost (EUR) |" in md
    bad = {b["pool"]: b["reason"] for b in doc["not_actuated"]}
    assert set(bad) == {"p-big", "p-small"}
    assert "cannot switch its nodes" in bad["p-small"]
    assert "planning only" in bad["p-big"]
    assert "**Warning: greencpn cannot actuate 2 pool(s)**" in md
