"""WattTime API v3 (``https://api.watttime.org``): marginal emissions (MOER).

* ``GET /login`` with HTTP basic auth → ``{"token": ...}`` valid ~30 minutes; data requests
  send ``Authorization: Bearer <token>``. The token is renewed before it expires and once more
  when a data request answers 401.
* ``GET /v3/region-from-loc?latitude=&longitude=&signal_type=`` → the region of a point.
* ``GET /v3/historical?region=&start=&end=&signal_type=`` (split into 30-day requests).
* ``GET /v3/forecast?region=&signal_type=&horizon_hours=`` (0–72 h) → the current forecast;
  ``GET /v3/forecast/historical`` for a forecast issued in the past.

Values come in ``lbs_co2_per_mwh`` (5-minute points) and are converted to g/kWh with
``1 lb/MWh = 0.45359237 g/kWh``. The signal is marginal; WattTime's MOER counts combustion
emissions, so ``accounting`` is ``direct``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import requests

from greencpn.clock import Clock, SystemClock, ensure_utc
from greencpn.sources.base import CarbonSeries
from greencpn.sources.http import (
    AuthError,
    BadResponseError,
    HttpClient,
    UnknownZoneError,
    api_error_text,
    check_fresh,
    parse_latlon,
    parse_points,
    regular_series,
    utc_stamp,
    window,
)
from greencpn.sources.keys import KeyStore, Secret

DEFAULT_BASE_URL = "https://api.watttime.org"
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
STEP = timedelta(minutes=5)
HISTORY_CHUNK = timedelta(days=30)
MAX_HORIZON_H = 72
#: unit name → factor to g/kWh
UNIT_FACTORS = {
    "lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "lbs_per_mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "kg_co2_per_mwh": 1.0,
    "g_co2_per_kwh": 1.0,
}


class WattTimeSource:
    """Live WattTime v3 client implementing :class:`~greencpn.sources.base.CarbonSource`.

    Args:
        username: WattTime user (None → key store ``watttime.username``).
        password: WattTime password (None → key store ``watttime.password``).
        base_url: API root (tests point it at a local replay server).
        login_url: login endpoint; default ``<base_url>/login``.
        signal_type: WattTime signal (``co2_moer``).
        http: the HTTP client; built if None.
        clock: time source for token expiry and "is this forecast in the past".
        keys: where to find credentials.
        token_ttl: validity of a login token (WattTime: 30 min).
        max_gap_slots: missing 5-min points filled by interpolation.
        max_answer_age: a current forecast generated longer ago than this is refused.
    """

    name = "watttime"
    signal = "marginal"
    step = STEP

    def __init__(
        self,
        username: Secret | str | None = None,
        password: Secret | str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        login_url: str | None = None,
        signal_type: str = "co2_moer",
        http: HttpClient | None = None,
        clock: Clock | None = None,
        keys: KeyStore | None = None,
        token_ttl: timedelta = timedelta(minutes=30),
        max_gap_slots: int = 3,
        max_answer_age: timedelta = timedelta(hours=6),
    ) -> None:
        self.max_answer_age = max_answer_age
        self._username = Secret(username) if isinstance(username, str) else username
        self._password = Secret(password) if isinstance(password, str) else password
        self.base_url = base_url.rstrip("/")
        self.login_url = login_url or f"{self.base_url}/login"
        self.signal_type = signal_type
        self.clock = clock or SystemClock()
        self.http = http or HttpClient(self.name, clock=self.clock)
        self._keys = keys
        self.token_ttl = token_ttl
        self.max_gap_slots = max_gap_slots
        self._token: Secret | None = None
        self._token_expires: datetime | None = None
        self._regions: dict[str, str] = {}
        self.logins = 0

    # ------------------------------------------------------------------------------ auth
    def _credentials(self) -> tuple[str, str]:
        if self._username is None or self._password is None:
            keys = self._keys or KeyStore.from_env()
            self._username = self._username or keys.require(self.name, "username")
            self._password = self._password or keys.require(self.name, "password")
        return self._username.reveal(), self._password.reveal()

    def login(self) -> None:
        """Get a fresh bearer token with basic auth."""
        body = self.http.get_json(
            self.login_url, endpoint="login", auth=self._credentials(), error_hook=_login_error
        )
        token = body.get("token") if isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            raise BadResponseError("watttime login: the answer has no 'token'")
        self.logins += 1
        self._token = Secret(token)
        # Renew 2 minutes early so a token never expires in flight.
        self._token_expires = self.clock.now() + self.token_ttl - timedelta(minutes=2)

    def _get(self, path: str, params: dict[str, Any], zone: str) -> Any:
        for attempt in (1, 2):
            if (
                self._token is None
                or self._token_expires is None
                or self.clock.now() >= self._token_expires
            ):
                self.login()
            assert self._token is not None
            try:
                body = self.http.get_json(
                    f"{self.base_url}{path}",
                    endpoint=f"{path} {zone}",
                    params=params,
                    headers={"Authorization": f"Bearer {self._token.reveal()}"},
                    error_hook=lambda resp, what: _data_error(resp, what, zone),
                )
            except AuthError:
                if attempt == 2:
                    raise
                self._token = None  # expired or revoked: log in again once
                continue
            meta = body.get("meta") if isinstance(body, dict) else None
            got = meta.get("region") if isinstance(meta, dict) else None
            asked = params.get("region")
            if asked is not None and got is not None and str(got).upper() != str(asked).upper():
                raise BadResponseError(
                    f"watttime {path} {zone}: asked for region {asked} but the answer is for "
                    f"region {got}; not used"
                )
            return body
        raise AssertionError("unreachable")

    # --------------------------------------------------------------------------- regions
    def region(self, zone: str) -> str:
        """The WattTime region for ``zone`` (a region name, or ``"lat,lon"``)."""
        loc = parse_latlon(zone)
        if loc is None:
            return zone
        if zone not in self._regions:
            body = self._get(
                "/v3/region-from-loc",
                {"latitude": loc[0], "longitude": loc[1], "signal_type": self.signal_type},
                zone,
            )
            region = body.get("region") if isinstance(body, dict) else None
            if not region:
                raise BadResponseError(f"watttime region-from-loc {zone}: no 'region' in answer")
            self._regions[zone] = str(region)
        return self._regions[zone]

    # ------------------------------------------------------------------------------ data
    def history(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """5-minute MOER over ``[start, end)`` in g/kWh (split into 30-day requests)."""
        start, end = ensure_utc(start, "start"), ensure_utc(end, "end")
        if end <= start:
            raise ValueError(
                f"history: end {end.isoformat()} is not after start {start.isoformat()}"
            )
        region = self.region(zone)
        points: list[tuple[object, object, bool]] = []
        factor: float | None = None
        t = start
        while t < end:
            t2 = min(end, t + HISTORY_CHUNK)
            body = self._get(
                "/v3/historical",
                {
                    "region": region,
                    "start": utc_stamp(t),
                    "end": utc_stamp(t2),
                    "signal_type": self.signal_type,
                },
                zone,
            )
            rows, meta = _data_meta(body, f"watttime historical {region}")
            factor = _unit_factor(meta, f"watttime historical {region}")
            points += _points(rows, f"watttime historical {region}")
            t = t2
        series = self._series(
            region, points, factor or LBS_PER_MWH_TO_G_PER_KWH, f"historical {region}"
        )
        values = window(series.intensity_g_per_kwh, start, end, STEP)
        est = series.estimated.loc[values.index] if series.estimated is not None else None
        return replace(series, intensity_g_per_kwh=values, estimated=est)

    def forecast(self, zone: str, issued_at: datetime, horizon: timedelta) -> CarbonSeries:
        """MOER forecast issued at (or just before) ``issued_at`` covering ``horizon``.

        Uses ``/v3/forecast`` when ``issued_at`` is within 15 minutes of now, otherwise
        ``/v3/forecast/historical`` and the latest forecast generated at or before
        ``issued_at``.
        """
        issued_at = ensure_utc(issued_at, "issued_at")
        region = self.region(zone)
        hours = min(MAX_HORIZON_H, max(1, math.ceil(horizon.total_seconds() / 3600.0)))
        what = f"watttime forecast {region}"
        if issued_at >= self.clock.now() - timedelta(minutes=15):
            body = self._get(
                "/v3/forecast",
                {"region": region, "signal_type": self.signal_type, "horizon_hours": hours},
                zone,
            )
            rows, meta = _data_meta(body, what)
            generated = _parse_time(meta.get("generated_at"))
            check_fresh(generated, self.clock.now(), self.max_answer_age, what, "generated_at")
        else:
            body = self._get(
                "/v3/forecast/historical",
                {
                    "region": region,
                    "signal_type": self.signal_type,
                    "horizon_hours": hours,
                    "start": utc_stamp(issued_at - timedelta(minutes=30)),
                    "end": utc_stamp(issued_at + timedelta(minutes=5)),
                },
                zone,
            )
            runs, meta = _data_meta(body, what)
            best: tuple[datetime, list[Any]] | None = None
            for run in runs:
                gen = _parse_time(run.get("generated_at")) if isinstance(run, dict) else None
                fc = run.get("forecast") if isinstance(run, dict) else None
                if gen is None or not isinstance(fc, list):
                    raise BadResponseError(f"{what}: a run lacks 'generated_at'/'forecast'")
                if gen <= issued_at + timedelta(minutes=5) and (best is None or gen > best[0]):
                    best = (gen, fc)
            if best is None:
                raise BadResponseError(f"{what}: no forecast generated by {issued_at.isoformat()}")
            generated, rows = best
        factor = _unit_factor(meta, what)
        series = self._series(region, _points(rows, what), factor, f"forecast {region}")
        values = window(series.intensity_g_per_kwh, issued_at, issued_at + horizon, STEP)
        if values.empty:
            raise BadResponseError(f"{what}: the forecast does not cover {issued_at.isoformat()}")
        est = series.estimated.loc[values.index] if series.estimated is not None else None
        return replace(
            series,
            intensity_g_per_kwh=values,
            estimated=est,
            issued_at=generated or self.clock.now(),
        )

    def _series(
        self, region: str, points: list[tuple[object, object, bool]], factor: float, what: str
    ) -> CarbonSeries:
        label = f"watttime {what}"
        idx, vals, est = parse_points(points, label)
        values, estimated = regular_series(
            idx, vals * factor, est, step=STEP, max_gap_slots=self.max_gap_slots, what=label
        )
        return CarbonSeries(
            zone=region,
            intensity_g_per_kwh=values,
            signal="marginal",
            accounting="direct",
            source=self.name,
            estimated=estimated,
        )


# ---------------------------------------------------------------------------------- parsing
def _data_meta(body: Any, what: str) -> tuple[list[Any], dict[str, Any]]:
    if not isinstance(body, dict):
        raise BadResponseError(f"{what}: expected a JSON object, got {type(body).__name__}")
    rows = body.get("data")
    if not isinstance(rows, list):
        raise BadResponseError(f"{what}: the answer has no 'data' list")
    if not rows:
        raise BadResponseError(f"{what}: the 'data' list is empty (no data for this region/range)")
    meta = body.get("meta")
    return rows, meta if isinstance(meta, dict) else {}


def _unit_factor(meta: dict[str, Any], what: str) -> float:
    units = str(meta.get("units", "lbs_co2_per_mwh")).lower()
    if units not in UNIT_FACTORS:
        raise BadResponseError(
            f"{what}: units {units!r} are not an emission rate (expected one of "
            f"{sorted(UNIT_FACTORS)}); use signal_type=co2_moer"
        )
    return UNIT_FACTORS[units]


def _points(rows: list[Any], what: str) -> list[tuple[object, object, bool]]:
    try:
        return [
            (r["point_time"], r["value"], bool(r.get("imputed_data_used", False))) for r in rows
        ]
    except (KeyError, TypeError, AttributeError):
        raise BadResponseError(f"{what}: a point lacks 'point_time'/'value'") from None


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return pd.Timestamp(value).tz_convert("UTC").to_pydatetime()
    except (ValueError, TypeError):
        return None


def _login_error(resp: requests.Response, what: str) -> Exception | None:
    if resp.status_code in (401, 403):
        return AuthError(
            f"{what}: HTTP {resp.status_code} — WattTime refused the username/password. Fix: "
            "export GREENCPN_WATTTIME_USERNAME and GREENCPN_WATTTIME_PASSWORD (or set "
            "[watttime] username/password in the key file, chmod 600); register with "
            "POST /register if you have no account"
        )
    return None


def _data_error(resp: requests.Response, what: str, zone: str) -> Exception | None:
    status = resp.status_code
    text = api_error_text(resp)
    lowered = text.lower()
    if status == 404 or (status == 400 and "region" in lowered):
        return UnknownZoneError(
            f"{what}: WattTime does not know region {zone!r} (HTTP {status}: {text}). Fix: use "
            "a WattTime region such as CAISO_NORTH, or 'lat,lon' to look it up"
        )
    if status == 403:
        return AuthError(
            f"{what}: HTTP 403 — your WattTime plan has no access to {zone!r} ({text}). Fix: "
            "the free tier covers CAISO_NORTH only; choose it or upgrade the plan"
        )
    return None


__all__ = ["WattTimeSource", "LBS_PER_MWH_TO_G_PER_KWH"]
