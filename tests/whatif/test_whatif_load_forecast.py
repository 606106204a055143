"""Load-forecast idle shutdown (``PeakForecastRule``): no look-ahead, hand-checkable margins,
and the Philly figure against the simple spares rule (real data, skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from greencpn.errors import ConfigError
from greencpn.whatif.node_demand import (
    PeakForecastRule,
    read_node_sequence,
    replay,
    replay_forecast,
    spares_rule,
)


def _wants(series: np.ndarray, **kw: object) -> list[int]:
    rule = PeakForecastRule(**kw)  # type: ignore[arg-type]
    return [rule.want(int(a)) for a in series]


def test_no_look_ahead_poisoned_future_gives_identical_decisions():
    rng = np.random.default_rng(3)
    series = 100 + np.cumsum(rng.integers(-3, 4, size=3000))
    cut = 2000
    poisoned = series.copy()
    poisoned[cut:] = 10**6
    kw = dict(boot_min=10, window_min=30, quantile=0.9, warmup_min=120, refit_min=30)
    a, b = _wants(series, **kw), _wants(poisoned, **kw)
    # want(t) may read minute t itself (it is known then), never t + 1 or later
    assert a[:cut] == b[:cut]
    assert a[cut] != b[cut]


def test_constant_load_keeps_the_peak_and_no_margin_after_warmup():
    wants = _wants(np.full(300, 50), boot_min=10, window_min=20, warmup_min=60, warmup_spares=7)
    assert wants[0] == 57  # warm-up margin
    assert wants[-1] == 50  # measured error of the recent-peak forecast is 0


def test_margin_is_the_quantile_of_the_measured_forecast_error():
    # a step up of 5 nodes every 40 minutes: the recent peak (window 5) misses by 5 in the
    # 10 minutes before each step, by 0 otherwise -> 10/40 of the errors are 5
    series = np.repeat(np.arange(100, 100 + 5 * 30, 5), 40)
    rule = PeakForecastRule(boot_min=10, window_min=5, quantile=0.8, warmup_min=200, refit_min=1)
    for a in series:
        rule.want(int(a))
    assert rule.margins[-1] == pytest.approx(5.0)
    rule = PeakForecastRule(boot_min=10, window_min=5, quantile=0.7, warmup_min=200, refit_min=1)
    for a in series:
        rule.want(int(a))
    assert rule.margins[-1] == pytest.approx(0.0)


def test_forecast_rule_beats_fixed_spares_on_a_bursty_series():
    # busy nodes: a daily pattern with bursts; the forecast rule keeps fewer idle nodes up
    t = np.arange(7 * 1440)
    series = (200 + 60 * np.sin(2 * np.pi * t / 1440)).astype(int)
    fixed = replay(series, 420, spares=spares_rule(2, 0.10), boot_min=10)
    fc = replay_forecast(series, 420, PeakForecastRule(boot_min=10, warmup_min=360), boot_min=10)
    assert fc.energy_saved_pct > fixed.energy_saved_pct
    assert fc.waiting_minutes_pct <= fixed.waiting_minutes_pct + 0.1


def test_bad_quantile_is_a_clear_error():
    with pytest.raises(ConfigError, match="quantile"):
        PeakForecastRule(quantile=1.5)


def test_philly_load_forecast_saves_more_and_waits_less_than_the_simple_rule(shared_data):
    active, total = read_node_sequence(
        shared_data / "traces" / "philly_node_sequence_per_minute.csv"
    )
    simple = replay(active, total, spares=spares_rule(2, 0.10), boot_min=10)
    fc = replay_forecast(active, total, PeakForecastRule(boot_min=10), boot_min=10)
    # measured 7.94 % saved, 0.50 % of minutes waiting (simple rule: 6.64 %, 1.33 %)
    assert fc.energy_saved_pct > simple.energy_saved_pct + 1.0
    assert fc.waiting_minutes_pct <= 0.5
    assert fc.energy_saved_pct >= 7.9
