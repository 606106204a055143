"""The forecast phase: carbon and load forecasts from the sources (with their provenance:
fresh, stale, fallback), or the previous forecast shifted forward when the sources fail.
Split from ``step.py`` (pure moves); the source chains themselves are in
:mod:`greencpn.controller.forecast`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from greencpn.controller import forecast as fcmod
from greencpn.controller.base import ControllerBase, _iso


class ForecastPhase(ControllerBase):
    def forecast(
        self, start: datetime, errors: list[dict], strict: bool
    ) -> tuple[fcmod.Forecast, dict[str, dict]]:
        cfg = self._cfg
        try:
            fc = fcmod.gather(cfg, self.clock, start)
        except Exception as exc:
            if strict:
                raise
            errors.append(
                {"type": "source", "where": "forecast", "message": f"{type(exc).__name__}: {exc}"}
            )
            prev = self._last_forecast
            fb = self._fallback_forecast(start)
            if fb is None or prev is None:
                raise
            sources: dict[str, dict[str, Any]] = {
                s.name: {
                    "source": "previous forecast",
                    "issued_at": _iso(prev.start),
                    "freshness": "fallback",
                    "detail": {"error": str(exc)[:300]},
                }
                for s in cfg.sites
            }
            return fb, sources
        sources = {}
        for s in cfg.sites:
            p = fc.provenance.get(s.name)
            if p is None:
                sources[s.name] = {
                    "source": f"csv:{cfg.carbon_path}",
                    "issued_at": None,
                    "freshness": "fresh",
                }
                continue
            fresh = (
                "fallback" if p.get("fallback") else ("stale" if p.get("stale_age_s") else "fresh")
            )
            sources[s.name] = {
                "source": p.get("source"),
                "issued_at": p.get("issued_at"),
                "freshness": fresh,
                "detail": {k: p.get(k) for k in ("fallback", "stale_age_s", "errors") if p.get(k)},
            }
        self._last_forecast = fc
        return fc, sources

    def _fallback_forecast(self, start: datetime) -> fcmod.Forecast | None:
        """The last good forecast moved to ``start`` (its last value repeated at the end)."""
        prev = self._last_forecast
        if prev is None:
            return None
        slot = timedelta(minutes=self._cfg.horizon.slot_minutes)
        k = int(round((start - prev.start) / slot))
        T = self._cfg.horizon.slots
        if k < 0:
            return None

        def shift(a: np.ndarray) -> np.ndarray:
            a = np.asarray(a, dtype=float)
            rest = a[k:] if k < a.size else a[-1:]
            return np.concatenate([rest, np.full(max(0, T - rest.size), rest[-1])])[:T]

        return fcmod.Forecast(
            start,
            {z: shift(v) for z, v in prev.intensity_by_zone.items()},
            {},
            {},
            {p: shift(v) for p, v in prev.reserves.items()},
        )
