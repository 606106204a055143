"""Request authentication for the node agent: HMAC-SHA256 with per-node keys.

Every request carries three headers:

* ``X-Greencpn-Timestamp`` — Unix time in seconds (decimal), when the client signed;
* ``X-Greencpn-Nonce`` — 16 to 64 characters from ``[A-Za-z0-9_-]``, never reused;
* ``X-Greencpn-Signature`` — lowercase hex HMAC-SHA256 of the canonical string below.

POSTs may add ``X-Greencpn-Idempotency-Key`` (same alphabet): a retried POST carries the same
key with a fresh nonce and timestamp, and the agent answers it from its record instead of
applying it twice. The key is signed too.

The canonical string (lines joined by ``\\n``)::

    GREENCPN-HMAC-SHA256
    <METHOD>
    <path with query, exactly as sent>
    <timestamp header, exactly as sent>
    <nonce>
    <idempotency key or empty>
    <hex SHA-256 of the body>

The agent refuses (401) a request that is unsigned, wrongly signed, stale
(``|now - timestamp| > max_skew_s``) or replayed (its nonce was already accepted within the
validity window). Nonces are only remembered after the signature checks, so only a key holder
can fill the (bounded) cache. Answers to authenticated requests are signed as well
(``X-Greencpn-Response-Signature`` over the request's nonce, the status and the body hash), so
the controller can tell the agent's answer from a forgery.

Keys are 32 random bytes written as 64 hex characters in a file of mode 0600; a file may hold
several keys, one per line, so a key can be rotated without downtime.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import os
import re
import secrets
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from greencpn.clock import Clock
from greencpn.errors import ConfigError

SCHEME = "GREENCPN-HMAC-SHA256"
HEADER_TIMESTAMP = "X-Greencpn-Timestamp"
HEADER_NONCE = "X-Greencpn-Nonce"
HEADER_SIGNATURE = "X-Greencpn-Signature"
HEADER_IDEMPOTENCY = "X-Greencpn-Idempotency-Key"
HEADER_RESPONSE_SIGNATURE = "X-Greencpn-Response-Signature"

KEY_BYTES = 32
DEFAULT_MAX_SKEW_S = 30.0
DEFAULT_NONCE_CACHE_MAX = 65_536

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,6})?$")


class AuthError(Exception):
    """A request failed authentication. ``code`` is machine-readable, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, *, status: int = 401, fix: str = "") -> None:
        self.code = code
        self.status = status
        self.fix = fix
        super().__init__(message)


# --------------------------------------------------------------------------------------- keys


def generate_key_hex() -> str:
    """Return a fresh key: 32 random bytes as 64 lowercase hex characters."""
    return secrets.token_hex(KEY_BYTES)


def write_key_file(path: str | Path, *, overwrite: bool = False) -> Path:
    """Create a key file of mode 0600 holding a fresh key; refuse to overwrite unless told.

    Raises:
        ConfigError: the file exists (and ``overwrite`` is false) or cannot be written.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(
            "key file already exists",
            source=str(path),
            fix="pick another path, or pass --force to replace it",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot create key file: {exc.strerror}",
            source=str(path),
            fix="check the directory exists and is writable",
        ) from None
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(generate_key_hex() + "\n")
    return path


def load_keys(path: str | Path) -> list[bytes]:
    """Read every key of a key file: one hex key per line (``#`` comments and blank lines skipped).

    The file must be a regular file readable by its owner only (mode 0600 or 0400). Several
    keys allow rotation without downtime: the agent accepts any of them; a client signs with
    the first.

    Raises:
        ConfigError: missing, unreadable, too open, or a line that is not 64+ hex characters.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            "key file not found",
            source=str(path),
            fix=f"create one with: greencpn agent keygen {path}",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read key file: {exc.strerror}", source=str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("key file is not a regular file", source=str(path))
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"key file has mode {mode:04o}; group and others must have no access",
            source=str(path),
            fix=f"chmod 600 {path}",
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file: {exc}", source=str(path)) from None
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            key = b""
        if len(key) < KEY_BYTES:
            raise ConfigError(
                f"each key must be at least {2 * KEY_BYTES} hex characters (a {KEY_BYTES}-byte "
                "key) on its own line",
                source=str(path),
                fix=f"generate one with: greencpn agent keygen --force {path}",
            )
        keys.append(key)
    if not keys:
        raise ConfigError(
            f"key file holds no key (need {2 * KEY_BYTES} hex characters)",
            source=str(path),
            fix=f"generate one with: greencpn agent keygen --force {path}",
        )
    return keys


def load_key(path: str | Path) -> bytes:
    """The first key of a key file (the one a client signs with); see :func:`load_keys`."""
    return load_keys(path)[0]


# ---------------------------------------------------------------------------------- signatures


def body_sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_string(
    method: str, path: str, timestamp: str, nonce: str, idempotency_key: str, body_hash_hex: str
) -> bytes:
    """The exact bytes that are signed (see the module docstring)."""
    return "\n".join(
        (SCHEME, method.upper(), path, timestamp, nonce, idempotency_key, body_hash_hex)
    ).encode("utf-8")


def sign_request(
    key: bytes,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    idempotency_key: str = "",
) -> str:
    """Hex HMAC-SHA256 signature of a request."""
    msg = canonical_string(method, path, timestamp, nonce, idempotency_key, body_sha256_hex(body))
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign_response(key: bytes, nonce: str, status: int, body: bytes) -> str:
    """Hex HMAC-SHA256 over the request's nonce, the response status and the body hash."""
    msg = f"GREENCPN-RESPONSE\n{nonce}\n{status}\n{body_sha256_hex(body)}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A fresh 32-character URL-safe nonce."""
    return secrets.token_hex(16)


def format_timestamp(unix_s: float) -> str:
    return f"{unix_s:.3f}"


def signed_headers(
    key: bytes,
    method: str,
    path: str,
    body: bytes,
    unix_s: float,
    *,
    nonce: str | None = None,
    idempotency_key: str = "",
) -> dict[str, str]:
    """Headers that authenticate one request (a fresh nonce unless one is given)."""
    ts = format_timestamp(unix_s)
    nonce = nonce or new_nonce()
    headers = {
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign_request(key, method, path, ts, nonce, body, idempotency_key),
    }
    if idempotency_key:
        headers[HEADER_IDEMPOTENCY] = idempotency_key
    return headers


# ------------------------------------------------------------------------------------ verifier


@dataclass(frozen=True)
class Verified:
    """What a request proved: its nonce and its (optional) idempotency key."""

    nonce: str
    idempotency_key: str
    key_index: int = 0


class NonceCache:
    """Nonces seen within the validity window; bounded memory.

    A nonce is kept until its request's timestamp + ``max_skew_s`` has passed: after that the
    request is refused as stale anyway. When full of unexpired nonces the cache refuses new
    requests (503) rather than forgetting a nonce that could then be replayed.
    """

    def __init__(self, max_entries: int = DEFAULT_NONCE_CACHE_MAX) -> None:
        self.max_entries = max_entries
        self._seen: set[str] = set()
        self._heap: list[tuple[float, str]] = []  # (expiry unix s, nonce)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, nonce: str, expires_unix_s: float, now_unix_s: float) -> None:
        """Record ``nonce``; raise :class:`AuthError` if it was seen or the cache is full."""
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] < now_unix_s:
                self._seen.discard(heapq.heappop(heap)[1])
            if nonce in self._seen:
                raise AuthError(
                    "replayed",
                    "nonce already used: request replayed",
                    fix="sign every request with a fresh nonce",
                )
            if len(self._seen) >= self.max_entries:
                raise AuthError("busy", "too many requests in the validity window", status=503)
            self._seen.add(nonce)
            heapq.heappush(heap, (expires_unix_s, nonce))


class Verifier:
    """Checks request signatures, freshness and nonces against one node key.

    Args:
        key: the node's key.
        clock: tells the current time (injectable for tests).
        max_skew_s: accepted |now - timestamp|, seconds.
        nonce_cache_max: bound on remembered nonces.
    """

    def __init__(
        self,
        key: bytes | Sequence[bytes],
        clock: Clock,
        *,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        nonce_cache_max: int = DEFAULT_NONCE_CACHE_MAX,
    ) -> None:
        self._keys = [key] if isinstance(key, bytes) else list(key)
        if not self._keys:
            raise ValueError("Verifier needs at least one key")
        self.clock = clock
        self.max_skew_s = max_skew_s
        self.nonces = NonceCache(nonce_cache_max)

    def verify(
        self, method: str, path: str, headers: Mapping[str, str] | Message, body: bytes
    ) -> Verified:
        """Return what the request proved, or raise :class:`AuthError`.

        ``headers`` is anything with a case-insensitive ``get`` (``email.message.Message``).
        """
        get = headers.get
        ts_text = get(HEADER_TIMESTAMP)
        nonce = get(HEADER_NONCE)
        signature = get(HEADER_SIGNATURE)
        idem = get(HEADER_IDEMPOTENCY) or ""
        if not ts_text or not nonce or not signature:
            raise AuthError(
                "unsigned",
                "request is not signed",
                fix=f"send {HEADER_TIMESTAMP}, {HEADER_NONCE} and {HEADER_SIGNATURE} "
                "(use greencpn.agent.client.AgentClient)",
            )
        if (
            not _TIMESTAMP_RE.match(ts_text)
            or not _TOKEN_RE.match(nonce)
            or (idem and not _TOKEN_RE.match(idem))
        ):
            raise AuthError(
                "malformed",
                "malformed authentication headers",
                fix="timestamp: Unix seconds; nonce/idempotency key: 16-64 of [A-Za-z0-9_-]",
            )
        given = signature.strip().lower().encode()
        key_index = -1
        for i, key in enumerate(self._keys):  # every key is tried: timing shows nothing
            expected = sign_request(key, method, path, ts_text, nonce, body, idem)
            if hmac.compare_digest(expected.encode(), given) and key_index < 0:
                key_index = i
        if key_index < 0:
            raise AuthError(
                "bad_signature",
                "signature does not match",
                fix="the controller's key for this node must equal the agent's key file",
            )
        ts = float(ts_text)
        now = self.clock.now().timestamp()
        if not math.isfinite(ts) or abs(now - ts) > self.max_skew_s:
            raise AuthError(
                "stale",
                f"timestamp is {now - ts:+.1f} s off the agent's clock "
                f"(allowed ±{self.max_skew_s:g} s)",
                fix="synchronise clocks (NTP/chrony)",
            )
        self.nonces.add(nonce, ts + self.max_skew_s, now)
        return Verified(nonce=nonce, idempotency_key=idem, key_index=key_index)

    def sign_response(self, verified: Verified, status: int, body: bytes) -> str:
        """Sign an answer with the key that authenticated the request."""
        return sign_response(self._keys[verified.key_index], verified.nonce, status, body)
