"""Issue #10 item 4: ``greencpn forecast --best-window DURATION --before DEADLINE``."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from greencpn.cli import main
from greencpn.errors import ConfigError
from greencpn.sources.cli import best_window, parse_duration

H = 3600.0


def _plain(values: list[float], quantiles: dict[str, list[float]] | None = None) -> dict:
    return {
        "step_s": H,
        "points": [(i * H, v, False) for i, v in enumerate(values)],
        "quantiles": quantiles or {},
    }


def test_hand_checked_windows() -> None:
    p = _plain([300, 200, 100, 150, 400])
    b = best_window(p, 2 * H)  # means 250, 150, 125, 275
    assert b["start"] == "1970-01-01T02:00:00Z" and b["mean_g_per_kwh"] == 125.0
    assert b["now_mean_g_per_kwh"] == 250.0 and b["saving_g_per_kwh"] == 125.0
    assert b["saving_pct_vs_now"] == 50.0 and b["candidates"] == 4 and b["band"] is None
    # 1.5 h: the second slot counts half → (100 + 0.5·150) / 1.5 = 116.67 at 02:00
    b = best_window(p, 1.5 * H)
    assert b["start"] == "1970-01-01T02:00:00Z" and b["mean_g_per_kwh"] == pytest.approx(116.67)
    assert b["end"] == "1970-01-01T03:30:00Z"
    # must end by 03:00 → starts 00:00 or 01:00 only
    b = best_window(p, 2 * H, before_ts=3 * H, power_kw=10.0)
    assert b["start"] == "1970-01-01T01:00:00Z" and b["candidates"] == 2
    assert b["saving_kg"] == pytest.approx((250 - 150) * 20 / 1000)


def test_band_from_quantiles() -> None:
    vals = [300.0, 200.0, 100.0, 150.0, 400.0]
    p = _plain(vals, {"0.1": [v - 10 for v in vals], "0.9": [v + 10 for v in vals]})
    b = best_window(p, 2 * H)
    assert b["band"]["quantiles"] == [0.1, 0.9]
    assert b["band"]["saving_g_per_kwh"] == [105.0, 145.0]  # 125 ∓ (10 + 10)


def test_no_window_fits_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"no 6 h window fits"):
        best_window(_plain([1.0, 2.0, 3.0]), 6 * H)


@pytest.mark.parametrize(
    ("text", "secs"), [("4h", 4 * H), ("90min", 5400.0), ("1.5h", 5400.0), ("2d", 48 * H)]
)
def test_durations(text: str, secs: float) -> None:
    assert parse_duration(text) == secs


def test_bad_duration() -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("four hours")


@pytest.fixture()
def env(monkeypatch, tmp_path, api):
    monkeypatch.setenv("GREENCPN_ELECTRICITYMAPS_TOKEN", api.EM_TOKEN)
    monkeypatch.delenv("GREENCPN_KEYS_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_cli_best_window_on_the_recorded_em_forecast(replay, env, api, capsys) -> None:
    argv = [
        "forecast", "--zone", "DE", "--source", "electricitymaps", "--issued",
        "2023-05-02T19:55Z", "--now", "2023-05-02T19:55Z", "--base-url", replay.url + "/v3",
        "--no-cache", "--retries", "1", "--best-window", "3h", "--before", "2023-05-03T20:00Z",
        "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    b = out["best_window"]
    # independent check: rolling 3-h means of the recorded forecast from 20:00 to 17:00 next day
    rec = api.load("electricitymaps_v3_carbon-intensity_forecast_DE_2023-05-02.json")["forecast"]
    s = pd.Series(
        [r["carbonIntensity"] for r in rec],
        index=pd.to_datetime([r["datetime"] for r in rec], utc=True),
    )
    s = s[(s.index >= "2023-05-02T20:00Z") & (s.index < "2023-05-03T20:00Z")]
    means = s.rolling(3).mean().shift(-2).dropna()
    assert b["candidates"] == len(means) == 22
    assert b["start"] == means.idxmin().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert b["mean_g_per_kwh"] == pytest.approx(means.min(), abs=0.01)
    assert b["now_mean_g_per_kwh"] == pytest.approx(means.iloc[0], abs=0.01)
    assert b["band"] is None  # a live point forecast has no quantiles
    capsys.readouterr()
    argv.remove("--json")
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "best window for a 3 h job" in text and "none: the source gives a point forecast" in text


def test_json_points_carry_the_plotted_quantiles(tmp_path, capsys) -> None:
    idx = pd.date_range("2023-01-01T00:00Z", periods=24 * 21, freq="h")
    vals = [200 + 100 * ((t.hour - 12) / 12) ** 2 + (t.day_of_year % 3) for t in idx]
    f = tmp_path / "c.csv"
    pd.DataFrame({"datetime_utc": idx.strftime("%Y-%m-%d %H:%M:%S"), "DE": vals}).to_csv(
        f, index=False
    )
    argv = ["forecast", "--zone", "DE", "--source", f"csv:{f}", "--no-cache", "--hours", "24"]
    assert main([*argv, "--best-window", "4h", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    q = out["points"][0]["quantiles"]
    assert set(q) >= {"0.1", "0.9"} and q["0.1"] <= out["points"][0]["intensity_g_per_kwh"]
    band = out["best_window"]["band"]
    assert band is not None and band["saving_g_per_kwh"][0] <= band["saving_g_per_kwh"][1]
