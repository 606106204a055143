"""``greencpn agent --gpu nvml`` in its own process: the real pynvml bindings against the fake
``libnvidia-ml.so.1`` that tests/actuate/gpu builds from C (found through LD_LIBRARY_PATH)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from greencpn.agent.auth import write_key_file
from greencpn.agent.client import AgentClient, AgentRequestError

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
CTL = REPO / "tests" / "actuate" / "gpu" / "fake_nvml" / "fake_nvml_ctl.py"


def _ctl() -> ModuleType:
    name = "greencpn_tests_fake_nvml_ctl"  # the name tests/actuate/gpu uses: one module
    if name in sys.modules:
        return sys.modules[name]
    if not CTL.exists():
        pytest.skip(f"{CTL} not found (the fake NVML library lives with the GPU tests)")
    spec = importlib.util.spec_from_file_location(name, CTL)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_agent_with_nvml_backend_over_the_fake_driver(tmp_path: Path) -> None:
    ctl = _ctl()
    try:
        lib = ctl.build(tmp_path / "lib")  # only built here; never loaded into this process
    except ctl.BuildError as exc:
        pytest.skip(f"cannot build the fake libnvidia-ml.so.1: {exc}")
    key_file = write_key_file(tmp_path / "agent.key")
    port = _free_port()
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        LD_LIBRARY_PATH=str(lib.parent),
        FAKE_NVML_GPUS="4",
        FAKE_NVML_STATE=str(tmp_path / "nvml.state"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "greencpn.cli", "agent", "--listen", f"127.0.0.1:{port}",
         "--key-file", str(key_file), "--gpu", "nvml", "--node-name", "nvml-node"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        client = AgentClient.from_key_file(
            f"http://127.0.0.1:{port}", key_file, retries=25, backoff_s=0.1, backoff_max_s=0.3
        )
        status = client.status()
        assert status["gpu_backend"] == "nvml"
        gpus = status["gpus"]
        assert [g["index"] for g in gpus] == [0, 1, 2, 3]
        assert gpus[0]["name"] == "NVIDIA A100-SXM4-40GB"
        assert gpus[0]["uuid"].startswith("GPU-fa4e")
        assert [g["power_limit_w"] for g in gpus] == [400.0] * 4
        assert (gpus[0]["power_limit_min_w"], gpus[0]["power_limit_max_w"]) == (100.0, 400.0)
        assert [g["energy_j"] for g in gpus] == [1000.0, 2000.0, 3000.0, 4000.0]
        assert status["gpu_power_w"] == 1000.0  # 4 x min(demand 250 W, limit 400 W)

        [change] = client.set_power_limit_w(200, index=2)
        assert (change.before, change.after, change.changed) == (400.0, 200.0, True)
        assert client.set_power_limit_w(200, index=2)[0].changed is False  # read before write
        after = client.status()["gpus"]
        assert [g["power_limit_w"] for g in after] == [400.0, 400.0, 200.0, 400.0]
        assert after[2]["power_w"] == 200.0  # the fake draws min(demand, limit)
        with pytest.raises(AgentRequestError) as ei:
            client.set_power_limit_w(450, index=1)
        assert ei.value.code == "out_of_range"
        assert [c.after for c in client.restore_defaults() if c.what == "power_limit_w"][2] == 400.0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read()
