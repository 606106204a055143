"""The fallback chain live → cache → forecaster: every fault still yields a full forecast."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from greencpn.clock import SimClock
from greencpn.sources.base import CarbonSeries
from greencpn.sources.cache import SeriesCache
from greencpn.sources.chain import NoForecastError, SourceChain
from greencpn.sources.electricitymaps import ElectricityMapsSource
from greencpn.sources.forecast import SeasonalNaiveForecaster
from greencpn.sources.http import AuthError, HttpClient, RetryPolicy, UnknownZoneError
from greencpn.sources.ukgrid import UKGridSource

T0 = datetime(2023, 5, 2, 19, 55, tzinfo=UTC)
EM_FIRST = [557, 552, 538, 527]


@dataclass
class DaySource:
    """History only: a known daily profile 100 + hour (hand-checkable forecaster input)."""

    name: str = "history-file"

    def history(self, zone, start, end):
        idx = pd.date_range(
            pd.Timestamp(start).ceil("h"), pd.Timestamp(end), freq="h", inclusive="left"
        )
        vals = 100.0 + idx.hour.to_numpy()
        return CarbonSeries(zone=zone, intensity_g_per_kwh=pd.Series(vals, index=idx))

    def forecast(self, zone, issued_at, horizon):
        raise NotImplementedError


def make_chain(replay_url, tmp_path, clock, *, history=True, budget=None, max_attempts=2):
    http = HttpClient(
        "electricitymaps",
        RetryPolicy(max_attempts=max_attempts, read_timeout_s=0.3),
        sleep=lambda s: None,
        clock=clock,
        rng=random.Random(3),
    )
    live = ElectricityMapsSource(
        "em-test-token-5f3a9c1e77", base_url=replay_url + "/v3", clock=clock, http=http
    )
    cache = SeriesCache(
        tmp_path / "cache.sqlite",
        clock,
        daily_budget={"electricitymaps": budget} if budget else None,
    )
    return SourceChain(
        live,
        cache,
        clock=clock,
        history_source=DaySource() if history else None,
        forecaster_factory=SeasonalNaiveForecaster,
    )


def test_seasonal_naive_hand_checked():
    idx = pd.date_range("2023-01-01T00:00Z", periods=30, freq="h")
    fc = SeasonalNaiveForecaster().fit(pd.Series(np.arange(30, dtype=float), index=idx))
    out = fc.predict(datetime(2023, 1, 2, 6, tzinfo=UTC), 4, timedelta(hours=1))
    # 2023-01-02 06:00 → same hour yesterday (index 6), ...
    assert out.intensity_g_per_kwh.tolist() == [6.0, 7.0, 8.0, 9.0]
    short = SeasonalNaiveForecaster().fit(pd.Series([5.0, 7.0], index=idx[:2]))
    later = short.predict(datetime(2023, 1, 1, 3, tzinfo=UTC), 2, timedelta(hours=1))
    assert later.intensity_g_per_kwh.tolist() == [
        7.0,
        7.0,
    ]  # less than a day known: persistence


def test_live_then_fresh_cache_no_second_request(replay, tmp_path):
    clock = SimClock(T0)
    chain = make_chain(replay.url, tmp_path, clock)
    a = chain.forecast("DE", T0, timedelta(hours=24))
    assert a.fallback is None and a.stale_age_s is None
    assert a.intensity_g_per_kwh.iloc[:4].tolist() == EM_FIRST
    n = replay.count("/v3/")
    clock.advance(timedelta(minutes=10))
    b = chain.forecast("DE", clock.now(), timedelta(hours=24))
    assert replay.count("/v3/") == n  # served from the fresh cache
    assert b.fallback is None and b.intensity_g_per_kwh.iloc[0] == 557
    assert chain.errors == []


def test_api_down_serves_stale_cache_with_age(replay, tmp_path, api):
    clock = SimClock(T0)
    chain = make_chain(replay.url, tmp_path, clock)
    chain.forecast("DE", T0, timedelta(hours=24))
    clock.advance(timedelta(hours=2))  # past the 30-min forecast TTL
    replay.always["/v3/"] = api.Reply(503, {"error": "down"})
    fc = chain.forecast("DE", clock.now(), timedelta(hours=24))
    assert fc.fallback == "cache" and fc.stale_age_s == 7200
    v = fc.intensity_g_per_kwh
    # [21:55, +24 h) overlaps the 25 hourly slots 21:00 … 21:00 next day
    assert len(v) == 25 and v.iloc[:3].tolist() == [552, 538, 527]
    # 48 h from 21:55: the cached forecast (to 2023-05-04T19:00) lacks the last two slots
    fc48 = chain.forecast("DE", clock.now(), timedelta(hours=48))
    assert fc48.fallback == "cache+forecaster:seasonal_naive" and fc48.stale_age_s == 7200
    assert len(fc48.intensity_g_per_kwh) == 49 and fc48.intensity_g_per_kwh.notna().all()
    assert fc48.estimated.tolist() == [False] * 47 + [True, True]
    assert any("503" in str(e) for e in chain.errors)


def test_api_down_no_cache_uses_forecaster_on_history(dead_url, tmp_path):
    clock = SimClock(T0)
    chain = make_chain(dead_url, tmp_path, clock)
    fc = chain.forecast("DE", T0, timedelta(hours=48))
    assert fc.fallback == "forecaster:seasonal_naive"
    v = fc.intensity_g_per_kwh
    # [19:55, +48 h) overlaps 49 hourly slots, 19:00 … 19:00 two days later
    assert len(v) == 49 and v.index[0] == datetime(2023, 5, 2, 19, tzinfo=UTC)
    # same hour yesterday of the profile 100 + hour
    assert v.iloc[:6].tolist() == [119.0, 120.0, 121.0, 122.0, 123.0, 100.0]
    assert v.tolist() == [100.0 + t.hour for t in v.index]
    assert fc.estimated.all()


def test_extends_short_provider_forecast(replay, tmp_path):
    """The recorded forecast covers 48 h; asking 72 h fills the last 24 h from the forecaster,
    which (seasonal-naive on history + the provider's forecast) repeats the provider's last
    day."""
    clock = SimClock(T0)
    chain = make_chain(replay.url, tmp_path, clock)
    fc = chain.forecast("DE", T0, timedelta(hours=72))
    v = fc.intensity_g_per_kwh
    assert fc.fallback == "live+forecaster:seasonal_naive"
    assert len(v) == 72 and v.notna().all()
    assert v.iloc[:4].tolist() == EM_FIRST
    np.testing.assert_array_equal(v.iloc[48:72].to_numpy(), v.iloc[24:48].to_numpy())
    assert not fc.estimated.iloc[:48].any() and fc.estimated.iloc[48:].all()


def test_stale_cache_extended_without_any_history(replay, tmp_path, api):
    """API down, no history source, no cached history: the stale 48 h forecast is still
    extended to 72 h from itself (the forecaster fits on the provider's forecast)."""
    clock = SimClock(T0)
    chain = make_chain(replay.url, tmp_path, clock, history=False)
    chain.forecast("DE", T0, timedelta(hours=6))
    clock.advance(timedelta(hours=3))
    replay.always["/v3/"] = api.Reply(503, {"error": "down"})
    fc = chain.forecast("DE", T0, timedelta(hours=72))
    v = fc.intensity_g_per_kwh
    assert fc.fallback == "cache+forecaster:seasonal_naive" and fc.stale_age_s == 3 * 3600
    assert len(v) == 72 and v.notna().all() and v.iloc[:4].tolist() == EM_FIRST
    np.testing.assert_array_equal(v.iloc[48:].to_numpy(), v.iloc[24:48].to_numpy())
    # near the end of the cached forecast the forecaster still sees all of it (not only the
    # 5 slots left in the window): 20:00 ← 20:00 the day before (557), not persistence (590)
    late = chain.forecast("DE", datetime(2023, 5, 4, 15, 10, tzinfo=UTC), timedelta(hours=8))
    assert late.intensity_g_per_kwh.tolist() == [420, 481, 514, 542, 590, 557, 552, 538, 527]
    assert late.estimated.tolist() == [False] * 5 + [True] * 4


def test_budget_exhausted_falls_back(replay, tmp_path):
    clock = SimClock(T0)
    chain = make_chain(replay.url, tmp_path, clock, budget=1)
    chain.forecast("DE", T0, timedelta(hours=24))
    clock.advance(timedelta(hours=1))
    n = replay.count("/v3/")
    fc = chain.forecast("DE", clock.now(), timedelta(hours=24))
    assert replay.count("/v3/") == n  # no request beyond the budget
    assert fc.fallback.startswith("cache") and fc.stale_age_s == 3600
    assert "budget" in str(chain.errors[0])


FAULTS = {
    "timeout": lambda api, rec: api.Reply(200, rec, delay_s=0.6),
    "429": lambda api, rec: api.Reply(429, {"message": "slow down"}, {"Retry-After": "600"}),
    "500": lambda api, rec: api.Reply(500, {"error": "internal"}),
    "401": lambda api, rec: api.Reply(401, {"message": "Invalid authentication credentials"}),
    "malformed": lambda api, rec: api.Reply(200, b"<html>502 Bad Gateway</html>"),
    "empty": lambda api, rec: api.Reply(200, {"zone": "DE", "forecast": []}),
    "unknown_zone": lambda api, rec: api.Reply(404, {"message": "Zone 'DE' does not exist."}),
    "gap": lambda api, rec: api.Reply(
        200, dict(rec, forecast=[p for i, p in enumerate(rec["forecast"]) if not 5 <= i < 15])
    ),
}


@pytest.mark.parametrize("fault", [*FAULTS, "connection_refused"])
@pytest.mark.parametrize("cached", [False, True])
def test_no_fault_leaves_caller_without_forecast(fault, cached, replay, dead_url, tmp_path, api):
    clock = SimClock(T0)
    chain = make_chain(replay.url, tmp_path, clock)
    if cached:
        chain.forecast("DE", T0, timedelta(hours=24))
        clock.advance(timedelta(hours=1))
    rec = api.load("electricitymaps_v3_carbon-intensity_forecast_DE_2023-05-02.json")
    if fault == "connection_refused":
        chain.live.base_url = dead_url + "/v3"
    else:
        replay.always["/v3/"] = FAULTS[fault](api, rec)
    issued = clock.now()
    fc = chain.forecast("DE", issued, timedelta(hours=24))
    v = fc.intensity_g_per_kwh
    assert 24 <= len(v) <= 25 and v.notna().all(), fault
    assert v.index[0] <= pd.Timestamp(issued) + pd.Timedelta(hours=1)
    assert v.index[-1] + pd.Timedelta(hours=1) >= pd.Timestamp(issued) + pd.Timedelta(hours=24)
    if fault == "gap":
        # a 10-hour gap in a live answer: live values kept, the gap filled and flagged
        assert fc.fallback.endswith("+forecaster:seasonal_naive")
        assert fc.estimated.sum() == 10
    elif cached:
        assert fc.fallback.startswith("cache") and fc.stale_age_s == 3600
    else:
        assert fc.fallback == "forecaster:seasonal_naive"
    if fault in ("401", "unknown_zone"):
        assert isinstance(chain.errors[0], AuthError | UnknownZoneError)


def test_nothing_known_raises_clear_error(dead_url, tmp_path):
    clock = SimClock(T0)
    chain = make_chain(dead_url, tmp_path, clock, history=False)
    with pytest.raises(NoForecastError, match="no history of DE is cached"):
        chain.forecast("DE", T0, timedelta(hours=24))


def test_cached_history_feeds_the_forecaster(replay, tmp_path, api):
    """UK: fetch pt24h once, then the API dies: the forecaster runs on the cached history."""
    clock = SimClock(datetime(2023, 3, 15, 12, 1, tzinfo=UTC))
    replay.always["/uk/intensity/"] = api.Reply(
        200,
        {
            "data": [
                {
                    "from": t.strftime("%Y-%m-%dT%H:%MZ"),
                    "intensity": {"forecast": 50 + i, "actual": 60 + i},
                }
                for i, t in enumerate(pd.date_range("2023-03-14T12:00Z", periods=48, freq="30min"))
            ]
        },
    )
    http = HttpClient("ukgrid", RetryPolicy(max_attempts=1), sleep=lambda s: None, clock=clock)
    live = UKGridSource(base_url=replay.url + "/uk", clock=clock, http=http)
    chain = SourceChain(
        live,
        SeriesCache(tmp_path / "c.sqlite", clock),
        clock=clock,
        forecaster_factory=SeasonalNaiveForecaster,
    )
    end = clock.now()
    h = chain.history("GB", end - timedelta(hours=24), end)
    assert h.intensity_g_per_kwh.iloc[0] == 60 and h.fallback is None
    replay.always.clear()
    replay.always["/uk/"] = api.Reply(500, {"error": {"code": "500", "message": "x"}})
    fc = chain.forecast("GB", end, timedelta(hours=4))
    assert fc.fallback == "forecaster:seasonal_naive"
    v = fc.intensity_g_per_kwh
    assert fc.step == timedelta(minutes=30) and len(v) == 9  # [12:01, 16:01) → 12:00 … 16:00
    # 12:00 today ← 12:00 yesterday = first cached slot (actual 60)
    assert v.iloc[0] == 60 and v.iloc[1] == 61
    # and history itself is served stale from the cache
    clock.advance(timedelta(hours=7))
    h2 = chain.history("GB", end - timedelta(hours=24), end)
    assert h2.fallback == "cache" and h2.stale_age_s == 7 * 3600


def test_open_chain_watttime_from_env_keys(replay, tmp_path, monkeypatch, api):
    """The factory the CLI and the plan use: keys from the environment, cache, budget."""
    from greencpn.errors import ConfigError
    from greencpn.sources.chain import open_chain

    monkeypatch.delenv("GREENCPN_WATTTIME_USERNAME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    clock = SimClock(datetime(2022, 7, 15, 0, 2, tzinfo=UTC))
    with pytest.raises(ConfigError, match="GREENCPN_WATTTIME_USERNAME"):
        open_chain("watttime", "CAISO_NORTH", clock=clock, cache_path=tmp_path / "c.sqlite")
    monkeypatch.setenv("GREENCPN_WATTTIME_USERNAME", api.WT_USER)
    monkeypatch.setenv("GREENCPN_WATTTIME_PASSWORD", api.WT_PASSWORD)
    chain = open_chain(
        "watttime",
        "CAISO_NORTH",
        clock=clock,
        base_url=replay.url,
        cache_path=tmp_path / "c.sqlite",
        budget=5,
    )
    t0 = datetime(2022, 7, 15, tzinfo=UTC)
    fc = chain.forecast("CAISO_NORTH", t0, timedelta(minutes=15))
    assert fc.fallback is None and fc.signal == "marginal" and fc.step == timedelta(minutes=5)
    assert fc.intensity_g_per_kwh.tolist() == pytest.approx([870 * 0.45359237] * 3)
    # from 00:02 the window reaches the 00:15 slot the recorded 3-point forecast lacks
    fc2 = chain.forecast("CAISO_NORTH", clock.now(), timedelta(minutes=15))
    assert fc2.fallback.startswith("live+forecaster:") and fc2.estimated.tolist() == [
        False,
        False,
        False,
        True,
    ]
    # one forecast request; the extension asked the history endpoint once (budgeted too)
    assert replay.count("/v3/forecast") == 1 and replay.count("/v3/historical") == 1
    assert chain.cache.budget_used("watttime") == 2


def test_failing_forecaster_falls_back_to_seasonal_naive(dead_url, tmp_path):
    class NeedsAYear:
        name = "needs_a_year"

        def fit(self, history):
            raise ValueError("needs 365 days of history")

        def predict(self, issued_at, horizon_slots, step):
            raise AssertionError("not fitted")

    clock = SimClock(T0)
    chain = make_chain(dead_url, tmp_path, clock)
    chain.forecaster_factory = NeedsAYear
    fc = chain.forecast("DE", T0, timedelta(hours=6))
    assert fc.fallback == "forecaster:seasonal_naive"
    assert fc.intensity_g_per_kwh.tolist() == [119.0, 120.0, 121.0, 122.0, 123.0, 100.0, 101.0]
    assert any("needs 365 days" in str(e) for e in chain.errors)
