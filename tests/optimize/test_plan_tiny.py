"""Hand-checkable tiny plans with exact expected answers (oemof-solph / PyPSA style)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_inputs, make_plan
from greencpn.optimize.checks import run_checks
from greencpn.optimize.milp import PlanModel, SolveStatus
from tests.optimize.conftest import START, iso, write_fleet

ONE_SITE = """
[[sites]]
name = "a"
zone = "Z"
jurisdictions = ["EU"]
pue = 1.0
"""


def pool(
    name="p",
    site="a",
    nodes=1,
    gpn=1,
    idle_w=100.0,
    min_up=1.0,
    min_down=1.0,
    initial=0,
    spares=0,
    gpu="T1",
):
    return f"""
[[pools]]
name = "{name}"
site = "{site}"
nodes = {nodes}
gpu_model = "{gpu}"
gpus_per_node = {gpn}
node_idle_w = {idle_w}
min_up_h = {min_up}
min_down_h = {min_down}
initial_on = {initial}
spares = {spares}
"""


def job(id="j", gpus=1, work=1.0, release=0, deadline=4, ckpt=False, **kw):
    return {
        "id": id,
        "gpus": gpus,
        "work_gpu_h": work,
        "release": iso(release),
        "deadline": iso(deadline),
        "checkpointable": str(ckpt).lower(),
        **kw,
    }


def plan(path):
    return make_plan(load_config(path), SimClock(START))


def nodes_on(doc, pool_name="p"):
    p = next(p for p in doc["pools"] if p["name"] == pool_name)
    return [s["nodes_on"] for s in p["slots"]]


def the_job(doc, jid="j"):
    return next(j for j in doc["jobs"] if j["id"] == jid)


def test_job_moves_to_the_cleaner_slot(fleet):
    path = fleet(carbon={"Z": [500, 100, 400, 300]}, sites=ONE_SITE, pools=pool(), jobs=[job()])
    res = plan(path)
    doc = res.document
    assert doc["solver"]["status"] == "optimal"
    j = the_job(doc)
    assert j["start"] == iso(1) and j["end"] == iso(2)
    assert j["late_h"] == 0
    assert nodes_on(doc) == [0, 1, 0, 0]
    # 100 W node + 300 W GPU for one hour at 100 g/kWh = 0.04 kg
    assert doc["totals"]["energy_kwh"] == pytest.approx(0.4)
    assert doc["totals"]["carbon_kg"] == pytest.approx(0.04)
    # carbon-agnostic: starts at release (slot 0, 500 g), node on all 4 slots
    agn = doc["baselines"]["carbon_agnostic"]
    assert agn["energy_kwh"] == pytest.approx(0.7)
    assert agn["carbon_kg"] == pytest.approx((0.4 * 500 + 0.1 * 100 + 0.1 * 400 + 0.1 * 300) / 1000)
    # shutdown-idle: same schedule, node on in slot 0 only
    assert doc["baselines"]["shutdown_idle"]["carbon_kg"] == pytest.approx(0.4 * 500 / 1000)
    assert doc["savings"]["carbon_pct_vs_shutdown_idle"] == pytest.approx(80.0)
    assert doc["executed"]["gap_to_bound"] == pytest.approx(0.0, abs=1e-6)


TWO_SITES = """
[[sites]]
name = "clean"
zone = "C"
jurisdictions = ["US"]
pue = 1.0
latency_ms = {{ eu-west = 100 }}
{budget}
[[sites]]
name = "dirty"
zone = "D"
jurisdictions = ["EU", "DE"]
pue = 1.0
latency_ms = {{ eu-west = 10 }}
"""


def test_residency_forbids_the_cleaner_site(fleet):
    path = fleet(
        carbon={"C": [50, 50], "D": [600, 600]},
        sites=TWO_SITES.format(budget=""),
        pools=pool("pc", "clean", gpn=2) + pool("pd", "dirty", gpn=2),
        jobs=[
            job("gdpr", release=0, deadline=2, jurisdictions="EU"),
            job("free", release=0, deadline=2),
            job("near", release=0, deadline=2, user_region="eu-west", max_latency_ms=20),
        ],
    )
    doc = plan(path).document
    assert the_job(doc, "free")["site"] == "clean"
    assert the_job(doc, "gdpr")["site"] == "dirty"
    assert the_job(doc, "near")["site"] == "dirty"


def test_min_up_keeps_nodes_on_for_three_slots(fleet):
    path = fleet(
        carbon={"Z": [100] * 6},
        sites=ONE_SITE,
        pools=pool(nodes=3, min_up=3.0),
        jobs=[job(release=1, deadline=2)],
    )
    doc = plan(path).document
    assert nodes_on(doc) == [0, 1, 1, 1, 0, 0]
    assert [s["startups"] for s in doc["pools"][0]["slots"]] == [0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("min_down", "expected"), [(1.0, [1, 0, 1, 0, 0, 0]), (3.0, [1, 1, 1, 0, 0, 0])]
)
def test_min_down_bridges_a_short_gap(fleet, min_down, expected):
    path = fleet(
        carbon={"Z": [100] * 6},
        sites=ONE_SITE,
        pools=pool(min_down=min_down, initial=1),
        jobs=[job("a", release=0, deadline=1), job("b", release=2, deadline=3)],
    )
    doc = plan(path).document
    assert nodes_on(doc) == expected


def gpu(name, levels):
    text = f"""
[[gpu_models]]
name = "{name}"
power_limit_min_w = 100
power_limit_max_w = 300
power_limit_default_w = 300
idle_w = 0
source = "test profile"
"""
    for cap, thr, pf in levels:
        text += f"[[gpu_models.levels]]\ncap_w = {cap}\nthroughput = {thr}\npower_factor = {pf}\n"
    return text


def test_cap_level_chosen_when_saving_outweighs_slowdown(fleet):
    # 0.9 GPU-h: full power 0.9 h × 300 W = 270 Wh; 180 W cap runs 1 h at 180 W = 180 Wh.
    path = fleet(
        carbon={"Z": [200, 200, 200]},
        sites=ONE_SITE,
        pools=pool(idle_w=10.0, gpu="T2"),
        gpu=gpu("T2", [(300, 1.0, 1.0), (180, 0.9, 0.6)]),
        jobs=[job(work=0.9, release=0, deadline=2, ckpt=True)],
    )
    doc = plan(path).document
    busy = [s for s in doc["pools"][0]["slots"] if s["busy_gpu_avg"] > 0]
    assert [s["power_cap_w"] for s in busy] == [180.0]
    assert doc["totals"]["energy_kwh"] == pytest.approx(0.19)


def test_full_power_kept_when_slowdown_costs_more_idle_energy(fleet):
    # 150 W cap halves the speed: 1.8 h × (135 + 200) W = 603 Wh vs 0.9 h × (300 + 200) W = 450 Wh.
    path = fleet(
        carbon={"Z": [200, 200, 200]},
        sites=ONE_SITE,
        pools=pool(idle_w=200.0, gpu="T3"),
        gpu=gpu("T3", [(300, 1.0, 1.0), (150, 0.5, 0.45)]),
        jobs=[job(work=0.9, release=0, deadline=3, ckpt=True)],
    )
    doc = plan(path).document
    busy = [s for s in doc["pools"][0]["slots"] if s["busy_gpu_avg"] > 0]
    assert [s["power_cap_w"] for s in busy] == [300.0]
    j = the_job(doc)
    from datetime import datetime

    run_h = (
        datetime.fromisoformat(j["end"]) - datetime.fromisoformat(j["start"])
    ).total_seconds() / 3600
    assert run_h == pytest.approx(0.9)


def test_budget_forces_work_out_of_a_site(fleet):
    # clean site: 50 W node + one 300 W GPU fits 0.35 kW; a second busy GPU would not.
    path = fleet(
        carbon={"C": [50, 50], "D": [600, 600]},
        sites=TWO_SITES.format(budget="power_budget_kw = 0.35").replace('["US"]', '["EU"]'),
        pools=pool("pc", "clean", gpn=2, idle_w=50.0) + pool("pd", "dirty", gpn=2, idle_w=50.0),
        jobs=[job("a", release=0, deadline=1), job("b", release=0, deadline=1)],
    )
    doc = plan(path).document
    assert sorted(the_job(doc, x)["site"] for x in "ab") == ["clean", "dirty"]
    clean = next(s for s in doc["sites"] if s["name"] == "clean")
    assert max(s["meter_power_kw"] for s in clean["slots"]) <= 0.35 + 1e-9
    assert doc["totals"]["budget_overrun_kwh"] == 0


def test_impossible_deadline_reports_the_late_job(fleet):
    path = fleet(
        carbon={"Z": [100] * 4},
        sites=ONE_SITE,
        pools=pool(),
        jobs=[job(work=3.0, release=0, deadline=2)],
    )
    doc = plan(path).document
    assert doc["solver"]["status"] == "optimal"
    assert the_job(doc)["late_h"] == pytest.approx(1.0)
    # the pre-solve check (3 h of work, 2 h of window) and, separately, the executed plan's line
    pre = [d for d in doc["diagnostics"] if "needs at least" in d]
    assert pre == [
        "deadline: job j needs at least 3.00 h on 1 GPU(s) but has 2.00 h between its "
        "release and deadline: it will be late"
    ]
    assert "deadline: job j finishes 1.00 h late" in doc["diagnostics"]


def test_pre_solve_deadline_check_boundary():
    """Exactly enough time (2 GPU-h on 1 GPU in a 2-h window) is not flagged; 15 minutes
    less is. Checked on run_checks itself, so the executed plan's "finishes late" line cannot
    stand in for it."""

    def checks(work, deadline):
        with tempfile.TemporaryDirectory() as tmp:
            path = write_fleet(
                Path(tmp),
                carbon={"Z": [100] * 4},
                sites=ONE_SITE,
                pools=pool(),
                jobs=[job(work=work, release=0, deadline=deadline)],
            )
            return run_checks(make_inputs(load_config(path), SimClock(START)))

    assert checks(2.0, 2) == []
    assert checks(2.0, 1.75) == [
        "deadline: job j needs at least 2.00 h on 1 GPU(s) but has 1.75 h between its "
        "release and deadline: it will be late"
    ]


def test_checkpointable_job_splits_over_clean_slots(fleet):
    path = fleet(
        carbon={"Z": [100, 500, 100, 500]},
        sites=ONE_SITE,
        pools=pool(),
        jobs=[job(work=2.0, release=0, deadline=4, ckpt=True)],
    )
    doc = plan(path).document
    assert [s["slot"] for s in the_job(doc)["schedule"]] == [0, 2]
    assert nodes_on(doc) == [1, 0, 1, 0]


def test_non_checkpointable_job_runs_contiguously(fleet):
    path = fleet(
        carbon={"Z": [100, 500, 100, 500]},
        sites=ONE_SITE,
        pools=pool(),
        jobs=[job(work=2.0, release=0, deadline=4, ckpt=False)],
    )
    doc = plan(path).document
    slots = [s["slot"] for s in the_job(doc)["schedule"]]
    assert len(slots) == 2 and slots[1] == slots[0] + 1


def test_deadline_beyond_horizon_is_deferred(fleet):
    path = fleet(
        carbon={"Z": [100] * 4},
        sites=ONE_SITE,
        pools=pool(),
        jobs=[job(work=1.0, release=0, deadline=30)],
    )
    doc = plan(path).document
    j = the_job(doc)
    assert j["deferred"] is True and j["start"] is None


def test_replan_updates_carbon_on_the_built_model(fleet):
    path = fleet(carbon={"Z": [500, 100, 400, 300]}, sites=ONE_SITE, pools=pool(), jobs=[job()])
    cfg = load_config(path)
    inp = make_inputs(cfg, SimClock(START))
    model = PlanModel(inp)
    first = model.solve()
    assert first.status is SolveStatus.OPTIMAL and not first.warm
    assert np.argmax(model.extract().n[0]) == 1
    again = model.resolve(inp.with_intensity({"a": np.array([100.0, 500, 400, 300])}))
    assert again.warm and again.status is SolveStatus.OPTIMAL
    assert np.argmax(model.extract().n[0]) == 0
    assert again.objective == pytest.approx(0.04)


def test_time_limit_outcome_is_typed(fleet):
    # a tiny time limit on a model HiGHS cannot finish at once: typed outcome, no exception
    jobs = [
        job(
            f"j{i}",
            gpus=1 + i % 3,
            work=1.0 + (i % 5),
            release=i % 7,
            deadline=12 + i % 11,
            ckpt=i % 2 == 0,
        )
        for i in range(60)
    ]
    path = fleet(
        carbon={"Z": [100 + 37 * (i % 7) for i in range(24)]},
        sites=ONE_SITE,
        pools=pool(nodes=30, gpn=4, min_up=3.0),
        jobs=jobs,
        extra="",
    )
    cfg = load_config(path)
    inp = make_inputs(cfg, SimClock(START))
    inp = type(inp)(
        **{**inp.__dict__, "solver": inp.solver.model_copy(update={"time_limit_s": 0.001})}
    )
    out = PlanModel(inp).solve()
    # 1 ms is not even enough for presolve here (the model solves in ~0.5 s): never OPTIMAL,
    # and with no incumbent at all, a typed NO_SOLUTION that make_plan refuses to use
    assert out.status is SolveStatus.NO_SOLUTION, out
    assert out.termination == "maxTimeLimit" and out.objective is None and not out.usable
    assert not out.incumbent_used_on_time_limit


class _FakeHighsResult:
    """What pyomo.contrib.solver's HiGHS returns when the time limit stops a MIP with an
    incumbent (the real solver cannot be made to stop there deterministically on a tiny model)."""

    class _Name:
        def __init__(self, name):
            self.name = name

    def __init__(self, termination, solution, obj, bound):
        self.termination_condition = self._Name(termination)
        self.solution_status = self._Name(solution)
        self.incumbent_objective = obj
        self.objective_bound = bound
        self.timing_info = type("T", (), {"highs_time": 0.01})()
        self.loaded = False
        res = self

        class _Loader:
            def load_vars(self):
                res.loaded = True

        self.solution_loader = _Loader()


@pytest.mark.parametrize(
    ("termination", "solution", "obj", "status"),
    [
        ("maxTimeLimit", "feasible", 12.0, SolveStatus.TIME_LIMIT),
        ("maxTimeLimit", "noSolution", None, SolveStatus.NO_SOLUTION),
        ("convergenceCriteriaSatisfied", "optimal", 10.0, SolveStatus.OPTIMAL),
        ("provenInfeasible", "noSolution", None, SolveStatus.INFEASIBLE),
    ],
)
def test_solver_outcome_mapping(fleet, monkeypatch, termination, solution, obj, status):
    """The TIME_LIMIT branch runs: the incumbent is loaded and used, its gap reported."""
    path = fleet(carbon={"Z": [100, 200]}, sites=ONE_SITE, pools=pool(), jobs=[job(deadline=2)])
    model = PlanModel(make_inputs(load_config(path), SimClock(START)))
    fake = _FakeHighsResult(termination, solution, obj, 10.0 if obj is not None else None)
    model._solver = type("S", (), {"solve": lambda self, m, **kw: fake})()
    out = model.solve()
    assert out.status is status
    assert out.incumbent_used_on_time_limit is (status is SolveStatus.TIME_LIMIT)
    assert out.usable is (status in (SolveStatus.TIME_LIMIT, SolveStatus.OPTIMAL))
    assert fake.loaded is (obj is not None)
    if status is SolveStatus.TIME_LIMIT:
        assert out.objective == 12.0 and out.mip_gap == pytest.approx(2.0 / 12.0)


def test_carbon_cost_tradeoff_reported_when_both_weights_set(fleet):
    # slot 0: clean (100 g) but dear (1.0/kWh); slot 1: dirty (500 g) but cheap (0.1/kWh).
    sites = ONE_SITE.replace("pue = 1.0", "pue = 1.0\nprice_per_kwh = [1.0, 0.1]")
    path = fleet(
        carbon={"Z": [100, 500]},
        sites=sites,
        pools=pool(idle_w=100.0, initial=1),
        jobs=[job(release=0, deadline=2)],
    )
    path.write_text(path.read_text().replace("cost_weight = 0.0", "cost_weight = 0.01"))
    doc = plan(path).document
    pts = doc["tradeoff"]
    carbon_only = next(p for p in pts if p["cost_weight"] == 0)
    cost_only = next(p for p in pts if p["carbon_weight_per_kg"] == 0)
    # 0.4 kWh for the busy hour, and the other hour's node is off (min up 1 h)
    assert carbon_only["carbon_kg"] == pytest.approx(0.04) and carbon_only["cost"] == pytest.approx(
        0.4
    )
    assert cost_only["carbon_kg"] == pytest.approx(0.2) and cost_only["cost"] == pytest.approx(0.04)
    configured = next(p for p in pts if p["status"] == "configured")
    assert configured["carbon_kg"] == pytest.approx(0.04)  # 0.16 kg saved outweighs 0.0036 of cost


def _hourly_csv(path, start, days, value, header="datetime_utc,Z"):
    from datetime import timedelta

    rows = [header]
    for h in range(days * 24):
        ts = start + timedelta(hours=h)
        rows.append(f"{ts.strftime('%Y-%m-%dT%H:%M:%SZ')},{value(ts)}")
    path.write_text("\n".join(rows) + "\n")


def test_site_carbon_source_forecasts_the_horizon(fleet, tmp_path):
    from datetime import timedelta

    # 60 days of history before the horizon: 100 g at 03:00 UTC, 500 g otherwise
    _hourly_csv(
        tmp_path / "hist.csv",
        START - timedelta(days=60),
        60,
        lambda ts: 100 if ts.hour == 3 else 500,
    )
    sites = ONE_SITE.replace('zone = "Z"', 'zone = "Z"\ncarbon_source = "csv:hist.csv"')
    path = fleet(
        carbon={"Z": [1] * 8}, sites=sites, pools=pool(), jobs=[job(release=0, deadline=8)], slots=8
    )
    text = path.read_text()
    path.write_text(
        text[: text.index("[carbon]")]
        + text[text.index("[carbon]") + len('[carbon]\nfile = "carbon.csv"') :]
    )
    doc = plan(path).document
    site = doc["sites"][0]
    assert site["carbon"]["fallback"].startswith("forecaster:")
    assert site["carbon"]["source"].startswith("csv:")
    hourly = [s["intensity_g_per_kwh"] for s in site["slots"]]
    assert int(np.argmin(hourly)) == 3
    assert the_job(doc)["start"] == iso(3)


def test_load_reserve_keeps_capacity_on(fleet, tmp_path):
    from datetime import timedelta

    # the pool's interactive load: one busy GPU all the time for 30 days
    _hourly_csv(
        tmp_path / "load.csv", START - timedelta(days=30), 30, lambda ts: 1, header="time,busy_gpus"
    )
    p = pool(nodes=2, initial=0).replace('name = "p"', 'name = "p"\nload_history = "load.csv"')
    path = fleet(carbon={"Z": [500, 100, 400, 300]}, sites=ONE_SITE, pools=p, jobs=[job()])
    doc = plan(path).document
    slots = doc["pools"][0]["slots"]
    assert [s["reserve_gpus"] for s in slots] == [1, 1, 1, 1]
    assert nodes_on(doc) == [
        1,
        2,
        1,
        1,
    ]  # the reserve node stays on; the job adds one in the clean hour
    assert [s["busy_gpus"] for s in slots] == [0, 1, 0, 0]


def test_failed_nodes_are_planned_without(fleet, tmp_path):
    from greencpn.actuate.ledger import Ledger
    from greencpn.cli import main

    p = pool(nodes=3, gpn=1, initial=3).replace('name = "p"', 'name = "p"\nhostlist = "n[1-3]"')
    jobs = [
        job("a", release=0, deadline=1),
        job("b", release=0, deadline=1),
        job("c", release=0, deadline=1),
    ]
    path = fleet(carbon={"Z": [100, 100]}, sites=ONE_SITE, pools=p, jobs=jobs)
    state = tmp_path / "state"
    ledger = Ledger.open(state)
    ledger.update_node("n2", pool="p", failed=True)
    ledger.close()
    assert (
        main(
            [
                "plan",
                "--config",
                str(path),
                "--out",
                str(tmp_path / "out"),
                "--no-report",
                "--state-dir",
                str(state),
            ]
        )
        == 0
    )
    import json

    doc = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert doc["pools"][0]["nodes"] == 2
    assert max(nodes_on(doc)) <= 2
    assert (
        sum(1 for j in doc["jobs"] if j["late_h"] > 0) == 1
    )  # three 1-h jobs, two nodes, one hour
    assert any("1 failed node" in d for d in doc["diagnostics"])


def test_jobs_from_saved_squeue_json(tmp_path):
    """The recorded Slurm 22.05 `squeue --json` output feeds the plan directly (jobs_file)."""
    import shutil
    from pathlib import Path

    from greencpn.clock import SimClock
    from tests.optimize.conftest import write_fleet

    rec = (
        Path(__file__).resolve().parents[1]
        / "sources"
        / "load"
        / "data"
        / "slurm-22.05_squeue.json"
    )
    shutil.copy(rec, tmp_path / "queue.json")
    path = write_fleet(
        tmp_path,
        carbon={"Z": [300 - 10 * i for i in range(24)]},
        sites=ONE_SITE,
        pools=pool(nodes=4, gpn=4, idle_w=200.0),
        jobs=[],
    )
    text = path.read_text().replace('jobs_file = "jobs.csv"', 'jobs_file = "queue.json"')
    path.write_text(text.replace(f'start = "{iso(0)}"', 'start = "2026-11-25T22:00:00Z"'))
    from datetime import datetime, timedelta

    t0 = datetime.fromisoformat("2026-11-25T22:00:00+00:00")
    rows = ["datetime_utc,Z"] + [
        f"{(t0 + timedelta(hours=i)).strftime('%Y-%m-%dT%H:%M:%SZ')},{300 - 10 * i}"
        for i in range(24)
    ]
    (tmp_path / "carbon.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config(path)
    assert {j.id for j in cfg.jobs} >= {"13", "14", "17_0", "18"}
    doc = make_plan(cfg, SimClock(t0)).document
    placed = {j["id"]: j for j in doc["jobs"]}
    assert placed["13"]["gpus"] == 4 and placed["13"]["late_h"] == 0
    assert doc["totals"]["unserved_gpu_h"] == 0


def test_deadband_shrinks_differences_by_the_forecast_error():
    from greencpn.optimize.inputs import deadband

    out = deadband(np.array([100.0, 90.0, 300.0]), np.array([20.0, 20.0, 20.0]))
    mean = 490.0 / 3
    assert out == pytest.approx(
        [mean - (mean - 100 - 20), mean - (mean - 90 - 20), mean + (300 - mean - 20)]
    )
    # a difference inside the error vanishes entirely
    assert deadband(np.array([100.0, 110.0]), np.array([10.0, 10.0])) == pytest.approx(
        [105.0, 105.0]
    )


def test_plan_ignores_gains_within_the_forecast_error(fleet, tmp_path):
    from datetime import timedelta

    rng = np.random.default_rng(3)
    noise = {h: rng.normal(0, 40) for h in range(60 * 24)}
    t0 = START - timedelta(days=60)
    _hourly_csv(
        tmp_path / "hist.csv",
        t0,
        60,
        lambda ts: round(
            300 + 10 * (ts.hour == 3) + noise[int((ts - t0).total_seconds() // 3600)], 1
        ),
    )
    sites = ONE_SITE.replace('zone = "Z"', 'zone = "Z"\ncarbon_source = "csv:hist.csv"')
    path = fleet(
        carbon={"Z": [1] * 8}, sites=sites, pools=pool(), jobs=[job(release=0, deadline=8)], slots=8
    )
    text = path.read_text()
    text = (
        text[: text.index("[carbon]")]
        + text[text.index("[carbon]") + len('[carbon]\nfile = "carbon.csv"') :]
    )
    path.write_text(
        text.replace(
            "cost_weight = 0.0", "cost_weight = 0.0\nignore_gains_within_forecast_error = true"
        )
    )
    inp = make_inputs(load_config(path), SimClock(START))
    site = inp.sites[0]
    assert site.plan_intensity_g_per_kwh is not None
    assert np.ptp(site.planning_intensity) < np.ptp(site.intensity_g_per_kwh)
    assert inp.extras["carbon_provenance"]["a"]["deadband_mean_error_g_per_kwh"] > 0


def test_the_solver_settings_reach_highs(fleet, monkeypatch):
    """The settings are read back from HiGHS itself (a misspelt option name is ignored by
    HiGHS with only a log line): the plan MILP runs with the config's time limit (30 s) and
    gap (0), feasibility jump off (HiGHS's default is on; greencpn measured it overrunning
    the time limit); the node repair's direct HiGHS model with a 1 % gap, 10 s, and
    feasibility jump off too."""
    import highspy

    from greencpn.optimize.repair import repair_nodes

    path = fleet(
        carbon={"Z": [500, 100, 500]}, sites=ONE_SITE, pools=pool(), jobs=[job(deadline=3)]
    )
    inp = make_inputs(load_config(path), SimClock(START))
    model = PlanModel(inp)
    assert model.solve().status == SolveStatus.OPTIMAL
    h = model._solver._solver_model

    def opt(h, name):
        status, value = h.getOptionValue(name)
        assert status == highspy.HighsStatus.kOk, name
        return value

    assert opt(highspy.Highs(), "mip_heuristic_run_feasibility_jump") is True  # the default
    assert opt(h, "mip_heuristic_run_feasibility_jump") is False
    assert (opt(h, "time_limit"), opt(h, "mip_rel_gap")) == (30.0, 0.0)

    made: list = []

    class Kept(highspy.Highs):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    res = plan(path)
    monkeypatch.setattr(highspy, "Highs", Kept)
    n, _u, _d = repair_nodes(inp, res.schedule)
    assert n[0].tolist() == [0, 1, 0]  # the job in the clean slot 1, its node on then only
    (rh,) = made
    assert opt(rh, "mip_rel_gap") == pytest.approx(0.01)
    assert opt(rh, "time_limit") == 10.0
    assert opt(rh, "mip_heuristic_run_feasibility_jump") is False
