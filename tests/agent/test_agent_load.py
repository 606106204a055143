"""Issue #9, agent items 12 and 13: the agent stays up for key holders under a cheap attack.

All attackers and callers are on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from greencpn.agent.auth import load_key
from greencpn.agent.client import AgentClient
from greencpn.agent.server import AgentServer, AgentSettings
from tests.agent.agent_process import still_open

pytestmark = pytest.mark.timeout(120)


class Attack:
    """``idle`` connections that send nothing and ``slow`` ones that trickle a request header
    one byte every ``interval_s`` (slowloris), all from 127.0.0.1, for at most ``duration_s``."""

    def __init__(self, port: int, idle: int, slow: int, interval_s: float = 0.2) -> None:
        self.port = port
        self.idle = idle
        self.slow = slow
        self.interval_s = interval_s
        self.socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refused = 0

    def _connect(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            self.refused += 1
            return None
        s.setblocking(False)
        return s

    def start(self) -> Attack:
        for _ in range(self.idle):
            s = self._connect()
            if s is not None:
                self.socks.append(s)
        slow = [s for s in (self._connect() for _ in range(self.slow)) if s is not None]
        self.socks += slow
        header = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10_000

        def trickle() -> None:
            for i in range(len(header)):  # bounded: one byte per connection per interval
                if self._stop.wait(self.interval_s):
                    return
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.send(header[i : i + 1])

        self._thread = threading.Thread(target=trickle, daemon=True)
        self._thread.start()
        time.sleep(0.5)  # let the agent accept them all
        return self

    def open_count(self) -> int:
        """How many attacker connections the agent still holds open."""
        return still_open(self.socks)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for s in self.socks:
            s.close()


@pytest.fixture
def key(key_file: Path) -> bytes:
    return load_key(key_file)


def _signed_latencies_s(url: str, key: bytes, n: int) -> list[float]:
    """``n`` signed status requests, each on a new connection (as a fresh controller would)."""
    out = []
    for _ in range(n):
        client = AgentClient(url, key, retries=0, connect_timeout_s=2, read_timeout_s=2)
        t0 = time.perf_counter()
        assert client.status()["node"] == "n-load"
        out.append(time.perf_counter() - t0)
        client.close()
    return out


@pytest.mark.parametrize(
    "limits",
    [
        {},  # the defaults: attackers beyond the per-client cap are evicted
        {"max_connections": 1000, "max_connections_per_client": 1000},  # all attackers held
    ],
    ids=["default-limits", "generous-limits"],
)
def test_200_idle_and_slowloris_attackers_do_not_lock_out_signed_requests(
    key: bytes, fake_proc: Path, limits: dict[str, int]
) -> None:
    settings = AgentSettings(port=0, node_name="n-load", proc_root=str(fake_proc), **limits)
    with AgentServer(None, key, settings) as server:
        attack = Attack(server.port, idle=100, slow=100).start()
        try:
            latencies = _signed_latencies_s(server.url, key, 10)
            assert max(latencies) < 1.0, latencies
            held = attack.open_count()
        finally:
            attack.stop()
    if limits:
        assert held >= 150  # nearly all 200 still connected, yet signed requests got through
    else:
        assert held <= settings.max_connections_per_client


def test_a_slowloris_request_is_closed_at_the_request_deadline(key: bytes, fake_proc: Path) -> None:
    settings = AgentSettings(port=0, proc_root=str(fake_proc), request_timeout_s=1.0)
    with AgentServer(None, key, settings) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        t0 = time.monotonic()
        closed_after = None
        try:
            for ch in b"GET /v1/status HTTP/1.1\r\nX-Pad: " + b"a" * 100:  # bounded
                try:
                    s.send(bytes([ch]))
                except OSError:
                    closed_after = time.monotonic() - t0
                    break
                s.settimeout(0.1)
                try:
                    if s.recv(1) == b"":
                        closed_after = time.monotonic() - t0
                        break
                except TimeoutError:
                    pass
        finally:
            s.close()
    assert closed_after is not None and 0.8 <= closed_after < 2.5, closed_after


def test_a_silent_new_connection_is_closed_at_the_request_deadline(
    key: bytes, fake_proc: Path
) -> None:
    settings = AgentSettings(port=0, proc_root=str(fake_proc), request_timeout_s=0.5)
    with AgentServer(None, key, settings) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        t0 = time.monotonic()
        assert s.recv(1) == b""
        assert 0.4 <= time.monotonic() - t0 < 2.0
        s.close()


def test_a_key_holders_connections_are_never_evicted(key: bytes, fake_proc: Path) -> None:
    settings = AgentSettings(
        port=0, node_name="n-load", proc_root=str(fake_proc), max_connections_per_client=4
    )
    with AgentServer(None, key, settings) as server:
        client = AgentClient(server.url, key, retries=0)
        client.status()  # this keep-alive connection is now authenticated
        attack = Attack(server.port, idle=20, slow=0).start()
        try:
            assert attack.open_count() <= 3
            t0 = time.perf_counter()
            client.status()
            assert time.perf_counter() - t0 < 1.0
        finally:
            attack.stop()


def test_limits_are_validated_and_named(fake_proc: Path, key: bytes) -> None:
    from greencpn.errors import ConfigError

    for field, value in (
        ("request_timeout_s", 0.0),
        ("max_connections", 0),
        ("max_connections_per_client", -1),
    ):
        with pytest.raises(ConfigError) as ei:
            AgentSettings(port=0, proc_root=str(fake_proc), **{field: value})
        assert field in str(ei.value)


# ------------------------------------------------ 13: resets before reading the 401 stay quiet


def _reset_after_sending(port: int, payload: bytes) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(payload)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST: the answer can never be delivered


@pytest.fixture
def quiet_agent(key: bytes, fake_proc: Path) -> Iterator[AgentServer]:
    settings = AgentSettings(port=0, node_name="n-load", proc_root=str(fake_proc))
    with AgentServer(None, key, settings) as server:
        yield server


def test_200_clients_resetting_before_their_401_log_a_few_lines_and_no_traceback(
    quiet_agent: AgentServer, key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    big = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n" * 50  # pipelined: many 401s to write
    with caplog.at_level(logging.INFO):
        for _ in range(200):
            _reset_after_sending(quiet_agent.port, big)
        time.sleep(1.0)  # let the handler threads finish writing into the reset connections
        assert AgentClient(quiet_agent.url, key).status()["node"] == "n-load"
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records if r.exc_info]
    assert "Traceback" not in caplog.text
    assert 1 <= len(records) <= 3, [r.getMessage() for r in records]
