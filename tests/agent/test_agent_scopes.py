"""Issue #9, agent item 15: key scopes, trivial keys, key file ownership."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from greencpn.agent import auth
from greencpn.agent.auth import Verifier
from greencpn.agent.client import AgentAuthError, AgentClient
from greencpn.agent.server import AgentServer, AgentSettings
from greencpn.clock import SystemClock
from greencpn.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def _key_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_telemetry_key_reads_status_but_cannot_change_anything(
    tmp_path: Path, fake_proc: Path, tiny_gpu_cls
) -> None:  # noqa: ANN001
    control, telemetry = auth.generate_key_hex(), auth.generate_key_hex()
    agent_keys = _key_file(tmp_path / "agent.key", f"{control}\n{telemetry} telemetry\n")
    monitor = _key_file(tmp_path / "monitor.key", f"{telemetry} telemetry\n")
    scoped = auth.load_scoped_keys(agent_keys)
    assert [k.scope for k in scoped] == ["control", "telemetry"]
    backend = tiny_gpu_cls()
    settings = AgentSettings(port=0, node_name="n-scope", proc_root=str(fake_proc))
    with AgentServer(backend, scoped, settings) as server:
        reader = AgentClient.from_key_file(server.url, monitor, retries=0)
        assert reader.status()["node"] == "n-scope"
        for call in (
            lambda: reader.set_power_limit_w(150),
            lambda: reader.power("drain"),
            lambda: reader.power("off"),
            lambda: reader.restore_defaults(),
        ):
            with pytest.raises(AgentAuthError) as ei:
                call()
            assert (ei.value.status, ei.value.code) == (403, "forbidden_scope")
            assert "control" in ei.value.fix
        assert backend.calls == [] and reader.status()["drained"] is False
        writer = AgentClient(server.url, bytes.fromhex(control), retries=0)
        assert writer.set_power_limit_w(150, index=0)[0].after == 150.0


def test_unknown_scope_is_refused_with_the_choices(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "k", f"{auth.generate_key_hex()} admin\n")
    with pytest.raises(ConfigError) as ei:
        auth.load_scoped_keys(path)
    assert "telemetry" in str(ei.value) and "control" in str(ei.value)


@pytest.mark.parametrize("line", ["0" * 64, "00" * 40, "ab" * 32])
def test_a_trivial_key_is_refused(tmp_path: Path, line: str) -> None:
    path = _key_file(tmp_path / "k", line + "\n")
    with pytest.raises(ConfigError) as ei:
        auth.load_keys(path)
    assert "keygen" in str(ei.value)
    with pytest.raises(ValueError, match="repeated byte"):
        Verifier(bytes.fromhex(line), SystemClock())


def test_the_agent_refuses_to_start_with_an_all_zero_key(tmp_path: Path) -> None:
    key = _key_file(tmp_path / "zero.key", "0" * 64 + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "greencpn.cli", "agent", "--listen", "127.0.0.1:0"]
        + ["--key-file", str(key), "--gpu", "none"],
        capture_output=True,
        text=True,
        timeout=20,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 2, proc.stderr
    assert "greencpn: error:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = auth.write_key_file(tmp_path / "agent.key")
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError) as ei:
        auth.load_keys(path)
    assert "uid 65534" in str(ei.value)
    assert ei.value.fix == f"chown {os.geteuid()} {path}"
    os.chown(path, 0, 0)
    assert len(auth.load_key(path)) == 32


def test_keygen_writes_a_telemetry_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "greencpn.cli", "agent", "keygen", str(tmp_path / "t.key")]
        + ["--scope", "telemetry"],
        capture_output=True,
        text=True,
        timeout=20,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr
    [key] = auth.load_scoped_keys(tmp_path / "t.key")
    assert key.scope == "telemetry" and len(key.key) == 32
