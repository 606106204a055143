"""HTTP plumbing shared by the live carbon APIs: one session, timeouts, retries, typed errors.

Every request goes through :meth:`HttpClient.get_json`, which

* uses a :class:`requests.Session` with separate connect and read timeouts;
* retries temporary faults (timeout, connection refused, 429, 5xx, malformed body) with
  exponential backoff and full jitter, honouring ``Retry-After`` on 429/503;
* turns every outcome into either parsed JSON or a typed error the caller can act on:
  :class:`~greencpn.errors.TemporaryError` subclasses (retry later, or use the cache) and
  :class:`~greencpn.errors.PermanentError` subclasses (change the key, zone or URL).

Sleeping and the clock are injected so tests never really wait. Secrets (API tokens,
passwords) travel in headers/auth only and never appear in log records or error messages.

Size (~620 lines, about the ~600 of issue 13): one client, its retry policy and the typed
errors it raises, which the live sources share.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np
import pandas as pd
import requests

from greencpn.clock import Clock, SystemClock
from greencpn.errors import PermanentError, TemporaryError
from greencpn.sources.resample import MAX_PLAUSIBLE_G_PER_KWH, format_duration

log = logging.getLogger(__name__)

USER_AGENT = "greencpn-sources/0.1 (+https://github.com/greencpn)"
MAX_REDIRECTS = 5
_READ_CHUNK = 65536


# --------------------------------------------------------------------------------------------
# Typed errors
# --------------------------------------------------------------------------------------------
class ApiTimeoutError(TemporaryError):
    """The API did not answer within the connect/read timeout."""


class ApiConnectionError(TemporaryError):
    """The API could not be reached (connection refused, DNS failure, reset)."""


class RateLimitedError(TemporaryError):
    """HTTP 429: too many requests. ``retry_after_s`` says when to try again."""


class ServerError(TemporaryError):
    """HTTP 5xx: the provider has a problem on its side."""


class BadResponseError(TemporaryError):
    """The body was not the JSON we expected (malformed, truncated, empty data)."""


class BudgetExceededError(TemporaryError):
    """The configured daily request budget for this source is used up."""


class AuthError(PermanentError):
    """HTTP 401/403: the key is missing, wrong, expired or lacks access to this endpoint."""


class UnknownZoneError(PermanentError):
    """The provider does not know the zone/region (or the key has no access to it)."""


class ApiRequestError(PermanentError):
    """Any other 4xx: the request itself is wrong; retrying it unchanged will not help."""


# --------------------------------------------------------------------------------------------
# Retry policy
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on one request.

    Attributes:
        max_attempts: total attempts including the first (1 = no retry).
        base_delay_s: first backoff delay; attempt ``n`` waits up to ``base * 2**(n-1)``.
        max_delay_s: cap of one backoff delay.
        max_retry_after_s: longest ``Retry-After`` we are willing to sleep for inside one call;
            a longer one raises :class:`RateLimitedError` at once (the caller then serves the
            cache instead of blocking the control loop).
        connect_timeout_s: TCP connect timeout.
        read_timeout_s: time allowed between bytes of the answer.
        deadline_s: the whole call — every attempt, redirect, byte of the body and backoff
            wait — ends by then (a server dripping one byte per second never hits the read
            timeout); past it the call raises :class:`ApiTimeoutError`.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 15.0
    deadline_s: float = 60.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return rng.uniform(0.0, cap)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------
ErrorHook = Callable[[requests.Response, str], Exception | None]


class HttpClient:
    """A small JSON-over-HTTPS client with timeouts, retries and typed errors.

    Args:
        provider: short provider name used in messages (``electricitymaps`` ...).
        policy: timeouts and retry behaviour.
        session: a :class:`requests.Session` to reuse (one is created otherwise).
        sleep: function used to wait between retries (tests pass a recorder).
        clock: clock used to interpret HTTP-date ``Retry-After`` values.
        rng: random source for the jitter (seed it in tests).
        on_request: called once per HTTP attempt with the endpoint name (request budgets).
        monotonic: elapsed-time source for the call deadline (real time: it bounds real I/O).
    """

    def __init__(
        self,
        provider: str,
        policy: RetryPolicy | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_request: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.monotonic = monotonic
        self._box_lock = threading.Lock()
        self.policy = policy or RetryPolicy()
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.sleep = sleep
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.on_request = on_request
        self.attempts = 0  # total HTTP attempts made (for tests and budgets)

    def close(self) -> None:
        self.session.close()

    def get_json(
        self,
        url: str,
        *,
        endpoint: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        error_hook: ErrorHook | None = None,
    ) -> Any:
        """GET ``url`` and return its parsed JSON body.

        Args:
            url: full URL.
            endpoint: short name for messages/logs (``carbon-intensity/forecast``).
            params: query parameters.
            headers: extra headers (secrets go here; they are never logged).
            auth: HTTP basic-auth pair (never logged).
            error_hook: maps a non-2xx response to a provider-specific error (or None to use
                the generic mapping), e.g. an unknown-zone message.

        Raises:
            TemporaryError: a subclass for timeouts, refused connections, 429, 5xx and
                malformed JSON, after the retries are used up.
            PermanentError: a subclass for 401/403, unknown zone and other 4xx (no retry).
        """
        what = f"{self.provider} {endpoint}"
        last: TemporaryError | None = None
        deadline = self.monotonic() + self.policy.deadline_s
        for attempt in range(1, self.policy.max_attempts + 1):
            wait_s: float | None = None
            try:
                return self._attempt(url, what, params, headers, auth, error_hook, deadline)
            except RateLimitedError as exc:
                last = exc
                if exc.retry_after_s is not None:
                    if exc.retry_after_s > self.policy.max_retry_after_s:
                        raise
                    wait_s = exc.retry_after_s
            except TemporaryError as exc:
                last = exc
            if attempt >= self.policy.max_attempts:
                break
            if wait_s is None:
                wait_s = self.policy.backoff_s(attempt, self.rng)
            if self.monotonic() + wait_s >= deadline:
                raise ApiTimeoutError(
                    f"{what}: gave up at the {self.policy.deadline_s:g} s call deadline after "
                    f"{attempt} attempt(s); last: {last}"
                ) from None
            log.info(
                "%s: %s; retry %d/%d in %.2f s",
                what,
                last,
                attempt,
                self.policy.max_attempts - 1,
                wait_s,
            )
            self.sleep(wait_s)
        assert last is not None
        raise last

    # ----------------------------------------------------------------------------------------
    def _attempt(
        self,
        url: str,
        what: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
        error_hook: ErrorHook | None,
        deadline: float,
    ) -> Any:
        self.attempts += 1
        if self.on_request is not None:
            self.on_request(what)
        resp = self._send(url, what, params, headers, auth, deadline)
        status = resp.status_code
        log.debug("%s -> HTTP %d (%d bytes)", what, status, len(resp.content))
        if status >= 400:
            err = error_hook(resp, what) if error_hook else None
            raise err if err is not None else self._map_status(resp, what)
        try:
            return resp.json()
        except ValueError:
            raise BadResponseError(
                f"{what}: answer is not valid JSON (HTTP {status}, {len(resp.content)} bytes, "
                f"starts {resp.text[:40]!r})"
            ) from None

    def _send(
        self,
        url: str,
        what: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
        deadline: float,
    ) -> requests.Response:
        """One GET with its redirects followed by hand: a redirect to another origin (scheme,
        host, port) is refused when the request carries credentials — requests would strip
        ``Authorization`` there but send any other header, e.g. Electricity Maps'
        ``auth-token``. The body is read against the call deadline."""
        for _ in range(MAX_REDIRECTS + 1):
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                raise self._deadline_error(what, 0)
            timeout = (
                min(self.policy.connect_timeout_s, remaining),
                min(self.policy.read_timeout_s, remaining),
            )
            try:
                resp = self._get_headers(url, params, headers, auth, timeout, remaining, what)
            except requests.Timeout as exc:
                raise ApiTimeoutError(
                    f"{what}: no answer within {timeout[0]:g} s connect / {timeout[1]:g} s read "
                    f"timeout ({type(exc).__name__})"
                ) from None
            except requests.ConnectionError as exc:
                raise ApiConnectionError(
                    f"{what}: cannot connect to {_host_of(url)} ({_short_reason(exc)}); check the "
                    "network or the base URL"
                ) from None
            except requests.RequestException as exc:
                raise ApiConnectionError(f"{what}: request failed ({type(exc).__name__})") from None
            location = resp.headers.get("Location") if resp.is_redirect else None
            if location is None:
                self._read_body(resp, what, deadline)
                return resp
            resp.close()
            target = urljoin(resp.url, location)
            if _origin(target) != _origin(resp.url) and (headers or auth):
                raise ApiRequestError(
                    f"{what}: HTTP {resp.status_code} redirect to another origin "
                    f"({_host_of(target)}); greencpn does not send the {self.provider} "
                    "credentials there. Fix: set the base URL to the API's own address (or "
                    "check the proxy)"
                )
            log.info("%s: HTTP %d redirect to %s", what, resp.status_code, _host_of(target))
            url, params = target, None  # the Location carries its own query
        raise ApiRequestError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _get_headers(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
        timeout: tuple[float, float],
        remaining: float,
        what: str,
    ) -> requests.Response:
        """``session.get`` up to the end of the headers, in a worker thread joined for at most
        ``remaining`` seconds: a server dripping its status line or headers byte by byte never
        trips the per-read timeout. An abandoned worker closes its response when it ends."""
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                r = self.session.get(
                    url,
                    params=params,
                    headers=headers,
                    auth=auth,
                    timeout=timeout,
                    allow_redirects=False,
                    stream=True,
                )
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc
                return
            with self._box_lock:
                if box.get("abandoned"):
                    r.close()
                else:
                    box["resp"] = r

        worker = threading.Thread(target=work, name=f"greencpn-http-{self.provider}", daemon=True)
        worker.start()
        worker.join(max(0.0, remaining))
        with self._box_lock:
            if "resp" not in box and "error" not in box:
                box["abandoned"] = True
                raise self._deadline_error(what, 0)
        if "error" in box:
            raise box["error"]
        return box["resp"]

    def _read_body(self, resp: requests.Response, what: str, deadline: float) -> None:
        """Read the streamed body into ``resp`` (``.content``/``.json()`` then work), giving
        up at the deadline however slowly the bytes come."""
        from urllib3.exceptions import HTTPError as Urllib3Error
        from urllib3.exceptions import ReadTimeoutError

        chunks: list[bytes] = []
        size = 0
        raw = resp.raw
        try:
            while True:
                if self.monotonic() >= deadline:
                    raise self._deadline_error(what, size)
                chunk = raw.read1(_READ_CHUNK, decode_content=True)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except ReadTimeoutError:
            raise ApiTimeoutError(
                f"{what}: the answer stalled (no byte for {self.policy.read_timeout_s:g} s) "
                f"after {size} bytes"
            ) from None
        except (Urllib3Error, OSError) as exc:
            raise ApiConnectionError(
                f"{what}: the connection broke after {size} bytes ({type(exc).__name__})"
            ) from None
        finally:
            resp.close()
        resp._content = b"".join(chunks)
        resp._content_consumed = True  # type: ignore[attr-defined]

    def _deadline_error(self, what: str, size: int) -> ApiTimeoutError:
        return ApiTimeoutError(
            f"{what}: the call did not complete within its {self.policy.deadline_s:g} s deadline "
            f"({size} bytes of the answer received); the server is too slow"
        )

    def _map_status(self, resp: requests.Response, what: str) -> Exception:
        status = resp.status_code
        detail = api_error_text(resp)
        suffix = f": {detail}" if detail else ""
        if status == 429:
            ra = parse_retry_after(resp.headers.get("Retry-After"), self.clock.now())
            hint = f"; retry after {ra:g} s" if ra is not None else ""
            return RateLimitedError(
                f"{what}: rate limited (HTTP 429){hint}{suffix}", retry_after_s=ra
            )
        if status >= 500:
            ra = parse_retry_after(resp.headers.get("Retry-After"), self.clock.now())
            return ServerError(f"{what}: provider error HTTP {status}{suffix}", retry_after_s=ra)
        if status in (401, 403):
            return AuthError(
                f"{what}: HTTP {status} — the API key/credentials were refused{suffix}. "
                f"Fix: set a valid key for {self.provider} (see docs/sources.md, 'Keys'), and "
                "check that your plan includes this endpoint and zone"
            )
        if status == 404:
            return UnknownZoneError(
                f"{what}: HTTP 404 not found{suffix}. Fix: check the zone name and the base URL"
            )
        return ApiRequestError(f"{what}: HTTP {status}{suffix}")


def api_error_text(resp: requests.Response, limit: int = 200) -> str:
    """The provider's own error message from a JSON error body, shortened; '' if none."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:limit].strip() if resp.text else ""
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("code")
        elif err:
            msg = err
        msg = msg or body.get("message") or body.get("detail")
    return str(msg)[:limit] if msg else ""


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    for key in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "Connection reset",
        "No route to host",
    ):
        if key in text:
            return key
    return type(exc).__name__


def parse_points(
    points: list[tuple[object, object, bool]], what: str
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Parse ``(timestamp, value, estimated)`` triples from an API answer.

    Timestamps may carry any UTC offset (a DST-change day in local time is fine); they are
    converted to UTC, sorted and de-duplicated (the last answer for a timestamp wins).

    Raises:
        BadResponseError: no points, or a timestamp/value that is not parseable.
    """
    if not points:
        raise BadResponseError(f"{what}: the answer holds no data points")
    try:
        stamps: list[Any] = [p[0] for p in points]
        idx = pd.DatetimeIndex(pd.to_datetime(stamps, utc=True, format="ISO8601"))
        nums: list[Any] = [np.nan if p[1] is None else p[1] for p in points]
        vals = np.asarray(nums, dtype=float)
    except (TypeError, ValueError) as exc:
        raise BadResponseError(f"{what}: unparseable point in the answer ({exc})") from None
    est = np.array([bool(p[2]) for p in points], dtype=bool)
    order = np.argsort(idx.asi8, kind="stable")
    idx, vals, est = idx[order], vals[order], est[order]
    keep = ~idx.duplicated(keep="last")
    return idx[keep], vals[keep], est[keep]


def regular_series(
    idx: pd.DatetimeIndex,
    vals: np.ndarray,
    est: np.ndarray,
    *,
    step: timedelta | None,
    max_gap_slots: int,
    what: str,
) -> tuple[pd.Series, pd.Series]:
    """Put points on a regular grid of ``step`` (inferred as the most common spacing if None).

    Rule for gaps (missing slots or null values): runs of at most ``max_gap_slots`` missing
    slots are filled by linear interpolation in time and flagged estimated; longer runs stay NaN
    (flagged estimated) so the caller can refuse them or fill them from a forecaster.

    Returns:
        ``(intensity_g_per_kwh, estimated)`` on the regular UTC index.
    """
    if len(idx) == 0:
        raise BadResponseError(f"{what}: the answer holds no data points")
    check_plausible(idx, vals, what)
    if step is None:
        if len(idx) < 2:
            step = timedelta(hours=1)
        else:
            diffs = pd.Series(np.diff(idx.as_unit("ns").asi8))
            step = pd.Timedelta(int(diffs.mode().iloc[0]), unit="ns").to_pytimedelta()
    grid = pd.date_range(idx[0], idx[-1], freq=pd.Timedelta(step))
    if len(grid) != len(idx) or not grid.equals(idx):
        on_grid = idx.isin(grid)
        if not on_grid.all():
            raise BadResponseError(
                f"{what}: timestamps are not on a regular {pd.Timedelta(step)} grid "
                f"(e.g. {idx[~on_grid][0].isoformat()})"
            )
    values = pd.Series(vals, index=idx, dtype=float).reindex(grid)
    estimated = pd.Series(est, index=idx, dtype=bool).reindex(grid, fill_value=True)
    missing = values.isna().to_numpy()
    if missing.any():
        estimated[missing] = True
        if max_gap_slots > 0:
            # Length of the NaN run each missing slot belongs to.
            run_id = np.cumsum(~missing)
            run_len = pd.Series(missing.astype(int)).groupby(run_id).transform("sum").to_numpy()
            fill = missing & (run_len <= max_gap_slots)
            interp = values.interpolate(method="time", limit_area="inside")
            values[fill] = interp[fill]
    values.name = "intensity_g_per_kwh"
    return values, estimated


def check_plausible(idx: pd.DatetimeIndex, vals: np.ndarray, what: str) -> None:
    """Refuse an answer with an intensity below 0 or above ``MAX_PLAUSIBLE_G_PER_KWH`` (a
    unit error or corruption): raises :class:`BadResponseError`, so a chain serves its cache
    or forecaster instead."""
    with np.errstate(invalid="ignore"):
        bad = (vals < 0) | (vals > MAX_PLAUSIBLE_G_PER_KWH) | np.isinf(vals)
    if bad.any():
        i = int(np.argmax(bad))
        raise BadResponseError(
            f"{what}: implausible intensity {vals[i]:g} g/kWh at {idx[i].isoformat()} "
            f"(plausible: 0–{MAX_PLAUSIBLE_G_PER_KWH:.0f}); {int(bad.sum())} such value(s), "
            "the answer is not used"
        )


def check_fresh(
    stamp: datetime | None, now: datetime, max_age: timedelta, what: str, label: str
) -> None:
    """Refuse a "live" answer whose ``stamp`` (issue/update time) is older than ``max_age``."""
    if stamp is None or now - stamp <= max_age:
        return
    raise BadResponseError(
        f"{what}: the live answer's {label} is {stamp.isoformat()}, "
        f"{format_duration(now - stamp)} old at {now.isoformat()} (more than "
        f"{format_duration(max_age)}); not used as current data"
    )


def utc_stamp(dt: datetime, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    """Format an aware datetime in UTC for a query string."""
    return dt.astimezone(UTC).strftime(fmt)


def loads_json(text: str, what: str) -> Any:
    """``json.loads`` that raises :class:`BadResponseError` instead of ``ValueError``."""
    try:
        return json.loads(text)
    except ValueError:
        raise BadResponseError(f"{what}: not valid JSON") from None


def parse_latlon(zone: str) -> tuple[float, float] | None:
    """``"52.52,13.40"`` → ``(52.52, 13.40)``; anything that is not a lat,lon pair → None."""
    parts = zone.split(",")
    if len(parts) != 2:
        return None
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon


def window_mask(
    idx: pd.DatetimeIndex, start: datetime, end: datetime, step: timedelta
) -> np.ndarray:
    """Boolean mask of the slots ``[t, t+step)`` that overlap ``[start, end)``."""
    lo = pd.Timestamp(start) - pd.Timedelta(step)
    return np.asarray((idx > lo) & (idx < pd.Timestamp(end)))


def window(values: pd.Series, start: datetime, end: datetime, step: timedelta) -> pd.Series:
    """The slots of ``values`` whose interval ``[t, t+step)`` overlaps ``[start, end)``."""
    return values[window_mask(pd.DatetimeIndex(values.index), start, end, step)]
