"""Controller side of the node agent: signed requests, timeouts, retries, typed errors.

* Every request is signed (:mod:`greencpn.agent.auth`) with a fresh nonce and timestamp.
* Connect and read timeouts are separate (``connect_timeout_s``, ``read_timeout_s``).
* Temporary failures (cannot connect, timeout, 502/503/504) are retried with exponential
  backoff. A POST is retried too, but safely: every attempt carries the same
  ``X-Greencpn-Idempotency-Key``, so the agent applies it at most once and answers later attempts
  from its record.
* Errors are typed by what the caller should do: :class:`AgentUnavailableError` (a
  :class:`~greencpn.errors.TemporaryError`) when the agent cannot be reached,
  :class:`AgentAuthError` (a :class:`~greencpn.errors.PermanentError`) on 401/403 or an unsigned
  answer, with the fix, and :class:`AgentRequestError` when the agent refused the request
  (out-of-range value, busy node, ...).
* Answers must carry the agent's response signature, so a forged answer is refused.

One :class:`AgentClient` may be shared by threads: each thread keeps its own keep-alive
connection (``http.client``; the ``requests`` stack cost 3x more CPU per call, see
bench/results/agent.md).
"""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from greencpn.actuate.base import Change
from greencpn.agent.auth import (
    HEADER_NONCE,
    HEADER_RESPONSE_SIGNATURE,
    load_key,
    sign_response,
    signed_headers,
)
from greencpn.clock import Clock, SystemClock
from greencpn.errors import ConfigError, PermanentError, TemporaryError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504})


class AgentUnavailableError(TemporaryError):
    """The agent could not be reached or answered 502/503/504, after all retries."""


class AgentAuthError(PermanentError):
    """The agent refused our credentials (401/403), or its answer was not signed by the key."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str = "", fix: str = ""
    ) -> None:
        self.status = status
        self.code = code
        self.fix = fix
        super().__init__(f"{message} — fix: {fix}" if fix else message)


class AgentRequestError(PermanentError):
    """The agent refused the request itself (400, 404, 409, 413, 500): ``status``, ``code``, ``fix``."""

    def __init__(self, message: str, *, status: int, code: str = "", fix: str = "") -> None:
        self.status = status
        self.code = code
        self.fix = fix
        super().__init__(f"{message} — fix: {fix}" if fix else message)


_AUTH_FIXES = {
    "unsigned": "sign requests (use greencpn.agent.client.AgentClient)",
    "bad_signature": "use the agent's key: the controller's key file for this node must equal "
    "the agent's --key-file",
    "stale": "synchronise the clocks of controller and node (NTP/chrony)",
    "replayed": "sign every request with a fresh nonce",
}


def change_from_dict(d: dict[str, Any]) -> Change:
    return Change(
        target=str(d.get("target", "")),
        what=str(d.get("what", "")),
        before=d.get("before"),
        after=d.get("after"),
        changed=bool(d.get("changed")),
        message=str(d.get("message", "")),
    )


class AgentClient:
    """Talks to one node agent.

    Args:
        url: the agent's base URL, e.g. ``http://127.0.0.1:9123`` or ``https://node017:9123``.
        key: the node key (bytes); see :meth:`from_key_file`.
        clock: tells the time the requests are signed with (injectable).
        connect_timeout_s / read_timeout_s: per attempt.
        retries: extra attempts after the first on temporary failures.
        backoff_s / backoff_max_s: first and largest wait between attempts (doubling, +jitter).
        tls_ca: CA bundle to verify an https agent (None: system CAs).
        tls_cert / tls_key: client certificate for mutual TLS.
        sleep: how to wait between attempts (injectable).
    """

    def __init__(
        self,
        url: str,
        key: bytes,
        *,
        clock: Clock | None = None,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        backoff_max_s: float = 2.0,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"agent URL {url!r} is not http(s)://HOST:PORT",
                field="url",
                fix="e.g. http://127.0.0.1:9123 or https://node017:9123",
            )
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._base_path = parts.path.rstrip("/")
        self._key = key
        self.clock = clock or SystemClock()
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.tls_ca = tls_ca
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self._ssl: ssl.SSLContext | None = None
        self._sleep = sleep
        self._local = threading.local()

    @classmethod
    def from_key_file(cls, url: str, key_file: str | Path, **options: Any) -> AgentClient:
        """Build a client from a key file (mode 0600 required, as on the agent)."""
        return cls(url, load_key(key_file), **options)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            host, port = self._host, self._port
            if self._scheme == "https":
                conn = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout[0], context=self._ssl_context()
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout[0])
            self._local.conn = conn
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                try:
                    ctx.load_cert_chain(self.tls_cert, self.tls_key)
                except (OSError, ssl.SSLError) as exc:
                    raise AgentAuthError(
                        f"cannot load client certificate: {exc}",
                        fix="check --tls-cert/--tls-key paths and that they match",
                    ) from None
            self._ssl = ctx
        return self._ssl

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------------------ requests

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """Send one signed request (with retries) and return the decoded JSON answer.

        Raises:
            AgentUnavailableError: unreachable or temporarily failing after all retries.
            AgentAuthError: credentials refused, or the answer is not the agent's.
            AgentRequestError: the agent refused the request.
        """
        method = method.upper()
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        idem = secrets.token_hex(16) if method == "POST" else ""
        delay = self.backoff_s
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                wait = min(delay, self.backoff_max_s) * (1 + 0.25 * secrets.randbelow(100) / 100)
                log.info(
                    "agent %s: retry %d/%d in %.2f s after: %s",
                    self.url,
                    attempt,
                    self.retries,
                    wait,
                    last,
                )
                self._sleep(wait)
                delay *= 2
            try:
                return self._attempt(method, path, body, idem)
            except AgentUnavailableError as exc:
                last = exc
        assert last is not None
        raise AgentUnavailableError(
            f"agent {self.url} unavailable after {self.retries + 1} attempt(s): {last}",
            retry_after_s=getattr(last, "retry_after_s", None),
        )

    def _attempt(self, method: str, path: str, body: bytes, idem: str) -> Any:
        full_path = self._base_path + path
        for fresh in (False, True):
            # Signed per send: a resend gets a fresh nonce (a POST keeps its idempotency key).
            headers = signed_headers(
                self._key,
                method,
                full_path,
                body,
                self.clock.now().timestamp(),
                idempotency_key=idem,
            )
            if body:
                headers["Content-Type"] = "application/json"
            conn = self._connection()
            reused = conn.sock is not None
            try:
                if conn.sock is None:
                    conn.connect()
                    assert conn.sock is not None
                    conn.sock.settimeout(self.timeout[1])
                conn.request(method, full_path, body=body or None, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise AgentAuthError(
                    f"TLS: cannot verify agent {self.url}: {exc.verify_message}",
                    fix="pass the CA that signed the agent's certificate",
                ) from None
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
                self.close()
                raise AgentUnavailableError(f"TLS connection closed: {exc}") from None
            except ssl.SSLError as exc:
                self.close()
                raise AgentAuthError(
                    f"TLS with agent {self.url} failed: {exc}",
                    fix="check the CA, the client certificate and its key",
                ) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and not fresh:
                    # A kept-alive connection the agent closed meanwhile: send once more on a
                    # new connection (safe: GETs change nothing, POSTs are deduplicated).
                    continue
                raise AgentUnavailableError(f"{type(exc).__name__}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise AgentUnavailableError(f"{type(exc).__name__}: {exc}") from None
            if resp.will_close:
                self.close()
            return self._decode(
                resp.status,
                resp.getheader(HEADER_RESPONSE_SIGNATURE, ""),
                raw,
                headers[HEADER_NONCE],
            )
        raise AssertionError("unreachable")

    def _decode(self, status: int, signature: str, raw: bytes, nonce: str) -> Any:
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        err = data.get("error", {}) if isinstance(data, dict) else {}
        if not isinstance(err, dict):
            err = {}
        code, message, fix = (
            str(err.get("code", "")),
            str(err.get("message", raw[:200])),
            str(err.get("fix", "")),
        )
        if status in (401, 403):
            raise AgentAuthError(
                f"agent {self.url} refused the request ({status} {code}): {message}",
                status=status,
                code=code,
                fix=_AUTH_FIXES.get(code, fix) or fix,
            )
        expected = sign_response(self._key, nonce, status, raw)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            if status in RETRY_STATUSES:
                raise AgentUnavailableError(f"HTTP {status} (unsigned, from a proxy?)")
            raise AgentAuthError(
                f"answer from {self.url} is not signed with this node's key (HTTP {status})",
                fix="check the URL points at this node's agent and the key matches",
            )
        if status in RETRY_STATUSES:
            raise AgentUnavailableError(f"HTTP {status} {code}: {message}")
        if status >= 300:
            raise AgentRequestError(
                f"agent {self.url} refused the request ({status} {code}): {message}",
                status=status,
                code=code,
                fix=fix,
            )
        return data

    # ---------------------------------------------------------------------------- operations

    def status(self) -> dict[str, Any]:
        """The node's telemetry: GPUs (power, energy, limits), running work, uptime, state."""
        return self.request("GET", "/v1/status")

    def set_power_limit_w(self, power_limit_w: float, index: int | str = "all") -> list[Change]:
        """Set one GPU's (or all GPUs') power limit, in W; read before write on the agent."""
        data = self.request(
            "POST", "/v1/gpu/power-limit", {"index": index, "power_limit_w": power_limit_w}
        )
        return [change_from_dict(c) for c in data["changes"]]

    def lock_clocks_mhz(self, min_mhz: int, max_mhz: int, index: int | str = "all") -> list[Change]:
        data = self.request(
            "POST", "/v1/gpu/clocks", {"index": index, "min_mhz": min_mhz, "max_mhz": max_mhz}
        )
        return [change_from_dict(c) for c in data["changes"]]

    def reset_clocks(self, index: int | str = "all") -> list[Change]:
        data = self.request("POST", "/v1/gpu/clocks", {"index": index, "reset": True})
        return [change_from_dict(c) for c in data["changes"]]

    def restore_defaults(self) -> list[Change]:
        data = self.request("POST", "/v1/gpu/restore-defaults", {})
        return [change_from_dict(c) for c in data["changes"]]

    def power(self, action: str, reason: str = "") -> list[Change]:
        """``action``: ``"drain"``, ``"resume"`` or ``"off"``."""
        payload: dict[str, Any] = {"action": action}
        if reason:
            payload["reason"] = reason
        data = self.request("POST", "/v1/power", payload)
        return [change_from_dict(c) for c in data["changes"]]
