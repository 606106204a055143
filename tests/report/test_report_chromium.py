"""Open report.html in headless Chromium, offline, and check every plot decodes and shows."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from greencpn.report.plots import PLOTS

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium not installed (apt-get install chromium; .ci/apt-packages.txt lists it)",
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _images_loaded(dom: str) -> tuple[int, int]:
    body = re.search(r"<body[^>]*>", dom)
    assert body, f"no <body> in Chromium's DOM dump: {dom[:300]!r}"
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    total = re.search(r'data-images-total="(\d+)"', body.group(0))
    assert loaded and total, f"the page script did not run: {body.group(0)}"
    return int(loaded.group(1)), int(total.group(1))


def test_plots_show_in_headless_chromium(tiny_report: dict[str, Any], tmp_path: Path) -> None:
    out = tiny_report["paths"]
    # move the HTML away from the PNG files: it must not need them
    lone = tmp_path / "alone" / "report.html"
    lone.parent.mkdir()
    shutil.copy(out["html"], lone)
    res = _chromium(tmp_path, "--dump-dom", lone.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert _images_loaded(res.stdout) == (len(PLOTS), len(PLOTS))
    assert "Plan against the baselines" in res.stdout
    # the where-and-when plots of issue #10.13 are among them, decoded like the others
    for name in ("work_by_site.png", "cumulative_carbon.png"):
        assert f'data-file="{name}"' in res.stdout
        assert f'alt="{PLOTS[name]}"' in res.stdout

    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", lone.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000


def test_a_broken_image_is_detected(tiny_report: dict[str, Any], tmp_path: Path) -> None:
    """The counter is meaningful: corrupt one embedded PNG and Chromium reports one fewer."""
    html = tiny_report["paths"]["html"].read_text()
    first = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert first
    junk = base64.b64encode(b"not a png at all" * 10).decode()
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace(first.group(1), junk, 1))
    res = _chromium(tmp_path, "--dump-dom", broken.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert _images_loaded(res.stdout) == (len(PLOTS) - 1, len(PLOTS))
