"""The test suite leaves nothing behind in the temporary folder: the property tests' hypothesis
home (tests/optimize/test_plan_properties.py) is removed when the run ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_property_tests_leave_no_hypothesis_home(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "GREENCPN_HYPOTHESIS_EXAMPLES": "1"}
    # collecting the module makes the folder (its import does); one example runs in it
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "tests/optimize/test_plan_properties.py",
            "-k",
            "executed_plan_physics",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout, proc.stdout[-2000:]
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith("greencpn-hypothesis-"))
    assert left == [], left
