"""A recurring job's own learned curve in the plan (issue #14.3 with #14.4's refit).

``refit(..., per_workload=True)`` (``greencpn models fit --from-ledger --per-workload``) writes
each recurring workload measured at the maximum limit and another cap as a workload class named
after it; a job naming it as its ``workload_class`` is planned on its own curve.

GPU "T4" (max 300 W, idle 0 W). Measured runs (1 GPU, 1 GPU-h of work each), seconds and watts:

=========  ===============  ===============  ===============
workload   300 W            250 W            200 W
=========  ===============  ===============  ===============
wl-a       3600 s, 300 W    3600/0.98, 240   3600/0.70, 190
wl-b       3600 s, 300 W    3600/0.90, 250   3600/0.85, 180
=========  ===============  ===============  ===============

Both are class "heavy": the class curve is the median (mean of the two) — θ 0.94 at 250 W,
0.775 at 200 W. wl-a's own: θ 0.98, power_factor 240 / 300 = 0.8 at 250 W; θ 0.7, 0.633 at
200 W.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from greencpn.actuate.gpu.meter import JobMeasurement
from greencpn.clock import SimClock
from greencpn.config import GpuModelConfig, load_config
from greencpn.controller.forecast import make_plan
from greencpn.errors import ConfigError
from greencpn.gpumodels.ledger import refit, workload_key
from tests.optimize.conftest import START, learned_one_job_fleet, t4_base_model, t4_run

BASE = t4_base_model()
RUNS = {
    "wl-a": {300.0: (1.0, 300.0), 250.0: (0.98, 240.0), 200.0: (0.70, 190.0)},
    "wl-b": {300.0: (1.0, 300.0), 250.0: (0.90, 250.0), 200.0: (0.85, 180.0)},
}


def _measurements() -> list[JobMeasurement]:
    out = []
    for w, caps in RUNS.items():
        for cap, (thr, watts) in caps.items():
            out.append(t4_run(f"{w}-{cap:g}", w, cap, 3600.0 / thr, watts))
    return out


def _curves(model: GpuModelConfig) -> dict[str, dict[float, tuple[float, float]]]:
    return {
        wc.name: {lv.cap_w: (lv.throughput, lv.power_factor) for lv in wc.levels}
        for wc in model.workload_classes
    }


def test_refit_per_workload_writes_each_workloads_own_curve() -> None:
    lf = refit(_measurements(), {"t4": BASE}, per_workload=True)["T4"]
    assert lf.workload_curves == ["wl-a", "wl-b"]
    c = _curves(lf.model)
    assert set(c) == {"heavy", "wl-a", "wl-b"}
    assert c["wl-a"][250.0] == pytest.approx((0.98, 0.8), abs=1e-3)
    assert c["wl-a"][200.0] == pytest.approx((0.70, 190 / 300), abs=1e-3)
    assert c["heavy"][250.0][0] == pytest.approx(0.94, abs=1e-3)
    assert c["heavy"][200.0][0] == pytest.approx(0.775, abs=1e-3)
    # without the flag: classes only, as before
    assert set(_curves(refit(_measurements(), {"t4": BASE})["T4"].model)) == {"heavy"}


def test_workload_key_replaces_characters_a_class_name_cannot_hold() -> None:
    assert workload_key("cifar100/shufflenet v2") == "cifar100-shufflenet-v2"


def _fleet(tmp: Path, workload_class: str) -> Path:
    model = refit(_measurements(), {"t4": BASE}, per_workload=True)["T4"]
    return learned_one_job_fleet(tmp, model.toml, workload_class)


@pytest.mark.parametrize(
    ("cls", "cap", "end_h"),
    [
        # own curve: 3.15 / 0.98 = 3.214 h ≤ 3.25 at 250 W, 0.24 kW × 3.214 = 0.771 kWh < 0.945
        # at 300 W (3.15 h × 0.3 kW); 200 W needs 4.5 h
        ("wl-a", 250.0, 3.15 / 0.98),
        # class curve: 250 W needs 3.15 / 0.94 = 3.351 h > 3.25: the top cap, 3.15 h
        ("heavy", 300.0, 3.15),
    ],
)
def test_the_learned_curve_decides_the_jobs_cap_in_the_plan(
    tmp_path: Path, cls: str, cap: float, end_h: float
) -> None:
    res = make_plan(load_config(_fleet(tmp_path, cls)), SimClock(START))
    job = res.document["jobs"][0]
    slots = res.document["pools"][0]["slots"]
    got = job["power_cap_w"] or slots[0]["power_cap_w"]
    assert got == cap
    assert float(res.schedule.end_h[0]) == pytest.approx(end_h, abs=5 / 60)
    assert res.document["totals"]["late_jobs"] == 0


def test_a_job_naming_an_unknown_profile_key_gets_one_clear_error(tmp_path: Path) -> None:
    """wl-c never ran on this fleet: the error names the file, the job's field and the fix
    (measure it and refit with --per-workload, or name its class)."""
    path = _fleet(tmp_path, "wl-c")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "jobs(X).workload_class" in msg
    assert "'wl-c'" in msg
    assert "--per-workload" in msg and "heavy" in msg
