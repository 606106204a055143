"""Signing, verification, nonce cache and key files, without a server."""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import timedelta
from pathlib import Path

import pytest

from greencpn.agent import auth
from greencpn.agent.auth import AuthError, NonceCache, Verifier, load_key, signed_headers
from greencpn.clock import SimClock
from greencpn.errors import ConfigError

KEY = bytes(range(32))


def _clock() -> SimClock:
    from datetime import UTC, datetime

    return SimClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))


def test_signature_is_hmac_sha256_of_the_documented_canonical_string() -> None:
    body = b'{"index":0,"power_limit_w":250}'
    sig = auth.sign_request(
        KEY, "post", "/v1/gpu/power-limit?x=1", "1764072000.000", "n" * 16, body, "k" * 16
    )
    canonical = (
        "GREENCPN-HMAC-SHA256\nPOST\n/v1/gpu/power-limit?x=1\n1764072000.000\n"
        + "n" * 16
        + "\n"
        + "k" * 16
        + "\n"
        + hashlib.sha256(body).hexdigest()
    )
    assert sig == hmac.new(KEY, canonical.encode(), hashlib.sha256).hexdigest()


def test_verifier_accepts_valid_and_refuses_each_kind_of_bad_request() -> None:
    clock = _clock()
    v = Verifier(KEY, clock)
    now = clock.now().timestamp()
    h = signed_headers(KEY, "GET", "/v1/status", b"", now)
    assert v.verify("GET", "/v1/status", h, b"").nonce == h[auth.HEADER_NONCE]

    def code(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> str:
        with pytest.raises(AuthError) as ei:
            v.verify(method, path, headers, body)
        return ei.value.code

    assert code("GET", "/v1/status", h) == "replayed"
    assert code("GET", "/v1/status", {}) == "unsigned"
    other = signed_headers(bytes(32), "GET", "/v1/status", b"", now)
    assert code("GET", "/v1/status", other) == "bad_signature"
    h2 = signed_headers(KEY, "GET", "/v1/status", b"", now)
    assert code("GET", "/v1/status?all=1", h2) == "bad_signature"  # query is signed
    assert code("POST", "/v1/status", h2) == "bad_signature"  # method is signed
    h3 = signed_headers(KEY, "POST", "/v1/power", b'{"action":"drain"}', now)
    assert code("POST", "/v1/power", h3, b'{"action":"off"}') == "bad_signature"  # body
    stale = signed_headers(KEY, "GET", "/v1/status", b"", now - 30.5)
    assert code("GET", "/v1/status", stale) == "stale"
    future = signed_headers(KEY, "GET", "/v1/status", b"", now + 31)
    assert code("GET", "/v1/status", future) == "stale"
    edge = signed_headers(KEY, "GET", "/v1/status", b"", now - 29.9)
    v.verify("GET", "/v1/status", edge, b"")
    bad = dict(h2, **{auth.HEADER_NONCE: "short"})
    assert code("GET", "/v1/status", bad) == "malformed"


def test_replay_refused_for_the_whole_window_then_stale() -> None:
    clock = _clock()
    v = Verifier(KEY, clock, max_skew_s=30)
    h = signed_headers(KEY, "GET", "/v1/status", b"", clock.now().timestamp())
    v.verify("GET", "/v1/status", h, b"")
    for step_s in (10, 10, 9.5):
        clock.advance(timedelta(seconds=step_s))
        with pytest.raises(AuthError, match="replayed"):
            v.verify("GET", "/v1/status", h, b"")
    clock.advance(timedelta(seconds=1))
    with pytest.raises(AuthError) as ei:
        v.verify("GET", "/v1/status", h, b"")
    assert ei.value.code == "stale"
    fresh = signed_headers(KEY, "GET", "/v1/status", b"", clock.now().timestamp())
    v.verify("GET", "/v1/status", fresh, b"")
    assert len(v.nonces) == 1  # the expired nonce was forgotten: memory stays bounded


def test_nonce_cache_is_bounded_and_refuses_rather_than_forgets() -> None:
    cache = NonceCache(max_entries=3)
    for i in range(3):
        cache.add(f"nonce-{i:012d}", expires_unix_s=100.0 + i, now_unix_s=50.0)
    with pytest.raises(AuthError) as ei:
        cache.add("nonce-x", expires_unix_s=110.0, now_unix_s=50.0)
    assert ei.value.status == 503
    cache.add("nonce-y", expires_unix_s=200.0, now_unix_s=100.5)  # nonce-0 expired
    assert len(cache) == 3
    with pytest.raises(AuthError, match="replayed"):
        cache.add("nonce-000000000002", expires_unix_s=300.0, now_unix_s=100.5)


def test_key_file_must_be_0600(tmp_path: Path) -> None:
    path = auth.write_key_file(tmp_path / "k")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert len(load_key(path)) == 32
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError) as ei:
        load_key(path)
    assert ei.value.fix == f"chmod 600 {path}"
    os.chmod(path, 0o400)
    assert len(load_key(path)) == 32


def test_key_file_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keygen"):
        load_key(tmp_path / "missing")
    short = tmp_path / "short"
    short.write_text("abcd\n")
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="64 hex"):
        load_key(short)
    existing = auth.write_key_file(tmp_path / "k")
    with pytest.raises(ConfigError, match="already exists"):
        auth.write_key_file(existing)
    first = existing.read_text()
    auth.write_key_file(existing, overwrite=True)
    assert existing.read_text() != first


def test_key_file_with_two_keys_allows_rotation(tmp_path: Path) -> None:
    old, new = auth.generate_key_hex(), auth.generate_key_hex()
    path = tmp_path / "agent.key"
    path.write_text(
        f"# rotating: new key first, old key until every controller has the new one\n"
        f"{new}\n\n{old}\n"
    )
    path.chmod(0o600)
    keys = auth.load_keys(path)
    assert keys == [bytes.fromhex(new), bytes.fromhex(old)]
    assert load_key(path) == bytes.fromhex(new)
    clock = _clock()
    v = Verifier(keys, clock)
    now = clock.now().timestamp()
    for key, index in ((bytes.fromhex(old), 1), (bytes.fromhex(new), 0)):
        verified = v.verify(
            "GET", "/v1/status", signed_headers(key, "GET", "/v1/status", b"", now), b""
        )
        assert verified.key_index == index
        # the answer is signed with the key that signed the request
        assert v.sign_response(verified, 200, b"{}") == auth.sign_response(
            key, verified.nonce, 200, b"{}"
        )
    with pytest.raises(AuthError, match="signature"):
        v.verify("GET", "/v1/status", signed_headers(bytes(32), "GET", "/v1/status", b"", now), b"")
    path.write_text(f"{new}\nnot-a-key\n")
    with pytest.raises(ConfigError, match="own line"):
        auth.load_keys(path)
    path.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no key"):
        auth.load_keys(path)
