"""Let's Wait Awhile's Scenario I (Wiesner et al., Middleware 2021) replayed by the what-if engine.

The scenario, as in the paper's ``simulate.py`` (``periodic_experiment``): a 30-minute job is
scheduled every night at 01:00 UTC for the 365 days from 2020-01-01; it may be shifted up to
``window_h`` hours earlier or later and goes to the lowest-intensity half-hour of that window
(perfect forecast). Intensities are the dataset's values at :00 and :30 (the paper keeps rows
with ``minute % 30 == 0``). Saving = 1 − carbon(shifted) / carbon(at 01:00); both are the sum of
the intensity of the half-hours the job ran in (one busy 1 W node, idle power 0).

Here each job is released ``window_h`` before 01:00 with a deadline ``window_h`` + 30 min after
it, and the ``lets-wait-awhile:perfect=1`` policy picks its start, the baseline being
``carbon-agnostic`` with jobs released at 01:00. (The paper skips the first night for shifted
runs because it would start before the data; so does this.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from greencpn.config import GpuLevel, GpuModelConfig
from greencpn.errors import ConfigError
from greencpn.sources.files import _read_csv, parse_times, parse_values
from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.engine import ReplaySettings, run_replay
from greencpn.whatif.model import FleetSpec, PoolSpec, SimJob, SiteSpec

STEP = timedelta(minutes=30)
YEAR_START = datetime(2020, 1, 1, tzinfo=UTC)


def read_half_hourly(path: str | Path) -> tuple[pd.Series, int]:
    """The dataset's values at :00 and :30 on a regular 30-min grid (UTC).

    Returns:
        (series, number of half-hours missing from the file, filled by time interpolation).
    """
    path = Path(path)
    df = _read_csv(path)
    if list(df.columns[:2]) != ["Time", "Carbon Intensity"]:
        raise ConfigError(
            f"expected 'Time,Carbon Intensity'; found {list(df.columns)}",
            source=f"{path}:1",
            fix="give the Let's Wait Awhile file unchanged",
        )
    idx = parse_times(df["Time"], path=path, column="Time", assume_utc=True)
    vals = parse_values(df["Carbon Intensity"], path=path, column="Carbon Intensity")
    s = pd.Series(vals, index=idx).sort_index()
    s = s[~s.index.duplicated()]
    s = s[pd.DatetimeIndex(s.index).minute % 30 == 0]
    grid = pd.date_range(s.index[0], s.index[-1], freq=STEP)
    full = s.reindex(grid)
    missing = int(full.isna().sum())
    full = full.interpolate("time").ffill().bfill()
    full.name = path.stem
    return full, missing


def nightly_saving(series: pd.Series, window_h: float = 8.0, days: int = 365) -> dict[str, float]:
    """Carbon saving of the nightly job shifted by up to ``±window_h`` (perfect forecast)."""
    gpu = GpuModelConfig(
        name="unit",
        power_limit_min_w=1,
        power_limit_max_w=1,
        power_limit_default_w=1,
        idle_w=0,
        levels=[GpuLevel(cap_w=1, throughput=1.0, power_factor=1.0)],
        source="Let's Wait Awhile: one compute unit of 1 W",
    )
    fleet = FleetSpec((SiteSpec("dc", "Z"),), (PoolSpec("p", "dc", 1, 1, gpu, node_idle_w=1e-12),))
    src = ReplayCarbonSource({"Z": series}, mode="perfect")
    w = timedelta(hours=window_h)
    half = timedelta(minutes=30)
    first = 1 if window_h > 0 else 0
    base_jobs, shift_jobs = [], []
    for d in range(days):
        at = YEAR_START + timedelta(days=d, hours=1)
        base_jobs.append(SimJob(f"n{d}", 1, 0.5, at, at + half, ("dc",), "dc"))
        if d >= first:
            shift_jobs.append(SimJob(f"n{d}", 1, 0.5, at - w, at + w + half, ("dc",), "dc"))
    settings = ReplaySettings(
        YEAR_START - w, YEAR_START + timedelta(days=days), step=STEP, drain=w + timedelta(hours=1)
    )
    base = run_replay(
        fleet, base_jobs, "carbon-agnostic", forecasts=src, actuals=src, settings=settings
    )
    shifted = run_replay(
        fleet,
        shift_jobs,
        "lets-wait-awhile:perfect=1",
        forecasts=src,
        actuals=src,
        settings=settings,
    )
    b, s = base.carbon_kg.sum(), shifted.carbon_kg.sum()
    # per-night means, as the paper divides both sums by 365
    b_mean, s_mean = b / len(base_jobs), s / max(1, len(shift_jobs))
    return {
        "saving_pct": 100.0 * (1.0 - s_mean / b_mean),
        "baseline_kg": b,
        "shifted_kg": s,
        "nights": float(len(shift_jobs)),
        "wall_s": base.wall_s + shifted.wall_s,
    }
