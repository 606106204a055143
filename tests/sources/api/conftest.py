"""Fixtures for the live-API sources: a real HTTP replay server on 127.0.0.1 and a guard that
refuses every connection (and DNS lookup) to any other address.

The replay server serves the recorded responses in ``../shared/data/api_samples/`` (Electricity
Maps v3, WattTime v3, UK Carbon Intensity) from a ``http.server.ThreadingHTTPServer`` on an
ephemeral port, checks credentials the way the real APIs do, and injects faults on request:
timeout, 429 + Retry-After, 500, 401, malformed JSON, empty data, unknown zone. Tests that need
a response the recordings do not contain (a full 96-slot UK day, a DST day, a gap) build it in
the documented format from the recorded one.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

SAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "api_samples"
SAMPLES = SAMPLES.resolve()

EM_TOKEN = "em-test-token-5f3a9c1e77"
WT_USER = "wt-user-test"
WT_PASSWORD = "wt-pass-8d2b41aa"

_LOCAL = {"127.0.0.1", "localhost", "::1"}


# ------------------------------------------------------------------------------ no internet
@pytest.fixture(autouse=True)
def local_network_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse any DNS lookup or connection that is not to 127.0.0.1, and fail the test after
    it ran if anything tried one (even if the code under test swallowed the error)."""
    attempts: list[Any] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        h = host.decode() if isinstance(host, bytes) else host
        if h not in _LOCAL and h is not None:
            attempts.append(h)
            raise OSError(f"test guard: DNS lookup of non-local host {h!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    def _check(addr: Any) -> None:
        if isinstance(addr, tuple) and addr and addr[0] not in _LOCAL:
            attempts.append(addr)
            raise OSError(f"test guard: connection to non-local address {addr!r} refused")

    def guarded_connect(self: socket.socket, addr: Any) -> Any:
        _check(addr)
        return real_connect(self, addr)

    def guarded_connect_ex(self: socket.socket, addr: Any) -> Any:
        _check(addr)
        return real_connect_ex(self, addr)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    yield attempts
    assert not attempts, f"the test tried to reach non-local addresses: {attempts}"


@pytest.fixture()
def samples() -> Path:
    if not (SAMPLES / "carbon_api_formats.md").exists():
        pytest.skip(f"recorded API samples not found at {SAMPLES} (../shared/data absent)")
    return SAMPLES


def load_sample(name: str) -> Any:
    data = json.loads((SAMPLES / name).read_text())
    if isinstance(data, dict):
        data.pop("_note", None)
    return data


# ---------------------------------------------------------------------------- replay server
@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


Route = Callable[["ReplayServer", str, dict[str, str], dict[str, str]], Reply]


class ReplayServer:
    """Recorded-response server with injectable faults.

    ``faults[prefix]`` is a list of :class:`Reply` consumed one per matching request (the path
    starts with ``prefix``); when it is empty the normal route answers. ``always[prefix]``
    answers every matching request.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.faults: dict[str, list[Reply]] = {}
        self.always: dict[str, Reply] = {}
        self.seen: list[Seen] = []
        self.tokens: set[str] = set()
        self._n_tokens = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = server.answer(parts.path, query, headers)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                body = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> ReplayServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, prefix: str) -> int:
        return sum(1 for s in self.seen if s.path.startswith(prefix))

    def new_token(self) -> str:
        with self._lock:
            self._n_tokens += 1
            tok = f"wt-jwt-{self._n_tokens}"
            self.tokens.add(tok)
        return tok

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.seen.append(Seen(path, query, headers))
            for prefix, queue in self.faults.items():
                if path.startswith(prefix) and queue:
                    return queue.pop(0)
            for prefix, reply in self.always.items():
                if path.startswith(prefix):
                    return reply
        best = max((p for p in self.routes if path.startswith(p)), key=len, default=None)
        if best is None:
            return Reply(404, {"error": {"code": "404", "message": f"no route {path}"}})
        return self.routes[best](self, path, query, headers)


# ------------------------------------------------------------------ recorded-response routes
EM_ZONES = {"DE", "DK-DK2", "US-CAR-DUK"}


def _em_auth(headers: dict[str, str]) -> Reply | None:
    if headers.get("auth-token") != EM_TOKEN:
        return Reply(401, {"message": "Invalid authentication credentials"})
    return None


def _em_zone(query: dict[str, str]) -> tuple[str | None, Reply | None]:
    if "lat" in query and "lon" in query:
        return "DE", None
    zone = query.get("zone")
    if zone not in EM_ZONES:
        return None, Reply(404, {"status": "error", "message": f"Zone '{zone}' does not exist."})
    return zone, None


def em_route(file: str) -> Route:
    def route(srv: ReplayServer, path: str, q: dict[str, str], h: dict[str, str]) -> Reply:
        err = _em_auth(h)
        if err:
            return err
        _, err = _em_zone(q)
        if err:
            return err
        return Reply(200, load_sample(file))

    return route


def wt_login(srv: ReplayServer, path: str, q: dict[str, str], h: dict[str, str]) -> Reply:
    expected = "Basic " + base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
    if h.get("authorization") != expected:
        return Reply(401, {"error": "Unauthorized"})
    return Reply(200, {"token": srv.new_token()})


def wt_data(body: Callable[[dict[str, str]], Any]) -> Route:
    def route(srv: ReplayServer, path: str, q: dict[str, str], h: dict[str, str]) -> Reply:
        auth = h.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in srv.tokens:
            return Reply(401, {"error": "Unauthorized"})
        region = q.get("region")
        if region is not None and region not in {"CAISO_NORTH", "PSCO"}:
            return Reply(
                400,
                {"error": "Invalid region", "message": f"region {region} is not a valid region"},
            )
        return Reply(200, body(q))

    return route


def wt_forecast_current(q: dict[str, str]) -> Any:
    """``/v3/forecast`` in its documented shape, built from the recorded historical run."""
    rec = load_sample("watttime_v3_forecast_historical_CAISO_NORTH_fixture.json")
    run = rec["data"][0]
    meta = dict(rec["meta"], generated_at=run["generated_at"])
    return {"data": run["forecast"], "meta": meta}


def uk_route(file: str) -> Route:
    def route(srv: ReplayServer, path: str, q: dict[str, str], h: dict[str, str]) -> Reply:
        return Reply(200, load_sample(file))

    return route


def default_routes(srv: ReplayServer) -> None:
    srv.routes.update(
        {
            "/v3/carbon-intensity/latest": em_route(
                "electricitymaps_v3_carbon-intensity_latest_US-CAR-DUK.json"
            ),
            "/v3/carbon-intensity/history": em_route(
                "electricitymaps_v3_carbon-intensity_history_DE.json"
            ),
            "/v3/carbon-intensity/past-range": em_route(
                "electricitymaps_v3_carbon-intensity_past-range_DK-DK2.json"
            ),
            "/v3/carbon-intensity/forecast": em_route(
                "electricitymaps_v3_carbon-intensity_forecast_DE_2023-05-02.json"
            ),
            "/login": wt_login,
            "/v3/historical": wt_data(
                lambda q: load_sample("watttime_v3_historical_CAISO_NORTH_fixture.json")
            ),
            "/v3/forecast/historical": wt_data(
                lambda q: load_sample("watttime_v3_forecast_historical_CAISO_NORTH_fixture.json")
            ),
            "/v3/forecast": wt_data(wt_forecast_current),
            "/v3/region-from-loc": wt_data(
                lambda q: load_sample("watttime_v3_region-from-loc_fixture.json")
            ),
            "/uk/intensity/": uk_route(
                "uk_carbonintensity_intensity_fw48h_2023-03-14T0331Z_excerpt.json"
            ),
            "/uk/regional/intensity/": uk_route(
                "uk_carbonintensity_regional_intensity_fw48h_2023-03-10T1200Z_excerpt.json"
            ),
        }
    )


@pytest.fixture()
def replay(samples: Path) -> Iterator[ReplayServer]:
    srv = ReplayServer()
    default_routes(srv)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def dead_url() -> str:
    """A 127.0.0.1 URL on which nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


class SleepRecorder:
    """Injected ``sleep``: records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture()
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture()
def api(samples: Path) -> Any:
    """Helpers for the tests (importlib mode cannot import this conftest by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        Reply=Reply,
        load=load_sample,
        EM_TOKEN=EM_TOKEN,
        WT_USER=WT_USER,
        WT_PASSWORD=WT_PASSWORD,
        SAMPLES=samples,
    )
