"""Hand-checkable cases of the resampling rule (greencpn.sources.resample)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from greencpn.errors import ConfigError
from greencpn.sources.resample import find_gaps, resample_to_slots

H = timedelta(hours=1)
Q = timedelta(minutes=15)


def _s(pairs: dict[str, float]) -> pd.Series:
    return pd.Series(
        list(pairs.values()), index=pd.to_datetime([f"2023-01-01 {k}" for k in pairs], utc=True)
    )


def test_time_weighted_mean_of_irregular_samples() -> None:
    # 00:00=100 holds 15 min, 00:15=200 holds 30 min, 00:45=400 holds 15 min (native step).
    s = _s({"00:00": 100, "00:15": 200, "00:45": 400, "01:00": 50, "01:15": 70})
    out = resample_to_slots(s, H)
    assert out.loc["2023-01-01 00:00+00:00"] == pytest.approx((15 * 100 + 30 * 200 + 15 * 400) / 60)
    assert out.iloc[0] == pytest.approx(225.0)
    # slot 01:00: 01:00=50 and 01:15=70 (the last sample holds one native step, 15 min):
    # 30 of 60 min covered (= min_coverage 50 %), mean over the covered part.
    assert out.iloc[1] == pytest.approx((15 * 50 + 15 * 70) / 30)
    assert len(out) == 2


def test_upsampling_is_forward_hold() -> None:
    s = _s({"00:00": 10, "01:00": 20, "02:00": 30})
    out = resample_to_slots(s, Q)
    assert list(out.to_numpy()) == [10] * 4 + [20] * 4 + [30] * 4
    assert out.index[1] - out.index[0] == pd.Timedelta(Q)


def test_regular_same_step_is_unchanged() -> None:
    s = _s({"00:00": 1, "01:00": 2, "02:00": 3})
    out = resample_to_slots(s, H)
    assert list(out.to_numpy()) == [1, 2, 3]
    assert list(out.index) == list(s.index)


def test_short_gap_is_linearly_interpolated() -> None:
    # Hourly data with 02:00 and 03:00 missing (a 3 h interval > max_interval=1 h): 01:00 holds
    # for one native step, slots 02 and 03 are a 2 h gap filled linearly from 100 to 400.
    s = _s({"00:00": 0, "01:00": 100, "04:00": 400, "05:00": 500})
    out = resample_to_slots(s, H, max_gap=timedelta(hours=2))
    assert list(out.to_numpy()) == pytest.approx([0, 100, 200, 300, 400, 500])


def test_nan_sample_is_a_gap() -> None:
    s = _s({"00:00": 10, "01:00": np.nan, "02:00": 30})
    out = resample_to_slots(s, H)
    assert list(out.to_numpy()) == pytest.approx([10, 20, 30])


def test_long_gap_is_refused_and_listed() -> None:
    s = _s({"00:00": 0, "01:00": 100, "05:00": 500, "06:00": 600, "10:00": 1, "11:00": 2})
    with pytest.raises(ConfigError) as e:
        resample_to_slots(s, H, max_gap=timedelta(hours=2), what="x.csv")
    msg = str(e.value)
    assert "2 gap(s)" in msg and "x.csv" in msg
    assert "2023-01-01T02:00:00+00:00 .. 2023-01-01T05:00:00+00:00 (3 h)" in msg
    assert "2023-01-01T07:00:00+00:00 .. 2023-01-01T10:00:00+00:00" in msg


def test_partial_coverage_below_half_is_missing() -> None:
    # 15-min data ending at 01:00: the 01:00 sample covers 15 of the 60 min of slot 01:00.
    s = _s({"00:00": 1, "00:15": 1, "00:30": 1, "00:45": 1, "01:00": 9})
    out = resample_to_slots(s, H)
    assert len(out) == 1 and out.iloc[0] == 1


def test_duplicates_and_naive_index_refused() -> None:
    s = _s({"00:00": 1, "01:00": 2})
    dup = pd.concat([s, s])
    with pytest.raises(ConfigError, match="duplicate"):
        resample_to_slots(dup, H)
    with pytest.raises(ConfigError, match="tz-aware"):
        resample_to_slots(s.tz_localize(None), H)


def test_find_gaps() -> None:
    s = pd.Series(
        [np.nan, 1, np.nan, np.nan, 2, np.nan],
        index=pd.date_range("2023-01-01", periods=6, freq="h", tz="UTC"),
    )
    gaps = find_gaps(s)
    assert [(a.hour, b.hour, k) for a, b, k in gaps] == [(2, 3, 2)]
