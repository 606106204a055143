"""``[controller] baselines``: what report baselines the control step prices (none / agnostic /
all), checked in the config with a clear error; the step's "saved vs carbon-agnostic" figure
with each; and ``candidates_max_jobs``, the bound on the per-job candidates."""

from __future__ import annotations

from datetime import timedelta

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller import StepStatus
from greencpn.controller.fakes import FakeFleet
from greencpn.errors import ConfigError
from tests.controller.conftest import START, iso, make_controller, write_tiny

JOBS = [
    {
        "id": f"j{i}",
        "gpus": 2,
        "work_gpu_h": 4,
        "release": iso(START),
        "deadline": iso(START + timedelta(hours=10)),
    }
    for i in range(3)
]


def _step(tmp_path, sim_clock, controller: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    sim_clock = SimClock(sim_clock.now())  # each controller its own clock
    path = write_tiny(tmp_path, jobs=JOBS, controller=controller)
    fleet = FakeFleet(load_config(path), sim_clock)
    c = make_controller(path, sim_clock, tmp_path / "state", fleet)
    r = c.step()
    c.close()
    assert r.status is StepStatus.OK, r.errors
    return r


def test_a_bad_baselines_value_is_a_clear_config_error(tmp_path):
    path = write_tiny(tmp_path, jobs=JOBS, controller='baselines = "some"')
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert "controller.baselines" in msg, msg
    assert "'none'" in msg and "'agnostic'" in msg and "'all'" in msg, msg
    assert "fleet.toml" in msg, msg


def test_the_default_prices_only_the_carbon_agnostic_baseline(tmp_path, sim_clock):
    r = _step(tmp_path, sim_clock, "")
    assert set(r.plan["baselines"]) == {"carbon_agnostic"}
    assert r.plan["solver"]["baselines"] == "agnostic"
    # the slot's saving against the carbon-agnostic baseline, as the daemon sums it
    agn = r.plan["baselines"]["carbon_agnostic"]
    assert agn["carbon_kg"] > r.plan["totals"]["carbon_kg"]  # the plan beats it over the horizon
    assert isinstance(r.metrics["saved_kg_co2e"], float)
    assert isinstance(r.metrics["saved_kwh"], float)


def test_all_and_agnostic_give_the_same_plan_and_the_same_saving(tmp_path, sim_clock):
    a = _step(tmp_path / "a", sim_clock, 'baselines = "agnostic"')
    b = _step(tmp_path / "b", sim_clock, 'baselines = "all"')
    assert set(b.plan["baselines"]) == {"carbon_agnostic", "shutdown_idle", "carbon_aware_greedy"}
    assert a.plan["baselines"]["carbon_agnostic"] == b.plan["baselines"]["carbon_agnostic"]
    assert a.metrics["saved_kg_co2e"] == pytest.approx(b.metrics["saved_kg_co2e"], rel=1e-12)
    assert a.metrics["saved_kwh"] == pytest.approx(b.metrics["saved_kwh"], rel=1e-12)
    assert [(j["id"], j["pool"], j["start"]) for j in a.plan["jobs"]] == [
        (j["id"], j["pool"], j["start"]) for j in b.plan["jobs"]
    ]
    assert a.plan["solver"]["plan_source"] == b.plan["solver"]["plan_source"]


def test_none_plans_without_baselines_and_records_no_saving(tmp_path, sim_clock):
    none = _step(tmp_path / "n", sim_clock, 'baselines = "none"')
    agn = _step(tmp_path / "a", sim_clock, 'baselines = "agnostic"')
    assert none.plan["baselines"] == {} and none.plan["savings"] == {}
    # the same plan: no baseline decides anything
    assert [(j["id"], j["pool"], j["start"]) for j in none.plan["jobs"]] == [
        (j["id"], j["pool"], j["start"]) for j in agn.plan["jobs"]
    ]
    assert none.plan["totals"] == agn.plan["totals"]
    # no saving figure rather than a wrong one: the daemon skips the slot (daemon/core.py)
    assert "saved_kg_co2e" not in none.metrics and "saved_kwh" not in none.metrics
    assert "saved_kg_co2e" in agn.metrics


def test_candidates_are_skipped_above_candidates_max_jobs(tmp_path, sim_clock):
    few = _step(tmp_path / "f", sim_clock, "candidates_max_jobs = 2")
    many = _step(tmp_path / "m", sim_clock, "candidates_max_jobs = 3")
    sv_few, sv_many = few.plan["solver"], many.plan["solver"]
    assert "3 jobs > controller.candidates_max_jobs = 2" in sv_few["candidates_skipped"]
    assert {c["name"] for c in sv_few["candidates"]} == {"optimised placement"}
    assert "candidates_skipped" not in sv_many
    assert "carbon-aware greedy" in {c["name"] for c in sv_many["candidates"]}


# ----------------------------------------------------------------------------- baselines_every


def _steps(tmp_path, controller: str, n: int):
    """``n`` hourly steps (a simulated clock, one minute into each slot); per step the result
    and the controller's PlanResult (its priced baseline and executed plan, by slot)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    clock = SimClock(START + timedelta(minutes=1))
    path = write_tiny(tmp_path, jobs=JOBS, controller=controller)
    fleet = FakeFleet(load_config(path), clock)
    c = make_controller(path, clock, tmp_path / "state", fleet)
    out = []
    for i in range(n):
        clock.set(START + timedelta(hours=i, minutes=1))
        r = c.step()
        assert r.status is StepStatus.OK, r.errors
        out.append((r, c.last_plan_result))
    c.close()
    return out


def test_baselines_every_3_prices_at_steps_1_and_4_and_reuses_with_its_age_between(tmp_path):
    runs = _steps(tmp_path, "baselines_every = 3", 5)
    labels = [r.metrics["baseline"] for r, _ in runs]
    assert [b["priced"] for b in labels] == [True, False, False, True, False]
    assert [b["step_id"] for b in labels] == [1, 1, 1, 4, 4]  # the step that priced it
    assert [b["age_steps"] for b in labels] == [0, 1, 2, 0, 1]
    # priced one minute into slot 0; reused one and two hours later
    assert [b["age_s"] for b in labels] == [0.0, 3600.0, 7200.0, 0.0, 3600.0]
    assert labels[1]["priced_at"] == iso(START + timedelta(minutes=1))
    assert labels[1]["slot_start"] == iso(START)
    # a reusing step prices no baseline and says whose it used, in plan.json too
    r2 = runs[1][0]
    assert r2.plan["baselines"] == {}
    assert r2.plan["solver"]["baselines_reused"]["step_id"] == 1
    assert any("not priced this step" in d and "step #1" in d for d in r2.plan["diagnostics"])
    assert set(runs[0][0].plan["baselines"]) == {"carbon_agnostic"}
    # the saving of a reusing step, by hand: step 1's baseline carbon for the same slot
    # (its slot 1 at step 2, slot 2 at step 3) minus this step's plan in its slot 0
    base1 = runs[0][1].baselines["carbon_agnostic"]
    for i in (1, 2):
        r, res = runs[i]
        want_kg = base1.site_carbon_kg[:, i].sum() - res.executed.site_carbon_kg[:, 0].sum()
        want_kwh = base1.site_energy_kwh[:, i].sum() - res.executed.site_energy_kwh[:, 0].sum()
        assert r.metrics["saved_kg_co2e"] == pytest.approx(want_kg, rel=1e-12, abs=1e-12)
        assert r.metrics["saved_kwh"] == pytest.approx(want_kwh, rel=1e-12, abs=1e-12)


def test_baselines_every_changes_only_the_reused_figures_not_the_plans(tmp_path):
    every = _steps(tmp_path / "e3", "baselines_every = 3", 4)
    each = _steps(tmp_path / "e1", "", 4)
    for (a, _), (b, _) in zip(every, each, strict=True):
        assert [(j["id"], j["pool"], j["start"]) for j in a.plan["jobs"]] == [
            (j["id"], j["pool"], j["start"]) for j in b.plan["jobs"]
        ]
        assert a.plan["totals"] == b.plan["totals"]
    # the default (1) prices every step; where N = 3 prices too (steps 1, 4) the figures agree
    assert all(r.metrics["baseline"]["priced"] for r, _ in each)
    for i in (0, 3):
        assert every[i][0].metrics["saved_kg_co2e"] == each[i][0].metrics["saved_kg_co2e"]
        assert every[i][0].metrics["saved_kwh"] == each[i][0].metrics["saved_kwh"]


@pytest.mark.parametrize("bad", ["0", "-2", "1.5", '"3"'])
def test_a_bad_baselines_every_is_a_clear_config_error(tmp_path, bad):
    path = write_tiny(tmp_path, jobs=JOBS, controller=f"baselines_every = {bad}")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert "controller.baselines_every" in msg, msg
    assert "fleet.toml" in msg, msg
