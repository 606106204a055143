"""UK National Grid ESO Carbon Intensity API (``https://api.carbonintensity.org.uk``, no key).

Half-hour slots, gCO2/kWh, times in UTC (``YYYY-MM-DDThh:mmZ``), average direct+imports
intensity as published by NESO. Zones:

* national: ``GB`` (also ``UK``, ``GB-national``) —
  ``/intensity/{from}/fw48h`` (forecast), ``/intensity/{from}/pt24h`` and
  ``/intensity/{from}/{to}`` (history: ``actual`` where published, else the final
  ``forecast`` flagged estimated);
* regional: ``GB-<id>`` (1–18, e.g. ``GB-13`` London) or the region's short name
  (``"London"``) — ``/regional/intensity/{from}/fw48h/regionid/{id}`` and
  ``/regional/intensity/{from}/{to}/regionid/{id}``. Regional data are modelled
  (forecast-only), so every regional point is flagged estimated.

Ranges longer than ``MAX_RANGE`` (14 days) are split into several requests.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from greencpn.clock import Clock, SystemClock, ensure_utc
from greencpn.sources.base import CarbonSeries
from greencpn.sources.http import (
    BadResponseError,
    HttpClient,
    UnknownZoneError,
    parse_points,
    regular_series,
    utc_stamp,
    window,
)

DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"
STEP = timedelta(minutes=30)
MAX_RANGE = timedelta(days=14)
FORECAST_MAX = timedelta(hours=48)
_PATH_FMT = "%Y-%m-%dT%H:%MZ"

#: regionid → short name, as published by the API.
REGIONS: dict[int, str] = {
    1: "North Scotland",
    2: "South Scotland",
    3: "North West England",
    4: "North East England",
    5: "Yorkshire",
    6: "North Wales & Merseyside",
    7: "South Wales",
    8: "West Midlands",
    9: "East Midlands",
    10: "East England",
    11: "South West England",
    12: "South England",
    13: "London",
    14: "South East England",
    15: "England",
    16: "Scotland",
    17: "Wales",
    18: "GB",
}
NATIONAL = {"GB", "UK", "GB-NATIONAL", "NATIONAL"}


def region_of(zone: str) -> int | None:
    """None for the national series, else the regional id; unknown names raise."""
    z = zone.strip()
    if z.upper() in NATIONAL:
        return None
    upper = z.upper()
    for prefix in ("GB-", "REGIONID:", "REGION:"):
        if upper.startswith(prefix) and upper[len(prefix) :].isdigit():
            rid = int(upper[len(prefix) :])
            if rid in REGIONS:
                return rid
    for rid, short in REGIONS.items():
        if short.lower() == z.lower():
            return rid
    names = ", ".join(f"GB-{k} {v}" for k, v in REGIONS.items())
    raise UnknownZoneError(
        f"ukgrid: unknown zone {zone!r}. Fix: use GB (national) or a region: {names}"
    )


class UKGridSource:
    """UK Carbon Intensity API client implementing :class:`~greencpn.sources.base.CarbonSource`.

    Args:
        base_url: API root (tests point it at a local replay server).
        http: the HTTP client; built if None.
        clock: time source.
        max_gap_slots: missing half-hours filled by interpolation (longer gaps stay NaN).
    """

    name = "ukgrid"
    signal = "average"
    step = STEP

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        http: HttpClient | None = None,
        clock: Clock | None = None,
        max_gap_slots: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock or SystemClock()
        self.http = http or HttpClient(self.name, clock=self.clock)
        self.max_gap_slots = max_gap_slots

    def forecast(self, zone: str, issued_at: datetime, horizon: timedelta) -> CarbonSeries:
        """Forecast from ``fw48h`` starting at ``issued_at`` (at most 48 h; the chain extends
        longer horizons). ``issued_at`` of the result is the request time (the API does not
        say when it generated the forecast)."""
        issued_at = ensure_utc(issued_at, "issued_at")
        rid = region_of(zone)
        start = utc_stamp(issued_at, _PATH_FMT)
        if rid is None:
            body = self._get(f"/intensity/{start}/fw48h", zone)
            points = _national_points(body, f"ukgrid fw48h {zone}", prefer_actual=False)
        else:
            body = self._get(f"/regional/intensity/{start}/fw48h/regionid/{rid}", zone)
            points = _regional_points(body, rid, f"ukgrid regional fw48h {zone}")
        series = self._series(zone, rid, points, "fw48h")
        values = window(series.intensity_g_per_kwh, issued_at, issued_at + horizon, STEP)
        if values.empty:
            raise BadResponseError(f"ukgrid fw48h {zone}: no slot after {issued_at.isoformat()}")
        est = series.estimated.loc[values.index] if series.estimated is not None else None
        return replace(series, intensity_g_per_kwh=values, estimated=est, issued_at=issued_at)

    def history(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """Half-hourly intensity over ``[start, end)``: ``actual`` where published, else the
        final forecast (flagged estimated). Uses ``pt24h`` for a range within the 24 h before
        ``end``, ``{from}/{to}`` (14-day pieces) otherwise."""
        start, end = ensure_utc(start, "start"), ensure_utc(end, "end")
        if end <= start:
            raise ValueError(
                f"history: end {end.isoformat()} is not after start {start.isoformat()}"
            )
        rid = region_of(zone)
        points: list[tuple[object, object, bool]] = []
        if rid is None and end - start <= timedelta(hours=24):
            body = self._get(f"/intensity/{utc_stamp(end, _PATH_FMT)}/pt24h", zone)
            points = _national_points(body, f"ukgrid pt24h {zone}", prefer_actual=True)
        else:
            t = start
            while t < end:
                t2 = min(end, t + MAX_RANGE)
                a, b = utc_stamp(t, _PATH_FMT), utc_stamp(t2, _PATH_FMT)
                if rid is None:
                    body = self._get(f"/intensity/{a}/{b}", zone)
                    points += _national_points(body, f"ukgrid intensity {zone}", prefer_actual=True)
                else:
                    body = self._get(f"/regional/intensity/{a}/{b}/regionid/{rid}", zone)
                    points += _regional_points(body, rid, f"ukgrid regional {zone}")
                t = t2
        series = self._series(zone, rid, points, "history")
        values = window(series.intensity_g_per_kwh, start, end, STEP)
        est = series.estimated.loc[values.index] if series.estimated is not None else None
        return replace(series, intensity_g_per_kwh=values, estimated=est)

    # ----------------------------------------------------------------------------- helpers
    def _get(self, path: str, zone: str) -> Any:
        return self.http.get_json(
            f"{self.base_url}{path}",
            endpoint=f"{path.split('/')[1]} {zone}",
            headers={"Accept": "application/json"},
        )

    def _series(
        self, zone: str, rid: int | None, points: list[tuple[object, object, bool]], what: str
    ) -> CarbonSeries:
        label = f"ukgrid {what} {zone}"
        idx, vals, est = parse_points(points, label)
        values, estimated = regular_series(
            idx, vals, est, step=STEP, max_gap_slots=self.max_gap_slots, what=label
        )
        name = "GB" if rid is None else f"GB-{rid}"
        return CarbonSeries(
            zone=name,
            intensity_g_per_kwh=values,
            signal="average",
            accounting="direct",
            source=self.name,
            estimated=estimated,
        )


def _data_list(body: Any, what: str) -> list[Any]:
    if not isinstance(body, dict):
        raise BadResponseError(f"{what}: expected a JSON object, got {type(body).__name__}")
    data = body.get("data")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise BadResponseError(f"{what}: the answer has no 'data' list")
    if not data:
        raise BadResponseError(f"{what}: the 'data' list is empty")
    return data


def _national_points(
    body: Any, what: str, *, prefer_actual: bool
) -> list[tuple[object, object, bool]]:
    out: list[tuple[object, object, bool]] = []
    for row in _data_list(body, what):
        try:
            inten = row["intensity"]
            actual, forecast = inten.get("actual"), inten.get("forecast")
            if prefer_actual and actual is not None:
                out.append((row["from"], actual, False))
            else:
                out.append((row["from"], forecast, prefer_actual))
        except (KeyError, TypeError, AttributeError):
            raise BadResponseError(f"{what}: a slot lacks 'from'/'intensity'") from None
    return out


def _regional_points(body: Any, rid: int, what: str) -> list[tuple[object, object, bool]]:
    """Points of region ``rid`` from either regional answer shape (per-region list of slots,
    or per-slot list of regions)."""
    out: list[tuple[object, object, bool]] = []
    try:
        for item in _data_list(body, what):
            if "regions" in item:  # slot → regions
                for reg in item["regions"]:
                    if int(reg["regionid"]) == rid:
                        out.append((item["from"], reg["intensity"]["forecast"], True))
            elif "data" in item:  # region → slots
                if int(item.get("regionid", rid)) != rid:
                    continue
                for slot in item["data"]:
                    out.append((slot["from"], slot["intensity"]["forecast"], True))
            else:
                raise BadResponseError(f"{what}: unexpected regional answer shape")
    except (KeyError, TypeError, AttributeError, ValueError):
        raise BadResponseError(f"{what}: a regional slot lacks 'from'/'intensity'") from None
    if not out:
        raise BadResponseError(f"{what}: region {rid} is not in the answer")
    return out
