"""SQLite series cache (TTL, stale age, budget) and API keys (env, 0600 key file, never logged)."""

from __future__ import annotations

import logging
import os
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from greencpn.clock import SimClock
from greencpn.errors import ConfigError
from greencpn.sources.base import CarbonSeries
from greencpn.sources.cache import SeriesCache, mark_stale
from greencpn.sources.electricitymaps import ElectricityMapsSource
from greencpn.sources.http import AuthError, BudgetExceededError, HttpClient, RetryPolicy
from greencpn.sources.keys import KeyStore, Secret
from greencpn.sources.watttime import WattTimeSource

T0 = datetime(2023, 5, 2, 19, 55, tzinfo=UTC)


def small_series(issued=None) -> CarbonSeries:
    idx = pd.date_range("2023-05-02T20:00Z", periods=4, freq="h")
    return CarbonSeries(
        zone="DE",
        intensity_g_per_kwh=pd.Series([557.0, 552.0, float("nan"), 527.5], index=idx),
        source="electricitymaps",
        issued_at=issued,
        estimated=pd.Series([False, False, True, False], index=idx),
        quantiles={0.9: pd.Series([600.0, 601, 602, 603], index=idx)},
    )


# ---------------------------------------------------------------------------------- cache
def test_cache_roundtrip_exact(tmp_path):
    clock = SimClock(T0)
    cache = SeriesCache(tmp_path / "c.sqlite", clock)
    s = small_series(issued=datetime(2023, 5, 2, 19, 52, 9, tzinfo=UTC))
    cache.put("electricitymaps", "DE", "average", "forecast", "k1", s)
    hit = cache.get("electricitymaps", "DE", "average", "forecast", "k1")
    assert hit is not None and hit.fresh and hit.age_s == 0
    got = hit.series
    assert got.intensity_g_per_kwh.index.equals(s.intensity_g_per_kwh.index)
    assert str(got.intensity_g_per_kwh.index.tz) == "UTC"
    np.testing.assert_array_equal(got.intensity_g_per_kwh.to_numpy(), [557.0, 552.0, np.nan, 527.5])
    assert got.estimated.tolist() == [False, False, True, False]
    assert got.issued_at == s.issued_at and got.zone == "DE" and got.source == "electricitymaps"
    assert got.quantiles[0.9].tolist() == [600, 601, 602, 603]
    assert cache.get("electricitymaps", "DE", "marginal", "forecast", "k1") is None


def test_cache_ttl_stale_age_and_persistence(tmp_path):
    clock = SimClock(T0)
    path = tmp_path / "c.sqlite"
    cache = SeriesCache(path, clock, ttl_s={"forecast": 600})
    cache.put("electricitymaps", "DE", "average", "forecast", "k1", small_series())
    clock.advance(timedelta(seconds=599))
    assert cache.latest("electricitymaps", "DE", "average", "forecast").fresh
    clock.advance(timedelta(seconds=2))
    cache.close()
    again = SeriesCache(path, clock, ttl_s={"forecast": 600})  # on disk: survives a restart
    hit = again.latest("electricitymaps", "DE", "average", "forecast")
    assert hit is not None and not hit.fresh and hit.age_s == 601
    stale = mark_stale(hit)
    assert stale.fallback == "cache" and stale.stale_age_s == 601
    # `covering` excludes rows that end before the asked time
    assert (
        again.latest(
            "electricitymaps",
            "DE",
            "average",
            "forecast",
            covering=datetime(2023, 5, 3, tzinfo=UTC),
        )
        is None
    )


def test_budget_per_source_per_day(tmp_path):
    clock = SimClock(datetime(2023, 5, 2, 23, 0, tzinfo=UTC))
    cache = SeriesCache(tmp_path / "c.sqlite", clock, daily_budget={"watttime": 2})
    assert cache.consume_budget("watttime") == 1
    assert cache.consume_budget("watttime") == 2
    with pytest.raises(BudgetExceededError) as err:
        cache.consume_budget("watttime")
    assert err.value.retry_after_s == 3600  # until 00:00 UTC
    assert cache.budget_used("watttime") == 2
    assert cache.consume_budget("ukgrid") == 1  # other sources are not limited
    clock.advance(timedelta(hours=1, seconds=1))
    assert cache.consume_budget("watttime") == 1  # a new UTC day


def test_cached_lookup_is_fast(tmp_path):
    """Smoke check (the bench measures it properly): a 48-point lookup takes well under 5 ms."""
    import time

    clock = SimClock(T0)
    cache = SeriesCache(tmp_path / "c.sqlite", clock)
    idx = pd.date_range("2023-05-02T20:00Z", periods=48, freq="h")
    s = CarbonSeries(zone="DE", intensity_g_per_kwh=pd.Series(range(48), index=idx, dtype=float))
    for k in range(50):
        cache.put("em", "DE", "average", "forecast", f"k{k}", s)
    best = 1.0
    for _ in range(20):
        t = time.perf_counter()
        cache.latest("em", "DE", "average", "forecast", covering=T0)
        best = min(best, time.perf_counter() - t)
    assert best < 0.005


# ----------------------------------------------------------------------------------- keys
def test_secret_never_prints():
    s = Secret("abc123")
    assert "abc123" not in repr(s) and "abc123" not in str(s) and "abc123" not in f"{s}"
    assert s.reveal() == "abc123"


def test_key_from_env_then_file(tmp_path):
    keyfile = tmp_path / "keys.toml"
    keyfile.write_text(
        '[electricitymaps]\ntoken = "from-file"\n[watttime]\nusername = "u"\npassword = "p"\n'
    )
    os.chmod(keyfile, 0o600)
    ks = KeyStore.from_env({"GREENCPN_ELECTRICITYMAPS_TOKEN": "from-env"}, key_file=keyfile)
    assert ks.require("electricitymaps", "token").reveal() == "from-env"
    ks2 = KeyStore.from_env({"GREENCPN_KEYS_FILE": str(keyfile)})
    assert ks2.require("electricitymaps", "token").reveal() == "from-file"
    assert ks2.require("watttime", "password").reveal() == "p"


def test_key_file_must_be_private(tmp_path):
    keyfile = tmp_path / "keys.toml"
    keyfile.write_text('[electricitymaps]\ntoken = "leaky"\n')
    os.chmod(keyfile, 0o644)
    ks = KeyStore.from_env({}, key_file=keyfile)
    with pytest.raises(ConfigError) as err:
        ks.get("electricitymaps", "token")
    assert f"chmod 600 {keyfile}" in str(err.value) and "0644" in str(err.value)
    assert "leaky" not in str(err.value)


def test_missing_key_says_how(tmp_path):
    ks = KeyStore.from_env({}, key_file=None)
    ks = KeyStore(env={}, key_file=None)
    with pytest.raises(ConfigError, match="export GREENCPN_ELECTRICITYMAPS_TOKEN"):
        ks.require("electricitymaps", "token")
    with pytest.raises(ConfigError, match="key file not found"):
        KeyStore.from_env({"GREENCPN_KEYS_FILE": str(tmp_path / "nope.toml")})


def test_keys_never_logged(replay, caplog, tmp_path, api):
    """Run successful and failing requests with DEBUG logging on (ours and urllib3's): no
    secret appears in any log record or error message."""
    caplog.set_level(logging.DEBUG)
    keyfile = tmp_path / "keys.toml"
    keyfile.write_text(
        f'[electricitymaps]\ntoken = "{api.EM_TOKEN}"\n[watttime]\n'
        f'username = "{api.WT_USER}"\npassword = "{api.WT_PASSWORD}"\n'
    )
    os.chmod(keyfile, 0o600)
    keys = KeyStore.from_env({}, key_file=keyfile)
    clock = SimClock(T0)

    def http(name):
        return HttpClient(
            name,
            RetryPolicy(max_attempts=2),
            sleep=lambda s: None,
            clock=clock,
            rng=random.Random(1),
        )

    emsrc = ElectricityMapsSource(
        base_url=replay.url + "/v3", keys=keys, clock=clock, http=http("electricitymaps")
    )
    emsrc.forecast("DE", T0, timedelta(hours=24))
    replay.faults["/v3/carbon-intensity/forecast"] = [api.Reply(500, {"error": "x"})]
    emsrc.forecast("DE", T0, timedelta(hours=24))
    wtsrc = WattTimeSource(
        base_url=replay.url,
        keys=keys,
        clock=SimClock(datetime(2022, 7, 15, tzinfo=UTC)),
        http=http("watttime"),
    )
    wtsrc.history(
        "CAISO_NORTH", datetime(2022, 7, 15, tzinfo=UTC), datetime(2022, 7, 15, 0, 10, tzinfo=UTC)
    )
    messages = []
    bad = ElectricityMapsSource(
        api.EM_TOKEN + "x", base_url=replay.url + "/v3", clock=clock, http=http("electricitymaps")
    )
    with pytest.raises(AuthError) as err:
        bad.forecast("DE", T0, timedelta(hours=24))
    messages.append(str(err.value))
    wtbad = WattTimeSource(
        api.WT_USER, api.WT_PASSWORD + "x", base_url=replay.url, clock=clock, http=http("watttime")
    )
    with pytest.raises(AuthError) as err2:
        wtbad.login()
    messages.append(str(err2.value))
    text = caplog.text + "\n".join(messages) + repr(emsrc.__dict__) + repr(wtsrc.__dict__)
    assert "HTTP 500" in caplog.text or "retry" in caplog.text  # the capture did capture
    assert "urllib3" in caplog.text
    for secret in (api.EM_TOKEN, api.WT_PASSWORD, "wt-jwt-1"):
        assert secret not in text
