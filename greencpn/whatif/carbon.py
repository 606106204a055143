"""The replay's two carbon views of one history: what was forecast at each moment (real issued
forecasts where given, else the incremental forecaster) and what happened (perfect foresight).
Shared by ``greencpn whatif`` and ``greencpn whatif sweep``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from greencpn.errors import ConfigError
from greencpn.sources.files import read_carbon_file, read_watttime_forecasts
from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.model import FleetSpec


def carbon_sources(
    forecasts: Sequence[str], fleet: FleetSpec, carbon: Path, step: timedelta
) -> tuple[ReplayCarbonSource, ReplayCarbonSource]:
    """(forecast view, actual view) for the fleet's zones; ``forecasts`` items are ZONE=PATH
    of WattTime issued-forecast archives."""
    zones = sorted({s.zone for s in fleet.sites})
    actuals = {z: read_carbon_file(carbon, zone=z, slot=step) for z in zones}
    archives = {}
    for item in forecasts:
        zone, eq, path = item.partition("=")
        if not eq:
            raise ConfigError(f"--forecasts {item!r}", field="--forecasts", fix="write ZONE=PATH")
        archives[zone] = read_watttime_forecasts(path, zone=zone)
    return (
        ReplayCarbonSource(actuals, archives=archives),
        ReplayCarbonSource(actuals, mode="perfect"),
    )
