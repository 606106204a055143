"""Real NVIDIA hardware (opt in: --run-gpu or GREENCPN_RUN_GPU=1).

Each test runs in a subprocess so the real driver is loaded there, never in the pytest process
that holds the fake libnvidia-ml.so.1. Writes only re-apply the current limit (a no-op) unless
GREENCPN_GPU_WRITE=1, in which case GPU 0 is capped to its minimum and restored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.gpu


def _py(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_real_gpus_list_read_and_noop_write():
    out = _py(
        "import json\nfrom dataclasses import asdict\n"
        "from greencpn.actuate.gpu import get_gpu_backend\n"
        "with get_gpu_backend('nvml') as b:\n"
        "    gpus = b.list_gpus()\n"
        "    ch = b.set_power_limit_w(0, gpus[0].power_limit_current_w)\n"
        "    print(json.dumps({'gpus': [asdict(g) for g in gpus], 'noop': asdict(ch),\n"
        "                      'power_w': b.power_w(0), 'energy_j': b.energy_j(0)}))\n"
    )
    assert out["gpus"], "no GPU listed"
    for g in out["gpus"]:
        assert 0 < g["power_limit_min_w"] <= g["power_limit_current_w"] <= g["power_limit_max_w"]
        assert g["uuid"].startswith(("GPU-", "MIG-"))
    assert out["noop"]["changed"] is False
    assert out["power_w"] > 0 and out["energy_j"] > 0


@pytest.mark.skipif(
    os.environ.get("GREENCPN_GPU_WRITE") != "1",
    reason="changes a real power limit: set GREENCPN_GPU_WRITE=1 (needs root)",
)
def test_real_gpu_cap_and_restore():
    out = _py(
        "import json\nfrom greencpn.actuate.gpu import get_gpu_backend\n"
        "with get_gpu_backend('nvml') as b:\n"
        "    g = b.list_gpus()[0]\n"
        "    b.set_power_limit_w(0, g.power_limit_min_w)\n"
        "    capped = b.power_limit_w(0)\n"
        "    b.restore_defaults()\n"
        "    print(json.dumps({'min': g.power_limit_min_w, 'capped': capped,\n"
        "                      'restored': b.power_limit_w(0),\n"
        "                      'default': g.power_limit_default_w}))\n"
    )
    assert out["capped"] == out["min"] and out["restored"] == out["default"]
