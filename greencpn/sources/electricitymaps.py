"""Electricity Maps API v3 (``https://api.electricitymap.org/v3``, header ``auth-token``).

Endpoints used (hourly, average intensity in gCO2eq/kWh):

* ``GET /carbon-intensity/latest``      — the current hour;
* ``GET /carbon-intensity/history``     — the last 24 hours;
* ``GET /carbon-intensity/past-range``  — any past range (``start``/``end``; at most
  ``PAST_RANGE_MAX`` per request, longer ranges are split);
* ``GET /carbon-intensity/forecast``    — the forecast issued most recently (``updatedAt``).

A zone is either an Electricity Maps zone id (``DE``, ``US-CAL-CISO``) or ``"lat,lon"``;
with coordinates the API picks the zone and the returned series carries its id.
``emissionFactorType`` follows the source's ``accounting`` (lifecycle by default).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import requests

from greencpn.clock import Clock, SystemClock, ensure_utc
from greencpn.sources.base import Accounting, CarbonSeries
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

DEFAULT_BASE_URL = "https://api.electricitymap.org/v3"
STEP = timedelta(hours=1)
PAST_RANGE_MAX = timedelta(days=10)
HORIZONS_H = (6, 24, 48, 72)
MAX_ANSWER_AGE = timedelta(hours=6)


class ElectricityMapsSource:
    """Live Electricity Maps v3 client implementing :class:`~greencpn.sources.base.CarbonSource`.

    Args:
        token: API token; if None it is read from the key store when first needed.
        base_url: API root (tests point it at a local replay server).
        accounting: ``lifecycle`` or ``direct`` emission factors.
        http: the HTTP client (retries, timeouts); one is built if None.
        clock: the time source (decides whether ``history`` is the last-24 h endpoint).
        keys: where to find the token when ``token`` is None.
        max_gap_slots: missing hours filled by interpolation (longer gaps stay NaN).
        max_answer_age: a ``latest`` point or a forecast's ``updatedAt`` older than this
            (against the clock) is refused as stale.
    """

    name = "electricitymaps"
    signal = "average"
    step = STEP

    def __init__(
        self,
        token: Secret | str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        accounting: Accounting = "lifecycle",
        http: HttpClient | None = None,
        clock: Clock | None = None,
        keys: KeyStore | None = None,
        max_gap_slots: int = 2,
        max_answer_age: timedelta = MAX_ANSWER_AGE,
    ) -> None:
        self.max_answer_age = max_answer_age
        self._token = Secret(token) if isinstance(token, str) else token
        self.base_url = base_url.rstrip("/")
        self.accounting: Accounting = accounting
        self.clock = clock or SystemClock()
        self.http = http or HttpClient(self.name, clock=self.clock)
        self._keys = keys
        self.max_gap_slots = max_gap_slots

    # ------------------------------------------------------------------------------ public
    def latest(self, zone: str) -> CarbonSeries:
        """The current hour's intensity (one point)."""
        body = self._get("carbon-intensity/latest", zone)
        if not isinstance(body, dict) or "carbonIntensity" not in body:
            raise BadResponseError(f"electricitymaps latest {zone}: no 'carbonIntensity' field")
        check_fresh(
            _parse_time(body.get("datetime")),
            self.clock.now(),
            self.max_answer_age,
            f"electricitymaps latest {zone}",
            "hour",
        )
        return self._series(zone, body.get("zone", zone), [body], "latest")

    def history(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """Hourly intensity over ``[start, end)``; uses ``history`` for the last 24 h and
        ``past-range`` (split into ``PAST_RANGE_MAX`` pieces) further back."""
        start, end = ensure_utc(start, "start"), ensure_utc(end, "end")
        if end <= start:
            raise ValueError(
                f"history: end {end.isoformat()} is not after start {start.isoformat()}"
            )
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        zone_id = zone
        if start >= now - timedelta(hours=24):
            body = self._get("carbon-intensity/history", zone)
            rows = _list_field(body, "history", f"electricitymaps history {zone}")
            zone_id = body.get("zone", zone)
        else:
            t = start
            while t < end:
                t2 = min(end, t + PAST_RANGE_MAX)
                body = self._get(
                    "carbon-intensity/past-range",
                    zone,
                    {"start": utc_stamp(t), "end": utc_stamp(t2)},
                )
                rows += _list_field(body, "data", f"electricitymaps past-range {zone}")
                zone_id = body.get("zone", zone_id)
                t = t2
        series = self._series(zone, zone_id, rows, "history")
        return replace(series, **_cut(series, start, end))

    def forecast(self, zone: str, issued_at: datetime, horizon: timedelta) -> CarbonSeries:
        """The provider's latest forecast, cut to ``[issued_at, issued_at + horizon)``.

        The live API only serves the forecast issued most recently (``updatedAt``); the
        returned series' ``issued_at`` is that time. It may be shorter than ``horizon`` (many
        zones get 24 h): the fallback chain extends it.
        """
        issued_at = ensure_utc(issued_at, "issued_at")
        hours = horizon.total_seconds() / 3600.0
        horizon_h = next((h for h in HORIZONS_H if h >= hours), HORIZONS_H[-1])
        body = self._get("carbon-intensity/forecast", zone, {"horizonHours": horizon_h})
        key = "forecast" if isinstance(body, dict) and "forecast" in body else "data"
        rows = _list_field(body, key, f"electricitymaps forecast {zone}")
        series = self._series(zone, body.get("zone", zone), rows, "forecast")
        issued = _parse_time(body.get("updatedAt")) or self.clock.now()
        check_fresh(
            issued,
            self.clock.now(),
            self.max_answer_age,
            f"electricitymaps forecast {zone}",
            "updatedAt",
        )
        cut = _cut(series, issued_at, issued_at + horizon)
        if cut["intensity_g_per_kwh"].empty:
            raise BadResponseError(
                f"electricitymaps forecast {zone}: the forecast (updated {issued.isoformat()}, "
                f"{series.intensity_g_per_kwh.index[0].isoformat()} → "
                f"{series.intensity_g_per_kwh.index[-1].isoformat()}) does not cover "
                f"{issued_at.isoformat()}"
            )
        return replace(series, issued_at=issued, **cut)

    # ----------------------------------------------------------------------------- helpers
    def _token_value(self) -> str:
        if self._token is None:
            keys = self._keys or KeyStore.from_env()
            self._token = keys.require(self.name, "token")
        return self._token.reveal()

    def _get(self, endpoint: str, zone: str, extra: dict[str, Any] | None = None) -> Any:
        params: dict[str, Any] = {}
        loc = parse_latlon(zone)
        if loc is not None:
            params["lat"], params["lon"] = loc
        else:
            params["zone"] = zone
        params["emissionFactorType"] = self.accounting
        params.update(extra or {})
        body = self.http.get_json(
            f"{self.base_url}/{endpoint}",
            endpoint=f"{endpoint} {zone}",
            params=params,
            headers={"auth-token": self._token_value()},
            error_hook=lambda resp, what: _error_for(resp, what, zone),
        )
        got = body.get("zone") if isinstance(body, dict) else None
        if loc is None and got is not None and str(got).upper() != zone.upper():
            raise BadResponseError(
                f"electricitymaps {endpoint} {zone}: asked for zone {zone} but the answer is "
                f"for zone {got}; not used (a proxy or cache in between may mix up requests)"
            )
        return body

    def _series(
        self, zone: str, zone_id: str, rows: list[dict[str, Any]], what: str
    ) -> CarbonSeries:
        label = f"electricitymaps {what} {zone}"
        try:
            points = [
                (r["datetime"], r["carbonIntensity"], r.get("isEstimated", False)) for r in rows
            ]
        except (KeyError, TypeError):
            raise BadResponseError(f"{label}: a point lacks 'datetime'/'carbonIntensity'") from None
        idx, vals, est = parse_points(points, label)
        values, estimated = regular_series(
            idx, vals, est, step=STEP, max_gap_slots=self.max_gap_slots, what=label
        )
        return CarbonSeries(
            zone=str(zone_id),
            intensity_g_per_kwh=values,
            signal="average",
            accounting=self.accounting,
            source=self.name,
            estimated=estimated,
        )


def _list_field(body: Any, key: str, what: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise BadResponseError(f"{what}: expected a JSON object, got {type(body).__name__}")
    rows = body.get(key)
    if not isinstance(rows, list):
        raise BadResponseError(f"{what}: the answer has no '{key}' list")
    if not rows:
        raise BadResponseError(f"{what}: the '{key}' list is empty (no data for this zone/range)")
    return rows


def _cut(series: CarbonSeries, start: datetime, end: datetime) -> dict[str, Any]:
    values = window(series.intensity_g_per_kwh, start, end, STEP)
    est = series.estimated.loc[values.index] if series.estimated is not None else None
    return {"intensity_g_per_kwh": values, "estimated": est}


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return pd.Timestamp(value).tz_convert("UTC").to_pydatetime()
    except (ValueError, TypeError):
        return None


def _error_for(resp: requests.Response, what: str, zone: str) -> Exception | None:
    """Electricity Maps specific mapping of 4xx answers (None → generic mapping)."""
    status = resp.status_code
    text = api_error_text(resp)
    lowered = text.lower()
    if status in (400, 404) and ("zone" in lowered or status == 404):
        return UnknownZoneError(
            f"{what}: Electricity Maps does not know zone {zone!r} (HTTP {status}: {text}). "
            "Fix: use a zone id listed by GET /v3/zones (e.g. DE, FR, GB, US-CAL-CISO) or "
            "'lat,lon'"
        )
    if status in (401, 403):
        scope = " or has no access to this zone/endpoint" if "zone" in lowered else ""
        return AuthError(
            f"{what}: HTTP {status} — the Electricity Maps token was refused{scope} ({text}). "
            "Fix: export GREENCPN_ELECTRICITYMAPS_TOKEN=<your token> or set "
            "[electricitymaps] token in the key file (chmod 600), and check your plan "
            "includes this zone"
        )
    return None


__all__ = ["ElectricityMapsSource", "DEFAULT_BASE_URL"]
