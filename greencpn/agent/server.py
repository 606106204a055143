"""The node agent: a small authenticated HTTP/1.1 service that actuates one node.

Endpoints (every request signed, see :mod:`greencpn.agent.auth`; JSON in, JSON out):

* ``GET  /v1/status`` — node name, time, uptime, GPUs (power, energy counter, limits), running
  work, drained flag, power state.
* ``POST /v1/gpu/power-limit`` — ``{"index": 0 | "all", "power_limit_w": 250}``; the limit must lie
  within the device's range (400 otherwise), read before write.
* ``POST /v1/gpu/clocks`` — ``{"index": 0 | "all", "min_mhz": 900, "max_mhz": 1410}`` or
  ``{"index": ..., "reset": true}``.
* ``POST /v1/gpu/restore-defaults`` — ``{}``: default power limits, clocks unlocked.
* ``POST /v1/power`` — ``{"action": "drain" | "resume" | "off", "reason": "..."}``. ``off`` needs a
  configured ``--power-command`` and no running work; it drains, answers 202, and runs the
  command after a settle time only if a fresh count under the agent's lock finds no work.

Errors are ``{"error": {"code": ..., "message": ..., "fix": ...}}`` with 400 (bad value), 401
(authentication), 403 (telemetry key asked for a change), 404, 405, 409 (refused by state or
configuration), 411/413 (body), 500, 503.

The agent is built in rooms by role:

* :mod:`greencpn.agent.settings` — :class:`AgentSettings`, a strict pydantic model;
* :mod:`greencpn.agent.probes` — running work (/proc or a command), commands in their own
  process group;
* :mod:`greencpn.agent.node` — :class:`NodeAgent`, the node logic, raising
  :mod:`greencpn.agent.errors`;
* :mod:`greencpn.agent.routes` — paths, methods, key scopes, idempotent POSTs, and the one
  mapping of errors to HTTP statuses;
* :mod:`greencpn.agent.httpd` — the HTTP/1.1 server (stdlib ``ThreadingHTTPServer``,
  keep-alive, deadlines, connection limits, mutual TLS);
* this module — :class:`AgentServer`, which puts them together (and re-exports the names
  callers used before the split).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from greencpn.actuate.base import GpuBackend
from greencpn.agent.auth import ScopedKey, Verifier
from greencpn.agent.errors import AgentError, CommandFailed, InvalidRequest, Refused
from greencpn.agent.httpd import AgentHTTPServer
from greencpn.agent.idempotency import IdempotencyStore
from greencpn.agent.node import NodeAgent
from greencpn.agent.probes import FreshCounter, count_gpu_processes, parse_work_output, run_command
from greencpn.agent.routes import HttpError
from greencpn.agent.settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, AgentSettings
from greencpn.clock import Clock, SystemClock
from greencpn.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "AgentError",
    "AgentHTTPServer",
    "AgentServer",
    "AgentSettings",
    "CommandFailed",
    "FreshCounter",
    "HttpError",
    "IdempotencyStore",
    "InvalidRequest",
    "NodeAgent",
    "Refused",
    "count_gpu_processes",
    "parse_work_output",
    "run_command",
]


class AgentServer:
    """A running agent: bind, serve in a background thread, stop.

    Args:
        backend: the node's GPUs (None: a node without GPUs).
        key: the node key, or several (rotation; see :func:`greencpn.agent.auth.load_keys`).
        settings: agent settings.
        clock: injectable clock (authentication freshness, status times).
    """

    def __init__(
        self,
        backend: GpuBackend | None,
        key: bytes | ScopedKey | Sequence[bytes | ScopedKey],
        settings: AgentSettings,
        clock: Clock | None = None,
    ) -> None:
        clock = clock or SystemClock()
        self.settings = settings
        self.agent = NodeAgent(backend, settings, clock)
        self.agent.check_power_control()
        self.verifier = Verifier(key, clock, max_skew_s=settings.max_skew_s)
        try:
            self.httpd = AgentHTTPServer(self.agent, self.verifier, settings)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
                field="listen",
                fix="pick a free port or a local address",
            ) from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.httpd.ssl_context is not None else "http"
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> AgentServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            name="greencpn-agent",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> AgentServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
