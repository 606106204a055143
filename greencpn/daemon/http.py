"""The daemon's one HTTP server (stdlib, a thread per request).

=========== ====== ==================================================================
path        method answer
=========== ====== ==================================================================
/metrics    GET    Prometheus text exposition of the daemon's registry
/healthz    GET    200 while the process and its scheduler run (liveness)
/readyz     GET    200 once a step finished OK or degraded within 2 periods and the
                   config loaded; 503 with the reason otherwise (readiness)
/step       POST   queue an extra step now; 202
/reload     POST   check the fleet config and control.toml now: 400 with the error
                   if refused (old ones kept); else 202 and the reload + a step run
                   in the step worker, between steps
=========== ====== ==================================================================

POST is authorised either by ``Authorization: Bearer <token>`` matching the content of
``[daemon.http] token_file``, or — when no token file is configured — only for clients on a
loopback address (the default listen address is 127.0.0.1 anyway). Anything else gets 401/403.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("greencpn.daemon.http")


class DaemonHttp:
    """``health()`` / ``ready()`` return (ok, detail); ``trigger(reason)`` queues a step;
    ``reload()`` checks the new config and queues it, returning None or the error message."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        ready: Callable[[], tuple[bool, dict[str, Any]]],
        trigger: Callable[[str], None],
        reload: Callable[[], str | None],
        token: str | None = None,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "greencpn"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("%s " + fmt, self.client_address[0], *args)

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, doc: dict[str, Any]) -> None:
                self._send(code, (json.dumps(doc, default=str) + "\n").encode())

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, detail = (health if path == "/healthz" else ready)()
                    self._json(200 if ok else 503, {"ok": ok, **detail})
                else:
                    self._json(404, {"error": f"no such path {path}"})

            def _authorised(self) -> bool:
                if outer.token is not None:
                    got = self.headers.get("Authorization", "")
                    if not hmac.compare_digest(got.encode(), f"Bearer {outer.token}".encode()):
                        self._json(401, {"error": "missing or wrong bearer token"})
                        return False
                    return True
                try:
                    loopback = ipaddress.ip_address(self.client_address[0]).is_loopback
                except ValueError:
                    loopback = False
                if not loopback:
                    self._json(
                        403,
                        {
                            "error": "POST is accepted from loopback only (set [daemon.http] token_file)"
                        },
                    )
                return loopback

            def do_POST(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(min(length, 65536))
                if path not in ("/step", "/reload"):
                    self._json(404, {"error": f"no such path {path}"})
                    return
                if not self._authorised():
                    return
                if path == "/step":
                    trigger("http")
                    self._json(202, {"queued": "step"})
                else:
                    err = reload()
                    if err is None:
                        self._json(202, {"accepted": True, "queued": "reload, then step"})
                    else:
                        self._json(400, {"accepted": False, "error": err})

        self.token = token
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="greencpn-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
