"""Parsing shared by the carbon-file readers (:mod:`greencpn.sources.files`) and the
Let's Wait Awhile replay: reading a CSV with row checks, timestamps to UTC (naive ones only
where the column or the caller says UTC, with a DST hint), numbers with file / line / column in
every error, and regularising a series onto slots (:mod:`greencpn.sources.resample`)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from greencpn.errors import ConfigError
from greencpn.sources.resample import (
    MAX_PLAUSIBLE_G_PER_KWH,
    fill_gaps,
    is_regular,
    resample_to_slots,
)

_TZ_SUFFIX = re.compile(r"\d\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:Z|UTC|[+-]\d\d(?::?\d\d)?)$")
_TIME_NAMES = ("datetime_utc", "datetime", "timestamp", "time", "date", "period_start", "start")


@contextmanager
def open_errors(path: Path, *, not_found_fix: str = "check the path") -> Iterator[None]:
    """Turn the errors of opening a carbon file (missing, a folder, not readable) into a
    :class:`ConfigError` naming the file and the fix; decoding errors stay the caller's."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ConfigError("file not found", source=str(path), fix=not_found_fix) from exc
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


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a carbon CSV; refuse a missing file, a folder, a header without rows, a row with
    fewer fields than the header, and a last row cut short (file ends without a newline)."""
    try:
        with open_errors(
            path, not_found_fix="check the path (relative paths are from the working directory)"
        ):
            df = pd.read_csv(path, encoding="utf-8-sig")
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
