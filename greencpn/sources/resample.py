"""Resample carbon-intensity samples to the plan's slot length, by one documented rule.

The rule (also in ``docs/forecasting.md``):

1. **Step function.** The samples define a step function: each sample's value holds from its
   timestamp until the next sample. The *native step* of a series is the median interval between
   samples. An interval longer than ``max_interval`` (default: the larger of the native step and
   the slot) is a hole in the data: its sample then holds for one native step only and the rest of
   the interval is *missing*. A NaN sample holds nothing (missing). The last sample holds for one
   native step.
2. **Time-weighted mean.** The value of a slot ``[s, s + slot)`` (slots aligned to multiples of
   the slot length since 1970-01-01 UTC) is the time-weighted mean of the step function over the
   covered part of the slot. A slot covered less than ``min_coverage`` (default 50 %) is missing.
   Downsampling (15 min → 1 h) is therefore the time-weighted mean; upsampling (1 h → 15 min) is a
   forward hold of the sample.
3. **Gaps.** Runs of missing slots between covered slots are filled by linear interpolation
   between the neighbouring slot values if the run is at most ``max_gap`` long; a longer run is
   refused with a :class:`~greencpn.errors.ConfigError` that lists every such gap. Missing slots
   before the first / after the last covered slot are dropped (the series starts and ends with
   data).

Example (hand-checkable): samples 00:00=100, 00:15=200, 00:45=400 (native step 15 min) → the
hourly slot 00:00 is ``(15*100 + 30*200 + 15*400) / 60 = 225``.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from greencpn.errors import ConfigError

DEFAULT_MAX_GAP = timedelta(hours=2)
"""Default longest run of missing slots that may be filled by linear interpolation."""

MAX_PLAUSIBLE_G_PER_KWH = 2000.0
"""Highest carbon intensity accepted from a file or an API, g/kWh (lignite is ~1,100–1,200;
a marginal coal/oil unit ~1,000). Above it the number is in another unit or corrupt."""

_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def _seconds(index: pd.DatetimeIndex) -> np.ndarray:
    """Seconds since the epoch as float64, whatever the index's resolution."""
    return np.asarray((index - _EPOCH) / pd.Timedelta(seconds=1), dtype=np.float64)


def native_step(index: pd.DatetimeIndex) -> timedelta | None:
    """Median interval between consecutive timestamps, or None for fewer than two."""
    if len(index) < 2:
        return None
    secs = np.diff(_seconds(index))
    return timedelta(seconds=float(np.median(secs)))


def is_regular(index: pd.DatetimeIndex) -> bool:
    """True when all intervals are equal (fewer than three points count as regular)."""
    if len(index) < 3:
        return True
    d = np.diff(_seconds(index))
    return bool(np.all(d == d[0]))


def resample_to_slots(
    samples: pd.Series,
    slot: timedelta,
    *,
    max_gap: timedelta = DEFAULT_MAX_GAP,
    max_interval: timedelta | None = None,
    min_coverage: float = 0.5,
    what: str = "carbon series",
) -> pd.Series:
    """Resample ``samples`` to regular slots of length ``slot`` (see the module docstring).

    Args:
        samples: values indexed by tz-aware UTC timestamps (any order; duplicates refused).
        slot: slot length, e.g. ``timedelta(hours=1)``.
        max_gap: longest run of missing slots that is filled by linear interpolation.
        max_interval: an interval between samples longer than this is a hole; default
            ``max(native step, slot)``.
        min_coverage: a slot covered by data for less than this fraction is missing.
        what: name of the data in error messages (e.g. the file name).

    Returns:
        A float series on a regular ``slot``-spaced UTC index of slot starts.

    Raises:
        ConfigError: bad index, duplicate timestamps, or gaps longer than ``max_gap``.
    """
    if not isinstance(samples.index, pd.DatetimeIndex) or samples.index.tz is None:
        raise ConfigError(
            "index must be tz-aware UTC timestamps",
            source=what,
            fix="convert the timestamps to UTC before resampling",
        )
    slot_s = pd.Timedelta(slot).total_seconds()
    if slot_s <= 0:
        raise ConfigError(f"slot length must be positive, got {slot}", source=what)
    s = samples.sort_index()
    if s.index.has_duplicates:
        dups = s.index[s.index.duplicated()].unique()[:5]
        raise ConfigError(
            f"duplicate timestamps {[str(d) for d in dups]}",
            source=what,
            fix="keep one value per timestamp",
        )
    if len(s) == 0:
        return pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float, name=samples.name)
    t = _seconds(pd.DatetimeIndex(s.index))
    v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    step_s = float(np.median(np.diff(t))) if len(t) > 1 else slot_s
    max_int_s = (
        pd.Timedelta(max_interval).total_seconds()
        if max_interval is not None
        else max(step_s, slot_s)
    )
    nxt = np.append(t[1:], t[-1] + step_s)
    interval = nxt - t
    hold = np.where(interval > max_int_s + 1e-9, step_s, interval)
    ok = ~np.isnan(v)
    hold = np.where(ok, hold, 0.0)
    vz = np.where(ok, v, 0.0)

    # Piecewise-linear cumulative integrals of value and coverage at breakpoints t_i, t_i + hold_i.
    area = vz * hold
    f_start = np.concatenate(([0.0], np.cumsum(area)[:-1]))
    c_start = np.concatenate(([0.0], np.cumsum(hold)[:-1]))
    xp = np.empty(2 * len(t))
    xp[0::2] = t
    xp[1::2] = t + hold
    fp = np.empty_like(xp)
    fp[0::2] = f_start
    fp[1::2] = f_start + area
    cp = np.empty_like(xp)
    cp[0::2] = c_start
    cp[1::2] = c_start + hold

    first = np.floor(t[0] / slot_s) * slot_s
    last_end = t[-1] + hold[-1] if hold[-1] > 0 else t[-1] + step_s
    n = int(np.ceil((last_end - first) / slot_s - 1e-9))
    n = max(n, 1)
    edges = first + slot_s * np.arange(n + 1)
    fe = np.interp(edges, xp, fp)
    ce = np.interp(edges, xp, cp)
    cov = np.diff(ce)
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = np.diff(fe) / cov
    vals[cov < min_coverage * slot_s - 1e-9] = np.nan

    idx = pd.DatetimeIndex(
        pd.to_datetime(np.round(edges[:-1] * 1e3).astype(np.int64), unit="ms", utc=True)
    ).as_unit("ns")
    out = pd.Series(vals, index=idx, name=samples.name)
    return fill_gaps(out, slot, max_gap=max_gap, what=what)


def find_gaps(series: pd.Series) -> list[tuple[pd.Timestamp, pd.Timestamp, int]]:
    """Interior runs of NaN in a regular series: ``(first missing, last missing, n_slots)``."""
    miss = series.isna().to_numpy()
    if not miss.any():
        return []
    valid = np.flatnonzero(~miss)
    if len(valid) == 0:
        return []
    lo, hi = valid[0], valid[-1]
    m = miss[lo : hi + 1].astype(np.int8)
    d = np.diff(np.concatenate(([0], m, [0])))
    starts = np.flatnonzero(d == 1) + lo
    ends = np.flatnonzero(d == -1) + lo  # exclusive
    return [
        (series.index[a], series.index[b - 1], int(b - a))
        for a, b in zip(starts, ends, strict=True)
    ]


def format_duration(td: timedelta | pd.Timedelta) -> str:
    """``2 h``, ``30 min``, ``1 h 30 min``, ``3 d 2 h`` — not pandas' ``0 days 02:00:00``."""
    secs = int(pd.Timedelta(td).total_seconds())
    if secs <= 0:
        return "0 min"
    d, rem = divmod(secs, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    parts = [f"{d} d" if d else "", f"{h} h" if h else "", f"{m} min" if m else ""]
    parts.append(f"{sec} s" if sec else "")
    return " ".join(p for p in parts if p)


def fill_gaps(
    series: pd.Series,
    slot: timedelta,
    *,
    max_gap: timedelta = DEFAULT_MAX_GAP,
    what: str = "carbon series",
) -> pd.Series:
    """Trim leading/trailing NaN, fill interior gaps ≤ ``max_gap`` linearly, refuse longer ones.

    Args:
        series: regular series (slot-spaced UTC index), NaN where missing.
        slot: the slot length of ``series``.
        max_gap: longest run of missing slots (as a duration) to interpolate.
        what: name of the data in error messages.

    Raises:
        ConfigError: listing every gap longer than ``max_gap``.
    """
    valid = series.notna().to_numpy()
    if not valid.any():
        raise ConfigError(
            "no usable values",
            source=what,
            fix="check the file has numeric values in the intensity column",
        )
    lo = int(np.argmax(valid))
    hi = len(valid) - int(np.argmax(valid[::-1]))
    series = series.iloc[lo:hi]
    gaps = find_gaps(series)
    if not gaps:
        return series
    slot_td = pd.Timedelta(slot)
    too_long = [(a, b, k) for a, b, k in gaps if k * slot_td > pd.Timedelta(max_gap)]
    if too_long:
        listed = "; ".join(
            f"{a.isoformat()} .. {(b + slot_td).isoformat()} ({format_duration(k * slot_td)})"
            for a, b, k in too_long[:10]
        )
        more = f" and {len(too_long) - 10} more" if len(too_long) > 10 else ""
        allowed = (
            "gaps are not interpolated"
            if pd.Timedelta(max_gap) <= pd.Timedelta(0)
            else f"gaps up to {format_duration(max_gap)} are interpolated"
        )
        longest = max(k for _, _, k in too_long)
        raise ConfigError(
            f"{len(too_long)} gap(s) of missing values ({allowed}): {listed}{more}",
            source=what,
            fix="supply the missing data, or let greencpn interpolate gaps of up to N slots: "
            f"[carbon] max_gap_slots = {longest} in the fleet config (greencpn forecast: "
            f"--max-gap-slots {longest})",
        )
    vals = series.to_numpy(dtype=np.float64).copy()
    x = np.arange(len(vals))
    miss = np.isnan(vals)
    vals[miss] = np.interp(x[miss], x[~miss], vals[~miss])
    return pd.Series(vals, index=series.index, name=series.name)
