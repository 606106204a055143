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
(gaps up to ``max_gap`` interpolated, longer ones refused).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from greencpn.errors import ConfigError
from greencpn.sources.base import Accounting, CarbonSeries, Signal
from greencpn.sources.http import BadResponseError
from greencpn.sources.resample import (
    DEFAULT_MAX_GAP,
    MAX_PLAUSIBLE_G_PER_KWH,
    fill_gaps,
    is_regular,
    resample_to_slots,
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
_TZ_SUFFIX = re.compile(r"\d\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:Z|UTC|[+-]\d\d(?::?\d\d)?)$")
_TIME_NAMES = ("datetime_utc", "datetime", "timestamp", "time", "date", "period_start", "start")

Format = Literal[
    "electricitymaps", "wide", "long", "letswaitawhile", "watttime_actual", "watttime_forecast"
]


# --------------------------------------------------------------------------- parsing helpers
def _read_csv(path: Path) -> pd.DataFrame:
    """Read a carbon CSV; refuse a missing file, a folder, a header without rows, a row with
    fewer fields than the header, and a last row cut short (file ends without a newline)."""
    try:
        df = pd.read_csv(path, encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError(
            "file not found",
            source=str(path),
            fix="check the path (relative paths are from the working directory)",
        ) from exc
    except IsADirectoryError:
        raise ConfigError(
            "is a directory, not a CSV file",
            source=str(path),
            fix="point at the carbon CSV file inside it",
        ) from None
    except PermissionError:
        raise ConfigError(
            "cannot be read (permission denied)",
            source=str(path),
            fix="make the file readable by the user running greencpn",
        ) from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(
            f"not a readable CSV file ({exc})",
            source=str(path),
            fix="give a comma-separated UTF-8 file with a header row",
        ) from exc
    if len(df) == 0:
        raise ConfigError(
            f"no data rows (only the header {list(df.columns)})",
            source=str(path),
            fix="give at least one row of timestamps and values",
        )
    _check_rows(path, len(df.columns))
    return df


def _decimals(text: str) -> tuple[int, int]:
    """(digits before the decimal point, digits after it) of a plain number's text."""
    t = text.strip().lstrip("+-")
    if "e" in t.lower():
        return (len(t), len(t))  # exponent notation: not compared
    head, _, tail = t.partition(".")
    return (len(head.lstrip("0")) or 1, len(tail))


def _check_rows(path: Path, n_cols: int) -> None:
    """Every data row has as many fields as the header; a last row without a final newline
    is checked for a value cut short (``50.38`` → ``5``): pandas reads both silently."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        text = fh.read()
    rows = csv.reader(text.splitlines())
    last: list[str] = []
    recent: list[str] = []  # the last column's recent values
    lineno = 0
    for lineno, row in enumerate(rows, start=1):
        if not row:
            continue
        if lineno > 1 and len(row) != n_cols:
            cut = lineno == len(text.splitlines()) and not text.endswith(("\n", "\r"))
            raise ConfigError(
                f"line {lineno}: the row has {len(row)} of {n_cols} fields"
                + (
                    " and the file does not end with a newline: it looks cut mid-line"
                    if cut
                    else ""
                ),
                source=str(path),
                fix="restore the file's end (download it again) or delete the incomplete line"
                if cut
                else f"give every row {n_cols} comma-separated fields (empty for a missing value)",
            )
        if lineno > 1:
            if last:
                recent.append(last[-1].strip())
                recent = recent[-24:]
            last = row
    if text.endswith(("\n", "\r")) or not last or lineno < 3:
        return
    value = last[-1].strip()
    if not recent or any(v == "" for v in recent):
        return  # a column often left empty (e.g. "Data Estimation Method") proves nothing
    fix = (
        "restore the file's end (download it again) or delete the last line; if the value is "
        "right, end the file with a newline"
    )
    if value == "":
        raise ConfigError(
            f"line {lineno}: the last value is empty and the file does not end with a newline: "
            "it looks cut mid-line",
            source=str(path),
            fix=fix,
        )
    try:
        float(value)
        for v in recent:
            float(v)
    except ValueError:
        return  # not a numeric column (or a bad number parse_values names)
    ints, decs = _decimals(value)
    min_ints = min(_decimals(v)[0] for v in recent)
    min_decs = min(_decimals(v)[1] for v in recent)
    if decs < min_decs or ints < min_ints:
        raise ConfigError(
            f"line {lineno}: the last value {value!r} is shorter than the column's other values "
            f"(e.g. {recent[-1]!r}) and the file does not end with a newline: it looks cut "
            "mid-line",
            source=str(path),
            field=str(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns[-1]),
            fix=fix,
        )


def _column_says_utc(name: str) -> bool:
    return bool(re.search(r"utc", name, re.IGNORECASE))


def parse_times(
    values: pd.Series, *, path: Path | str, column: str, assume_utc: bool = False
) -> pd.DatetimeIndex:
    """Parse a time column to a UTC ``DatetimeIndex`` (see the module docstring for the rule).

    Raises:
        ConfigError: naive times in a column that does not say UTC, or unparseable times.
    """
    strs = values.astype(str).str.strip()
    has_tz = strs.str.contains(_TZ_SUFFIX).to_numpy()
    if has_tz.all():
        strs = strs.str.replace(r"\s*UTC$", "+00:00", regex=True)
        try:
            try:
                idx = pd.to_datetime(strs, utc=True, format="ISO8601")
            except ValueError:
                idx = pd.to_datetime(strs, utc=True, format="mixed")
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{_first_bad_time(strs)}unparseable timestamp ({exc})",
                source=str(path),
                field=column,
                fix="use ISO 8601 timestamps, e.g. 2023-01-01T00:00:00Z",
            ) from exc
        return pd.DatetimeIndex(idx).as_unit("ns")
    if has_tz.any():
        line = int(np.argmin(has_tz)) + 2
        raise ConfigError(
            f"line {line}: timestamp {strs.iloc[line - 2]!r} has no UTC offset "
            "while others have one",
            source=str(path),
            field=column,
            fix="give every timestamp an offset (e.g. +00:00) or none at all",
        )
    if not (assume_utc or _column_says_utc(column)):
        raise ConfigError(
            f"timestamps have no time zone (e.g. {strs.iloc[0]!r}) and the column name does not "
            "say they are UTC",
            source=str(path),
            field=column,
            fix=f"rename the column to '{column}_utc' if the times are UTC, add an offset to "
            "each timestamp (e.g. '+00:00'), or pass assume_utc=True",
        )
    try:
        idx = pd.to_datetime(strs, format="%Y-%m-%d %H:%M:%S")
    except (ValueError, TypeError):
        try:
            idx = pd.to_datetime(strs, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{_first_bad_time(strs)}unparseable timestamp ({exc})",
                source=str(path),
                field=column,
                fix="use ISO 8601 timestamps, e.g. 2023-01-01 00:00:00",
            ) from exc
    return pd.DatetimeIndex(idx).tz_localize("UTC").as_unit("ns")


def _first_bad_time(strs: pd.Series) -> str:
    """``"line N: "`` of the first timestamp pandas cannot parse on its own (or "")."""
    for i, text in enumerate(strs):
        try:
            pd.Timestamp(text)
        except (ValueError, TypeError):
            return f"line {i + 2}: {text!r}: "
    return ""


def parse_values(values: pd.Series, *, path: Path | str, column: str) -> np.ndarray:
    """Parse an intensity column to float64; empty cells become NaN (missing).

    Raises:
        ConfigError: a non-numeric or negative value, with file, line and column.
    """
    if pd.api.types.is_numeric_dtype(values.dtype):
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raw = values.astype("object")
        num = pd.to_numeric(values, errors="coerce")
        arr = num.to_numpy(dtype=np.float64, na_value=np.nan)
        blank = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
        bad = np.isnan(arr) & ~blank
        if bad.any():
            i = int(np.argmax(bad))
            raise ConfigError(
                f"line {i + 2}: value {raw.iloc[i]!r} is not a number",
                source=str(path),
                field=column,
                fix="give intensities as plain numbers in g/kWh (e.g. 231.5) or "
                "leave the cell empty when missing",
            )
    neg = arr < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise ConfigError(
            f"line {i + 2}: negative intensity {arr[i]}",
            source=str(path),
            field=column,
            fix="carbon intensities are ≥ 0 g/kWh; correct the value",
        )
    big = ~(arr <= MAX_PLAUSIBLE_G_PER_KWH) & ~np.isnan(arr)
    if big.any():
        i = int(np.argmax(big))
        raise ConfigError(
            f"line {i + 2}: implausible intensity {arr[i]:g} g/kWh (plausible: 0–"
            f"{MAX_PLAUSIBLE_G_PER_KWH:.0f} g/kWh)",
            source=str(path),
            field=column,
            fix="correct the value; if the file is in another unit (kg/kWh, lb/MWh) convert it "
            "to g/kWh",
        )
    return arr


def _regularise(
    values: np.ndarray,
    index: pd.DatetimeIndex,
    *,
    path: Path,
    column: str,
    slot: timedelta | None,
    max_gap: timedelta,
    lines: np.ndarray | None = None,
) -> pd.Series:
    """Sort, refuse duplicates, and bring the samples to a regular slot grid (``lines``: the
    file line of each sample, default position + 2)."""
    s = pd.Series(values, index=index, name=column)
    if index.has_duplicates:
        dup = index[index.duplicated()][0]
        pos = np.flatnonzero(index == dup)[:2]
        at = lines[pos] if lines is not None else pos + 2
        raise ConfigError(
            f"duplicate timestamp {dup.isoformat()} (lines {at[0]} and {at[1]}){_dst_hint(dup)}",
            source=str(path),
            field=column,
            fix="keep one row per timestamp (and per zone); if the times are local wall-clock "
            "times, convert them to UTC or write each with its offset (e.g. +02:00)",
        )
    if not s.index.is_monotonic_increasing:
        s = s.sort_index()
    what = f"{path} [{column}]"
    sidx = pd.DatetimeIndex(s.index)
    if slot is None:
        if is_regular(sidx):
            if s.isna().any():
                step = s.index[1] - s.index[0]
                return fill_gaps(s, step, max_gap=max_gap, what=what)
            return s
        # Irregular without an explicit slot: resample to the most common step.
        diffs = pd.Series(np.diff(sidx.asi8))
        slot = pd.Timedelta(int(diffs.mode().iloc[0]), unit="ns").to_pytimedelta()
    elif (
        is_regular(sidx)
        and len(s) > 1
        and s.index[1] - s.index[0] == pd.Timedelta(slot)
        and not s.isna().any()
    ):
        return s
    return resample_to_slots(s, slot, max_gap=max_gap, what=what)


def _dst_hint(ts: pd.Timestamp) -> str:
    """A hint when a repeated hour falls on a day daylight-saving time ends (EU: last Sunday
    of October; US: first Sunday of November): local times were written as UTC."""
    if ts.weekday() != 6:
        return ""
    eu = ts.month == 10 and ts.day > 24
    us = ts.month == 11 and ts.day <= 7
    if not (eu or us):
        return ""
    where = "Europe" if eu else "North America"
    return (
        f"; {ts:%Y-%m-%d} is the day daylight-saving time ends in {where}, so these look like "
        "local time written as UTC (an hour repeats)"
    )


def _find_time_column(df: pd.DataFrame, path: Path) -> str:
    lower = {c.lower().strip(): c for c in df.columns}
    for name in _TIME_NAMES:
        if name in lower:
            return lower[name]
    for c in df.columns:
        if "time" in c.lower() or "date" in c.lower():
            return c
    raise ConfigError(
        f"no time column among {list(df.columns)}",
        source=str(path),
        fix="name the time column 'datetime_utc' (values in UTC)",
    )


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
        with open(path, encoding="utf-8-sig") as fh:
            header = [c.strip() for c in fh.readline().strip().split(",")]
    except FileNotFoundError as exc:
        raise ConfigError("file not found", source=str(path), fix="check the path") from exc
    except IsADirectoryError:
        raise ConfigError(
            "is a directory, not a CSV file",
            source=str(path),
            fix="point at the carbon CSV file inside it",
        ) from None
    except PermissionError:
        raise ConfigError(
            "cannot be read (permission denied)",
            source=str(path),
            fix="make the file readable by the user running greencpn",
        ) from None
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
