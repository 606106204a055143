"""Load forecast per pool: expected busy GPUs (or active nodes) per slot, with an upper quantile.

The plan uses it to keep enough capacity on for demand that is not (yet) in the queue —
interactive sessions, jobs still to be submitted — and to power the rest down.

Method (:class:`SeasonalLoadForecaster`), for a forecast issued at ``t`` with lead ``k`` slots:

1. **Aggregate** the history to the slot length: the *max* within each slot by default (nodes
   must be on for the slot's peak), or the mean. Only slots that ended at or before ``t`` are
   used — nothing at or after the issue time is read.
2. **Seasonal base** ``S(i) = w · W(i) + (1 − w) · D(i)`` where ``W`` is the mean of the same
   slot in the previous ``weeks`` weeks and ``D`` the mean of the same slot on the ``days`` most
   recent days before ``t`` (both skip gaps).
3. **Recent level** ``L`` = mean of the last ``level_slots`` slots before ``t``; the forecast
   moves from it to the seasonal base as the lead grows:
   ``ŷ(t + k) = decay^k · L + (1 − decay^k) · S(t + k)``, clipped to ``[0, capacity]``.
4. **Quantiles** from its own recent errors: the same forecast is replayed for every slot of the
   previous ``residual_days`` days (targets all before ``t``); the ``q``-quantile of its errors at
   each lead (smoothed over neighbouring leads) is added to ``ŷ``.

It refits from the history it is given at every call (no frozen model); a 48 h forecast with
two weeks of residual replay takes a few milliseconds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from greencpn.clock import ensure_utc
from greencpn.errors import ConfigError


@dataclass(frozen=True)
class LoadForecast:
    """A load forecast for one pool.

    Attributes:
        pool: pool name (free text).
        expected: forecast per slot (UTC ``DatetimeIndex`` of slot starts), in ``unit``.
        quantiles: e.g. ``{0.9: series}`` on the same index: the load stays at or below it with
            about that probability (measured coverage in ``bench/results/load.md``).
        issued_at: the issue time; no history at or after it was used.
        unit: e.g. ``busy_gpus`` or ``active_nodes``.
        capacity: the upper clip (pool size), if given.
        method: the forecaster and its aggregation.
    """

    pool: str
    expected: pd.Series
    quantiles: dict[float, pd.Series] = field(default_factory=dict)
    issued_at: datetime | None = None
    unit: str = "busy_gpus"
    capacity: float | None = None
    method: str = ""

    def to_frame(self) -> pd.DataFrame:
        """The forecast as a DataFrame: ``expected`` and one ``q<NN>`` column per quantile."""
        cols = {"expected": self.expected}
        for q, s in sorted(self.quantiles.items()):
            cols[f"q{round(q * 100):02d}"] = s
        return pd.DataFrame(cols)


def aggregate_history(
    history: pd.Series, slot: timedelta, issued_at: datetime, how: Literal["max", "mean"] = "max"
) -> pd.Series:
    """Slot values from a finer (or equal) series, using only slots complete at ``issued_at``.

    Returns a regular series (NaN for slots without data) ending with the slot that ends at
    ``floor(issued_at, slot)``.
    """
    if not isinstance(history.index, pd.DatetimeIndex) or history.index.tz is None:
        raise ConfigError(
            "history needs a timezone-aware DatetimeIndex (UTC)",
            field="history",
            fix="parse timestamps with utc=True",
        )
    t0 = pd.Timestamp(ensure_utc(issued_at, "issued_at")).floor(pd.Timedelta(slot))
    past = history[history.index < t0].astype(float)
    if past.empty:
        return pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC"))
    res = past.resample(pd.Timedelta(slot), origin="epoch")
    agg = res.max() if how == "max" else res.mean()
    full = pd.date_range(agg.index[0], t0 - pd.Timedelta(slot), freq=pd.Timedelta(slot))
    return agg.reindex(full)


@dataclass(frozen=True)
class SeasonalLoadForecaster:
    """Seasonal profile + decaying recent level + quantiles from its own recent errors.

    Attributes:
        slot_minutes: slot length of the forecast.
        aggregate: ``max`` (peak per slot, default) or ``mean``.
        weeks: weeks of same-slot history in the weekly profile.
        days: recent days in the daily profile.
        weekly_weight: ``w`` in ``S = w·W + (1 − w)·D``.
        level_slots: slots before the issue time averaged into the recent level.
        level_decay: per-slot weight kept on the recent level (0.97 per hour: about half after
            a day). Defaults chosen on the Philly node series, 2017-10-31 → 11-20 (see
            ``bench/results/load.md``, which scores the later weeks separately).
        residual_days: days of replayed forecasts whose errors give the quantiles.
        quantiles: which upper quantiles to report.
        lead_smoothing: leads averaged on each side when smoothing error quantiles.
    """

    slot_minutes: int = 60
    aggregate: Literal["max", "mean"] = "max"
    weeks: int = 4
    days: int = 7
    weekly_weight: float = 0.5
    level_slots: int = 1
    level_decay: float = 0.97
    residual_days: int = 14
    quantiles: tuple[float, ...] = (0.9,)
    lead_smoothing: int = 2

    def __post_init__(self) -> None:
        if (24 * 60) % self.slot_minutes:
            raise ConfigError(
                f"slot_minutes={self.slot_minutes} does not divide a day",
                field="slot_minutes",
                fix="use 15, 30, 60, ...",
            )
        if not 0 <= self.weekly_weight <= 1 or not 0 <= self.level_decay <= 1:
            raise ConfigError(
                "weekly_weight and level_decay must lie in [0, 1]",
                field="weekly_weight/level_decay",
                fix="use e.g. 0.5 and 0.93",
            )
        if any(not 0 < q < 1 for q in self.quantiles):
            raise ConfigError(
                f"quantiles {self.quantiles} must lie strictly between 0 and 1",
                field="quantiles",
                fix="use e.g. (0.9,)",
            )

    @property
    def _per_day(self) -> int:
        return 24 * 60 // self.slot_minutes

    @property
    def name(self) -> str:
        return f"seasonal-level({self.aggregate})"

    # ------------------------------------------------------------------ core (arrays)

    def _base(self, y: np.ndarray, targets: np.ndarray, issues: np.ndarray) -> np.ndarray:
        """Seasonal base S for target slot indices given issue indices (same shape)."""
        per_day = self._per_day
        per_week = 7 * per_day
        n = len(y)

        def take(idx: np.ndarray) -> np.ndarray:
            ok = (idx >= 0) & (idx < issues)
            out = np.full(idx.shape, np.nan)
            out[ok] = y[np.clip(idx, 0, n - 1)][ok]
            return out

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected
            weekly = np.stack([take(targets - m * per_week) for m in range(1, self.weeks + 1)])
            w_mean = np.nanmean(weekly, axis=0) if self.weeks else np.full(targets.shape, np.nan)
            lead = targets - issues  # 0-based: slot issues + lead
            first_day = lead // per_day + 1  # the most recent day whose same slot is before t
            daily = np.stack([take(targets - (first_day + d) * per_day) for d in range(self.days)])
            d_mean = np.nanmean(daily, axis=0) if self.days else np.full(targets.shape, np.nan)
        w = self.weekly_weight
        base = np.where(
            np.isnan(w_mean),
            d_mean,
            np.where(np.isnan(d_mean), w_mean, w * w_mean + (1 - w) * d_mean),
        )
        return base

    def _predict(self, y: np.ndarray, issues: np.ndarray, horizon: int) -> np.ndarray:
        """Point forecasts, shape (len(issues), horizon), for issue slot indices (data < issue)."""
        leads = np.arange(horizon)
        targets = issues[:, None] + leads[None, :]
        iss = np.broadcast_to(issues[:, None], targets.shape)
        base = self._base(y, targets, iss)
        # level: mean of the last slots before the issue (the last value where they are gaps)
        lv = issues[:, None] - np.arange(1, self.level_slots + 1)[None, :]
        lv_c = np.clip(lv, 0, len(y) - 1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            recent = np.where(lv >= 0, y[lv_c], np.nan)
            level = np.nanmean(recent, axis=1)
        last = self._last_value(y, issues)
        level = np.where(np.isnan(level), last, level)
        # no seasonal history yet: the level carries on
        base = np.where(np.isnan(base), level[:, None], base)
        decay = (self.level_decay ** (leads + 1))[None, :]
        return decay * level[:, None] + (1.0 - decay) * base

    @staticmethod
    def _last_value(y: np.ndarray, issues: np.ndarray) -> np.ndarray:
        filled = pd.Series(y).ffill().to_numpy()
        idx = np.clip(issues - 1, 0, len(y) - 1)
        out = np.where(issues > 0, filled[idx], np.nan)
        overall = np.nanmean(y) if np.isfinite(y).any() else 0.0
        return np.where(np.isnan(out), overall, out)

    # ------------------------------------------------------------------ public

    def forecast(
        self,
        history: pd.Series,
        issued_at: datetime,
        horizon: timedelta = timedelta(hours=48),
        *,
        capacity: float | None = None,
        pool: str = "",
        unit: str = "busy_gpus",
    ) -> LoadForecast:
        """Forecast the load of one pool.

        Args:
            history: observed load (busy GPUs or active nodes) with a UTC ``DatetimeIndex``, any
                regular or irregular step at most the slot length; values at or after
                ``issued_at`` are ignored.
            issued_at: the issue time (UTC); the first forecast slot is the one containing it.
            horizon: how far ahead.
            capacity: pool size: forecasts are clipped to ``[0, capacity]``.
            pool, unit: labels carried into the result.

        Raises:
            ConfigError: no history before ``issued_at`` or a bad index.
        """
        issued_at = ensure_utc(issued_at, "issued_at")
        slot = timedelta(minutes=self.slot_minutes)
        y_ser = aggregate_history(history, slot, issued_at, self.aggregate)
        if y_ser.notna().sum() == 0:
            raise ConfigError(
                f"no load history before {issued_at.isoformat()}",
                field="history",
                fix="give at least a few hours (better: several weeks) of history",
            )
        y = y_ser.to_numpy(dtype=float)
        n = len(y)
        h = max(1, math.ceil(horizon / slot))
        point = self._predict(y, np.array([n]), h)[0]
        cap = np.inf if capacity is None else float(capacity)
        point = np.clip(point, 0.0, cap)
        t0 = pd.Timestamp(issued_at).floor(pd.Timedelta(slot))
        index = pd.date_range(t0, periods=h, freq=pd.Timedelta(slot))
        quantiles: dict[float, pd.Series] = {}
        if self.quantiles:
            errors = self._replay_errors(y, h)
            for q in self.quantiles:
                if errors is None:
                    spread = np.full(h, np.nanstd(y) * 1.2816 if q >= 0.5 else 0.0)
                else:
                    with np.errstate(all="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        spread = np.nanquantile(errors, q, axis=0)
                    spread = self._smooth(np.nan_to_num(spread, nan=0.0))
                upper = np.clip(point + spread, 0.0, cap)
                quantiles[q] = pd.Series(
                    np.maximum(upper, point) if q >= 0.5 else upper, index=index, name=f"q{q:g}"
                )
        return LoadForecast(
            pool=pool,
            expected=pd.Series(point, index=index, name="expected"),
            quantiles=quantiles,
            issued_at=issued_at,
            unit=unit,
            capacity=capacity,
            method=self.name,
        )

    def _replay_errors(self, y: np.ndarray, h: int) -> np.ndarray | None:
        """Errors (actual − forecast), shape (issues, h), of forecasts whose targets are all known."""
        n = len(y)
        last_issue = n - h  # targets issue..issue+h-1 all < n
        first_issue = max(self._per_day, last_issue - self.residual_days * self._per_day)
        if last_issue - first_issue < self._per_day:
            return None
        issues = np.arange(first_issue, last_issue + 1)
        pred = self._predict(y, issues, h)
        actual = y[issues[:, None] + np.arange(h)[None, :]]
        return actual - pred

    def _smooth(self, values: np.ndarray) -> np.ndarray:
        k = self.lead_smoothing
        if k <= 0 or len(values) < 3:
            return values
        return pd.Series(values).rolling(2 * k + 1, center=True, min_periods=1).mean().to_numpy()


def persistence_forecast(y: np.ndarray, issue: int, horizon: int) -> np.ndarray:
    """Baseline: the last observed slot value for every lead."""
    return np.full(horizon, y[issue - 1])


def seasonal_naive_forecast(
    y: np.ndarray, issue: int, horizon: int, period: int = 24
) -> np.ndarray:
    """Baseline: the same slot ``period`` slots earlier (repeated back until before the issue)."""
    leads = np.arange(horizon)
    back = (leads // period + 1) * period
    return y[issue + leads - back]


def read_node_sequence(path: str) -> pd.DataFrame:
    """Read a HeliosArtifact-style ``time,active,total`` per-minute series (UTC) into a frame."""
    df = pd.read_csv(path)
    missing = {"time", "active", "total"} - set(df.columns)
    if missing:
        raise ConfigError(
            f"missing column(s) {sorted(missing)}",
            source=path,
            fix="the header is time,active,total",
        )
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("time"), utc=True), name="time")
    return df.astype(float)
