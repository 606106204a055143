"""Shared fixtures of the what-if tests: a two-site fleet with one 1-GPU node each, hand-made
carbon series and three jobs whose best schedule can be worked out on paper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greencpn.config import GpuLevel, GpuModelConfig
from greencpn.whatif.model import FleetSpec, PoolSpec, SimJob, SiteSpec

T0 = datetime(2024, 1, 1, tzinfo=UTC)
# ../shared/data beside the checkout (it was looked for two levels up, then at a path of one
# machine: a checkout elsewhere with ../shared beside it skipped the real-data tests)
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def gpu_model(idle_w: float = 0.0) -> GpuModelConfig:
    """200 W GPU: at 100 W it does half the work at half the power; at 200 W full."""
    return GpuModelConfig(
        name="G",
        power_limit_min_w=100,
        power_limit_max_w=200,
        power_limit_default_w=200,
        idle_w=idle_w,
        levels=[
            GpuLevel(cap_w=100, throughput=0.5, power_factor=0.5),
            GpuLevel(cap_w=200, throughput=1.0, power_factor=1.0),
        ],
        source="test",
    )


def two_zone_series() -> dict[str, pd.Series]:
    """ZA: 100 g/kWh except 10 g/kWh from 03:00 to 06:00 UTC; ZB: 300 g/kWh flat. 30 days
    (20 days of history before T0)."""
    idx = pd.date_range(T0 - timedelta(days=20), periods=24 * 30, freq="h")
    a = pd.Series(100.0, index=idx, name="ZA")
    a[(idx.hour >= 3) & (idx.hour < 6)] = 10.0
    b = pd.Series(300.0, index=idx, name="ZB")
    return {"ZA": a, "ZB": b}


def two_site_fleet(node_idle_w: float = 0.0, **pool_kw: object) -> FleetSpec:
    g = gpu_model()
    return FleetSpec(
        (SiteSpec("A", "ZA", 1.0, ("EU",)), SiteSpec("B", "ZB", 1.0, ("US",))),
        (
            PoolSpec("pa", "A", 1, 1, g, node_idle_w=node_idle_w, **pool_kw),  # type: ignore[arg-type]
            PoolSpec("pb", "B", 1, 1, g, node_idle_w=node_idle_w, **pool_kw),  # type: ignore[arg-type]
        ),
    )


def three_jobs() -> list[SimJob]:
    h = timedelta(hours=1)
    return [
        SimJob("j1", 1, 2.0, T0, T0 + 8 * h, ("A",), "A", jurisdictions=("EU",)),
        SimJob("j2", 1, 1.0, T0 + h, T0 + 3 * h, ("B",), "B", jurisdictions=("US",)),
        SimJob("j3", 1, 1.0, T0 + h, T0 + 10 * h, ("A", "B"), "B"),
    ]


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "carbon").is_dir():
        pytest.skip(f"real data not found at {SHARED} (the shared data folder of the project)")
    return SHARED


def noisy_series(days: int = 60, seed: int = 1) -> pd.Series:
    """A daily cycle with noise: enough history for the linear forecaster."""
    idx = pd.date_range(T0 - timedelta(days=days - 10), periods=24 * days, freq="h")
    rng = np.random.default_rng(seed)
    v = 200 + 80 * np.sin(2 * np.pi * idx.hour.to_numpy() / 24) + rng.normal(0, 15, len(idx))
    return pd.Series(v, index=idx, name="ZN")
