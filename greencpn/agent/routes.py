"""The agent's API: which path does what, with which method and key scope, and the one place
where errors become HTTP statuses (:func:`error_answer`).

=============================  ======  =========  ==========================================
path                           method  scope      node logic (:class:`~greencpn.agent.node.NodeAgent`)
=============================  ======  =========  ==========================================
``/v1/status``                 GET     telemetry  ``status()``
``/v1/gpu/power-limit``        POST    control    ``set_power_limit(body)``
``/v1/gpu/clocks``             POST    control    ``set_clocks(body)``
``/v1/gpu/restore-defaults``   POST    control    ``restore_defaults(body)``
``/v1/power``                  POST    control    ``power(body)``; 202 for ``off``
=============================  ======  =========  ==========================================

A control key may do everything; a telemetry key only what is marked telemetry.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from greencpn.agent.auth import SCOPE_CONTROL, SCOPE_TELEMETRY, Verified
from greencpn.agent.errors import AgentError, CommandFailed, InvalidRequest, Refused
from greencpn.agent.idempotency import IdempotencyStore
from greencpn.agent.node import NodeAgent
from greencpn.errors import ConfigError, PermanentError, TemporaryError

log = logging.getLogger(__name__)


class HttpError(Exception):
    """A protocol-level refusal with its HTTP status (authentication, unknown path, method,
    body framing), raised by the HTTP layer and the router, never by the node logic."""

    def __init__(self, status: int, code: str, message: str, fix: str = "") -> None:
        self.status = status
        self.code = code
        self.fix = fix
        super().__init__(message)


@dataclass(frozen=True)
class Route:
    """One endpoint: method, the scope a key needs, what it calls, and its success status."""

    method: str
    scope: str
    call: Callable[[NodeAgent, dict[str, Any]], dict[str, Any]]
    status: Callable[[dict[str, Any]], int] = lambda body: 200


ROUTES: dict[str, Route] = {
    "/v1/status": Route("GET", SCOPE_TELEMETRY, lambda agent, body: agent.status()),
    "/v1/gpu/power-limit": Route("POST", SCOPE_CONTROL, NodeAgent.set_power_limit),
    "/v1/gpu/clocks": Route("POST", SCOPE_CONTROL, NodeAgent.set_clocks),
    "/v1/gpu/restore-defaults": Route("POST", SCOPE_CONTROL, NodeAgent.restore_defaults),
    "/v1/power": Route(
        "POST",
        SCOPE_CONTROL,
        NodeAgent.power,
        status=lambda body: 202 if body.get("action") == "off" else 200,
    ),
}


@dataclass(frozen=True)
class Raw:
    """An answer body already encoded (a stored idempotent answer)."""

    data: bytes


class Router:
    """Routes authenticated requests to the node logic, answering retried POSTs from the
    idempotency store.

    Args:
        agent: the node logic.
        log_refusal: rate-limited logger of refusals, by code.
    """

    def __init__(self, agent: NodeAgent, log_refusal: Callable[[str, str], None]) -> None:
        self.agent = agent
        self.idempotency = IdempotencyStore()
        self._idempotency_lock = threading.Lock()
        self._log_refusal = log_refusal

    def dispatch(
        self, method: str, path: str, verified: Verified, body: bytes, client: str
    ) -> tuple[int, Any]:
        """(status, payload) for one authenticated request; raises what :func:`error_answer`
        maps."""
        route_path = path.split("?", 1)[0]
        route = ROUTES.get(route_path)
        if route is None:
            raise HttpError(404, "not_found", f"no endpoint {route_path}")
        if method != route.method:
            raise HttpError(405, "method_not_allowed", f"use {route.method}")
        if route.scope == SCOPE_CONTROL and verified.scope != SCOPE_CONTROL:
            self._log_refusal(
                "forbidden_scope",
                f"refused {method} {route_path} from {client}: {verified.scope} key",
            )
            raise HttpError(
                403,
                "forbidden_scope",
                f"a {verified.scope} key may only read (GET /v1/status)",
                fix="sign changes with one of the node's control keys",
            )
        if method == "GET":
            return route.status({}), route.call(self.agent, {})
        data = _json_object(body)
        key = verified.idempotency_key
        if not key:
            return route.status(data), route.call(self.agent, data)
        request_id = f"{path}\n{body.hex()}"
        with self._idempotency_lock:
            now_s = self.agent.clock.now().timestamp()
            previous = self.idempotency.get(key, request_id, now_s)
            if previous is not None:
                return previous[0], Raw(previous[1])
            try:
                status, payload = route.status(data), route.call(self.agent, data)
            except (AgentError, HttpError) as exc:
                status, payload = error_answer(exc, f"{method} {path}")
            raw = json_bytes(payload)
            if status < 500:  # a failed attempt may be retried for real
                self.idempotency.put(key, request_id, status, raw, now_s)
        return status, Raw(raw)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "bad_json", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "bad_json", "body must be a JSON object")
    return data


def error_answer(exc: Exception, what: str) -> tuple[int, dict[str, Any]]:
    """The one place where errors become HTTP answers: status and error body."""
    if isinstance(exc, HttpError):
        return exc.status, error_body(exc.code, str(exc), exc.fix)
    if isinstance(exc, InvalidRequest):
        return 400, error_body(exc.code, str(exc), exc.fix)
    if isinstance(exc, Refused):
        return 409, error_body(exc.code, str(exc), exc.fix)
    if isinstance(exc, CommandFailed):
        return (503 if exc.temporary else 500), error_body(exc.code, str(exc), exc.fix)
    if isinstance(exc, TemporaryError):
        return 503, error_body("temporary", str(exc), "retry later")
    if isinstance(exc, ConfigError):
        return 400, error_body("bad_value", str(exc), exc.fix or "")
    if isinstance(exc, PermanentError):
        status, code, fix = _permanent_status(exc)
        return status, error_body(code, str(exc), fix)
    log.exception("internal error on %s", what)  # a bug must not kill the agent
    return 500, error_body("internal", "internal error; see the agent's log")


def _permanent_status(exc: PermanentError) -> tuple[int, str, str]:
    """HTTP status, code and fix for a permanent fault (GPU errors by their type)."""
    from greencpn.actuate.gpu import errors as gpu

    if isinstance(exc, gpu.GpuNotFoundError):
        return 400, "unknown_gpu", ""
    if isinstance(exc, gpu.GpuInvalidArgumentError):
        return 400, "bad_value", ""
    if isinstance(exc, gpu.GpuNotSupportedError):
        return 409, "not_supported", "this GPU or driver cannot do it; leave it out of the plan"
    if isinstance(exc, gpu.GpuPermissionError):
        return 500, "no_permission", "run the agent as root (NVML needs it to change limits)"
    return 500, "failed", ""


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, default=str, separators=(",", ":")).encode()


def error_body(code: str, message: str, fix: str = "") -> dict[str, Any]:
    err = {"code": code, "message": message}
    if fix:
        err["fix"] = fix
    return {"error": err}
