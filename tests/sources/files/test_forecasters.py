"""Fallback forecasters: hand-checkable rules, refitting, quantile order, no look-ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greencpn.errors import ConfigError
from greencpn.sources.base import CarbonSeries
from greencpn.sources.forecast import (
    Forecaster,
    LinearLagForecaster,
    Persistence,
    ProfileForecaster,
    SeasonalNaive,
    all_forecasters,
    default_forecaster,
    extend,
)

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "carbon"
T0 = datetime(2023, 1, 1, tzinfo=UTC)


def _synthetic(days: int = 60, seed: int = 0, name: str = "ZZ") -> pd.Series:
    """Daily cycle + weekly cycle + AR(1) noise, hourly, g/kWh."""
    rng = np.random.default_rng(seed)
    n = days * 24
    t = np.arange(n)
    noise = np.zeros(n)
    for i in range(1, n):
        noise[i] = 0.8 * noise[i - 1] + rng.normal(0, 8)
    y = 300 + 80 * np.sin(2 * np.pi * t / 24) + 30 * np.sin(2 * np.pi * t / 168) + noise
    return pd.Series(y, index=pd.date_range(T0, periods=n, freq="h"), name=name)


def test_persistence_and_seasonal_naive_by_hand() -> None:
    s = pd.Series(np.arange(100.0), index=pd.date_range(T0, periods=100, freq="h"), name="X")
    p = Persistence()
    p.fit(s)
    fc = p.predict(T0 + timedelta(hours=50), 5)
    assert list(fc.intensity_g_per_kwh) == [49.0] * 5
    assert fc.intensity_g_per_kwh.index[0] == pd.Timestamp(T0 + timedelta(hours=50))
    assert fc.source == "forecaster:persistence" and fc.fallback is None and fc.zone == "X"
    sn = SeasonalNaive(24)
    sn.fit(s)
    fc = sn.predict(T0 + timedelta(hours=50), 30)
    # lead L -> y[t + L - 1 - 24 * ceil(L / 24)]: leads 1..24 -> 26..49, leads 25..30 -> 26..31
    assert list(fc.intensity_g_per_kwh) == [float(v) for v in [*range(26, 50), *range(26, 32)]]


def test_unaligned_issue_time_starts_with_its_slot() -> None:
    s = pd.Series(np.arange(100.0), index=pd.date_range(T0, periods=100, freq="h"))
    p = Persistence()
    p.fit(s)
    fc = p.predict(T0 + timedelta(hours=50, minutes=20), 3)
    assert fc.intensity_g_per_kwh.index[0] == pd.Timestamp(T0 + timedelta(hours=50))
    assert fc.intensity_g_per_kwh.iloc[0] == 49.0  # slot 50 is not complete at 50:20


def test_profile_exact_on_a_repeating_day() -> None:
    day = np.array([100.0 + 10 * h for h in range(24)])
    s = pd.Series(np.tile(day, 10), index=pd.date_range(T0, periods=240, freq="h"))
    f = ProfileForecaster()
    f.fit(s)
    fc = f.predict(T0 + timedelta(days=9, hours=5), 48)
    expect = np.tile(day, 4)[5:53]
    np.testing.assert_allclose(fc.intensity_g_per_kwh.to_numpy(), expect)


def test_linear_model_learns_a_clean_cycle() -> None:
    s = _synthetic(days=50)
    f = LinearLagForecaster()
    f.fit(s)
    issue = T0 + timedelta(days=45, hours=7)
    fc = f.predict(issue, 48)
    actual = s.reindex(fc.intensity_g_per_kwh.index)
    mae = float((fc.intensity_g_per_kwh - actual).abs().mean())
    pers = Persistence()
    pers.fit(s)
    mae_p = float((pers.predict(issue, 48).intensity_g_per_kwh - actual).abs().mean())
    assert mae < 0.5 * mae_p
    assert f.weights is not None and f.n_refits == 1


def test_default_forecaster_refits_from_the_history_it_is_given() -> None:
    f = default_forecaster()
    assert isinstance(f, Forecaster)
    s = _synthetic(days=40)
    f.fit(s)
    issue = T0 + timedelta(days=35, hours=3)
    a = f.predict(issue, 24).intensity_g_per_kwh.to_numpy()
    w1 = f.weights.copy()
    f.fit(s * 2)  # another history: the model is re-estimated, not reused
    b = f.predict(issue, 24).intensity_g_per_kwh.to_numpy()
    assert f.n_refits == 2
    np.testing.assert_allclose(b, 2 * a, rtol=1e-6)
    assert not np.allclose(f.weights, w1)
    # the next day triggers a daily refit on the same history
    f.predict(issue + timedelta(days=1), 24)
    assert f.n_refits == 3


def test_daily_incremental_refit_equals_refit_from_scratch() -> None:
    s = _synthetic(days=45)
    inc = LinearLagForecaster()
    inc.fit(s)
    for d in range(30, 36):
        last = inc.predict(T0 + timedelta(days=d, hours=2), 48)
    fresh = LinearLagForecaster()
    fresh.fit(s)
    ref = fresh.predict(T0 + timedelta(days=35, hours=2), 48)
    np.testing.assert_allclose(
        last.intensity_g_per_kwh.to_numpy(),
        ref.intensity_g_per_kwh.to_numpy(),
        rtol=1e-7,
        atol=1e-6,
    )


@pytest.mark.parametrize("model", all_forecasters(), ids=lambda m: m.name)
def test_quantiles_are_ordered(model) -> None:
    model.fit(_synthetic(days=40, seed=3))
    fc = model.predict(T0 + timedelta(days=38, hours=11), 48)
    assert sorted(fc.quantiles) == [0.1, 0.5, 0.9]
    q = np.vstack([fc.quantiles[k].to_numpy() for k in (0.1, 0.5, 0.9)])
    assert np.all(np.diff(q, axis=0) >= 0)
    assert np.all(q[2] - q[0] > 0)  # a real spread from the model's own errors
    assert (fc.intensity_g_per_kwh >= 0).all()


@pytest.mark.parametrize("poison", [np.nan, 1e9])
@pytest.mark.parametrize(
    "model_cls", [Persistence, lambda: SeasonalNaive(168), ProfileForecaster, LinearLagForecaster]
)
def test_no_look_ahead(model_cls, poison: float) -> None:
    s = _synthetic(days=40, seed=1)
    issue = pd.Timestamp(T0 + timedelta(days=33, hours=13))
    clean = model_cls()
    clean.fit(s[s.index < issue])
    ref = clean.predict(issue.to_pydatetime(), 48)
    poisoned = s.copy()
    poisoned[poisoned.index >= issue] = poison
    m = model_cls()
    m.fit(poisoned)
    got = m.predict(issue.to_pydatetime(), 48)
    np.testing.assert_allclose(
        got.intensity_g_per_kwh.to_numpy(), ref.intensity_g_per_kwh.to_numpy(), rtol=1e-9
    )
    for q in ref.quantiles:
        np.testing.assert_allclose(
            got.quantiles[q].to_numpy(), ref.quantiles[q].to_numpy(), rtol=1e-9
        )
    np.testing.assert_allclose(
        m.predict_many([issue], 48)[0], ref.intensity_g_per_kwh.to_numpy(), rtol=1e-9
    )


def test_stale_history_still_forecasts_the_requested_slots() -> None:
    s = _synthetic(days=40)
    f = default_forecaster()
    f.fit(s)
    issue = s.index[-1] + timedelta(hours=6)  # data stopped 5 h before the issue slot
    fc = f.predict(issue.to_pydatetime(), 48)
    assert len(fc.intensity_g_per_kwh) == 48
    assert fc.intensity_g_per_kwh.index[0] == issue
    assert fc.intensity_g_per_kwh.notna().all()


def test_short_history_falls_back_to_simpler_model() -> None:
    s = _synthetic(days=10)
    f = default_forecaster()
    f.fit(s)
    fc = f.predict(s.index[-1] + timedelta(hours=1), 48)
    p = ProfileForecaster()
    p.fit(s)
    np.testing.assert_allclose(
        fc.intensity_g_per_kwh.to_numpy(),
        p.predict(s.index[-1] + timedelta(hours=1), 48).intensity_g_per_kwh.to_numpy(),
    )


def test_bad_history_is_config_error() -> None:
    s = _synthetic(days=5)
    with pytest.raises(ConfigError, match="tz-aware"):
        Persistence().fit(s.tz_localize(None))
    with pytest.raises(ConfigError, match="not regular"):
        Persistence().fit(s.drop(s.index[5]))


def test_extend_24h_api_forecast_to_48h() -> None:
    s = _synthetic(days=40)
    issue = pd.Timestamp(T0 + timedelta(days=35))
    hist = s[s.index < issue]
    api_idx = pd.date_range(issue, periods=24, freq="h")
    api_vals = s.reindex(api_idx).to_numpy() + 5.0  # the API is a bit off
    api = CarbonSeries(
        zone="ZZ",
        intensity_g_per_kwh=pd.Series(api_vals, index=api_idx),
        source="electricitymaps",
        issued_at=issue.to_pydatetime(),
    )
    out = extend(api, hist, timedelta(hours=48))
    v = out.intensity_g_per_kwh
    assert len(v) == 48 and v.index[0] == issue and v.index[-1] == issue + timedelta(hours=47)
    np.testing.assert_allclose(v.to_numpy()[:24], api_vals)
    assert out.source == "electricitymaps+forecaster:linear-lags"
    assert out.estimated is not None
    assert not out.estimated.iloc[:24].any() and out.estimated.iloc[24:].all()
    assert abs(v.iloc[24] - v.iloc[23]) < 60  # joins without a jump (cycle amplitude 80)
    q = np.vstack([out.quantiles[k].to_numpy() for k in (0.1, 0.5, 0.9)])
    assert np.all(np.diff(q, axis=0) >= 0)
    # already long enough: unchanged
    assert extend(api, hist, timedelta(hours=24)) is api


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")
def test_real_de_default_beats_persistence_over_a_week() -> None:
    from greencpn.sources.files import read_carbon_file

    s = read_carbon_file(
        DATA / "electricitymaps_hourly_lca_2021-2023.csv", zone="DE"
    ).intensity_g_per_kwh
    s = s["2022-01-01":"2023-03-10"]
    issues = pd.date_range("2023-03-01", periods=7 * 24, freq="h", tz="UTC")
    actual = np.vstack(
        [s.reindex(pd.date_range(t, periods=24, freq="h")).to_numpy() for t in issues]
    )
    errs = {}
    for m in (Persistence(), default_forecaster()):
        m.fit(s)
        errs[m.name] = float(np.nanmean(np.abs(m.predict_many(issues, 24) - actual)))
    assert errs["linear-lags"] < errs["persistence"]
