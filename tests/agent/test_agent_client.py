"""The controller's client: timeouts, retries with backoff, idempotent POST retries, typed errors."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from greencpn.agent import auth
from greencpn.agent.client import (
    AgentAuthError,
    AgentClient,
    AgentUnavailableError,
)
from greencpn.errors import TemporaryError

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_agent_is_retried_with_backoff_then_temporary_error() -> None:
    sleeps: list[float] = []
    client = AgentClient(
        f"http://127.0.0.1:{_free_port()}",
        bytes(32),
        retries=3,
        backoff_s=0.2,
        backoff_max_s=0.5,
        connect_timeout_s=0.5,
        sleep=sleeps.append,
    )
    with pytest.raises(AgentUnavailableError) as ei:
        client.status()
    assert isinstance(ei.value, TemporaryError)
    assert "after 4 attempt(s)" in str(ei.value)
    assert len(sleeps) == 3
    # doubling from 0.2 s, capped at 0.5 s, plus at most 25 % jitter
    for wait, base in zip(sleeps, (0.2, 0.4, 0.5), strict=True):
        assert base <= wait <= base * 1.25


def test_retried_post_is_applied_once(agent) -> None:  # noqa: ANN001
    """The first attempt times out while the agent applies it; the retries carry the same
    idempotency key, so the change happens once and the client gets the agent's answer."""
    backend = agent.backend
    original = backend.set_power_limit_w

    def slow_set(index: int, power_limit_w: float):  # noqa: ANN202
        time.sleep(0.6)
        return original(index, power_limit_w)

    backend.set_power_limit_w = slow_set  # type: ignore[method-assign]
    sleeps: list[float] = []
    client = AgentClient(
        agent.url,
        agent.key,
        read_timeout_s=0.25,
        retries=6,
        backoff_s=0.05,
        sleep=lambda s: (sleeps.append(s), time.sleep(s)),
    )
    [change] = client.set_power_limit_w(180, index=0)
    assert sleeps, "the first attempt should have timed out"
    assert change.after == 180.0 and change.changed
    assert [c for c in backend.calls if c[0] == "set_power_limit_w"] == [
        ("set_power_limit_w", 0, 180)
    ]
    assert backend.limits_w[0] == 180.0


def test_same_idempotency_key_with_other_body_is_refused(agent) -> None:  # noqa: ANN001
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(agent.url)
    key = "idem-0123456789abcdef"
    results = []
    for watts in (200, 200, 250):
        body = json.dumps({"index": 0, "power_limit_w": watts}).encode()
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        headers = auth.signed_headers(
            agent.key, "POST", "/v1/gpu/power-limit", body, time.time(), idempotency_key=key
        )
        conn.request("POST", "/v1/gpu/power-limit", body=body, headers=headers)
        resp = conn.getresponse()
        results.append((resp.status, json.loads(resp.read())))
        conn.close()
    assert results[0] == results[1]  # answered from the record
    assert results[0][0] == 200
    assert results[2][0] == 409 and results[2][1]["error"]["code"] == "idempotency_conflict"
    assert len(agent.backend.calls) == 1
    assert agent.backend.limits_w[0] == 200.0


class _Impostor(BaseHTTPRequestHandler):
    """Answers like an agent but without the key: a forged 200 or an unsigned 503."""

    protocol_version = "HTTP/1.1"
    status = 200

    def do_GET(self) -> None:
        body = b'{"node":"forged","gpus":[]}'
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "error"), [(200, AgentAuthError), (503, AgentUnavailableError)])
def test_answers_not_signed_by_the_agent_are_refused(status: int, error: type) -> None:
    handler = type("H", (_Impostor,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = AgentClient(
            f"http://127.0.0.1:{server.server_address[1]}",
            bytes(range(32)),
            retries=1,
            sleep=lambda s: None,
        )
        with pytest.raises(error):
            client.status()
        client.close()
    finally:
        server.shutdown()
        server.server_close()


def test_client_is_thread_safe(agent) -> None:  # noqa: ANN001
    client = AgentClient(agent.url, agent.key)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                assert client.status()["node"] == "node001"
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_keep_alive_connection_closed_by_the_agent_is_reopened(key_file, fake_proc) -> None:  # noqa: ANN001
    from greencpn.agent.auth import load_key
    from greencpn.agent.server import AgentServer, AgentSettings

    key = load_key(key_file)
    settings = AgentSettings(port=0, proc_root=str(fake_proc), idle_timeout_s=0.2)
    with AgentServer(None, key, settings) as server:
        client = AgentClient(server.url, key, retries=0)
        client.status()
        time.sleep(0.6)  # the agent closes the idle connection
        assert client.status()["gpus"] == []
        assert client.power("drain")[0].changed
        time.sleep(0.6)
        assert client.power("drain")[0].changed is False
