"""Live API clients against the 127.0.0.1 replay server: parsing, retries, typed errors."""

from __future__ import annotations

import random
import socket
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from greencpn.clock import SimClock
from greencpn.errors import PermanentError, TemporaryError
from greencpn.sources.base import CarbonSource
from greencpn.sources.electricitymaps import ElectricityMapsSource
from greencpn.sources.http import (
    ApiConnectionError,
    ApiTimeoutError,
    AuthError,
    BadResponseError,
    HttpClient,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    UnknownZoneError,
    parse_retry_after,
    regular_series,
)
from greencpn.sources.ukgrid import UKGridSource, region_of
from greencpn.sources.watttime import LBS_PER_MWH_TO_G_PER_KWH, WattTimeSource

T_EM_FC = datetime(2023, 5, 2, 19, 55, tzinfo=UTC)
T_EM_HIST = datetime(2024, 3, 6, 20, 0, tzinfo=UTC)


def http_for(name, clock, sleeps, **policy):
    pol = RetryPolicy(**{"max_attempts": 3, "read_timeout_s": 2.0, **policy})
    return HttpClient(name, pol, sleep=sleeps, clock=clock, rng=random.Random(7))


def em(replay, sleeps, clock=None, token=None, **policy):
    clock = clock or SimClock(T_EM_FC)
    return ElectricityMapsSource(
        token or "em-test-token-5f3a9c1e77",
        base_url=replay.url + "/v3",
        clock=clock,
        http=http_for("electricitymaps", clock, sleeps, **policy),
    )


def wt(replay, sleeps, clock=None, password="wt-pass-8d2b41aa"):
    clock = clock or SimClock(datetime(2022, 7, 15, 0, 2, tzinfo=UTC))
    return WattTimeSource(
        "wt-user-test",
        password,
        base_url=replay.url,
        clock=clock,
        http=http_for("watttime", clock, sleeps),
    )


def uk(replay, sleeps, clock=None):
    clock = clock or SimClock(datetime(2023, 3, 14, 3, 31, tzinfo=UTC))
    return UKGridSource(
        base_url=replay.url + "/uk", clock=clock, http=http_for("ukgrid", clock, sleeps)
    )


# ------------------------------------------------------------------------- network guard
def test_guard_refuses_non_local_addresses(local_network_only):
    with pytest.raises(OSError, match="non-local"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    with pytest.raises(OSError, match="non-local"):
        socket.getaddrinfo("api.electricitymap.org", 443)
    assert len(local_network_only) == 2
    local_network_only.clear()


# ------------------------------------------------------------------------ Electricity Maps
def test_em_forecast_recorded(replay, sleeps):
    src = em(replay, sleeps)
    assert isinstance(src, CarbonSource)
    fc = src.forecast("DE", T_EM_FC, timedelta(hours=48))
    v = fc.intensity_g_per_kwh
    assert len(v) == 48 and fc.step == timedelta(hours=1)
    assert v.index[0] == datetime(2023, 5, 2, 20, tzinfo=UTC)
    assert v.iloc[:4].tolist() == [557, 552, 538, 527]
    assert v.iloc[-1] == 590
    assert fc.issued_at == datetime(2023, 5, 2, 19, 52, 9, 141000, tzinfo=UTC)
    assert (fc.zone, fc.signal, fc.accounting, fc.source) == (
        "DE",
        "average",
        "lifecycle",
        "electricitymaps",
    )
    seen = replay.seen[-1]
    assert seen.headers["auth-token"] == "em-test-token-5f3a9c1e77"
    assert seen.query["zone"] == "DE" and seen.query["horizonHours"] == "48"
    assert seen.query["emissionFactorType"] == "lifecycle"
    # a shorter horizon is cut, not padded
    assert len(src.forecast("DE", T_EM_FC, timedelta(hours=6)).intensity_g_per_kwh) == 6


def test_em_history_last_24h_and_estimated_flags(replay, sleeps):
    src = em(replay, sleeps, clock=SimClock(T_EM_HIST))
    h = src.history("DE", T_EM_HIST - timedelta(hours=24), T_EM_HIST)
    assert len(h.intensity_g_per_kwh) == 24
    assert h.intensity_g_per_kwh.iloc[0] == 599
    assert h.estimated is not None
    assert h.estimated.tolist() == [False] * 22 + [True, True]
    assert replay.count("/v3/carbon-intensity/history") == 1


def test_em_past_range_and_latest(replay, sleeps):
    src = em(replay, sleeps, clock=SimClock(datetime(2025, 1, 1, tzinfo=UTC)))
    h = src.history(
        "DK-DK2", datetime(2024, 3, 18, 2, tzinfo=UTC), datetime(2024, 3, 18, 4, tzinfo=UTC)
    )
    assert h.intensity_g_per_kwh.tolist() == [161, 167] and h.zone == "DK-DK2"
    q = replay.seen[-1].query
    assert q["start"] == "2024-03-18T02:00:00Z" and q["end"] == "2024-03-18T04:00:00Z"
    # the live "latest" is checked against the clock (issue #10.7): ask near its hour
    latest = em(replay, sleeps, clock=SimClock(datetime(2024, 3, 6, 19, 20, tzinfo=UTC))).latest(
        "US-CAR-DUK"
    )
    assert latest.intensity_g_per_kwh.tolist() == [216]
    assert latest.estimated.tolist() == [True]


def test_em_zone_by_lat_lon(replay, sleeps):
    fc = em(replay, sleeps).forecast("52.52,13.40", T_EM_FC, timedelta(hours=24))
    q = replay.seen[-1].query
    assert q["lat"] == "52.52" and q["lon"] == "13.4" and "zone" not in q
    assert fc.zone == "DE"


def test_em_unknown_zone_is_permanent_with_fix(replay, sleeps):
    with pytest.raises(UnknownZoneError) as err:
        em(replay, sleeps).forecast("XX-NOWHERE", T_EM_FC, timedelta(hours=24))
    assert "XX-NOWHERE" in str(err.value) and "Fix:" in str(err.value)
    assert replay.count("/v3/") == 1 and sleeps.waits == []  # permanent: no retry


def test_em_bad_token_is_permanent_with_fix(replay, sleeps):
    with pytest.raises(AuthError) as err:
        em(replay, sleeps, token="wrong-token").forecast("DE", T_EM_FC, timedelta(hours=24))
    assert isinstance(err.value, PermanentError)
    assert "GREENCPN_ELECTRICITYMAPS_TOKEN" in str(err.value)
    assert "wrong-token" not in str(err.value)
    assert replay.count("/v3/") == 1


def test_500_retried_with_backoff_then_ok(replay, sleeps, api):
    replay.faults["/v3/carbon-intensity/forecast"] = [api.Reply(500, {"error": "boom"})] * 2
    fc = em(replay, sleeps, base_delay_s=0.5, max_delay_s=8).forecast(
        "DE", T_EM_FC, timedelta(hours=24)
    )
    assert len(fc.intensity_g_per_kwh) == 24
    assert replay.count("/v3/carbon-intensity/forecast") == 3
    assert len(sleeps.waits) == 2
    assert 0 <= sleeps.waits[0] <= 0.5 and 0 <= sleeps.waits[1] <= 1.0  # full jitter


class _TopJitter(random.Random):
    """Full jitter drawn at its top: each wait is the backoff cap itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_up_to_its_cap(replay, sleeps, api):
    """With the jitter at its top the waits are the caps: 0.5, 1, 2, 4 s, then 5 (max), so a
    backoff that never grows (or grows past its cap) fails here."""
    replay.faults["/v3/carbon-intensity/forecast"] = [api.Reply(500, {"error": "boom"})] * 5
    clock = SimClock(T_EM_FC)
    pol = RetryPolicy(max_attempts=6, read_timeout_s=2.0, base_delay_s=0.5, max_delay_s=5.0)
    src = ElectricityMapsSource(
        "em-test-token-5f3a9c1e77",
        base_url=replay.url + "/v3",
        clock=clock,
        http=HttpClient("electricitymaps", pol, sleep=sleeps, clock=clock, rng=_TopJitter()),
    )
    assert len(src.forecast("DE", T_EM_FC, timedelta(hours=24)).intensity_g_per_kwh) == 24
    assert sleeps.waits == [0.5, 1.0, 2.0, 4.0, 5.0]


def test_null_values_and_the_gap_limit_boundary():
    """regular_series: null values in an answer (timestamps present) are flagged estimated
    even when the API marked them measured; a run of exactly max_gap_slots nulls is filled
    (interpolated, estimated), one more stays missing (estimated)."""
    idx = pd.date_range("2024-01-01T00:00Z", periods=10, freq="h")
    vals = np.array([0.0, np.nan, np.nan, 30.0, 40.0, np.nan, np.nan, np.nan, 80.0, 90.0])
    est = np.zeros(10, dtype=bool)  # the API said "measured" everywhere
    v, e = regular_series(idx, vals, est, step=timedelta(hours=1), max_gap_slots=2, what="t")
    assert v.iloc[1:3].tolist() == pytest.approx([10.0, 20.0])  # exactly 2: filled
    assert v.iloc[5:8].isna().all()  # 3 > 2: left missing
    assert e.tolist() == [False, True, True, False, False, True, True, True, False, False]
    v0, e0 = regular_series(idx, vals, est, step=timedelta(hours=1), max_gap_slots=0, what="t")
    assert v0.isna().sum() == 5 and e0.tolist() == e.tolist()


def test_500_forever_is_temporary(replay, sleeps, api):
    replay.always["/v3/carbon-intensity/forecast"] = api.Reply(503, {"error": "maintenance"})
    with pytest.raises(ServerError) as err:
        em(replay, sleeps).forecast("DE", T_EM_FC, timedelta(hours=24))
    assert isinstance(err.value, TemporaryError) and "503" in str(err.value)
    assert replay.count("/v3/carbon-intensity/forecast") == 3


def test_429_honours_retry_after(replay, sleeps, api):
    replay.faults["/v3/carbon-intensity/forecast"] = [
        api.Reply(429, {"message": "Too many requests"}, {"Retry-After": "2"})
    ]
    fc = em(replay, sleeps).forecast("DE", T_EM_FC, timedelta(hours=24))
    assert len(fc.intensity_g_per_kwh) == 24
    assert sleeps.waits == [2.0]


def test_429_with_long_retry_after_gives_up_at_once(replay, sleeps, api):
    replay.always["/v3/carbon-intensity/forecast"] = api.Reply(
        429, {"message": "quota"}, {"Retry-After": "3600"}
    )
    with pytest.raises(RateLimitedError) as err:
        em(replay, sleeps).forecast("DE", T_EM_FC, timedelta(hours=24))
    assert err.value.retry_after_s == 3600 and sleeps.waits == []
    assert replay.count("/v3/carbon-intensity/forecast") == 1


def test_retry_after_http_date():
    now = datetime(2023, 5, 2, 19, 55, tzinfo=UTC)
    assert parse_retry_after("Tue, 02 May 2023 19:55:30 GMT", now) == 30.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("soon", now) is None


def test_timeout_is_temporary(replay, sleeps, api):
    replay.always["/v3/carbon-intensity/forecast"] = api.Reply(
        200,
        api.load("electricitymaps_v3_carbon-intensity_forecast_DE_2023-05-02.json"),
        delay_s=0.8,
    )
    with pytest.raises(ApiTimeoutError):
        em(replay, sleeps, read_timeout_s=0.2, max_attempts=2).forecast(
            "DE", T_EM_FC, timedelta(hours=24)
        )
    assert len(sleeps.waits) == 1


def test_connection_refused_is_temporary(dead_url, sleeps):
    clock = SimClock(T_EM_FC)
    src = ElectricityMapsSource(
        "tok",
        base_url=dead_url + "/v3",
        clock=clock,
        http=http_for("electricitymaps", clock, sleeps),
    )
    with pytest.raises(ApiConnectionError, match="Connection refused"):
        src.forecast("DE", T_EM_FC, timedelta(hours=24))
    assert len(sleeps.waits) == 2


def test_malformed_json_and_empty_data_are_typed(replay, sleeps, api):
    replay.always["/v3/carbon-intensity/forecast"] = api.Reply(
        200, b'{"zone": "DE", "forecast": [{"carbonIntensity": 557, "datet'
    )
    with pytest.raises(BadResponseError, match="not valid JSON"):
        em(replay, sleeps).forecast("DE", T_EM_FC, timedelta(hours=24))
    replay.always["/v3/carbon-intensity/forecast"] = api.Reply(
        200, {"zone": "DE", "forecast": [], "updatedAt": "2023-05-02T19:52:09.141Z"}
    )
    with pytest.raises(BadResponseError, match="empty"):
        em(replay, sleeps).forecast("DE", T_EM_FC, timedelta(hours=24))
    replay.always["/v3/carbon-intensity/forecast"] = api.Reply(200, ["not", "an", "object"])
    with pytest.raises(BadResponseError):
        em(replay, sleeps).forecast("DE", T_EM_FC, timedelta(hours=24))


def test_gap_short_interpolated_long_left_missing(replay, sleeps, api):
    """Hand-checkable: hours 2 (one slot) and 10-13 (four slots) are missing."""
    rec = api.load("electricitymaps_v3_carbon-intensity_history_DE.json")
    rows = rec["history"]
    expected_h2 = (rows[1]["carbonIntensity"] + rows[3]["carbonIntensity"]) / 2
    rec["history"] = [r for i, r in enumerate(rows) if i != 2 and not 10 <= i <= 13]
    replay.always["/v3/carbon-intensity/history"] = api.Reply(200, rec)
    h = em(replay, sleeps, clock=SimClock(T_EM_HIST)).history(
        "DE", T_EM_HIST - timedelta(hours=24), T_EM_HIST
    )
    v = h.intensity_g_per_kwh
    assert len(v) == 24
    assert v.iloc[2] == expected_h2 and bool(h.estimated.iloc[2])
    assert v.iloc[10:14].isna().all() and h.estimated.iloc[10:14].all()
    assert v.drop(v.index[[2, 10, 11, 12, 13]]).notna().all()


def test_dst_change_day_local_offsets(replay, sleeps, api):
    """Timestamps in Europe/Berlin local time across the 2023-03-26 spring-forward (02:00 CET
    does not exist): the UTC series is regular, 24 points, no duplicate, values in order."""
    import pandas as pd

    utc = pd.date_range("2023-03-25T23:00Z", periods=24, freq="h")
    local = utc.tz_convert("Europe/Berlin")
    rows = [
        {"zone": "DE", "carbonIntensity": 300 + i, "isEstimated": False, "datetime": ts.isoformat()}
        for i, ts in enumerate(local)
    ]
    assert rows[1]["datetime"] == "2023-03-26T01:00:00+01:00"
    assert rows[2]["datetime"] == "2023-03-26T03:00:00+02:00"
    replay.always["/v3/carbon-intensity/past-range"] = api.Reply(200, {"zone": "DE", "data": rows})
    src = em(replay, sleeps, clock=SimClock(datetime(2023, 4, 1, tzinfo=UTC)))
    h = src.history("DE", utc[0].to_pydatetime(), (utc[-1] + pd.Timedelta(hours=1)).to_pydatetime())
    v = h.intensity_g_per_kwh
    assert len(v) == 24 and v.index.is_unique and h.step == timedelta(hours=1)
    assert v.tolist() == [300 + i for i in range(24)]
    assert str(v.index.tz) == "UTC"


# ----------------------------------------------------------------------------- WattTime
def test_wt_login_historical_conversion(replay, sleeps):
    src = wt(replay, sleeps)
    h = src.history(
        "CAISO_NORTH", datetime(2022, 7, 15, tzinfo=UTC), datetime(2022, 7, 15, 0, 10, tzinfo=UTC)
    )
    assert h.intensity_g_per_kwh.tolist() == pytest.approx([870 * 0.45359237, 860 * 0.45359237])
    assert LBS_PER_MWH_TO_G_PER_KWH == 0.45359237
    assert (h.signal, h.accounting, h.zone) == ("marginal", "direct", "CAISO_NORTH")
    assert h.estimated.tolist() == [True, True]  # imputed_data_used
    login = [s for s in replay.seen if s.path == "/login"][0]
    assert login.headers["authorization"].startswith("Basic ")
    data = [s for s in replay.seen if s.path == "/v3/historical"][0]
    assert data.headers["authorization"] == "Bearer wt-jwt-1"


def test_wt_forecast_current_and_historical(replay, sleeps):
    src = wt(replay, sleeps)
    now = src.clock.now()
    fc = src.forecast("CAISO_NORTH", now, timedelta(hours=1))
    assert fc.intensity_g_per_kwh.tolist() == pytest.approx([870 * 0.45359237] * 3)
    assert fc.issued_at == datetime(2022, 7, 15, tzinfo=UTC)
    assert replay.count("/v3/forecast") == 1
    src.clock.set(datetime(2023, 1, 1, tzinfo=UTC))
    src._token_expires = None  # the clock jumped: log in again
    old = src.forecast("CAISO_NORTH", datetime(2022, 7, 15, 0, 1, tzinfo=UTC), timedelta(hours=1))
    assert old.issued_at == datetime(2022, 7, 15, tzinfo=UTC)
    assert replay.count("/v3/forecast/historical") == 1


def test_wt_token_refresh_on_401_and_expiry(replay, sleeps):
    src = wt(replay, sleeps)
    t0, t1 = datetime(2022, 7, 15, tzinfo=UTC), datetime(2022, 7, 15, 0, 10, tzinfo=UTC)
    src.history("CAISO_NORTH", t0, t1)
    assert src.logins == 1
    replay.tokens.clear()  # the server revokes the token → 401 → log in again, once
    src.history("CAISO_NORTH", t0, t1)
    assert src.logins == 2
    src.clock.advance(timedelta(minutes=29))  # past the renewal point of a 30-min token
    src.history("CAISO_NORTH", t0, t1)
    assert src.logins == 3
    assert sleeps.waits == []


def test_wt_bad_password_region_from_location_unknown_region(replay, sleeps):
    with pytest.raises(AuthError) as err:
        wt(replay, sleeps, password="nope-wrong").history(
            "CAISO_NORTH", datetime(2022, 7, 15, tzinfo=UTC), datetime(2022, 7, 16, tzinfo=UTC)
        )
    assert "GREENCPN_WATTTIME_PASSWORD" in str(err.value) and "nope-wrong" not in str(err.value)
    src = wt(replay, sleeps)
    assert src.region("39.74,-104.99") == "PSCO"
    assert replay.seen[-1].query["latitude"] == "39.74"
    with pytest.raises(UnknownZoneError, match="Fix"):
        src.history(
            "MARS_GRID", datetime(2022, 7, 15, tzinfo=UTC), datetime(2022, 7, 16, tzinfo=UTC)
        )


# ------------------------------------------------------------------------------ UK grid
def test_uk_fw48h_recorded_excerpt_with_gap(replay, sleeps):
    """The recorded excerpt keeps slots 1-3 and 96: the long gap stays missing."""
    issued = datetime(2023, 3, 14, 3, 31, tzinfo=UTC)
    fc = uk(replay, sleeps).forecast("GB", issued, timedelta(hours=48))
    v = fc.intensity_g_per_kwh
    assert replay.seen[-1].path == "/uk/intensity/2023-03-14T03:31Z/fw48h"
    assert v.index[0] == datetime(2023, 3, 14, 3, 30, tzinfo=UTC)
    assert v.iloc[:3].tolist() == [69, 72, 69]
    assert len(v) == 96 and v.iloc[3:95].isna().all() and v.iloc[95] == 84
    assert fc.step == timedelta(minutes=30) and fc.issued_at == issued


def test_uk_pt24h_prefers_actual(replay, sleeps, api):
    replay.always["/uk/intensity/"] = api.Reply(
        200, api.load("uk_carbonintensity_intensity_pt24h_2023-03-15T1201Z_excerpt.json")
    )
    end = datetime(2023, 3, 15, 12, 1, tzinfo=UTC)
    h = uk(replay, sleeps, clock=SimClock(end)).history("GB", end - timedelta(hours=24), end)
    v = h.intensity_g_per_kwh
    assert replay.seen[-1].path == "/uk/intensity/2023-03-15T12:01Z/pt24h"
    assert v.iloc[:3].tolist() == [101, 95, 89]  # actual, not forecast
    assert v.iloc[-1] == 228 and bool(h.estimated.iloc[-1])  # actual null → forecast, estimated
    assert not h.estimated.iloc[:3].any()


def _uk_full_day(start, n=96, base=100):
    import pandas as pd

    slots = pd.date_range(start, periods=n, freq="30min")
    return {
        "data": [
            {
                "from": t.strftime("%Y-%m-%dT%H:%MZ"),
                "to": (t + pd.Timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%MZ"),
                "intensity": {"forecast": base + i, "actual": None, "index": "low"},
            }
            for i, t in enumerate(slots)
        ]
    }


def test_uk_dst_day_full_fw48h(replay, sleeps, api):
    """The UK API is in UTC: a forecast across the 2023-03-26 clock change has 96 regular
    half-hour slots."""
    replay.always["/uk/intensity/"] = api.Reply(200, _uk_full_day("2023-03-25T12:00Z"))
    issued = datetime(2023, 3, 25, 12, 0, tzinfo=UTC)
    fc = uk(replay, sleeps, clock=SimClock(issued)).forecast("UK", issued, timedelta(hours=48))
    v = fc.intensity_g_per_kwh
    assert len(v) == 96 and v.notna().all() and v.tolist() == [100 + i for i in range(96)]
    assert (v.index[1:] - v.index[:-1]).unique().tolist() == [
        __import__("pandas").Timedelta("30min")
    ]


def test_uk_regional_both_shapes(replay, sleeps, api):
    src = uk(replay, sleeps, clock=SimClock(datetime(2023, 3, 10, 11, 45, tzinfo=UTC)))
    fc = src.forecast(
        "North Scotland", datetime(2023, 3, 10, 11, 45, tzinfo=UTC), timedelta(hours=1)
    )
    assert replay.seen[-1].path == "/uk/regional/intensity/2023-03-10T11:45Z/fw48h/regionid/1"
    assert fc.zone == "GB-1" and fc.intensity_g_per_kwh.tolist() == [22]
    assert fc.estimated.all()
    single = {
        "data": {
            "regionid": 2,
            "shortname": "South Scotland",
            "data": [
                {
                    "from": "2023-03-10T11:30Z",
                    "to": "2023-03-10T12:00Z",
                    "intensity": {"forecast": 52, "index": "low"},
                }
            ],
        }
    }
    replay.always["/uk/regional/"] = api.Reply(200, single)
    fc2 = src.forecast("GB-2", datetime(2023, 3, 10, 11, 45, tzinfo=UTC), timedelta(hours=1))
    assert fc2.intensity_g_per_kwh.tolist() == [52]


def test_uk_unknown_zone_no_request(replay, sleeps):
    with pytest.raises(UnknownZoneError, match="GB-13 London"):
        uk(replay, sleeps).forecast(
            "Atlantis", datetime(2023, 3, 14, tzinfo=UTC), timedelta(hours=4)
        )
    assert replay.seen == []
    assert region_of("GB") is None and region_of("gb-13") == 13 and region_of("london") == 13
