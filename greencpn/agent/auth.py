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

Keys are 32 random bytes written as 64 hex characters in a file of mode 0600, owned by the user
reading it (or root); a file may hold several keys, one per line, so a key can be rotated
without downtime. A key line may end with its scope: ``control`` (the default: everything) or
``telemetry`` (read-only: ``GET`` requests; a ``POST`` is refused with 403 ``forbidden_scope``),
like zeusd's scoped tokens. Keys of one repeated byte (all zero, say) are refused.
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
SCOPE_CONTROL = "control"
SCOPE_TELEMETRY = "telemetry"
SCOPES = (SCOPE_CONTROL, SCOPE_TELEMETRY)
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


@dataclass(frozen=True)
class ScopedKey:
    """A key and what it may do: ``control`` (everything) or ``telemetry`` (read-only)."""

    key: bytes
    scope: str = SCOPE_CONTROL


def trivial_key(key: bytes) -> bool:
    """True for a key of one repeated byte (e.g. all zero): never a generated key."""
    return len(set(key)) <= 1


def write_key_file(
    path: str | Path, *, overwrite: bool = False, scope: str = SCOPE_CONTROL
) -> Path:
    """Create a key file of mode 0600 holding a fresh key; refuse to overwrite unless told.

    A ``telemetry`` key is written with its scope on the line (``<hex> telemetry``).

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
        suffix = "" if scope == SCOPE_CONTROL else f" {scope}"
        fh.write(generate_key_hex() + suffix + "\n")
    return path


def load_scoped_keys(path: str | Path) -> list[ScopedKey]:
    """Read every key of a key file with its scope: one ``<hex> [control|telemetry]`` per line
    (``#`` comments and blank lines skipped).

    The file must be a regular file owned by the user reading it (or root) and readable by its
    owner only (mode 0600 or 0400). Several keys allow rotation without downtime: the agent
    accepts any of them; a client signs with the first.

    Raises:
        ConfigError: missing, unreadable, owned by someone else, too open, a line that is not
            64+ hex characters and an optional known scope, or a trivial key.
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
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        raise ConfigError(
            f"key file is owned by uid {st.st_uid}, not by this user (uid {euid}) or root: "
            "whoever owns it can read or replace the key",
            source=str(path),
            fix=f"chown {euid} {path}",
        )
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
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            key = bytes.fromhex(parts[0])
        except ValueError:
            key = b""
        if len(key) < KEY_BYTES or len(parts) > 2:
            raise ConfigError(
                f"line {lineno}: each key must be at least {2 * KEY_BYTES} hex characters (a "
                f"{KEY_BYTES}-byte key) on its own line, optionally followed by its scope",
                source=str(path),
                fix=f"generate one with: greencpn agent keygen --force {path}",
            )
        scope = parts[1] if len(parts) == 2 else SCOPE_CONTROL
        if scope not in SCOPES:
            raise ConfigError(
                f"line {lineno}: unknown key scope {scope!r}",
                source=str(path),
                fix=f"write one of {', '.join(SCOPES)} after the key (none: control)",
            )
        if trivial_key(key):
            raise ConfigError(
                f"line {lineno}: the key is one repeated byte (e.g. all zero), guessable",
                source=str(path),
                fix=f"generate a random one with: greencpn agent keygen --force {path}",
            )
        keys.append(ScopedKey(key, scope))
    if not keys:
        raise ConfigError(
            f"key file holds no key (need {2 * KEY_BYTES} hex characters)",
            source=str(path),
            fix=f"generate one with: greencpn agent keygen --force {path}",
        )
    return keys


def load_keys(path: str | Path) -> list[bytes]:
    """The keys of a key file, whatever their scope; see :func:`load_scoped_keys`."""
    return [k.key for k in load_scoped_keys(path)]


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
    scope: str = SCOPE_CONTROL


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
    """Checks request signatures, freshness and nonces against the node's keys.

    Args:
        key: the node's key, or several (plain bytes are ``control`` keys; a
            :class:`ScopedKey` carries its scope).
        clock: tells the current time (injectable for tests).
        max_skew_s: accepted |now - timestamp|, seconds.
        nonce_cache_max: bound on remembered nonces.
    """

    def __init__(
        self,
        key: bytes | ScopedKey | Sequence[bytes | ScopedKey],
        clock: Clock,
        *,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        nonce_cache_max: int = DEFAULT_NONCE_CACHE_MAX,
    ) -> None:
        given = [key] if isinstance(key, bytes | ScopedKey) else list(key)
        scoped = [k if isinstance(k, ScopedKey) else ScopedKey(k) for k in given]
        if not scoped:
            raise ValueError("Verifier needs at least one key")
        for k in scoped:
            if trivial_key(k.key):
                raise ValueError("refusing a key of one repeated byte (e.g. all zero)")
            if k.scope not in SCOPES:
                raise ValueError(f"unknown key scope {k.scope!r}; one of {SCOPES}")
        self._keys = [k.key for k in scoped]
        self._scopes = [k.scope for k in scoped]
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
        return Verified(
            nonce=nonce, idempotency_key=idem, key_index=key_index, scope=self._scopes[key_index]
        )

    def sign_response(self, verified: Verified, status: int, body: bytes) -> str:
        """Sign an answer with the key that authenticated the request."""
        return sign_response(self._keys[verified.key_index], verified.nonce, status, body)
