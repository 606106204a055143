"""The agent's HTTP/1.1 server: one thread per connection, optional mutual TLS, and limits
an unauthenticated caller cannot use against key holders.

* Each request must arrive whole within ``request_timeout_s`` of its first byte (a deadline:
  trickled bytes do not extend it), a new connection must start within it, and a connection
  that carried an authenticated request may idle ``idle_timeout_s``.
* At ``max_connections`` (or ``max_connections_per_client`` from one address) a new connection
  evicts the oldest connection that never carried an authenticated request.
* Connection faults and refusals are logged rate-limited (one line per code per
  :data:`~greencpn.agent.settings.LOG_INTERVAL_S`), never as tracebacks.

Authentication is :mod:`greencpn.agent.auth`; what each path does is :mod:`greencpn.agent.routes`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from greencpn.agent.auth import HEADER_RESPONSE_SIGNATURE, SCHEME, AuthError, Verified, Verifier
from greencpn.agent.node import NodeAgent
from greencpn.agent.routes import HttpError, Raw, Router, error_answer, json_bytes
from greencpn.agent.settings import LOG_INTERVAL_S, AgentSettings
from greencpn.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Conn:
    """One open connection: who, since when, and whether it carried an authenticated request."""

    sock: socket.socket
    client: str
    accepted_at: float
    proven: bool = False
    evicted: bool = False


class _DeadlineReader(io.RawIOBase):
    """The socket as the handler's ``rfile``, with deadlines instead of a per-recv timeout.

    Before a request's first byte the wait is ``idle_timeout_s`` on a connection that carried an
    authenticated request, else ``request_timeout_s`` from when the wait began; from the first
    byte, the rest of the request must arrive within ``request_timeout_s``. Trickling bytes
    (slowloris) therefore cannot keep a connection open.
    """

    def __init__(self, sock: socket.socket, settings: AgentSettings, conn: _Conn) -> None:
        self._sock = sock
        self._settings = settings
        self._conn = conn
        self._deadline = 0.0
        self._waiting_first_byte = True
        self.begin_request()

    def begin_request(self) -> None:
        s = self._settings
        wait_s = s.idle_timeout_s if self._conn.proven else s.request_timeout_s
        self._deadline = time.monotonic() + wait_s
        self._waiting_first_byte = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(remaining)
        try:
            n = self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._settings.request_timeout_s)  # for writing the answer
        if n and self._waiting_first_byte:
            self._waiting_first_byte = False
            self._deadline = time.monotonic() + self._settings.request_timeout_s
        return n


class AgentHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with the agent, its verifier, optional mutual TLS and connection
    limits that an unauthenticated caller cannot use to lock key holders out."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, agent: NodeAgent, verifier: Verifier, settings: AgentSettings) -> None:
        self.agent = agent
        self.verifier = verifier
        self.settings = settings
        self.router = Router(agent, self.log_refusal)
        self._conns: OrderedDict[int, _Conn] = OrderedDict()  # live, in accept order
        self._per_client: dict[str, int] = {}
        self._conn_lock = threading.Lock()
        self._refusals: dict[str, tuple[float, int]] = {}
        self._refusal_lock = threading.Lock()
        self.ssl_context = _server_ssl_context(settings)
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self.address_family = family
        super().__init__((settings.host, settings.port), _Handler)

    def log_refusal(self, code: str, message: str) -> None:
        """Log a refused request: at most once per ``LOG_INTERVAL_S`` per code, with a
        count of the ones not logged (an unauthenticated flood must not flood the log)."""
        now = time.monotonic()
        with self._refusal_lock:
            last, suppressed = self._refusals.get(code, (-math.inf, 0))
            if now - last < LOG_INTERVAL_S:
                self._refusals[code] = (last, suppressed + 1)
                return
            self._refusals[code] = (now, 0)
        more = f" (+{suppressed} more '{code}' not logged)" if suppressed else ""
        log.warning("%s%s", message, more)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not needed here.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # Handshake lazily in the handler's thread (under its deadline), not here.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    # ---- connection limits

    def open_connections(self) -> int:
        with self._conn_lock:
            return len(self._conns)

    def _evict_oldest_unproven(self, client: str | None) -> bool:
        """Close the oldest connection (of ``client``, or of anyone) that never carried an
        authenticated request; False if there is none. Called under ``_conn_lock``."""
        for conn in self._conns.values():
            if conn.proven or (client is not None and conn.client != client):
                continue
            self._drop(conn)
            conn.evicted = True
            # The plain socket's shutdown, also under TLS: its reader sees EOF at once.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
            return True
        return False

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(id(conn.sock), None) is not None:
            left = self._per_client.get(conn.client, 1) - 1
            if left:
                self._per_client[conn.client] = left
            else:
                self._per_client.pop(conn.client, None)

    def _admit(self, conn: _Conn) -> str | None:
        """Register ``conn``, evicting unproven connections at the limits; the reason if not."""
        s = self.settings
        evicted = 0
        with self._conn_lock:
            while self._per_client.get(conn.client, 0) >= s.max_connections_per_client:
                if not self._evict_oldest_unproven(conn.client):
                    return (
                        f"{s.max_connections_per_client} authenticated connections from "
                        f"{conn.client} already open"
                    )
                evicted += 1
            while len(self._conns) >= s.max_connections:
                if not self._evict_oldest_unproven(None):
                    return f"{s.max_connections} authenticated connections already open"
                evicted += 1
            self._conns[id(conn.sock)] = conn
            self._per_client[conn.client] = self._per_client.get(conn.client, 0) + 1
        if evicted:
            self.log_refusal(
                "evicted",
                f"connection limit reached: closed {evicted} unauthenticated connection(s) "
                f"to admit one from {conn.client}",
            )
        return None

    def connection_of(self, sock: socket.socket) -> _Conn:
        with self._conn_lock:
            conn = self._conns.get(id(sock))
        return conn if conn is not None else _Conn(sock, "?", time.monotonic(), evicted=True)

    def mark_proven(self, sock: socket.socket) -> None:
        with self._conn_lock:
            conn = self._conns.get(id(sock))
            if conn is not None:
                conn.proven = True

    def process_request(self, request: Any, client_address: Any) -> None:
        reason = self._admit(_Conn(request, str(client_address[0]), time.monotonic()))
        if reason is not None:
            self.log_refusal(
                "too_many_connections", f"closed a connection from {client_address[0]}: {reason}"
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def _forget(self, request: Any) -> None:
        with self._conn_lock:
            conn = self._conns.get(id(request))
            if conn is not None and conn.sock is request:
                self._drop(conn)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def shutdown_request(self, request: Any) -> None:
        with contextlib.suppress(OSError):  # e.g. TLS close_notify into a reset connection
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection failed outside a request's own handling: one rate-limited line."""
        exc = sys.exc_info()[1]
        self.log_refusal(
            "connection_error",
            f"connection from {client_address[0]} failed: {type(exc).__name__}: {exc}",
        )


def _server_ssl_context(settings: AgentSettings) -> ssl.SSLContext | None:
    parts = (settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    if not any(parts):
        return None
    if not all(parts):
        raise ConfigError(
            "mutual TLS needs --tls-cert, --tls-key and --tls-client-ca together", field="tls"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)  # type: ignore[arg-type]
        ctx.load_verify_locations(cafile=settings.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS files: {exc}",
            field="tls",
            fix="check the PEM paths and that the key matches the certificate",
        ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "greencpn-agent"
    sys_version = ""
    disable_nagle_algorithm = True
    server: AgentHTTPServer

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        settings = self.server.settings
        self.timeout = settings.request_timeout_s  # type: ignore[misc]  # per server
        super().setup()
        self.rfile.close()
        self._conn = self.server.connection_of(self.request)
        self._reader = _DeadlineReader(self.connection, settings, self._conn)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        if self._conn.evicted:
            self.close_connection = True
            return
        self._reader.begin_request()
        try:
            super().handle_one_request()
        except OSError as exc:  # reset, broken pipe, TLS failure: the peer is gone
            self.close_connection = True
            self.server.log_refusal(
                "connection_error",
                f"connection from {self.client_address[0]} failed: {type(exc).__name__}: {exc}",
            )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_POST

    def _handle(self) -> None:
        """Read, authenticate, dispatch, answer once. A connection fault (reset, broken pipe,
        deadline) is not an internal error: it propagates to :meth:`handle_one_request`, which
        logs one rate-limited line."""
        verified: Verified | None = None
        extra: dict[str, str] = {}
        try:
            body = self._read_body()
            try:
                verified = self.server.verifier.verify(self.command, self.path, self.headers, body)
            except AuthError as exc:
                self.server.log_refusal(
                    exc.code,
                    f"refused {self.command} {self.path} from {self.client_address[0]}: {exc}",
                )
                if exc.status == 401:
                    extra["WWW-Authenticate"] = SCHEME
                raise HttpError(exc.status, exc.code, str(exc), exc.fix) from None
            self.server.mark_proven(self.request)
            status, payload = self.server.router.dispatch(
                self.command, self.path, verified, body, self.client_address[0]
            )
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to an answer; bugs are logged there
            status, payload = error_answer(exc, f"{self.command} {self.path}")
        self._send(status, payload, verified, extra)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HttpError(
                411, "length_required", "chunked bodies are not accepted", fix="send Content-Length"
            )
        text = self.headers.get("Content-Length", "0")
        try:
            length = int(text)
        except ValueError:
            self.close_connection = True
            raise HttpError(400, "bad_request", "bad Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise HttpError(400, "bad_request", "bad Content-Length")
        if length > self.server.settings.max_body_bytes:
            self.close_connection = True  # the body stays unread
            raise HttpError(
                413,
                "too_large",
                f"body of {length} bytes exceeds {self.server.settings.max_body_bytes} bytes",
            )
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        payload: Any,
        verified: Verified | None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        raw = payload.data if isinstance(payload, Raw) else json_bytes(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        if verified is not None:
            self.send_header(
                HEADER_RESPONSE_SIGNATURE, self.server.verifier.sign_response(verified, status, raw)
            )
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
