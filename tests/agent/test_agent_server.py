"""A real agent on 127.0.0.1: refused requests change nothing, valid ones apply."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from greencpn.agent import auth
from greencpn.agent.client import AgentAuthError, AgentClient, AgentRequestError
from greencpn.agent.server import AgentSettings
from greencpn.clock import SystemClock

REPO = Path(__file__).resolve().parents[2]


def _raw(
    url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    """One request over a fresh connection, exactly as given (no signing)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else {}, resp
    finally:
        conn.close()


def _signed(
    key: bytes, method: str, path: str, body: bytes = b"", *, skew_s: float = 0.0, idem: str = ""
) -> dict[str, str]:
    h = auth.signed_headers(
        key, method, path, body, SystemClock().now().timestamp() + skew_s, idempotency_key=idem
    )
    if body:
        h["Content-Type"] = "application/json"
    return h


LIMIT_PATH = "/v1/gpu/power-limit"


def _limit_body(watts: float, index: int | str = 0) -> bytes:
    return json.dumps({"index": index, "power_limit_w": watts}).encode()


def test_valid_signed_request_applies_and_reads_before_writing(agent) -> None:  # noqa: ANN001
    client = AgentClient(agent.url, agent.key)
    [change] = client.set_power_limit_w(200, index=1)
    assert (change.target, change.before, change.after, change.changed) == (
        "gpu1",
        300.0,
        200.0,
        True,
    )
    assert agent.backend.limits_w == [300.0, 200.0]
    changes = client.set_power_limit_w(250)  # all GPUs
    assert [c.after for c in changes] == [250.0, 250.0]
    assert agent.backend.limits_w == [250.0, 250.0]
    status = client.status()
    assert status["node"] == "node001"
    assert [g["power_limit_w"] for g in status["gpus"]] == [250.0, 250.0]
    assert status["gpu_power_w"] == 250.0  # tiny backend draws half its limit
    assert status["gpu_energy_j"] == 3000.0
    assert status["uptime_s"] == 12345.67
    assert status["running_work"]["count"] == 0
    assert status["time"].endswith("Z")


def test_unsigned_wrongly_signed_stale_and_replayed_are_refused_and_change_nothing(agent) -> None:  # noqa: ANN001
    url, key, backend = agent.url, agent.key, agent.backend
    body = _limit_body(150)
    refused: dict[str, tuple[int, dict[str, Any]]] = {}

    status, data, resp = _raw(url, "POST", LIMIT_PATH, body, {"Content-Type": "application/json"})
    refused["unsigned"] = (status, data)
    assert resp.getheader("WWW-Authenticate") == auth.SCHEME

    wrong_key = bytes(32)
    status, data, _ = _raw(
        url, "POST", LIMIT_PATH, body, _signed(wrong_key, "POST", LIMIT_PATH, body)
    )
    refused["wrong key"] = (status, data)

    h = _signed(key, "POST", LIMIT_PATH, _limit_body(290))  # signed for 290 W, sent with 150 W
    status, data, _ = _raw(url, "POST", LIMIT_PATH, body, h)
    refused["tampered body"] = (status, data)

    h = _signed(key, "POST", "/v1/power", body)  # signed for another path
    status, data, _ = _raw(url, "POST", LIMIT_PATH, body, h)
    refused["other path"] = (status, data)

    h = dict(_signed(key, "POST", LIMIT_PATH, body))
    h[auth.HEADER_SIGNATURE] = h[auth.HEADER_SIGNATURE][:-1] + (
        "0" if h[auth.HEADER_SIGNATURE][-1] != "0" else "1"
    )
    status, data, _ = _raw(url, "POST", LIMIT_PATH, body, h)
    refused["flipped signature"] = (status, data)

    for skew in (-31.0, 31.0):
        status, data, _ = _raw(
            url, "POST", LIMIT_PATH, body, _signed(key, "POST", LIMIT_PATH, body, skew_s=skew)
        )
        refused[f"stale {skew:+g} s"] = (status, data)

    for what, (status, data) in refused.items():
        assert status == 401, what
        assert data["error"]["code"] in {"unsigned", "bad_signature", "stale"}, what
    assert refused["stale -31 s"][1]["error"]["code"] == "stale"
    assert "NTP" in refused["stale +31 s"][1]["error"]["fix"]
    assert backend.limits_w == [300.0, 300.0]
    assert backend.calls == []

    # Replay: a captured valid request applied once, then replayed after another change.
    captured = _signed(key, "POST", LIMIT_PATH, _limit_body(200))
    status, data, _ = _raw(url, "POST", LIMIT_PATH, _limit_body(200), captured)
    assert status == 200 and backend.limits_w == [200.0, 300.0]
    AgentClient(url, key).set_power_limit_w(250, index=0)
    assert backend.limits_w == [250.0, 300.0]
    status, data, _ = _raw(url, "POST", LIMIT_PATH, _limit_body(200), captured)
    assert (status, data["error"]["code"]) == (401, "replayed")
    assert backend.limits_w == [250.0, 300.0]
    assert len(backend.calls) == 2


def test_client_with_wrong_key_or_skewed_clock_gets_permanent_error_with_fix(agent) -> None:  # noqa: ANN001
    from greencpn.errors import PermanentError

    with pytest.raises(AgentAuthError) as ei:
        AgentClient(agent.url, bytes(32)).status()
    assert isinstance(ei.value, PermanentError)
    assert ei.value.status == 401 and ei.value.code == "bad_signature"
    assert "key file" in ei.value.fix

    class Behind:
        def now(self):  # noqa: ANN202
            return SystemClock().now() - timedelta(seconds=45)

    with pytest.raises(AgentAuthError) as ei:
        AgentClient(agent.url, agent.key, clock=Behind()).set_power_limit_w(150)
    assert ei.value.code == "stale" and "NTP" in ei.value.fix
    assert agent.backend.limits_w == [300.0, 300.0]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"index": 0, "power_limit_w": 99.0}, "out_of_range"),
        ({"index": 0, "power_limit_w": 301}, "out_of_range"),
        ({"index": "all", "power_limit_w": 1e9}, "out_of_range"),
        ({"index": 7, "power_limit_w": 200}, "unknown_gpu"),
        ({"index": -1, "power_limit_w": 200}, "unknown_gpu"),
        ({"index": 0, "power_limit_w": "200"}, "bad_value"),
        ({"index": 0, "power_limit_w": True}, "bad_value"),
        ({"index": 0}, "bad_value"),
        ({"index": 0, "power_limit_w": 200, "force": True}, "bad_value"),
    ],
)
def test_out_of_range_and_bad_values_are_refused_with_400(agent, payload, code) -> None:  # noqa: ANN001
    with pytest.raises(AgentRequestError) as ei:
        AgentClient(agent.url, agent.key).request("POST", LIMIT_PATH, payload)
    assert (ei.value.status, ei.value.code) == (400, code)
    assert agent.backend.limits_w == [300.0, 300.0]
    assert agent.backend.calls == []


def test_non_finite_number_and_bad_json_are_refused(agent) -> None:  # noqa: ANN001
    for body in (b'{"index":0,"power_limit_w":NaN}', b"[1,2]", b"{not json"):
        status, data, _ = _raw(
            agent.url, "POST", LIMIT_PATH, body, _signed(agent.key, "POST", LIMIT_PATH, body)
        )
        assert status == 400, body
        assert data["error"]["code"] in {"bad_value", "bad_json"}
    assert agent.backend.calls == []


def test_oversized_body_is_refused_before_reading(agent) -> None:  # noqa: ANN001
    body = b"{" + b" " * (70 * 1024) + b"}"
    status, data, resp = _raw(
        agent.url, "POST", LIMIT_PATH, body, _signed(agent.key, "POST", LIMIT_PATH, body)
    )
    assert (status, data["error"]["code"]) == (413, "too_large")
    assert resp.getheader("Connection") == "close"


def test_unknown_path_and_wrong_method_only_after_authentication(agent) -> None:  # noqa: ANN001
    status, data, _ = _raw(agent.url, "GET", "/v1/nothing")
    assert status == 401  # nothing is revealed before authentication
    client = AgentClient(agent.url, agent.key)
    with pytest.raises(AgentRequestError) as ei:
        client.request("GET", "/v1/nothing")
    assert ei.value.status == 404
    with pytest.raises(AgentRequestError) as ei:
        client.request("GET", LIMIT_PATH)
    assert ei.value.status == 405


def test_clocks_and_restore_defaults(agent) -> None:  # noqa: ANN001
    client = AgentClient(agent.url, agent.key)
    [c] = client.lock_clocks_mhz(900, 1410, index=0)
    assert c.changed and agent.backend.clocks[0] == (900, 1410)
    with pytest.raises(AgentRequestError) as ei:
        client.lock_clocks_mhz(900, 2000, index=1)
    assert ei.value.code == "out_of_range" and agent.backend.clocks[1] is None
    assert [c.changed for c in client.reset_clocks()] == [True, False]
    client.set_power_limit_w(150)
    changes = client.restore_defaults()
    assert [c.after for c in changes] == [300.0, 300.0]


def test_keep_alive_connection_serves_many_requests(agent) -> None:  # noqa: ANN001
    parts = urlsplit(agent.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        for _ in range(20):
            conn.request("GET", "/v1/status", headers=_signed(agent.key, "GET", "/v1/status"))
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            assert not resp.will_close
    finally:
        conn.close()


def test_defaults_bind_loopback() -> None:
    from greencpn.agent.cli import parse_listen

    assert AgentSettings().host == "127.0.0.1"
    assert parse_listen("127.0.0.1:9123") == ("127.0.0.1", 9123)
    assert parse_listen("[::1]:9123") == ("::1", 9123)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "greencpn.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def test_agent_refuses_to_start_with_a_key_file_readable_by_others(tmp_path: Path) -> None:
    key = auth.write_key_file(tmp_path / "agent.key")
    key.chmod(0o644)
    proc = _cli("agent", "--listen", "127.0.0.1:0", "--key-file", str(key), "--gpu", "none")
    assert proc.returncode == 2
    assert f"chmod 600 {key}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_keygen_cli_writes_a_0600_key(tmp_path: Path) -> None:
    proc = _cli("agent", "keygen", str(tmp_path / "new.key"))
    assert proc.returncode == 0, proc.stderr
    assert ((tmp_path / "new.key").stat().st_mode & 0o777) == 0o600
    assert len(auth.load_key(tmp_path / "new.key")) == 32
    again = _cli("agent", "keygen", str(tmp_path / "new.key"))
    assert again.returncode == 2 and "--force" in again.stderr


def test_refused_requests_are_logged_but_a_flood_is_not(agent, caplog) -> None:  # noqa: ANN001
    import logging

    with caplog.at_level(logging.WARNING, logger="greencpn.agent.server"):
        for _ in range(50):
            status, _, _ = _raw(agent.url, "GET", "/v1/status")
            assert status == 401
    refusals = [r for r in caplog.records if "refused GET /v1/status" in r.getMessage()]
    assert len(refusals) == 1
    assert "request is not signed" in refusals[0].getMessage()


def test_connections_beyond_the_cap_are_closed(key_file, fake_proc) -> None:  # noqa: ANN001
    """At the cap, a new connection is closed only when every open one is a key holder's
    (unauthenticated ones are evicted instead: tests/agent/test_agent_load.py)."""
    import socket as socketlib

    from greencpn.agent.server import AgentServer

    key = auth.load_key(key_file)
    settings = AgentSettings(port=0, proc_root=str(fake_proc), max_connections=2)
    with AgentServer(None, key, settings) as server:
        held = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=5) for _ in range(2)]
        try:
            for conn in held:  # two authenticated keep-alive connections fill the cap
                conn.request("GET", "/v1/status", headers=_signed(key, "GET", "/v1/status"))
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200 and not resp.will_close
            extra = socketlib.create_connection(("127.0.0.1", server.port), timeout=5)
            assert extra.recv(1) == b""  # closed by the agent without an answer
            extra.close()
        finally:
            for conn in held:
                conn.close()
        time.sleep(0.3)  # slots are given back when connections end
        assert AgentClient(server.url, key).status()["gpus"] == []
