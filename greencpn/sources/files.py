"""Read carbon-intensity files into :class:`~greencpn.sources.base.CarbonSeries`.

Formats (each detected from its header by :func:`read_carbon_file`):

* **Electricity Maps export** — the portal's CSV exactly as downloaded: ``Datetime (UTC),Country,
  Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA),...,
  Data Estimated,...`` → one series (LCA or direct), with the per-hour estimated flag.
* **Wide** — ``datetime_utc`` (or any time column) + one column per zone → ``{zone: series}``.
* **Long** — ``datetime,zone,intensity_g_per_kwh`` → ``{zone: series}``.
* **Let's Wait Awhile 2020** — ``Time,Carbon Intensity`` with irregular 15/30-min steps.
* **WattTime actuals** — ``time,<Region>`` (5-min MOER already in g/kWh) → marginal series.
* **WattTime issued forecasts** — ``request_time,forecast_time,<Region>`` → a
  :class:`ForecastArchive` giving each forecast by its issue time.

:class:`FileSource` serves such a file as a :class:`~greencpn.sources.base.CarbonSource`
(``csv:PATH`` in a config; history only, the chain's forecaster makes the forecasts).

Timestamps: strings with a UTC offset (``+01:00``, ``Z``) are converted to UTC. Naive strings
are accepted only when the column name says UTC (``datetime_utc``, ``Datetime (UTC)``) or the
caller passes ``assume_utc=True`` (the two published datasets whose documentation says UTC —
Let's Wait Awhile and the WattTime/vessim export — default to it); otherwise a
:class:`~greencpn.errors.ConfigError` names the file, the column and the fix. Unparseable or
negative numbers are refused with file, line and column. Empty cells are missing values: an
irregular or gappy series is resampled by :func:`greencpn.sources.resample.resample_to_slots`
(gaps up to ``max_gap`` interpolated, longer ones refused). The parsing all formats share is
in :mod:`greencpn.sources.csvparse`.

Size (~630 lines, about the ~600 of issue 13): one reader per file format above, side by side
with the detector that picks among them, so a header's rule and its reader are read together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from greencpn.errors import ConfigError
from greencpn.sources.base import Accounting, CarbonSeries, Signal
from greencpn.sources.csvparse import (  # parse_times, parse_values, _read_csv: re-exported
    _find_time_column,
    _read_csv,
    _regularise,
    open_errors,
    parse_times,
    parse_values,
)
from greencpn.sources.http import BadResponseError
from greencpn.sources.resample import (
    DEFAULT_MAX_GAP,
)

_EM_TIME = "Datetime (UTC)"
_EM_DIRECT = "Carbon Intensity gCO₂eq/kWh (direct)"
_EM_LCA = "Carbon Intensity gCO₂eq/kWh (LCA)"
_EM_ESTIMATED = "Data Estimated"
_EM_ZONE = "Zone Id"
# header variants seen in exports: gCO₂eq, ASCII gCO2eq, mojibake gCOâ‚‚eq; (LCA) or (Life cycle)
_EM_INTENSITY = re.compile(
    r"^carbon\s+intensity\b.*\((?P<acc>direct|lca|life[\s-]?cycle)\)\s*$", re.IGNORECASE
)
_EM_MARKERS = ("Zone Id", "Zone Name", "Country", "Data Estimated")

Format = Literal[
    "electricitymaps", "wide", "long", "letswaitawhile", "watttime_actual", "watttime_forecast"
]


# --------------------------------------------------------------------------- readers
def read_electricitymaps_export(
    path: str | Path,
    *,
    accounting: Accounting = "lifecycle",
    slot: timedelta | None = None,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> CarbonSeries:
    """Read an Electricity Maps data-portal CSV export exactly as downloaded.

    Args:
        path: the CSV (``Datetime (UTC),Country,Zone Name,Zone Id,...``).
        accounting: ``"lifecycle"`` (LCA column) or ``"direct"`` (combustion only).
        slot: resample to this slot length (None: keep the file's hourly step).
        max_gap: longest gap filled by interpolation.

    Returns:
        Average-signal series of the file's zone, with ``estimated`` from ``Data Estimated``.
    """
    path = Path(path)
    df = _read_csv(path)
    col = _em_intensity_column(list(df.columns), accounting, path)
    if _EM_TIME not in df.columns:
        raise ConfigError(
            f"column '{_EM_TIME}' missing; found {list(df.columns)}",
            source=str(path),
            fix="give the Electricity Maps export unchanged",
        )
    zones: list[str] = (
        [str(z) for z in df[_EM_ZONE].dropna().unique()] if _EM_ZONE in df.columns else []
    )
    if len(zones) > 1:
        raise ConfigError(
            f"several zones in one export: {list(zones)[:5]}",
            source=str(path),
            field=_EM_ZONE,
            fix="give one file per zone",
        )
    zone = str(zones[0]) if len(zones) else path.stem.split("_")[0]
    idx = parse_times(df[_EM_TIME], path=path, column=_EM_TIME)
    vals = parse_values(df[col], path=path, column=col)
    series = _regularise(vals, idx, path=path, column=col, slot=slot, max_gap=max_gap)
    series.name = zone
    estimated = None
    if _EM_ESTIMATED in df.columns:
        est_raw = df[_EM_ESTIMATED].astype(str).str.strip().str.lower()
        est = pd.Series(est_raw.isin(["true", "1", "yes"]).to_numpy(), index=idx).sort_index()
        est = est[~est.index.duplicated()]
        if series.index.equals(est.index):
            estimated = est
        else:  # resampled: a slot is estimated when any sample inside it was
            estimated = (
                (
                    est.astype(float)
                    .resample(pd.Timedelta(series.index[1] - series.index[0]))
                    .max()
                    .reindex(series.index)
                    .fillna(0.0)
                    > 0
                )
                if len(series) > 1
                else None
            )
        if estimated is not None:
            estimated.name = zone
    return CarbonSeries(
        zone=zone,
        intensity_g_per_kwh=series,
        signal="average",
        accounting=accounting,
        source=f"csv:{path}",
        estimated=estimated,
    )


def _em_intensity_column(columns: list[str], accounting: Accounting, path: Path) -> str:
    """The export's intensity column for ``accounting``, whatever the header variant."""
    found: dict[str, str] = {}
    for c in columns:
        m = _EM_INTENSITY.match(c.strip())
        if m:
            acc = m.group("acc").lower()
            found["direct" if acc == "direct" else "lifecycle"] = c
    if accounting in found:
        return found[accounting]
    want = _EM_LCA if accounting == "lifecycle" else _EM_DIRECT
    raise ConfigError(
        "this looks like an Electricity Maps export whose "
        f"{'life-cycle' if accounting == 'lifecycle' else 'direct'} intensity column was not "
        f"recognised; its columns are {columns}",
        source=str(path),
        fix=f"rename the intensity column to '{want}' (or give the export unchanged)",
    )


def _looks_like_em(cols: set[str]) -> bool:
    return _EM_TIME in cols and sum(m in cols for m in _EM_MARKERS) >= 2


def read_wide(
    path: str | Path,
    *,
    accounting: Accounting = "lifecycle",
    signal: Signal = "average",
    assume_utc: bool = False,
    zones: list[str] | None = None,
    slot: timedelta | None = None,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> dict[str, CarbonSeries]:
    """Read a wide file: one time column + one column per zone.

    Args:
        path: e.g. ``electricitymaps_hourly_lca_2021-2023.csv``.
        accounting: lifecycle or direct factors (not in the file: the caller says).
        signal: average or marginal.
        assume_utc: accept naive timestamps in a column whose name does not say UTC.
        zones: read only these columns (default all).
        slot: resample to this slot length (None: keep the file's step if regular).
        max_gap: longest gap filled by interpolation.

    Returns:
        ``{zone: CarbonSeries}`` in column order.
    """
    path = Path(path)
    df = _read_csv(path)
    tcol = _find_time_column(df, path)
    idx = parse_times(df[tcol], path=path, column=tcol, assume_utc=assume_utc)
    cols = [c for c in df.columns if c != tcol]
    if zones is not None:
        missing = [z for z in zones if z not in cols]
        if missing:
            raise ConfigError(
                f"zone column(s) {missing} not in the file; it has {cols}",
                source=str(path),
                fix="pick zones among the file's columns",
            )
        cols = list(zones)
    out: dict[str, CarbonSeries] = {}
    for c in cols:
        vals = parse_values(df[c], path=path, column=c)
        s = _regularise(vals, idx, path=path, column=c, slot=slot, max_gap=max_gap)
        s.name = c
        out[c] = CarbonSeries(
            zone=c,
            intensity_g_per_kwh=s,
            signal=signal,
            accounting=accounting,
            source=f"csv:{path}",
        )
    return out


def read_long(
    path: str | Path,
    *,
    accounting: Accounting = "lifecycle",
    signal: Signal = "average",
    assume_utc: bool = False,
    slot: timedelta | None = None,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> dict[str, CarbonSeries]:
    """Read a long file ``datetime,zone,intensity_g_per_kwh`` → ``{zone: CarbonSeries}``."""
    path = Path(path)
    df = _read_csv(path)
    tcol = _find_time_column(df, path)
    if "zone" not in df.columns or "intensity_g_per_kwh" not in df.columns:
        raise ConfigError(
            f"expected columns '{tcol}', 'zone', 'intensity_g_per_kwh'; found {list(df.columns)}",
            source=str(path),
            fix="use the long format datetime_utc,zone,intensity_g_per_kwh",
        )
    idx = parse_times(df[tcol], path=path, column=tcol, assume_utc=assume_utc)
    vals = parse_values(df["intensity_g_per_kwh"], path=path, column="intensity_g_per_kwh")
    zone_col = df["zone"].astype(str).to_numpy()
    out: dict[str, CarbonSeries] = {}
    for z in pd.unique(zone_col):
        m = zone_col == z
        s = _regularise(
            vals[m],
            idx[m],
            path=path,
            column=f"intensity_g_per_kwh (zone {z})",
            slot=slot,
            max_gap=max_gap,
            lines=np.flatnonzero(m) + 2,
        )
        s.name = str(z)
        out[str(z)] = CarbonSeries(
            zone=str(z),
            intensity_g_per_kwh=s,
            signal=signal,
            accounting=accounting,
            source=f"csv:{path}",
        )
    return out


def read_lets_wait_awhile(
    path: str | Path,
    *,
    zone: str | None = None,
    slot: timedelta | None = timedelta(hours=1),
    max_gap: timedelta = DEFAULT_MAX_GAP,
    assume_utc: bool = True,
) -> CarbonSeries:
    """Read a Let's Wait Awhile 2020 series (``Time,Carbon Intensity``, irregular 15/30 min).

    The dataset (Wiesner et al., Middleware 2021, built from ENTSO-E) is in UTC, hence the
    default ``assume_utc=True``. Samples are resampled to ``slot`` (default 1 h) by the
    time-weighted mean rule of :mod:`greencpn.sources.resample`.

    Args:
        path: ``ger_ci.csv``, ``gb_ci.csv`` or ``fr_ci.csv``.
        zone: zone name (default from the file name: ger → DE, gb → GB, fr → FR).
        slot: slot length; None resamples to the file's most common step.
        max_gap: longest gap filled by interpolation.
        assume_utc: accept the file's naive timestamps as UTC.
    """
    path = Path(path)
    df = _read_csv(path)
    if len(df.columns) < 2:
        raise ConfigError(
            f"expected 'Time,Carbon Intensity'; found {list(df.columns)}",
            source=str(path),
            fix="give the dataset's file unchanged",
        )
    tcol, vcol = df.columns[0], df.columns[1]
    if zone is None:
        stem = path.stem.split("_")[0].lower()
        zone = {"ger": "DE", "de": "DE", "gb": "GB", "fr": "FR"}.get(stem, stem.upper())
    return _column_series(
        df,
        tcol,
        vcol,
        path=path,
        zone=zone,
        assume_utc=assume_utc,
        slot=slot,
        max_gap=max_gap,
        signal="average",
    )


def _column_series(
    df: pd.DataFrame,
    tcol: str,
    vcol: str,
    *,
    path: Path,
    zone: str,
    assume_utc: bool,
    slot: timedelta | None,
    max_gap: timedelta,
    signal: Signal,
) -> CarbonSeries:
    """One time column and one value column of a single-zone file as a regular series."""
    idx = parse_times(df[tcol], path=path, column=tcol, assume_utc=assume_utc)
    vals = parse_values(df[vcol], path=path, column=vcol)
    s = _regularise(vals, idx, path=path, column=vcol, slot=slot, max_gap=max_gap)
    s.name = zone
    return CarbonSeries(
        zone=zone, intensity_g_per_kwh=s, signal=signal, accounting="direct", source=f"csv:{path}"
    )


def _watttime_zone(column: str) -> str:
    return column.strip().upper().replace("-", "_").replace(" ", "_")


def read_watttime_actual(
    path: str | Path,
    *,
    zone: str | None = None,
    slot: timedelta | None = None,
    max_gap: timedelta = DEFAULT_MAX_GAP,
    assume_utc: bool = True,
) -> CarbonSeries:
    """Read WattTime actual MOER values (``time,<Region>``), already converted to g/kWh.

    The vessim export is UTC (WattTime's API answers in UTC), hence ``assume_utc=True``.

    Returns:
        Marginal-signal series named after the region column (``Caiso_North`` → ``CAISO_NORTH``).
    """
    path = Path(path)
    df = _read_csv(path)
    tcol = _find_time_column(df, path)
    vcols = [c for c in df.columns if c != tcol]
    if len(vcols) != 1:
        raise ConfigError(
            f"expected one value column besides '{tcol}'; found {vcols}",
            source=str(path),
            fix="give one region per file",
        )
    vcol = vcols[0]
    zone = zone or _watttime_zone(vcol)
    return _column_series(
        df,
        tcol,
        vcol,
        path=path,
        zone=zone,
        assume_utc=assume_utc,
        slot=slot,
        max_gap=max_gap,
        signal="marginal",
    )


@dataclass(frozen=True)
class ForecastArchive:
    """Issued forecasts of one zone, looked up by issue time.

    Attributes:
        zone: region/zone name.
        frame: columns ``issued_at``, ``target``, ``intensity_g_per_kwh`` (UTC), sorted by
            issue time then target.
        signal: signal kind of the values.
        source: provenance string.
    """

    zone: str
    frame: pd.DataFrame
    signal: Signal = "marginal"
    source: str = "csv"

    def __post_init__(self) -> None:
        issued = pd.DatetimeIndex(self.frame["issued_at"])
        object.__setattr__(self, "_issued", issued)
        object.__setattr__(self, "_issue_times", issued.unique())

    @property
    def issue_times(self) -> pd.DatetimeIndex:
        """All issue times, ascending."""
        return self._issue_times  # type: ignore[attr-defined]

    def at(self, issued_at: datetime) -> CarbonSeries:
        """The forecast issued exactly at ``issued_at``.

        Raises:
            KeyError: no forecast was issued at that time.
        """
        t = _utc(issued_at)
        issued: pd.DatetimeIndex = self._issued  # type: ignore[attr-defined]
        lo, hi = issued.searchsorted(t, "left"), issued.searchsorted(t, "right")
        if lo == hi:
            raise KeyError(f"no forecast issued at {t.isoformat()}")
        part = self.frame.iloc[lo:hi]
        s = pd.Series(
            part["intensity_g_per_kwh"].to_numpy(),
            index=pd.DatetimeIndex(part["target"]),
            name=self.zone,
        )
        return CarbonSeries(
            zone=self.zone,
            intensity_g_per_kwh=s,
            signal=self.signal,
            accounting="direct",
            source=self.source,
            issued_at=t.to_pydatetime(),
        )

    def latest(self, when: datetime) -> CarbonSeries:
        """The most recent forecast issued at or before ``when``.

        Raises:
            KeyError: no forecast was issued by then.
        """
        t = _utc(when)
        k = self.issue_times.searchsorted(t, side="right") - 1
        if k < 0:
            raise KeyError(f"no forecast issued at or before {t.isoformat()}")
        return self.at(pd.Timestamp(self.issue_times[int(k)]).to_pydatetime())


def _utc(when: datetime) -> pd.Timestamp:
    t = pd.Timestamp(when)
    if t.tzinfo is None:
        raise ValueError(f"{when!r} has no time zone; give a tz-aware UTC datetime")
    return t.tz_convert("UTC").as_unit("ns")


def read_watttime_forecasts(
    path: str | Path, *, zone: str | None = None, assume_utc: bool = True
) -> ForecastArchive:
    """Read issued WattTime forecasts (``request_time,forecast_time,<Region>``).

    Returns:
        A :class:`ForecastArchive`: ``archive.at(t)`` / ``archive.latest(t)`` give the forecast
        issued at (or last before) ``t`` as a :class:`CarbonSeries` with ``issued_at`` set.
    """
    path = Path(path)
    df = _read_csv(path)
    need = ["request_time", "forecast_time"]
    if any(c not in df.columns for c in need) or len(df.columns) != 3:
        raise ConfigError(
            f"expected 'request_time,forecast_time,<region>'; found {list(df.columns)}",
            source=str(path),
            fix="give the WattTime forecast export unchanged",
        )
    vcol = [c for c in df.columns if c not in need][0]
    issued = parse_times(
        df["request_time"], path=path, column="request_time", assume_utc=assume_utc
    )
    target = parse_times(
        df["forecast_time"], path=path, column="forecast_time", assume_utc=assume_utc
    )
    vals = parse_values(df[vcol], path=path, column=vcol)
    frame = pd.DataFrame({"issued_at": issued, "target": target, "intensity_g_per_kwh": vals})
    frame = frame.sort_values(["issued_at", "target"], kind="stable").reset_index(drop=True)
    return ForecastArchive(
        zone=zone or _watttime_zone(vcol), frame=frame, signal="marginal", source=f"csv:{path}"
    )


# --------------------------------------------------------------------------- detection
def detect_format(path: str | Path) -> Format:
    """Detect a carbon file's format from its header line."""
    path = Path(path)
    try:
        with open_errors(path), open(path, encoding="utf-8-sig") as fh:
            header = [c.strip() for c in fh.readline().strip().split(",")]
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not a UTF-8 text file ({exc})",
            source=str(path),
            fix="give a comma-separated UTF-8 file with a header row",
        ) from exc
    cols = set(header)
    if _EM_TIME in cols and any(_EM_INTENSITY.match(c) for c in header):
        return "electricitymaps"
    if _looks_like_em(cols):
        return "electricitymaps"  # the reader says which column it did not recognise
    if {"request_time", "forecast_time"} <= cols:
        return "watttime_forecast"
    if "zone" in cols and "intensity_g_per_kwh" in cols:
        return "long"
    if header[:2] == ["Time", "Carbon Intensity"]:
        return "letswaitawhile"
    if len(header) == 2 and header[0].lower() == "time" and "_" in header[1]:
        return "watttime_actual"
    return "wide"


def read_carbon_file(
    path: str | Path,
    *,
    zone: str | None = None,
    accounting: Accounting = "lifecycle",
    assume_utc: bool | None = None,
    slot: timedelta | None = None,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> CarbonSeries:
    """Read any supported history file and return the series of one zone.

    Args:
        path: a file in one of the formats of this module (not the forecast archive).
        zone: which zone (needed for multi-zone files with more than one zone).
        accounting: lifecycle/direct (Electricity Maps export: picks the column).
        assume_utc: accept naive timestamps as UTC (None: the format's default).
        slot: resample to this slot length.
        max_gap: longest gap filled by interpolation.
    """
    fmt = detect_format(path)
    kw_utc: dict[str, Any] = {} if assume_utc is None else {"assume_utc": assume_utc}
    if fmt == "electricitymaps":
        cs = read_electricitymaps_export(path, accounting=accounting, slot=slot, max_gap=max_gap)
        if zone and zone != cs.zone:
            raise ConfigError(
                f"file holds zone {cs.zone}, not {zone}",
                source=str(path),
                field="zone",
                fix=f"use zone {cs.zone} or the right file",
            )
        return cs
    if fmt == "letswaitawhile":
        return read_lets_wait_awhile(
            path, zone=zone, slot=slot or timedelta(hours=1), max_gap=max_gap, **kw_utc
        )
    if fmt == "watttime_actual":
        return read_watttime_actual(path, zone=zone, slot=slot, max_gap=max_gap, **kw_utc)
    if fmt == "watttime_forecast":
        raise ConfigError(
            "this is an archive of issued forecasts, not a history",
            source=str(path),
            fix="read it with read_watttime_forecasts()",
        )
    if fmt == "long":
        series = read_long(path, accounting=accounting, slot=slot, max_gap=max_gap, **kw_utc)
    else:
        series = read_wide(
            path,
            accounting=accounting,
            slot=slot,
            max_gap=max_gap,
            zones=[zone] if zone else None,
            **kw_utc,
        )
    if zone is None:
        if len(series) != 1:
            raise ConfigError(
                f"file holds zones {list(series)}; say which one",
                source=str(path),
                field="zone",
                fix="pass zone=<one of them>",
            )
        return next(iter(series.values()))
    if zone not in series:
        raise ConfigError(
            f"zone {zone!r} not in the file (it has {list(series)})",
            source=str(path),
            field="zone",
            fix="pick one of the file's zones",
        )
    return series[zone]


# --------------------------------------------------------------------------- as a source
class FileSource:
    """A carbon history file as a source: ``history`` from the file (read with
    :func:`read_carbon_file`, any of its formats); no issued forecasts,
    so in a chain the forecaster makes them."""

    step = timedelta(hours=1)

    def __init__(self, path: str | Path, *, zone: str, accounting: str = "lifecycle") -> None:
        self.path = Path(path)
        self.zone = zone
        self.accounting = accounting
        self.name = f"csv:{path}"
        self._series: CarbonSeries | None = None

    def load(self) -> CarbonSeries:
        if self._series is None:
            self._series = read_carbon_file(self.path, zone=self.zone, accounting=self.accounting)  # type: ignore[arg-type]
        return self._series

    @property
    def signal(self) -> str:
        return self.load().signal

    def end_time(self) -> datetime:
        """Just after the file's last slot (the natural issue time of a forecast)."""
        s = self.load()
        idx = s.intensity_g_per_kwh.index
        return (idx[-1] + (s.step or timedelta(hours=1))).to_pydatetime()

    def history(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        s = self.load()
        v = s.intensity_g_per_kwh
        mask = np.asarray((v.index >= pd.Timestamp(start)) & (v.index < pd.Timestamp(end)))
        est = s.estimated[mask] if s.estimated is not None else None
        return replace(s, intensity_g_per_kwh=v[mask], estimated=est)

    def forecast(self, zone: str, issued_at: datetime, horizon: timedelta) -> CarbonSeries:
        raise BadResponseError(f"{self.name}: a history file holds no issued forecasts")
