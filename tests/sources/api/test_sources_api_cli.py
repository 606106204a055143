"""``greencpn forecast`` end to end: replay server, cache, csv, plot, user mistakes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from greencpn.cli import main

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture()
def env(monkeypatch, tmp_path, api):
    monkeypatch.setenv("GREENCPN_ELECTRICITYMAPS_TOKEN", api.EM_TOKEN)
    monkeypatch.delenv("GREENCPN_KEYS_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no stray ~/.config/greencpn/keys.toml
    return tmp_path


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_forecast_live_then_fresh_then_stale(replay, dead_url, env, capsys):
    cache = str(env / "cache.sqlite")
    base = [
        "forecast",
        "--zone",
        "DE",
        "--source",
        "electricitymaps",
        "--hours",
        "48",
        "--issued",
        "2023-05-02T19:55Z",
        "--cache",
        cache,
        "--retries",
        "1",
        "--json",
    ]
    out = run_json(capsys, [*base, "--base-url", replay.url + "/v3", "--now", "2023-05-02T19:55Z"])
    assert out["fallback"] is None and out["stale_age_s"] is None
    assert out["issued_at"] == "2023-05-02T19:52:09Z" and out["source"] == "electricitymaps"
    assert len(out["points"]) == 48
    assert out["points"][0] == {
        "time": "2023-05-02T20:00:00Z",
        "intensity_g_per_kwh": 557.0,
        "estimated": False,
    }
    n = replay.count("/v3/")
    # 10 min later, API unreachable: the fresh cache answers, no request
    out2 = run_json(capsys, [*base, "--base-url", dead_url + "/v3", "--now", "2023-05-02T20:05Z"])
    assert out2["fallback"] is None and out2["points"] == out["points"]
    assert replay.count("/v3/") == n
    # 3 h later, still down: stale cache, marked with its age, error reported
    assert main([*base[:-1], "--base-url", dead_url + "/v3", "--now", "2023-05-02T22:55Z"]) == 0
    text = capsys.readouterr().out
    assert "stale       yes, data 10800 s old" in text
    assert "fallback    cache" in text and "ApiConnectionError" in text
    assert re.search(r"^2023-05-02T20:00Z +557\.0 *$", text, re.M)


def test_forecast_csv_forecaster_and_plot(env, capsys):
    idx = pd.date_range("2023-01-01T00:00Z", periods=72, freq="h")
    csv = env / "carbon.csv"
    pd.DataFrame(
        {
            "datetime_utc": idx.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "DE": [100 + t.hour for t in idx],
            "FR": 50.0,
        }
    ).to_csv(csv, index=False)
    png = env / "out" / "de.png"
    out = run_json(
        capsys,
        [
            "forecast",
            "--zone",
            "DE",
            "--source",
            f"csv:{csv}",
            "--hours",
            "6",
            "--json",
            "--plot",
            str(png),
        ],
    )
    assert out["issued_at"] == "2023-01-04T00:00:00Z"  # just after the file's last hour
    # the default forecaster, with 3 days of history (< a week): its documented persistence
    # fallback repeats the last value, 100 + 23 (the old check sat under a branch for a
    # "seasonal_naive" name that never came)
    assert out["fallback"] == "forecaster:linear-lags"
    assert [p["intensity_g_per_kwh"] for p in out["points"]] == [123.0] * 6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_mistakes_exit_2(env, capsys, tmp_path):
    assert main(["forecast", "--zone", "DE", "--source", "nonsense"]) == 2
    assert "unknown source" in capsys.readouterr().err
    keyfile = tmp_path / "keys.toml"
    keyfile.write_text('[electricitymaps]\ntoken = "k"\n')
    os.chmod(keyfile, 0o644)
    os.environ.pop("GREENCPN_ELECTRICITYMAPS_TOKEN")
    assert (
        main(
            [
                "forecast",
                "--zone",
                "DE",
                "--source",
                "electricitymaps",
                "--keys-file",
                str(keyfile),
                "--no-cache",
            ]
        )
        == 2
    )
    assert f"chmod 600 {keyfile}" in capsys.readouterr().err
    assert main(["forecast", "--zone", "DE", "--source", "electricitymaps", "--no-cache"]) == 2
    assert "GREENCPN_ELECTRICITYMAPS_TOKEN" in capsys.readouterr().err
    assert main(["forecast", "--zone", "DE", "--source", "ukgrid", "--issued", "2023-05-02"]) == 2
    assert "no timezone" in capsys.readouterr().err


def test_forecast_subprocess_ukgrid(replay, env, api):
    """A real ``python -m greencpn.cli`` process against the replay server (UK, no key)."""
    replay.always["/uk/intensity/"] = api.Reply(
        200,
        {
            "data": [
                {
                    "from": t.strftime("%Y-%m-%dT%H:%MZ"),
                    "intensity": {"forecast": 80 + i, "actual": None},
                }
                for i, t in enumerate(pd.date_range("2023-03-14T03:30Z", periods=96, freq="30min"))
            ]
        },
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "greencpn.cli",
            "forecast",
            "--zone",
            "GB",
            "--source",
            "ukgrid",
            "--hours",
            "2",
            "--issued",
            "2023-03-14T03:31Z",
            "--now",
            "2023-03-14T03:31Z",
            "--base-url",
            replay.url + "/uk",
            "--cache",
            str(env / "c.sqlite"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "source      ukgrid  (average, direct)" in proc.stdout
    assert "points      5 x 30 min" in proc.stdout
    assert re.search(r"^2023-03-14T03:30Z +80\.0 *$", proc.stdout, re.M)
    assert replay.count("/uk/intensity/2023-03-14T03:31Z/fw48h") == 1
