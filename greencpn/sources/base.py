"""The one interface every carbon source implements, live or replayed (Vessim's ``Signal.at``).

A source answers ``history(zone, start, end)`` and ``forecast(zone, issued_at, horizon)`` with a
:class:`CarbonSeries`: a UTC-indexed series in g/kWh tagged with its provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

import pandas as pd

Signal = Literal["average", "marginal"]
Accounting = Literal["lifecycle", "direct"]


@dataclass(frozen=True)
class CarbonSeries:
    """Carbon intensity of one zone over time, with where it came from.

    Attributes:
        zone: grid zone, e.g. ``DE`` or ``CAISO_NORTH``.
        intensity_g_per_kwh: float series, tz-aware UTC ``DatetimeIndex`` of interval starts,
            regular step.
        signal: average or marginal emissions.
        accounting: lifecycle or direct (combustion) factors.
        source: name of the source (``electricitymaps``, ``watttime``, ``ukgrid``, ``csv:PATH``).
        issued_at: when a forecast was issued (None for history).
        estimated: per-point flag (True where the provider estimated the value), or None.
        stale_age_s: set when served from cache past its TTL: age of the data in seconds.
        fallback: None when live; ``"cache"`` or ``"forecaster:<name>"`` when a fallback served it.
        quantiles: optional uncertainty, e.g. ``{0.1: series, 0.9: series}`` on the same index.
    """

    zone: str
    intensity_g_per_kwh: pd.Series
    signal: Signal = "average"
    accounting: Accounting = "lifecycle"
    source: str = "unknown"
    issued_at: datetime | None = None
    estimated: pd.Series | None = None
    stale_age_s: float | None = None
    fallback: str | None = None
    quantiles: dict[float, pd.Series] = field(default_factory=dict)

    @property
    def step(self) -> timedelta | None:
        idx = self.intensity_g_per_kwh.index
        if len(idx) < 2:
            return None
        return pd.Timedelta(idx[1] - idx[0]).to_pytimedelta()


@runtime_checkable
class CarbonSource(Protocol):
    """A carbon-intensity source (live API, cache, file, or replay)."""

    name: str

    def history(self, zone: str, start: datetime, end: datetime) -> CarbonSeries:
        """Measured/estimated intensity over ``[start, end)``."""
        ...

    def forecast(self, zone: str, issued_at: datetime, horizon: timedelta) -> CarbonSeries:
        """Forecast issued at ``issued_at`` covering ``[issued_at, issued_at + horizon)``."""
        ...
