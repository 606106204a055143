"""The milp policy: greencpn's controller step run every slot of the replay on the simulated
fleet (hand-checked two-zone, three-job answer for the perfect-foresight oracle)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from greencpn.config import load_config
from greencpn.errors import ConfigError
from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.engine import ReplaySettings, run_replay
from greencpn.whatif.model import FleetSpec

from .conftest import T0, three_jobs, two_site_fleet, two_zone_series

FLEET = """
name = "hand"
[horizon]
slots = 12
slot_minutes = 60
[objective]
carbon_weight_per_kg = 1.0
lateness_weight_per_gpu_h = 10.0
[solver]
time_limit_s = 20
mip_rel_gap = 0.0
[carbon]
file = "carbon.csv"
[[gpu_models]]
name = "G"
power_limit_min_w = 100
power_limit_max_w = 200
power_limit_default_w = 200
idle_w = 0
source = "test"
[[gpu_models.levels]]
cap_w = 100
throughput = 0.5
power_factor = 0.5
[[gpu_models.levels]]
cap_w = 200
throughput = 1.0
power_factor = 1.0
[[sites]]
name = "A"
zone = "ZA"
pue = 1.0
jurisdictions = ["EU"]
[[sites]]
name = "B"
zone = "ZB"
pue = 1.0
jurisdictions = ["US"]
[[pools]]
name = "pa"
site = "A"
nodes = 1
gpu_model = "G"
gpus_per_node = 1
node_idle_w = 0.001
hostlist = "a[1-1]"
[[pools]]
name = "pb"
site = "B"
nodes = 1
gpu_model = "G"
gpus_per_node = 1
node_idle_w = 0.001
hostlist = "b[1-1]"
"""


def _fleet(tmp_path: Path) -> FleetSpec:
    series = two_zone_series()
    rows = ["datetime_utc,ZA,ZB"] + [
        f"{t:%Y-%m-%dT%H:%M:%SZ},{series['ZA'][t]},{series['ZB'][t]}" for t in series["ZA"].index
    ]
    (tmp_path / "carbon.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "fleet.toml").write_text(FLEET)
    return FleetSpec.from_config(load_config(tmp_path / "fleet.toml"))


def test_milp_oracle_finds_the_hand_computed_optimum(tmp_path):
    fleet = _fleet(tmp_path)
    series = two_zone_series()
    perfect = ReplayCarbonSource(series, mode="perfect")
    st = ReplaySettings(T0, T0 + timedelta(hours=12), drain=timedelta(hours=12))
    run = run_replay(
        fleet, three_jobs(), "milp:perfect=1", forecasts=perfect, actuals=perfect, settings=st
    )
    # By hand: j2 must run on B (300 g) by 03:00 -> 60 g; j1 (A only) and j3 (A or B) share
    # A's green hours 03-06 (10 g): j1 2 GPU-h -> 4 g, j3 1 GPU-h -> 2 g. Total 66 g.
    # (carbon-agnostic: 160 g; Let's Wait Awhile, temporal only: 124 g)
    got = {j.id: (j.ran_pool, j.first_start.hour) for j in run.jobs}
    assert got["j2"] == ("pb", 1)
    assert got["j1"][0] == "pa" and got["j3"][0] == "pa"
    assert {got["j1"][1], got["j3"][1]} <= {3, 4, 5}
    assert run.carbon_kg.sum() == pytest.approx(0.066, abs=1e-4)
    assert all(j.finish is not None and j.finish <= j.deadline for j in run.jobs)
    assert run.killed_jobs == 0
    assert all(s["status"] in ("ok", "degraded") for s in run.extra["steps"])


def test_milp_needs_a_config_fleet():
    series = two_zone_series()
    src = ReplayCarbonSource(series, mode="perfect")
    st = ReplaySettings(T0, T0 + timedelta(hours=2))
    with pytest.raises(ConfigError, match="needs a fleet built from a config"):
        run_replay(two_site_fleet(), three_jobs(), "milp", forecasts=src, actuals=src, settings=st)


def test_lever_attribution_hand_checked(tmp_path):
    """Perfect foresight, the three hand jobs (idle power ~0, caps give the same energy per
    work): by hand, none / power / caps 160 g; time alone (home sites, waiting) 124 g; space
    alone (no waiting beyond one slot, any allowed site) 120 g: j3 to A at 02:00; all 66 g.
    Alone savings 36 + 40 = 76 g < 94 g together: interaction +18 g (j3 waits for A's green
    hours, which needs both levers)."""
    from greencpn.whatif.attribution import attribute, attribution_specs
    from greencpn.whatif.metrics import compare

    fleet = _fleet(tmp_path)
    perfect = ReplayCarbonSource(two_zone_series(), mode="perfect")
    st = ReplaySettings(T0, T0 + timedelta(hours=2), drain=timedelta(hours=10))
    specs = attribution_specs("milp:perfect=1")
    assert specs[0] == "milp:perfect=1,levers=none" and specs[-1] == "milp:perfect=1,levers=all"
    runs = [
        run_replay(fleet, three_jobs(), s, forecasts=perfect, actuals=perfect, settings=st)
        for s in specs
    ]
    g = {r.policy: r.carbon_kg.sum() * 1000 for r in runs}
    assert g["milp:perfect=1,levers=none"] == pytest.approx(160, abs=0.5)
    assert g["milp:perfect=1,levers=time"] == pytest.approx(124, abs=0.5)
    assert g["milp:perfect=1,levers=space"] == pytest.approx(120, abs=0.5)
    assert g["milp:perfect=1,levers=power"] == pytest.approx(160, abs=0.5)
    assert g["milp:perfect=1,levers=caps"] == pytest.approx(160, abs=0.5)
    assert g["milp:perfect=1,levers=all"] == pytest.approx(66, abs=0.5)
    for r in runs:
        assert all(j.finish is not None and j.finish <= j.deadline for j in r.jobs), r.policy
    a = attribute(compare(runs)["rows"], "milp:perfect=1")
    alone = {r["lever"]: r["alone_saving_kg"] * 1000 for r in a["levers"]}
    assert alone["time"] == pytest.approx(36, abs=0.5)
    assert alone["space"] == pytest.approx(40, abs=0.5)
    assert a["all_saving_kg"] * 1000 == pytest.approx(94, abs=0.5)
    assert a["interaction_kg"] * 1000 == pytest.approx(18, abs=1.0)


def test_unknown_lever_is_a_clear_error():
    from greencpn.whatif.policies import parse_spec
    from greencpn.whatif.policies.milp import parse_levers

    assert parse_levers("jobs+caps") == {"time", "space", "caps"}
    parse_spec("milp:levers=time+space")
    with pytest.raises(ConfigError, match="unknown lever 'speed'"):
        parse_levers("time+speed")


def test_skipping_the_report_baselines_changes_no_decision(tmp_path):
    """baselines=0 (the default) only drops the plan document's baseline figures: the same
    actions, starts and carbon as baselines=1 (the controller's full plan)."""
    fleet = _fleet(tmp_path)
    fc = ReplayCarbonSource(two_zone_series())
    act = ReplayCarbonSource(two_zone_series(), mode="perfect")
    st = ReplaySettings(T0, T0 + timedelta(hours=2), drain=timedelta(hours=10))
    fast, full = (
        run_replay(fleet, three_jobs(), p, forecasts=fc, actuals=act, settings=st)
        for p in ("milp", "milp:baselines=1")
    )
    assert [s["actions"] for s in fast.extra["steps"]] == [
        s["actions"] for s in full.extra["steps"]
    ]
    assert [(j.id, j.first_start, j.ran_pool) for j in fast.jobs] == [
        (j.id, j.first_start, j.ran_pool) for j in full.jobs
    ]
    assert fast.carbon_kg.sum() == pytest.approx(full.carbon_kg.sum(), rel=1e-12)
