"""Per-job cap levels (issue #14.3): one job, two levels, figures checkable by hand.

Job: W = 4 GPU-h on g = 1 GPU, starting at 0 h, hourly slots, PUE 1.
Level 0 (deep cap): θ = 0.8, ε = 0.2 kW → D = 4 / 0.8 = 5 h, E = 0.2 × 5 = 1.0 kWh.
Level 1 (top cap):  θ = 1.0, ε = 0.3 kW → D = 4 h,            E = 0.3 × 4 = 1.2 kWh.
At a flat 500 g/kWh: carbon 0.50 kg (deep) vs 0.60 kg (top).
"""

from __future__ import annotations

import pytest

from greencpn.optimize.jobcaps import choose_level

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
