"""whatif.html: self-contained, every plot decodes (headless Chromium), labels say what they
are (the perfect-foresight oracle is called so, savings name their denominator)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.attribution import attribute, attribution_specs
from greencpn.whatif.engine import ReplaySettings, run_replay
from greencpn.whatif.metrics import compare
from greencpn.whatif.report import display_name, monthly_saving_pct, render_html, write_report

from .conftest import T0, three_jobs, two_site_fleet, two_zone_series

CHROMIUM = Path("/usr/bin/chromium")
POLS = ["carbon-agnostic", "lets-wait-awhile", "lets-wait-awhile:perfect=1"]


@pytest.fixture(scope="module")
def replay_result():
    series = two_zone_series()
    fc, act = ReplayCarbonSource(series), ReplayCarbonSource(series, mode="perfect")
    st = ReplaySettings(T0, T0 + timedelta(hours=4), drain=timedelta(hours=20))
    runs = [
        run_replay(two_site_fleet(), three_jobs(), p, forecasts=fc, actuals=act, settings=st)
        for p in POLS
    ]
    table = compare(runs)
    # attribution from rows with the hand-checked carbon of tests/whatif/test_whatif_milp.py
    kg = {"none": 0.160, "time": 0.124, "space": 0.120, "power": 0.160, "caps": 0.160, "all": 0.066}
    rows = [
        {"policy": s, "carbon_kg": kg[s.rsplit("=", 1)[1]]}
        for s in attribution_specs("milp:perfect=1")
    ]
    att = attribute(rows, "milp:perfect=1")
    return runs, table, att


def test_labels_say_what_they_are(replay_result):
    runs, table, att = replay_result
    assert table["oracle"] == "lets-wait-awhile:perfect=1"
    html = render_html(runs, table, {"from": "a", "to": "b"}, att)
    assert "lets-wait-awhile:perfect=1 (perfect-foresight oracle)" in html
    assert "saved % (of baseline carbon)" in html
    assert "denominator of <em>saved %</em>" in html
    assert "(baseline − run) / (baseline − oracle)" in html
    assert "alone savings need not sum to the all-lever saving" in html
    assert display_name("milp:perfect=1", None) == "milp:perfect=1 (perfect foresight)"
    assert display_name("milp", "lets-wait-awhile:perfect=1") == "milp"
    # the attribution table carries the hand numbers (kg): time 0.036, space 0.040
    assert "<td>time</td><td class='num'>0.036</td>" in html
    assert "<td>space</td><td class='num'>0.040</td>" in html


def test_monthly_saving_denominator_is_the_baseline_month(replay_result):
    runs, _, _ = replay_result
    by = monthly_saving_pct(runs, "carbon-agnostic")
    base = runs[0].carbon_kg.sum()
    lwa = runs[1].carbon_kg.sum()
    assert by["lets-wait-awhile"]["2024-01"] == pytest.approx(100 * (base - lwa) / base)


def test_html_is_self_contained_and_chromium_shows_every_plot(replay_result, tmp_path):
    runs, table, att = replay_result
    path = write_report(runs, table, tmp_path / "o", {"from": "a", "to": "b"}, att)
    html = path.read_text()
    assert 'src="http' not in html and "<link" not in html and "url(" not in html
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(srcs) == 5  # cumulative, monthly, trade-off, attribution, week
    for src in srcs:
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium not installed (.ci/apt-packages.txt lists chromium)")
    lone = tmp_path / "alone" / "whatif.html"
    lone.parent.mkdir()
    shutil.copy(path, lone)
    res = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--virtual-time-budget=5000",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            lone.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, res.stdout[:300]
    assert 'data-images-loaded="5"' in body.group(0) and 'data-images-total="5"' in body.group(0)
    # a corrupted image is counted as not loaded (the counter can fail)
    broken = tmp_path / "broken.html"
    broken.write_text(
        html.replace(srcs[0].split(",", 1)[1], base64.b64encode(b"junk" * 9).decode(), 1)
    )
    res = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--dump-dom",
            broken.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 'data-images-loaded="4"' in res.stdout
