"""The fallback chain: live API → cache → fallback forecaster. No fault leaves the caller
without a forecast as long as some history of the zone is known.

:class:`SourceChain` wraps one live :class:`~greencpn.sources.base.CarbonSource` and is itself
a ``CarbonSource``. ``forecast(zone, issued_at, horizon)`` does, in order:

1. **fresh cache** — the most recently fetched forecast of the zone that is still within the
   endpoint's TTL and covers ``issued_at`` is served without a request (``fallback=None``);
2. **live** — the source is asked (one request counted against the daily budget); the answer is
   stored in the cache (``fallback=None``);
3. **stale cache** — if the live call fails (any :class:`~greencpn.errors.TemporaryError`,
   :class:`~greencpn.errors.PermanentError` or missing key), the freshest cached forecast that
   still covers ``issued_at`` is served with ``fallback="cache"`` and ``stale_age_s`` = its age;
4. **forecaster** — otherwise the fallback forecaster is fitted on the zone's known history
   (a configured history source, the live source's history endpoint, then every cached series
   of the zone, all strictly before ``issued_at``) and predicts the horizon
   (``fallback="forecaster:<name>"``).

A series from steps 1–3 that is shorter than the horizon (Electricity Maps and UK give 24–48 h;
the plan may want more) or has a long gap (NaN) is completed by the forecaster, fitted on the
history followed by the provider's own forecast; the filled slots are flagged estimated and the
``fallback`` field gets ``"+forecaster:<name>"`` appended (``"live+forecaster:..."`` when the
base was live). Every failure along the way is logged (never with a key) and kept in
:attr:`SourceChain.errors` for the caller to report.

This module holds the chain only: the forecasters (their one
:class:`~greencpn.sources.forecast.Forecaster` protocol, the default and the chain's last
resort :class:`~greencpn.sources.forecast.SeasonalNaiveForecaster`) live in
:mod:`greencpn.sources.forecast`, a history file as a source
(:class:`~greencpn.sources.files.FileSource`) with the file readers, and building a source from
its name (:func:`~greencpn.sources.registry.open_source`) in :mod:`greencpn.sources.registry`.
:func:`open_chain` builds a whole chain from a source name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greencpn.clock import Clock, SystemClock, ensure_utc
from greencpn.errors import ConfigError, GreencpnError, PermanentError, TemporaryError
from greencpn.sources.base import CarbonSeries, CarbonSource
from greencpn.sources.cache import CacheHit, SeriesCache
from greencpn.sources.files import FileSource
from greencpn.sources.forecast import (
    Forecaster,
    SeasonalNaiveForecaster,
    default_forecaster,
    slot_grid,
)
from greencpn.sources.http import BadResponseError, window_mask
from greencpn.sources.registry import open_source

log = logging.getLogger(__name__)

DEFAULT_HISTORY_WINDOW = timedelta(days=8)
FILE_HISTORY_WINDOW = timedelta(days=365)


class NoForecastError(TemporaryError):
    """Every step of the chain failed and no history of the zone is known."""


# ------------------------------------------------------------------------------ helpers
def _predicted_values(result: Any) -> tuple[pd.Series, dict[float, pd.Series]]:
    """Values (and quantiles) from a forecaster result: a CarbonSeries-like or a Series."""
    if isinstance(result, pd.Series):
        return result.astype(float), {}
    values = getattr(result, "intensity_g_per_kwh", None)
    if not isinstance(values, pd.Series):
        raise TypeError(f"forecaster returned {type(result).__name__}, not a series")
    return values.astype(float), dict(getattr(result, "quantiles", {}) or {})


def _forecaster_name(fc: Any) -> str:
    return str(getattr(fc, "name", type(fc).__name__))


# ------------------------------------------------------------------------------------ chain
class SourceChain:
    """A live source with a cache and a fallback forecaster in front of it.

    Args:
        live: the live (or file) source; None for cache + forecaster only.
        cache: the series cache (None: no caching, no stale fallback, no budget).
        clock: time source (TTL ages; default issued time).
        forecaster_factory: builds a fresh forecaster per call (default:
            :func:`greencpn.sources.forecast.default_forecaster`).
        history_source: optional extra history (e.g. a CSV of the zone) for the forecaster.
        history_window: how much history to fit the forecaster on.
        fetch_horizon: the least horizon asked from the live source (the answer is cached
            whole and cut to each request).
        signal: cache key signal (default: the live source's ``signal`` attribute or
            ``average``).
        source_name: cache key/provenance name (default: ``live.name``).
    """

    def __init__(
        self,
        live: CarbonSource | None,
        cache: SeriesCache | None = None,
        *,
        clock: Clock | None = None,
        forecaster_factory: Callable[[], Forecaster] = default_forecaster,
        history_source: CarbonSource | None = None,
        history_window: timedelta = DEFAULT_HISTORY_WINDOW,
        fetch_horizon: timedelta = timedelta(hours=72),
        signal: str | None = None,
        source_name: str | None = None,
    ) -> None:
        self.live = live
        self.cache = cache
        self.clock = clock or (cache.clock if cache is not None else SystemClock())
        self.forecaster_factory = forecaster_factory
        self.history_source = history_source
        self.history_window = history_window
        self.fetch_horizon = fetch_horizon
        self.name = source_name or (live.name if live is not None else "cache")
        self.signal: str = str(signal or getattr(live, "signal", "average"))
        self.errors: list[Exception] = []
        self._live_down = False

    # -------------------------------------------------------------------------- forecast
    def forecast(
        self, zone: str, issued_at: datetime | None = None, horizon: timedelta = timedelta(hours=48)
    ) -> CarbonSeries:
        """A forecast of ``zone`` over ``[issued_at, issued_at + horizon)`` from the first
        step of the chain that can give one (see the module docstring)."""
        issued_at = ensure_utc(issued_at or self.clock.now(), "issued_at")
        self.errors = []
        self._live_down = False
        end = issued_at + horizon
        base: CarbonSeries | None = None
        provider: pd.Series | None = None  # the whole provider forecast the base was cut from
        origin = "live"

        hit = self._cache_latest(zone, "forecast", issued_at)
        if hit is not None and hit.fresh:
            base, origin = _cut(hit.series, issued_at, end), "cache-fresh"
            provider = hit.series.intensity_g_per_kwh
        elif self.live is not None:
            try:
                self._consume_budget()
                # Ask for at least `fetch_horizon`: one request then serves later lookups
                # within the TTL whose window reaches further.
                fetched = self.live.forecast(zone, issued_at, max(horizon, self.fetch_horizon))
                self._store(zone, "forecast", fetched, key=_key(fetched.issued_at or issued_at))
                base = _cut(fetched, issued_at, end)
                provider = fetched.intensity_g_per_kwh
            except (GreencpnError, ValueError) as exc:
                self._record(exc, f"{self.name} forecast {zone}")
                # Only a bad/empty answer (zone without forecast) leaves the live history
                # endpoint worth asking; after a timeout, refusal, 429, 5xx or bad key it
                # would fail the same way and cost another round of retries.
                self._live_down = not isinstance(exc, BadResponseError)
                if hit is not None:
                    base = replace(
                        _cut(hit.series, issued_at, end), stale_age_s=hit.age_s, fallback="cache"
                    )
                    provider = hit.series.intensity_g_per_kwh
                    origin = "cache"
                    log.warning(
                        "%s forecast %s: serving cached forecast fetched %.0f s ago",
                        self.name,
                        zone,
                        hit.age_s,
                    )
        elif hit is not None:
            base = replace(
                _cut(hit.series, issued_at, end), stale_age_s=hit.age_s, fallback="cache"
            )
            provider = hit.series.intensity_g_per_kwh
            origin = "cache"

        if base is not None and len(base.intensity_g_per_kwh):
            return self._complete(zone, base, issued_at, horizon, origin, provider)
        return self._forecaster_only(zone, issued_at, horizon)

    # --------------------------------------------------------------------------- history
    def history(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """History over ``[start, end)``: fresh cache, live, else the freshest cached data
        (``fallback="cache"``, ``stale_age_s`` set). Raises when nothing is known."""
        start, end = ensure_utc(start, "start"), ensure_utc(end, "end")
        key = f"{_key(start)}/{_key(end)}"
        hit = None
        if self.cache is not None:
            hit = self.cache.get(self.name, zone, self.signal, "history", key)
            if hit is not None and hit.fresh:
                return hit.series
        if self.live is not None:
            try:
                self._consume_budget()
                series = self.live.history(zone, start, end)
                self._store(zone, "history", series, key=key)
                return series
            except (GreencpnError, ValueError) as exc:
                self._record(exc, f"{self.name} history {zone}")
        if hit is not None:
            return replace(hit.series, stale_age_s=hit.age_s, fallback="cache")
        known = self._cached_history(zone, before=end)
        known = known[known.index >= pd.Timestamp(start)]
        if known.empty:
            raise NoForecastError(
                f"{self.name} history {zone}: the source failed and nothing is cached "
                f"({'; '.join(str(e) for e in self.errors) or 'no live source'})"
            )
        age = self._newest_cache_age(zone)
        return CarbonSeries(
            zone=zone,
            intensity_g_per_kwh=known,
            signal=self.signal,  # type: ignore[arg-type]
            source=self.name,
            stale_age_s=age,
            fallback="cache",
        )

    # --------------------------------------------------------------------------- helpers
    def _complete(
        self,
        zone: str,
        base: CarbonSeries,
        issued_at: datetime,
        horizon: timedelta,
        origin: str,
        provider: pd.Series | None = None,
    ) -> CarbonSeries:
        """Fill slots the base series lacks (shorter horizon, long gaps) from the forecaster."""
        values = base.intensity_g_per_kwh
        step = base.step or _default_step(values) or timedelta(hours=1)
        if _covers(values, issued_at, horizon, step):
            return base  # the common case: nothing to fill
        grid = slot_grid(issued_at, _n_slots(issued_at, horizon, step), step)
        if len(values) and grid[0] < values.index[0] <= grid[0] + pd.Timedelta(step):
            # The provider's first slot starts just after issue time (e.g. updated 19:52,
            # first slot 20:00): start there rather than invent the current slot.
            grid = grid[grid >= values.index[0]]
            if grid[-1] + pd.Timedelta(step) < pd.Timestamp(issued_at + horizon):
                grid = grid.append(pd.DatetimeIndex([grid[-1] + pd.Timedelta(step)]))
        full = values.reindex(grid)
        missing = full.isna().to_numpy()
        if not missing.any():
            return base
        est = (
            base.estimated.reindex(grid, fill_value=True)
            if base.estimated is not None
            else pd.Series(False, index=grid)
        )
        est = est.astype(bool)
        try:
            history = self._history_for(zone, issued_at, step)
            first_missing = grid[missing][0]
            forecast_known = provider if provider is not None else values
            forecast_known = forecast_known[forecast_known.index < first_missing].dropna()
            known = pd.concat(
                [
                    history[history.index < forecast_known.index[0]]
                    if len(forecast_known)
                    else history,
                    forecast_known,
                ]
            )
            tail = grid[grid >= first_missing]
            predicted, _, name = self._predict(
                zone, known, first_missing.to_pydatetime(), len(tail), step
            )
            predicted = predicted.reindex(grid)
        except Exception as exc:  # the forecaster is a fallback: never let it kill the answer
            self._record(exc, f"{self.name} forecast {zone}: extending with the forecaster")
            return base
        full[missing] = predicted[missing]
        est[missing] = True
        prefix = base.fallback or "live"  # a fresh cache hit counts as live
        log.info(
            "%s forecast %s: %d of %d slots from forecaster %s",
            self.name,
            zone,
            int(missing.sum()),
            len(grid),
            name,
        )
        full.name = "intensity_g_per_kwh"
        return replace(
            base, intensity_g_per_kwh=full, estimated=est, fallback=f"{prefix}+forecaster:{name}"
        )

    def _forecaster_only(self, zone: str, issued_at: datetime, horizon: timedelta) -> CarbonSeries:
        step = getattr(self.live, "step", None) or timedelta(hours=1)
        history = self._history_for(zone, issued_at, step)
        if history.dropna().empty:
            reasons = "; ".join(str(e) for e in self.errors) or "no live source configured"
            raise NoForecastError(
                f"no forecast for {zone}: {reasons}; and no history of {zone} is cached. Fix: "
                "fetch once while the API is up, or give a history file (--history PATH / "
                "csv source)"
            )
        step = _default_step(history) or step
        n = _n_slots(issued_at, horizon, step)
        values, quantiles, name = self._predict(zone, history, issued_at, n, step)
        log.log(
            logging.WARNING if self.live is not None else logging.INFO,
            "%s forecast %s: no provider forecast; using forecaster %s on %d points of history",
            self.name,
            zone,
            name,
            int(history.notna().sum()),
        )
        values.name = "intensity_g_per_kwh"
        return CarbonSeries(
            zone=zone,
            intensity_g_per_kwh=values,
            signal=self.signal,  # type: ignore[arg-type]
            source=self.name,
            issued_at=issued_at,
            estimated=pd.Series(True, index=values.index),
            fallback=f"forecaster:{name}",
            quantiles=quantiles,
        )

    def _predict(
        self, zone: str, history: pd.Series, issued_at: datetime, n: int, step: timedelta
    ) -> tuple[pd.Series, dict[float, pd.Series], str]:
        """Fit the configured forecaster and predict ``n`` slots; if it fails (e.g. it needs
        more history than is known), fall back to :class:`SeasonalNaiveForecaster`."""
        try:
            fc = self.forecaster_factory()
            fc.fit(history)
            values, quantiles = _predicted_values(fc.predict(issued_at, n, step))
            if len(values) == n and not values.isna().all():
                return values, quantiles, _forecaster_name(fc)
            raise ValueError(f"forecaster returned {len(values)} values for {n} slots")
        except Exception as exc:
            if self.forecaster_factory is SeasonalNaiveForecaster:
                raise
            self._record(
                exc,
                f"{self.name} forecast {zone}: forecaster "
                f"{getattr(self.forecaster_factory, '__name__', '?')}",
            )
        fc = SeasonalNaiveForecaster().fit(history)
        return fc.predict(issued_at, n, step).intensity_g_per_kwh, {}, fc.name

    def _history_for(self, zone: str, issued_at: datetime, step: timedelta) -> pd.Series:
        """Known intensity of ``zone`` before ``issued_at`` (history source, live history,
        cache), on a regular grid of the finest step found."""
        start = issued_at - self.history_window
        parts: list[pd.Series] = []
        for src in (self.history_source, self.live):
            if src is None or (src is self.live and self._live_down):
                continue
            try:
                # the live source goes through self.history: cached and counted in the budget
                got = (
                    self.history(zone, start, issued_at)
                    if src is self.live
                    else src.history(zone, start, issued_at)
                )
                parts.append(got.intensity_g_per_kwh)
                break
            except (GreencpnError, ValueError) as exc:
                if src is not self.live:  # self.history recorded its own failures
                    self._record(exc, f"{getattr(src, 'name', 'source')} history {zone}")
        cached = self._cached_history(zone, before=issued_at)
        if not cached.empty:
            parts.insert(0, cached)  # lowest priority: later parts win on duplicates
        if not parts:
            return _empty()
        merged = pd.concat(parts)
        merged = merged[~merged.index.duplicated(keep="last")].sort_index()
        merged = merged[
            (merged.index >= pd.Timestamp(start)) & (merged.index < pd.Timestamp(issued_at))
        ]
        s = _default_step(merged)
        if s is not None and len(merged) > 1:
            grid = pd.date_range(merged.index[0], merged.index[-1], freq=pd.Timedelta(s))
            merged = merged.reindex(grid)
        return merged.astype(float)

    def _cached_history(self, zone: str, *, before: datetime) -> pd.Series:
        if self.cache is None:
            return _empty()
        rows = self.cache.history_rows(zone, source=self.name)
        parts = []
        for cs in rows:
            v = cs.intensity_g_per_kwh
            if cs.issued_at is not None:  # a forecast: only its part before the issue time is
                continue  # "known"; future values are not history
            parts.append(v[v.index < pd.Timestamp(before)])
        if not parts:
            return _empty()
        merged = pd.concat(parts)
        return merged[~merged.index.duplicated(keep="last")].sort_index()

    def _newest_cache_age(self, zone: str) -> float | None:
        if self.cache is None:
            return None
        hit = self.cache.latest(self.name, zone, self.signal, "history")
        return hit.age_s if hit is not None else None

    def _cache_latest(self, zone: str, endpoint: str, covering: datetime) -> CacheHit | None:
        if self.cache is None:
            return None
        return self.cache.latest(self.name, zone, self.signal, endpoint, covering=covering)

    def _store(self, zone: str, endpoint: str, series: CarbonSeries, *, key: str) -> None:
        if self.cache is None:
            return
        try:
            self.cache.put(self.name, zone, self.signal, endpoint, key, series)
        except Exception as exc:  # a broken cache must not break the answer
            self._record(exc, f"cache write {self.name} {zone}")

    def _consume_budget(self) -> None:
        if self.cache is not None:
            self.cache.consume_budget(self.name)

    def _record(self, exc: BaseException, what: str) -> None:
        self.errors.append(exc if isinstance(exc, Exception) else Exception(str(exc)))
        level = logging.ERROR if isinstance(exc, PermanentError | ConfigError) else logging.WARNING
        log.log(level, "%s failed (%s): %s", what, type(exc).__name__, exc)


# ---------------------------------------------------------------------------------- utils
def _key(when: datetime) -> str:
    return pd.Timestamp(when).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _cut(series: CarbonSeries, start: datetime, end: datetime) -> CarbonSeries:
    step = series.step or timedelta(hours=1)
    mask = window_mask(pd.DatetimeIndex(series.intensity_g_per_kwh.index), start, end, step)
    values = series.intensity_g_per_kwh[mask]
    est = series.estimated[mask] if series.estimated is not None else None
    quant = {q: s[mask] for q, s in series.quantiles.items()}
    return replace(series, intensity_g_per_kwh=values, estimated=est, quantiles=quant)


def _empty() -> pd.Series:
    """An empty float series on an empty UTC DatetimeIndex (comparable with timestamps)."""
    return pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC"))


def _covers(values: pd.Series, issued_at: datetime, horizon: timedelta, step: timedelta) -> bool:
    """True when ``values`` is a regular, NaN-free series from the slot of ``issued_at`` (or
    the next one) through ``issued_at + horizon``."""
    n = len(values)
    if n == 0:
        return False
    idx = values.index
    st = pd.Timedelta(step)
    first, last = idx[0], idx[-1]
    floor = pd.Timestamp(issued_at).floor(st)
    return bool(
        floor <= first <= floor + st
        and last + st >= pd.Timestamp(issued_at + horizon)
        and (last - first) == st * (n - 1)
        and not np.isnan(values.to_numpy()).any()
    )


def _default_step(values: pd.Series) -> timedelta | None:
    if len(values) < 2:
        return None
    diffs = np.diff(pd.DatetimeIndex(values.index).as_unit("ns").asi8)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        return None
    return pd.Timedelta(int(np.median(diffs)), unit="ns").to_pytimedelta()


def _n_slots(issued_at: datetime, horizon: timedelta, step: timedelta) -> int:
    start = pd.Timestamp(issued_at).floor(pd.Timedelta(step))
    end = pd.Timestamp(issued_at) + pd.Timedelta(horizon)
    return max(1, math.ceil((end - start) / pd.Timedelta(step)))


# ---------------------------------------------------------------------------- construction
def open_chain(
    spec: str,
    zone: str,
    *,
    clock: Clock,
    use_cache: bool = True,
    cache_path: str | Path | None = None,
    base_url: str | None = None,
    keys_file: str | Path | None = None,
    accounting: str = "lifecycle",
    history_file: str | Path | None = None,
    budget: int | None = None,
    policy: Any = None,
    check_keys: bool = True,
) -> SourceChain:
    """The full chain for one site's source (what ``greencpn forecast`` and the plan use).

    A ``csv:PATH`` source has no issued forecasts: the chain then has no live source, the file
    is its history and the forecaster makes the forecast. ``history_file`` adds a history file
    for the forecaster of a live source. ``budget`` caps requests per UTC day.
    """
    from greencpn.sources.cache import SeriesCache, default_cache_path

    src = open_source(
        spec,
        clock=clock,
        zone=zone,
        base_url=base_url,
        keys_file=keys_file,
        accounting=accounting,
        policy=policy,
        check_keys=check_keys,
    )
    if isinstance(src, FileSource):
        # A file is cheap to read: give the forecaster a year (the default forecaster's
        # per-lead regression needs weeks of lags to be any better than persistence).
        return SourceChain(
            None,
            None,
            clock=clock,
            history_source=src,
            signal=src.signal,
            source_name=src.name,
            history_window=FILE_HISTORY_WINDOW,
        )
    cache = None
    if use_cache:
        cache = SeriesCache(
            cache_path or default_cache_path(),
            clock,
            daily_budget={src.name: budget} if budget is not None else None,
        )
    history = FileSource(history_file, zone=zone, accounting=accounting) if history_file else None
    return SourceChain(
        src,
        cache,
        clock=clock,
        history_source=history,
        source_name=src.name,
        history_window=FILE_HISTORY_WINDOW if history else DEFAULT_HISTORY_WINDOW,
    )
