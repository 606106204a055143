"""Per-job caps chosen with confidence (issue #14.3): ``throughput_low`` and
``solver.job_cap_slowdown = "bound"``.

A learned curve's throughput at a cap is the median of a few noisy runs; a cap whose slowdown
is within a deadline only on that estimate is often past it in reality (bench_job_caps_in_plan:
most configurations slowed past 3 % by learned caps are such run noise). The refit writes a
one-sided lower confidence bound of each level's throughput, and the chooser tests the deadline
at the bound.

Hand-checked case (GPU "T4", max 300 W, idle 0 W; 1 GPU-h of work a run). Workload ``wl-n``:
3 runs at 300 W and 3 at 250 W, run times 3600 s × e^{−δ, 0, +δ} at 300 W and
3600 / 0.98 s × the same at 250 W, δ = 0.02. Median throughput at 250 W: 0.98. Pooled spread of
the log run times within each cap: s = δ = 0.02 (sample sd of −δ, 0, δ), df = 2 + 2 = 4;
t(0.9, 4) = 1.5332; se = √(π/2) × s × √(1/3 + 1/3) = 1.2533 × 0.02 × 0.8165 = 0.020466;
bound = 0.98 × exp(−1.5332 × 0.020466) = 0.98 × 0.96911 = 0.94973 (written 0.949, rounded
down). Workload ``wl-c``: 12 runs at each cap, log factors ±0.001 (six each): s = 0.0010445,
df = 22, t(0.9, 22) = 1.3212, se = 1.2533 × 0.0010445 × √(2/12) = 0.00053443, bound = 0.98 ×
exp(−0.000706) = 0.97931 (written 0.979).

The job: 3.15 GPU-h, deadline 3.25 h: a level must run at θ ≥ 3.15 / 3.25 = 0.96923. At the
estimate 0.98 both workloads meet it at 250 W (3.214 h), which also uses less energy
(0.24 kW × 3.214 h = 0.771 kWh < 0.3 kW × 3.15 h = 0.945). At the bound ``wl-n`` does not
(3.15 / 0.949 = 3.319 h > 3.25): the top cap; ``wl-c`` does (3.15 / 0.979 = 3.218 h).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from greencpn.actuate.gpu.meter import JobMeasurement
from greencpn.clock import SimClock
from greencpn.config import GpuModelConfig, load_config, load_gpu_model
from greencpn.controller.forecast import make_plan
from greencpn.errors import ConfigError
from greencpn.gpumodels.ledger import refit, t_quantile, throughput_bounds
from greencpn.optimize.jobcaps import choose_level, class_curve, class_curve_low
from tests.optimize.conftest import START, learned_one_job_fleet, t4_base_model, t4_run

BASE = t4_base_model()
NOISY = [-0.02, 0.0, 0.02]
CLEAN = [-0.001, 0.001] * 6
WATTS = {300.0: 300.0, 250.0: 240.0}
THR = {300.0: 1.0, 250.0: 0.98}


def _runs(workload: str, factors: list[float]) -> list[JobMeasurement]:
    out = []
    for cap in (300.0, 250.0):
        for i, f in enumerate(factors):
            dur = 3600.0 / THR[cap] * math.exp(f)
            out.append(t4_run(f"{workload}-{cap:g}-{i}", workload, cap, dur, WATTS[cap]))
    return out


def _model() -> GpuModelConfig:
    return refit(_runs("wl-n", NOISY) + _runs("wl-c", CLEAN), {"t4": BASE}, per_workload=True)[
        "T4"
    ].model


def test_t_quantiles_match_the_table() -> None:
    for q, df, want in [(0.95, 1, 6.314), (0.95, 2, 2.920), (0.9, 4, 1.533), (0.9, 22, 1.321)]:
        assert t_quantile(q, df) == pytest.approx(want, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)


def test_the_bounds_are_the_hand_computed_ones() -> None:
    m = _model()
    low = {wc.name: {lv.cap_w: lv.throughput_low for lv in wc.levels} for wc in m.workload_classes}
    thr = {wc.name: {lv.cap_w: lv.throughput for lv in wc.levels} for wc in m.workload_classes}
    assert thr["wl-n"][250.0] == pytest.approx(0.98, abs=1e-9)
    assert low["wl-n"] == {250.0: 0.949, 300.0: 1.0}
    assert low["wl-c"] == {250.0: 0.979, 300.0: 1.0}
    # the class curve (a median across workloads) carries no bound
    assert all(lv.throughput_low is None for lv in m.levels_for("heavy"))


def test_a_workload_run_once_per_cap_takes_the_pooled_spread_of_the_others() -> None:
    """wl-1: one run at each cap (θ 0.98), no spread of its own: the pooled one of wl-n
    (s = 0.02, df = 4): se = 1.2533 × 0.02 × √(1/1 + 1/1) = 0.035448, bound = 0.98 ×
    exp(−1.5332 × 0.035448) = 0.98 × 0.94714 = 0.92820 (written 0.928)."""
    m = refit(_runs("wl-n", NOISY) + _runs("wl-1", [0.0]), {"t4": BASE}, per_workload=True)[
        "T4"
    ].model
    assert [lv.throughput_low for lv in m.levels_for("wl-1")] == [0.928, 1.0]


def test_unmeasured_caps_take_the_bound_of_the_measured_cap_below_and_0_below_all() -> None:
    runs = {300.0: [3600.0, 3636.0], 200.0: [3600 / 0.9, 3636 / 0.9]}
    caps = [150.0, 200.0, 250.0, 300.0]
    lows = throughput_bounds(runs, caps, [0.9, 0.9, 0.95, 1.0], 300.0, 0.9)
    assert lows is not None
    assert lows[0] == 0.0  # below every measured cap: never certified
    assert lows[2] == lows[1] < 0.9  # 250 W never ran: 200 W's bound (monotone curve)
    assert lows[3] == 1.0
    # every cap run once: no spread estimate, no bound (unless a fallback spread is given)
    one = {300.0: [3600.0], 250.0: [3700.0]}
    assert throughput_bounds(one, [250.0, 300.0], [0.97, 1.0], 300.0) is None
    # spread 0: the cap's own runs (3600 / 3700 = 0.973), never above the curve's 0.97
    assert throughput_bounds(one, [250.0, 300.0], [0.97, 1.0], 300.0, spread=(0.0, 5)) == [
        0.97,
        1.0,
    ]
    assert throughput_bounds(one, [250.0, 300.0], [0.99, 1.0], 300.0, spread=(0.0, 5)) == [
        pytest.approx(3600 / 3700),
        1.0,
    ]


def test_choose_level_tests_the_deadline_at_the_bound() -> None:
    common = dict(
        work_gpu_h=3.15,
        gpus=1,
        throughput=[1.0, 0.98],
        busy_extra_kw=[0.3, 0.24],
        start_h=0.0,
        end_limit_h=3.25,
        intensity_g_per_kwh=[500.0] * 4,
        slot_h=1.0,
    )
    assert choose_level(**common).level == 1  # estimate: 250 W
    assert choose_level(**common, throughput_low=[1.0, 0.949]).level == 0  # noisy: top cap
    got = choose_level(**common, throughput_low=[1.0, 0.979])
    assert got.level == 1  # clean runs: 250 W, planned at the estimate
    assert got.duration_h == pytest.approx(3.15 / 0.98)
    assert choose_level(**common, throughput_low=[None, 0.0]).level == 0  # 0: never certified
    with pytest.raises(ValueError):
        choose_level(**common, throughput_low=[1.0])


def test_class_curve_low_is_normalised_like_class_curve() -> None:
    m = _model()
    cap, thr, _ = class_curve(m, "wl-n")
    low = class_curve_low(m, "wl-n")
    assert cap.tolist() == [300.0, 250.0]
    assert low is not None and low.tolist() == [1.0, 0.949]
    assert class_curve_low(m, "heavy") is None


def _fleet(tmp: Path, workload: str, slowdown: str | None) -> Path:
    model = refit(_runs("wl-n", NOISY) + _runs("wl-c", CLEAN), {"t4": BASE}, per_workload=True)
    extra = f'job_cap_slowdown = "{slowdown}"' if slowdown else ""
    return learned_one_job_fleet(tmp, model["T4"].toml, workload, extra)


@pytest.mark.parametrize(
    ("workload", "slowdown", "cap"),
    [
        ("wl-n", None, 300.0),  # default "bound": noisy runs do not certify 250 W
        ("wl-n", "expected", 250.0),  # the estimate alone takes it
        ("wl-c", None, 250.0),  # enough clean runs certify it
    ],
)
def test_the_plan_takes_a_cap_only_when_its_bound_meets_the_deadline(
    tmp_path: Path, workload: str, slowdown: str | None, cap: float
) -> None:
    res = make_plan(load_config(_fleet(tmp_path, workload, slowdown)), SimClock(START))
    job = res.document["jobs"][0]
    got = job["power_cap_w"] or res.document["pools"][0]["slots"][0]["power_cap_w"]
    assert got == cap
    assert res.document["totals"]["late_jobs"] == 0


def test_a_bad_job_cap_slowdown_gets_one_clear_error(tmp_path: Path) -> None:
    path = _fleet(tmp_path, "wl-n", "sure")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "solver.job_cap_slowdown" in msg
    assert "'bound'" in msg and "'expected'" in msg and "fix:" in msg


def test_a_bound_above_its_throughput_gets_one_clear_error(tmp_path: Path) -> None:
    text = refit(_runs("wl-n", NOISY), {"t4": BASE}, per_workload=True)["T4"].toml
    bad = tmp_path / "t4.toml"
    bad.write_text(text.replace("throughput_low = 0.949", "throughput_low = 0.99"))
    with pytest.raises(ConfigError) as e:
        load_gpu_model(bad)
    msg = str(e.value)
    assert str(bad) in msg
    assert "workload_classes[1](wl-n).levels[0].throughput_low=0.99" in msg
    assert "above its throughput=0.98" in msg
    assert "fix: set throughput_low to at most throughput" in msg


def test_models_fit_refuses_a_confidence_outside_half_to_one(tmp_path: Path) -> None:
    from greencpn.actuate.gpu.meter import MeasurementStore  # noqa: F401 (the ledger format)

    ledger = tmp_path / "m.jsonl"
    ledger.write_text("")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "greencpn",
            "models",
            "fit",
            "--from-ledger",
            str(ledger),
            "--per-workload",
            "--confidence",
            "1.5",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "--confidence" in out.stderr and "between 0.5 and 1" in out.stderr
    assert "Traceback" not in out.stderr
