"""packaging/greencpn.service: systemd accepts it, and it says what docs/daemon.md says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "greencpn.service"


def _keys() -> dict[str, str]:
    out = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def test_unit_runs_greencpn_run_and_stops_it_cleanly() -> None:
    k = _keys()
    assert k["ExecStart"].split()[1:3] == ["run", "--config"]
    assert k["KillMode"] == "control-group" and k["KillSignal"] == "SIGTERM"
    assert k["Restart"] == "on-failure" and k["RestartPreventExitStatus"] == "2"
    assert k["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(k["TimeoutStopSec"]) > 120  # longer than the default stop_timeout_s


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "greencpn"
    if not exe.exists():
        pytest.skip("greencpn entry point not installed in this environment")
    unit = tmp_path / "greencpn.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/greencpn", str(exe)))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
