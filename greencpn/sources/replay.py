"""Replayed carbon sources: forecasts issued at a past instant that never see what came after it.

:class:`ReplayCarbonSource` holds the actual intensity of each zone (the "world") and answers
``forecast(zone, issued_at, horizon)`` the way a live source would have answered at
``issued_at``:

* ``mode="forecast"`` (default): where a zone has an archive of **real issued forecasts**
  (:class:`~greencpn.sources.files.ForecastArchive`, e.g. WattTime's), the one issued last at or
  before ``issued_at`` covers the slots it reaches (mean of its points per slot); every other
  slot comes from the zone's forecaster. The forecaster is **one object per zone**, fitted on the
  history *seen so far* (the slots that ended by ``issued_at``) and refitted incrementally as the
  clock moves forward (:class:`~greencpn.sources.forecast.LinearLagForecaster` appends the new
  feature rows and updates its Gram matrix once a day), so a year of hourly forecasts costs
  seconds instead of the ~45 min of a fresh fit per call.
* ``mode="perfect"``: the actual values (perfect foresight; what an oracle sees).

:meth:`ReplayCarbonSource.history` returns only slots that ended by the source's clock.
:meth:`ReplayCarbonSource.actual` is the accountant's view (energy × actual intensity) and must
not be handed to a policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from greencpn.clock import Clock, ensure_utc
from greencpn.errors import ConfigError
from greencpn.sources.base import CarbonSeries
from greencpn.sources.files import ForecastArchive
from greencpn.sources.forecast import default_forecaster

ReplayMode = Literal["forecast", "perfect"]


def _as_series(zone: str, value: pd.Series | CarbonSeries) -> pd.Series:
    s = value.intensity_g_per_kwh if isinstance(value, CarbonSeries) else value
    if not isinstance(s.index, pd.DatetimeIndex) or s.index.tz is None:
        raise ConfigError(
            "carbon history needs a tz-aware UTC time index",
            source=f"zone {zone}",
            fix="read it with greencpn.sources.files (timestamps in UTC)",
        )
    s = s.astype(float).sort_index()
    s.index = pd.DatetimeIndex(s.index).tz_convert("UTC").as_unit("ns")
    return s


class ReplayCarbonSource:
    """A :class:`~greencpn.sources.base.CarbonSource` over recorded history (see module doc).

    Args:
        actuals: per zone, the regular actual series (g/kWh) at the replay's slot length.
        archives: per zone, real issued forecasts to use where they reach.
        mode: ``"forecast"`` (no look-ahead) or ``"perfect"`` (actual values).
        forecaster_factory: builds each zone's forecaster once (default: the shipped default).
        clock: bounds :meth:`history` (optional).
    """

    name = "replay"

    def __init__(
        self,
        actuals: Mapping[str, pd.Series | CarbonSeries],
        *,
        archives: Mapping[str, ForecastArchive] | None = None,
        mode: ReplayMode = "forecast",
        forecaster_factory: Callable[[], Any] = default_forecaster,
        clock: Clock | None = None,
    ) -> None:
        if mode not in ("forecast", "perfect"):
            raise ConfigError(
                f"unknown replay mode {mode!r}", field="mode", fix="use forecast or perfect"
            )
        self.actuals = {z: _as_series(z, s) for z, s in actuals.items()}
        self.archives = dict(archives or {})
        self.mode: ReplayMode = mode
        self.forecaster_factory = forecaster_factory
        self.clock = clock
        self._forecasters: dict[str, Any] = {}
        self._step: dict[str, pd.Timedelta] = {}
        for z, s in self.actuals.items():
            if len(s) < 2:
                raise ConfigError(
                    "carbon history has fewer than 2 values", source=f"zone {z}", fix="give more"
                )
            d = np.diff(pd.DatetimeIndex(s.index).asi8)
            if not np.all(d == d[0]):
                raise ConfigError(
                    "carbon history is not regular",
                    source=f"zone {z}",
                    fix="resample it to one slot length (greencpn.sources.resample)",
                )
            self._step[z] = pd.Timedelta(int(d[0]), unit="ns")
        self.n_forecasts = 0
        self._memo: dict[tuple[str, int, int], CarbonSeries] = {}
        self._values_memo: dict[tuple[str, int, int], np.ndarray] = {}
        self._fed: dict[str, int] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def zones(self) -> list[str]:
        return list(self.actuals)

    def _series(self, zone: str) -> pd.Series:
        try:
            return self.actuals[zone]
        except KeyError:
            raise ConfigError(
                f"no carbon history for zone {zone!r} (have {sorted(self.actuals)})",
                field="zone",
                fix="add the zone to the carbon file or fix the site's zone",
            ) from None

    def step(self, zone: str) -> timedelta:
        self._series(zone)
        return self._step[zone].to_pytimedelta()

    # ------------------------------------------------------------------ what a policy sees
    def visible(self, zone: str, issued_at: datetime) -> pd.Series:
        """The slots of ``zone`` that ended by ``issued_at`` (index < floor(issued_at))."""
        s = self._series(zone)
        t = pd.Timestamp(ensure_utc(issued_at, "issued_at")).floor(self._step[zone])
        return s.iloc[: int(s.index.searchsorted(t, side="left"))]

    def forecast(
        self, zone: str, issued_at: datetime, horizon: timedelta = timedelta(hours=48)
    ) -> CarbonSeries:
        """The forecast of ``zone`` issued at ``issued_at`` over ``[slot(issued_at), +horizon)``."""
        issued_at = ensure_utc(issued_at, "issued_at")
        self._series(zone)
        step = self._step[zone]
        n = max(1, int(np.ceil(pd.Timedelta(horizon) / step)))
        start = pd.Timestamp(issued_at).floor(step)
        key = (zone, pd.Timestamp(issued_at).value, n)
        hit = self._memo.get(key)
        if hit is not None:  # the same question again (another policy on the same replay)
            return hit
        out = self._forecast(zone, issued_at, n, start, step)
        if len(self._memo) > 200_000:
            self._memo.clear()
        self._memo[key] = out
        return out

    def _forecast(
        self, zone: str, issued_at: datetime, n: int, start: pd.Timestamp, step: pd.Timedelta
    ) -> CarbonSeries:
        idx = pd.DatetimeIndex(start + step * np.arange(n))
        self.n_forecasts += 1
        if self.mode == "perfect":
            vals = self._series(zone).reindex(idx).ffill().bfill().to_numpy(dtype=float)
            return CarbonSeries(
                zone=zone,
                intensity_g_per_kwh=pd.Series(vals, index=idx, name=zone),
                source="replay:actual",
                issued_at=issued_at,
            )
        f = self._fitted(zone, issued_at)
        fc = f.predict(issued_at, n, step.to_pytimedelta())
        vals = fc.intensity_g_per_kwh.to_numpy(dtype=float).copy()
        source = f"replay:forecaster:{f.name}"
        arch = self.archives.get(zone)
        if arch is not None:
            issued = self._archived(arch, issued_at, idx, step)
            if issued is not None:
                have = ~np.isnan(issued)
                vals[have] = issued[have]
                source = f"replay:{arch.source}+forecaster:{f.name}"
        return CarbonSeries(
            zone=zone,
            intensity_g_per_kwh=pd.Series(vals, index=idx, name=zone),
            source=source,
            issued_at=issued_at,
            quantiles=getattr(fc, "quantiles", {}) or {},
        )

    def _fitted(self, zone: str, issued_at: datetime) -> Any:
        """The zone's forecaster, brought up to the history seen at ``issued_at``.

        Moving forward appends only the new slots (``extend_history``: incremental refit);
        moving back (another policy replaying the same period) refits on the shorter history.
        """
        f = self._forecasters.get(zone)
        if f is None:
            f = self._forecasters[zone] = self.forecaster_factory()
        seen = self.visible(zone, issued_at)
        if len(seen) < 2:
            raise ConfigError(
                f"no carbon history of {zone} before {issued_at.isoformat()}",
                source=f"zone {zone}",
                fix="start the replay later than the carbon file's first day (or add history)",
            )
        fed = self._fed.get(zone, 0)
        if fed and len(seen) >= fed and hasattr(f, "extend_history"):
            if len(seen) > fed:
                f.extend_history(seen.to_numpy(dtype=float)[fed:])
        else:
            seen.name = zone
            f.fit(seen)
        self._fed[zone] = len(seen)
        return f

    def forecast_values(self, zone: str, issued_at: datetime, slots: int) -> np.ndarray:
        """Point forecast (g/kWh) of ``slots`` slots from the slot of ``issued_at``: the same
        numbers as :meth:`forecast`, without building series and quantiles (the replay's
        fast path)."""
        issued_at = ensure_utc(issued_at, "issued_at")
        self._series(zone)
        step = self._step[zone]
        key = (zone, pd.Timestamp(issued_at).value, slots)
        hit = self._values_memo.get(key)
        if hit is not None:
            return hit
        start = pd.Timestamp(issued_at).floor(step)
        if self.mode == "perfect":
            vals = self._actual_slice(zone, start, slots)
        else:
            f = self._fitted(zone, issued_at)
            if hasattr(f, "predict_many"):
                vals = np.asarray(f.predict_many([issued_at], slots)[0], dtype=float)
            else:
                fc = f.predict(issued_at, slots, step.to_pytimedelta())
                vals = fc.intensity_g_per_kwh.to_numpy(dtype=float).copy()
            arch = self.archives.get(zone)
            if arch is not None:
                idx = pd.DatetimeIndex(start + step * np.arange(slots))
                issued = self._archived(arch, issued_at, idx, step)
                if issued is not None:
                    have = ~np.isnan(issued)
                    vals[have] = issued[have]
        self.n_forecasts += 1
        if len(self._values_memo) > 200_000:
            self._values_memo.clear()
        self._values_memo[key] = vals
        return vals

    def _actual_slice(self, zone: str, start: pd.Timestamp, slots: int) -> np.ndarray:
        """Actual values of ``slots`` slots from ``start``; before/after the data the first /
        last value is repeated (as ``reindex().ffill().bfill()`` would)."""
        arr = self._arrays.get(zone)
        if arr is None:
            s = self._series(zone)
            arr = self._arrays[zone] = (pd.DatetimeIndex(s.index).asi8, s.to_numpy(dtype=float))
        t_ns, vals = arr
        step_ns = self._step[zone].value
        want = start.as_unit("ns").value + step_ns * np.arange(slots)
        pos = np.searchsorted(t_ns, want)
        pos = np.clip(pos, 0, len(vals) - 1)
        exact = t_ns[pos] == want
        if exact.all():
            return vals[pos].copy()
        # holes: the last value at or before (ffill), else the first after (bfill)
        before = np.searchsorted(t_ns, want, side="right") - 1
        return np.where(before >= 0, vals[np.maximum(before, 0)], vals[0])

    @staticmethod
    def _archived(
        arch: ForecastArchive, issued_at: datetime, idx: pd.DatetimeIndex, step: pd.Timedelta
    ) -> np.ndarray | None:
        """Per-slot means of the archived forecast issued last at or before ``issued_at``."""
        try:
            fc = arch.latest(issued_at)
        except KeyError:
            return None
        pts = fc.intensity_g_per_kwh
        pts = pts[pts.index >= idx[0]]
        if pts.empty:
            return None
        slot = ((pd.DatetimeIndex(pts.index) - idx[0]) // step).to_numpy()
        keep = slot < len(idx)
        sums = np.bincount(slot[keep], weights=pts.to_numpy()[keep], minlength=len(idx))
        cnt = np.bincount(slot[keep], minlength=len(idx))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
        # The current slot partly lies in the past: its forecast points are only the rest of
        # it. Keep them (the mean of the remaining points is the provider's best guess).
        return out

    def history(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """Actual history over ``[start, end)``, cut at the clock (never the future)."""
        s = self._series(zone)
        lo, hi = pd.Timestamp(ensure_utc(start, "start")), pd.Timestamp(ensure_utc(end, "end"))
        if self.clock is not None:
            hi = min(hi, pd.Timestamp(self.clock.now()).floor(self._step[zone]))
        part = s[(s.index >= lo) & (s.index < hi)]
        return CarbonSeries(zone=zone, intensity_g_per_kwh=part, source="replay:history")

    # ------------------------------------------------------------------ the accountant
    def actual(self, zone: str, start: datetime, slots: int) -> np.ndarray:
        """Actual intensity of ``slots`` slots from ``start`` (accounting only, not policies).

        Raises:
            ConfigError: the carbon history does not cover the period.
        """
        s = self._series(zone)
        t = pd.Timestamp(ensure_utc(start, "start")).floor(self._step[zone])
        i = int(s.index.searchsorted(t))
        if i >= len(s) or s.index[i] != t or i + slots > len(s):
            raise ConfigError(
                f"the carbon history of {zone} does not cover {t.isoformat()} + {slots} slots "
                f"(it covers {s.index[0].isoformat()} to {s.index[-1].isoformat()})",
                source=f"zone {zone}",
                fix="choose --from/--to inside the carbon file's period",
            )
        return s.to_numpy(dtype=float)[i : i + slots]
