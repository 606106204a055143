"""Load forecast: hand-checkable synthetic series, no look-ahead, and the real Philly series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greencpn.errors import ConfigError
from greencpn.sources.load_forecast import (
    SeasonalLoadForecaster,
    aggregate_history,
    persistence_forecast,
    read_node_sequence,
    seasonal_naive_forecast,
)

NODE_SEQ = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "data"
    / "traces"
    / "philly_node_sequence_per_minute.csv"
)
T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def _hourly(values: np.ndarray, start: datetime = T0) -> pd.Series:
    idx = pd.date_range(start, periods=len(values), freq="1h", tz="UTC")
    return pd.Series(values, index=idx, dtype=float)


def test_aggregate_max_and_mean_use_only_complete_slots() -> None:
    idx = pd.date_range(T0, periods=150, freq="1min", tz="UTC")  # 2.5 hours of minutes
    ser = pd.Series(np.arange(150, dtype=float), index=idx)
    issued = T0 + timedelta(hours=2, minutes=30)
    peak = aggregate_history(ser, timedelta(hours=1), issued, "max")
    assert list(peak) == [59.0, 119.0]  # the half hour after 02:00 is not complete → unused
    mean = aggregate_history(ser, timedelta(hours=1), issued, "mean")
    assert list(mean) == [29.5, 89.5]
    with pytest.raises(ConfigError, match="timezone-aware"):
        aggregate_history(
            pd.Series([1.0], index=pd.DatetimeIndex([datetime(2026, 1, 1)])),
            timedelta(hours=1),
            issued,
        )


def test_flat_history_forecasts_flat_with_zero_spread() -> None:
    hist = _hourly(np.full(24 * 21, 7.0))
    fc = SeasonalLoadForecaster().forecast(hist, T0 + timedelta(days=21), capacity=10, pool="p")
    assert len(fc.expected) == 48
    assert fc.expected.index[0] == T0 + timedelta(days=21)
    assert np.allclose(fc.expected, 7.0)
    assert np.allclose(fc.quantiles[0.9], 7.0)
    assert fc.to_frame().columns.tolist() == ["expected", "q90"]


def test_pure_daily_cycle_is_learned_exactly() -> None:
    day = np.array([2.0] * 8 + [10.0] * 10 + [4.0] * 6)  # 24 hourly values
    hist = _hourly(np.tile(day, 28))
    issued = T0 + timedelta(days=28, hours=5)  # 05:00, one slot before the cycle rises
    f = SeasonalLoadForecaster(level_decay=0.0, quantiles=(0.9,))
    fc = f.forecast(hist, issued)
    expected = np.roll(np.tile(day, 2), -5)
    assert np.allclose(fc.expected.to_numpy(), expected)
    assert np.allclose(fc.quantiles[0.9].to_numpy(), expected)  # its replayed errors are all 0


def test_level_decays_from_last_value_to_profile() -> None:
    hist = _hourly(np.full(24 * 14, 10.0))
    hist.iloc[-1] = 20.0  # the last hour jumped
    f = SeasonalLoadForecaster(level_decay=0.5, quantiles=())
    fc = f.forecast(hist, T0 + timedelta(days=14))
    base = fc.expected.to_numpy()
    # S is ~10 everywhere (the jump is one sample in the daily mean of the same hour only at lead 24)
    assert base[0] == pytest.approx(0.5 * 20 + 0.5 * 10)
    assert base[1] == pytest.approx(0.25 * 20 + 0.75 * 10)
    assert base[10] == pytest.approx(10.0, abs=0.01)


def test_no_look_ahead_and_capacity_clip() -> None:
    rng = np.random.default_rng(3)
    values = 50 + 20 * np.sin(np.arange(24 * 30) * 2 * np.pi / 24) + rng.normal(0, 3, 24 * 30)
    hist = _hourly(values)
    issued = T0 + timedelta(days=25, hours=7, minutes=20)
    f = SeasonalLoadForecaster()
    a = f.forecast(hist, issued, capacity=60)
    spoiled = hist.copy()
    spoiled[spoiled.index >= pd.Timestamp(issued).floor("1h")] = 1e6  # the future, made absurd
    b = f.forecast(spoiled, issued, capacity=60)
    pd.testing.assert_series_equal(a.expected, b.expected)
    pd.testing.assert_series_equal(a.quantiles[0.9], b.quantiles[0.9])
    assert (a.expected <= 60).all() and (a.quantiles[0.9] <= 60).all()
    assert (a.quantiles[0.9] >= a.expected).all()


def test_short_history_and_errors() -> None:
    hist = _hourly(np.array([3.0, 4.0, 5.0]))
    fc = SeasonalLoadForecaster().forecast(
        hist, T0 + timedelta(hours=3), horizon=timedelta(hours=6)
    )
    assert list(fc.expected) == [5.0] * 6  # no seasonal history: the level carries on
    with pytest.raises(ConfigError, match="no load history"):
        SeasonalLoadForecaster().forecast(hist, T0)
    with pytest.raises(ConfigError, match="divide a day"):
        SeasonalLoadForecaster(slot_minutes=7)
    with pytest.raises(ConfigError, match="strictly between"):
        SeasonalLoadForecaster(quantiles=(1.0,))


def test_baselines() -> None:
    y = np.arange(100, dtype=float)
    assert list(persistence_forecast(y, 50, 3)) == [49, 49, 49]
    assert list(seasonal_naive_forecast(y, 50, 3, period=24)) == [26, 27, 28]
    assert seasonal_naive_forecast(y, 50, 30, period=24)[24] == 26  # 48 back for leads ≥ 24


def test_real_philly_node_series() -> None:
    if not NODE_SEQ.is_file():
        pytest.skip(f"{NODE_SEQ} is absent (../shared/data not laid out)")
    df = read_node_sequence(str(NODE_SEQ))
    active = df["active"]
    f = SeasonalLoadForecaster()
    hourly = aggregate_history(active, timedelta(hours=1), datetime(2017, 12, 15, tzinfo=UTC))
    errs, errs_p, cover = [], [], []
    for day in range(14):  # 14 daily forecasts in the later weeks, scored against the truth
        issued = datetime(2017, 11, 25, 6, tzinfo=UTC) + timedelta(days=day)
        fc = f.forecast(active, issued, capacity=420, unit="active_nodes")
        actual = hourly.reindex(fc.expected.index).to_numpy()
        i = hourly.index.get_loc(pd.Timestamp(issued))
        errs.append(np.abs(actual - fc.expected.to_numpy()))
        errs_p.append(np.abs(actual - persistence_forecast(hourly.to_numpy(), i, 48)))
        cover.append(actual <= fc.quantiles[0.9].to_numpy() + 1e-9)
    mae, mae_p = float(np.nanmean(errs)), float(np.nanmean(errs_p))
    assert mae < mae_p, f"model MAE {mae:.1f} not below persistence {mae_p:.1f}"
    assert 0.75 <= float(np.mean(cover)) <= 0.99
