"""Domain types of the what-if replay: the fleet it simulates, its jobs, what a policy sees
and what it decides. Units are in every name; times are tz-aware UTC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from greencpn.config import FleetConfig, GpuModelConfig
from greencpn.errors import ConfigError


@dataclass(frozen=True)
class SiteSpec:
    name: str
    zone: str
    pue: float = 1.0
    jurisdictions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolSpec:
    """One pool of identical nodes (power figures per node, W)."""

    name: str
    site: str
    nodes: int
    gpus_per_node: int
    gpu: GpuModelConfig
    node_idle_w: float
    node_off_w: float = 0.0
    node_boot_w: float = 0.0
    boot_time_min: float = 0.0
    spares: int = 0
    hostnames: tuple[str, ...] = ()  # the config's hostlist, expanded (else generated names)

    def node_names(self) -> list[str]:
        if self.hostnames:
            return list(self.hostnames)
        return [f"{self.name}-{i:04d}" for i in range(self.nodes)]

    def gpu_busy_w(self, cap_w: float) -> float:
        """Average board power of a busy GPU at ``cap_w`` (levels interpolated linearly)."""
        caps = [lv.cap_w for lv in self.gpu.levels]
        pf = [lv.power_factor for lv in self.gpu.levels]
        return float(np.interp(cap_w, caps, pf)) * self.gpu.power_limit_max_w

    def throughput(self, cap_w: float) -> float:
        """Work rate at ``cap_w`` relative to the highest level (levels interpolated)."""
        caps = [lv.cap_w for lv in self.gpu.levels]
        thr = [lv.throughput for lv in self.gpu.levels]
        return float(np.interp(cap_w, caps, thr))

    @property
    def full_cap_w(self) -> float:
        return max(lv.cap_w for lv in self.gpu.levels)


@dataclass(frozen=True)
class FleetSpec:
    sites: tuple[SiteSpec, ...]
    pools: tuple[PoolSpec, ...]
    config_path: Path | None = None  # the fleet config it came from (the MILP policy needs it)

    def site(self, name: str) -> SiteSpec:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    @classmethod
    def from_config(cls, cfg: FleetConfig) -> FleetSpec:
        """The fleet of a validated greencpn config (sites, pools, GPU models)."""
        sites = tuple(SiteSpec(s.name, s.zone, s.pue, tuple(s.jurisdictions)) for s in cfg.sites)
        from greencpn.actuate.hostlist import expand

        pools = []
        for p in cfg.pools:
            gpu = cfg.gpu_models.get(p.gpu_model.lower())
            if gpu is None:
                raise ConfigError(
                    f"unknown gpu_model {p.gpu_model!r}",
                    source=str(cfg.path),
                    field=f"pools({p.name}).gpu_model",
                    fix="use a model from models/gpus or add [[gpu_models]]",
                )
            pools.append(
                PoolSpec(
                    name=p.name,
                    site=p.site,
                    nodes=p.nodes,
                    gpus_per_node=p.gpus_per_node,
                    gpu=gpu,
                    node_idle_w=p.node_idle_w,
                    node_off_w=p.node_off_w,
                    node_boot_w=p.node_boot_w,
                    boot_time_min=p.boot_time_min,
                    spares=p.spares,
                    hostnames=tuple(expand(p.hostlist)) if p.hostlist else (),
                )
            )
        return cls(sites, tuple(pools), cfg.path)


@dataclass
class SimJob:
    """A job of the replay; ``remaining_gpu_h`` is work left at full throughput."""

    id: str
    gpus: int
    work_gpu_h: float
    release: datetime
    deadline: datetime
    sites: tuple[str, ...]  # where it may run (residency and site rules applied)
    home_site: str  # where it was submitted (carbon-agnostic runs it there)
    checkpointable: bool = False
    jurisdictions: tuple[str, ...] = ()  # residency tags (the MILP policy passes them on)
    remaining_gpu_h: float = 0.0
    start: datetime | None = None
    first_start: datetime | None = None
    finish: datetime | None = None
    pool: str | None = None  # where it runs now
    ran_pool: str | None = None  # where it ran last (kept after it finished)
    nodes: tuple[tuple[str, int], ...] = ()  # (node, gpus) it occupies
    restarts: int = 0
    planned_start: datetime | None = None  # a policy's memo (e.g. Let's Wait Awhile)

    def __post_init__(self) -> None:
        if self.remaining_gpu_h <= 0:
            self.remaining_gpu_h = self.work_gpu_h

    @property
    def duration_h(self) -> float:
        """Run time at full power (work spread over its GPUs)."""
        return self.work_gpu_h / self.gpus


@dataclass(frozen=True)
class PoolView:
    """What a policy sees of one pool at the start of a slot."""

    name: str
    site: str
    zone: str
    nodes: int
    gpus_per_node: int
    on: int
    booting: int
    off: int
    failed: int
    free_gpus: int  # on powered-on nodes
    busy_gpus: int
    idle_nodes: tuple[tuple[str, datetime], ...]  # on, nothing running: (node, idle since)
    off_nodes: tuple[str, ...]
    booting_gpus: int
    spares: int
    cap_w: float
    boot_time_min: float


@dataclass
class View:
    """A policy's view at the start of a slot (no actual intensity of the future in it)."""

    now: datetime
    step: timedelta
    pools: dict[str, PoolView]
    waiting: list[SimJob]  # released, not running, not done
    running: list[SimJob]
    forecast: Callable[[str, int], np.ndarray]  # (zone, slots) -> g/kWh from the slot of now
    site_zone: dict[str, str]
    clock: Any = None  # the replay's SimClock (the MILP policy's controller runs on it)
    backends: Any = None  # the simulated fleet as actuate Backends (hooks + GPU backends)


@dataclass
class Decision:
    """What a policy wants done this slot; the fleet does what is physically possible."""

    starts: list[tuple[str, str]] = field(default_factory=list)  # (job id, pool)
    power_on: dict[str, int] = field(default_factory=dict)  # pool -> nodes to wake
    power_off: dict[str, list[str]] = field(default_factory=dict)  # pool -> idle nodes
    caps_w: dict[str, float] = field(default_factory=dict)  # pool -> GPU power cap
