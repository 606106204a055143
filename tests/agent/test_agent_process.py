"""The real ``greencpn agent`` command in its own process on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greencpn.agent.auth import write_key_file
from greencpn.agent.client import AgentClient, AgentUnavailableError
from tests.agent.agent_process import agent_argv, agent_env, free_port

pytestmark = pytest.mark.timeout(90)


def test_agent_process_serves_signed_requests_and_stops_on_sigterm(tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "agent.key")
    port = free_port()
    env = agent_env()
    proc = subprocess.Popen(
        agent_argv(port, key_file, 3, "--node-name", "gpu-node-7"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = AgentClient.from_key_file(
            f"http://127.0.0.1:{port}", key_file, retries=20, backoff_s=0.1, backoff_max_s=0.3
        )
        status = client.status()  # retried until the process listens
        assert status["node"] == "gpu-node-7" and len(status["gpus"]) == 3
        assert status["gpu_backend"] == "fake"
        changes = client.set_power_limit_w(300, index=2)
        assert changes[0].changed and changes[0].after == 300.0
        assert client.status()["gpus"][2]["power_limit_w"] == 300.0

        call = subprocess.run(
            [
                sys.executable,
                "-m",
                "greencpn.cli",
                "agent",
                "call",
                f"http://127.0.0.1:{port}",
                "--key-file",
                str(key_file),
                "power-limit",
                "50",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert call.returncode == 1
        assert "out_of_range" in call.stderr and "Traceback" not in call.stderr

        call = subprocess.run(
            [
                sys.executable,
                "-m",
                "greencpn.cli",
                "agent",
                "call",
                f"http://127.0.0.1:{port}",
                "--key-file",
                str(key_file),
                "status",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert call.returncode == 0, call.stderr
        assert json.loads(call.stdout)["gpus"][2]["power_limit_w"] == 300.0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0
    assert "serving on http://127.0.0.1" in proc.stderr.read()
    time.sleep(0.1)
    with pytest.raises(AgentUnavailableError):
        AgentClient.from_key_file(f"http://127.0.0.1:{port}", key_file, retries=0).status()
