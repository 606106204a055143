"""Numeric inputs of the plan: the fleet, the horizon, carbon, prices, budgets and job groups.

Everything the model builders need is computed here once, as plain arrays indexed by position
(site ``s``, pool ``p``, level ``l``, slot ``t``, job group ``k``), so that the builders are
small loops over precomputed index lists and re-planning only swaps arrays.

Jobs are grouped by (release slot, deadline slot, allowed sites, checkpointable, priority,
whether the deadline lies beyond the horizon), windows optionally widened to whole multiples of
``solver.window_rounding_slots``: the MILP sees one work variable per group,
site and slot, so its size grows with groups, not with jobs or nodes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from greencpn.config import (
    FleetConfig,
    GpuModelConfig,
    JobConfig,
    ObjectiveConfig,
    PoolConfig,
    SolverConfig,
    allowed_sites,
    baseline_submit_site,
    per_slot,
)
from greencpn.errors import ConfigError


@dataclass(frozen=True)
class SiteIn:
    name: str
    zone: str
    pue: float
    budget_kw: np.ndarray  # [T], inf = no budget (meter power, IT × PUE)
    price_per_kwh: np.ndarray  # [T]
    intensity_g_per_kwh: np.ndarray  # [T] the forecast: what plans and baselines are priced at
    plan_intensity_g_per_kwh: np.ndarray | None = (
        None  # [T] what the optimiser decides on, if other
    )

    @property
    def planning_intensity(self) -> np.ndarray:
        """The intensity decisions are taken on (the forecast, or its dead-banded form)."""
        return (
            self.intensity_g_per_kwh
            if self.plan_intensity_g_per_kwh is None
            else self.plan_intensity_g_per_kwh
        )


@dataclass(frozen=True)
class PoolIn:
    name: str
    site: int
    nodes: int
    gpus_per_node: int
    gpu_model: GpuModelConfig
    node_idle_kw: float
    node_off_kw: float
    # energy of one start-up above running idle for that time: a node started in slot t is
    # counted on (idle) for all of slot t and draws node_boot_w instead of node_idle_w while
    # it boots, so a start-up adds (node_boot_w − node_idle_w) × boot time (≥ 0)
    boot_extra_kwh: float
    boot_frac: float  # share of a slot a starting node spends booting (no work)
    min_up_slots: int
    min_down_slots: int
    spares: int
    initial_on: int
    gpu_idle_kw: float
    level_cap_w: np.ndarray  # [L]
    level_thr: np.ndarray  # [L] throughput relative to the top level
    level_busy_kw: np.ndarray  # [L] busy board power per GPU
    reserve_gpus: np.ndarray  # [T] GPUs kept on for forecast interactive load (0 = none)

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def level_extra_kw(self) -> np.ndarray:
        """Power a busy GPU adds on top of an idle one, per level."""
        return self.level_busy_kw - self.gpu_idle_kw


@dataclass(frozen=True)
class JobIn:
    id: str
    gpus: int
    work_gpu_h: float
    release: datetime
    deadline: datetime
    release_slot: int  # slot holding the release (the job may start inside it, at release)
    deadline_slot: int  # slot holding the deadline's last instant (may be < release_slot, or >= T)
    sites: tuple[int, ...]
    checkpointable: bool
    priority: float
    required_gpu_h: float  # work that must happen inside the horizon
    # the carbon-agnostic baseline's site order: the submit site first, then the other allowed
    # sites by GPUs (most first), then name — independent of the config's order (empty: sites)
    baseline_sites: tuple[int, ...] = ()
    submit_rule: str = ""  # "job field submit_site" or "most GPUs"


@dataclass(frozen=True)
class GroupIn:
    key: tuple
    jobs: tuple[int, ...]
    release_slot: int
    deadline_slot: int  # clipped to T-1 for groups whose deadline lies beyond the horizon
    sites: tuple[int, ...]
    checkpointable: bool
    priority: float
    gpus: int
    required_gpu_h: float


@dataclass(frozen=True)
class PlanInputs:
    name: str
    start: datetime
    slot_h: float
    slot_starts: list[datetime]
    sites: list[SiteIn]
    pools: list[PoolIn]
    jobs: list[JobIn]
    groups: list[GroupIn]
    objective: ObjectiveConfig
    solver: SolverConfig
    extras: dict = field(default_factory=dict)

    @property
    def T(self) -> int:
        return len(self.slot_starts)

    def with_intensity(self, intensity: dict[str, np.ndarray]) -> PlanInputs:
        """A copy with new carbon intensities per site name (re-planning)."""
        sites = [
            replace(
                s,
                intensity_g_per_kwh=np.asarray(intensity[s.name], dtype=float),
                plan_intensity_g_per_kwh=None,
            )
            if s.name in intensity
            else s
            for s in self.sites
        ]
        return replace(self, sites=sites)


def deadband(intensity: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Shrink each slot's deviation from the horizon mean by the forecast error there.

    ``I'[t] = mean + sign(d[t]) · max(0, |d[t]| − err[t])`` with ``d = I − mean``: differences
    between hours smaller than the forecast's own error vanish, so the plan does not move work
    for a gain the forecast cannot tell apart from noise.
    """
    mean = float(np.mean(intensity))
    d = intensity - mean
    return mean + np.sign(d) * np.maximum(0.0, np.abs(d) - np.maximum(error, 0.0))


def slot_of(ts: datetime, start: datetime, slot_h: float) -> float:
    return (ts - start).total_seconds() / 3600.0 / slot_h


def make_job(j: JobConfig, sites: tuple[int, ...], start: datetime, slot_h: float, T: int) -> JobIn:
    horizon_end = start + timedelta(hours=slot_h * T)
    # The slots a job may touch at all: the MILP works on whole slots, so it sees the slot
    # holding the release and the one holding the deadline (a relaxation: its bound stays
    # valid); placement keeps the exact times on its finer grid (schedule.job_steps).
    r = max(0, math.floor(slot_of(j.release, start, slot_h) + 1e-9))
    d = math.ceil(slot_of(j.deadline, start, slot_h) - 1e-9) - 1
    if j.deadline > horizon_end:
        # Work that cannot wait until after the horizon: what would not fit between the horizon
        # end and the deadline even at full rate.
        slack_h = (j.deadline - horizon_end).total_seconds() / 3600.0
        required = max(0.0, j.work_gpu_h - j.gpus * slack_h)
    else:
        required = j.work_gpu_h
    return JobIn(
        id=j.id,
        gpus=j.gpus,
        work_gpu_h=j.work_gpu_h,
        release=j.release,
        deadline=j.deadline,
        release_slot=r,
        deadline_slot=d,
        sites=sites,
        checkpointable=j.checkpointable,
        priority=j.priority,
        required_gpu_h=required,
    )


def group_jobs(jobs: list[JobIn], T: int, window: int = 1) -> list[GroupIn]:
    """Group jobs that the MILP cannot tell apart.

    With ``window > 1`` windows are widened to multiples of ``window`` slots (release rounded
    down, deadline up), so more jobs share a group. Widening relaxes the MILP — its bound stays
    a valid lower bound — and the job-level placement still keeps every job's real window.
    """
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, j in enumerate(jobs):
        if j.required_gpu_h <= 0 or j.release_slot >= T:
            continue
        r = j.release_slot
        d = min(j.deadline_slot, T - 1)
        beyond = j.deadline_slot >= T
        if window > 1:
            r = (r // window) * window
            if not beyond and d >= 0:
                d = min(T - 1, (d // window + 1) * window - 1)
        key = (r, d, j.sites, j.checkpointable, round(j.priority, 6), beyond)
        buckets[key].append(i)
    groups = []
    for key, idx in sorted(buckets.items(), key=lambda kv: kv[0][:2]):
        groups.append(
            GroupIn(
                key=key,
                jobs=tuple(idx),
                release_slot=key[0],
                deadline_slot=key[1],
                sites=key[2],
                checkpointable=key[3],
                priority=key[4],
                gpus=sum(jobs[i].gpus for i in idx),
                required_gpu_h=sum(jobs[i].required_gpu_h for i in idx),
            )
        )
    return groups


def without_failed(p: PoolConfig, failed: int) -> PoolConfig:
    """The pool less nodes that failed to boot (they stay off and hold no work)."""
    if failed <= 0:
        return p
    nodes = max(0, p.nodes - failed)
    initial = p.nodes if p.initial_on is None else p.initial_on
    return p.model_copy(
        update={"nodes": nodes, "spares": min(p.spares, nodes), "initial_on": min(initial, nodes)}
    )


def pool_in(
    p: PoolConfig,
    site_index: int,
    gm: GpuModelConfig,
    slot_h: float,
    reserve_gpus: np.ndarray | None = None,
    T: int = 0,
    work_by_class: dict[str | None, float] | None = None,
) -> PoolIn:
    # the pool's curve is the mix of the workload classes of the jobs it may run (#14.2)
    mixed = gm.levels_for_mix(work_by_class) if work_by_class else gm.levels
    levels = sorted(mixed, key=lambda lv: lv.cap_w, reverse=True)
    top = levels[0].throughput
    boot_h = p.boot_time_min / 60.0
    if p.planned_always_on:  # hook 'none': greencpn cannot switch it, so plan every node on
        p = p.model_copy(update={"spares": p.nodes, "initial_on": p.nodes})
    return PoolIn(
        name=p.name,
        site=site_index,
        nodes=p.nodes,
        gpus_per_node=p.gpus_per_node,
        gpu_model=gm,
        node_idle_kw=p.node_idle_w / 1000.0,
        node_off_kw=p.node_off_w / 1000.0,
        boot_extra_kwh=max(0.0, (p.node_boot_w - p.node_idle_w) / 1000.0 * boot_h),
        boot_frac=min(1.0, boot_h / slot_h),
        min_up_slots=max(1, math.ceil(p.min_up_h / slot_h - 1e-9)),
        min_down_slots=max(1, math.ceil(p.min_down_h / slot_h - 1e-9)),
        spares=p.spares,
        initial_on=p.nodes if p.initial_on is None else p.initial_on,
        gpu_idle_kw=gm.idle_w / 1000.0,
        level_cap_w=np.array([lv.cap_w for lv in levels]),
        level_thr=np.array([lv.throughput / top for lv in levels]),
        level_busy_kw=np.array([lv.power_factor * gm.power_limit_max_w / 1000.0 for lv in levels]),
        reserve_gpus=np.zeros(T)
        if reserve_gpus is None
        else np.minimum(reserve_gpus, p.nodes * p.gpus_per_node),
    )


def build_inputs(
    cfg: FleetConfig,
    intensity: dict[str, np.ndarray],
    start: datetime,
    slot_starts: list[datetime],
    reserves: dict[str, np.ndarray] | None = None,
    failed_nodes: dict[str, int] | None = None,
) -> PlanInputs:
    """Turn a validated config and a carbon table (zone → values per slot) into arrays."""
    T = len(slot_starts)
    slot_h = cfg.horizon.slot_minutes / 60.0
    sites = []
    for s in cfg.sites:
        if s.zone not in intensity:
            raise ConfigError(
                f"no carbon series for zone {s.zone!r}",
                source=str(cfg.carbon_path),
                fix=f"add a column {s.zone} (site {s.name}) to the carbon file",
            )
        sites.append(
            SiteIn(
                name=s.name,
                zone=s.zone,
                pue=s.pue,
                budget_kw=np.array(per_slot(s.power_budget_kw, T)),
                price_per_kwh=np.array(per_slot(s.price_per_kwh, T, 0.0)),
                intensity_g_per_kwh=np.asarray(intensity[s.zone], dtype=float),
            )
        )
    site_idx = {s.name: i for i, s in enumerate(cfg.sites)}
    work_by_site_class: dict[str, dict[str | None, float]] = defaultdict(lambda: defaultdict(float))
    for j in cfg.jobs:
        for n in allowed_sites(j, cfg.sites):
            work_by_site_class[n][j.workload_class] += j.work_gpu_h
    pools = [
        pool_in(
            without_failed(p, (failed_nodes or {}).get(p.name, 0)),
            site_idx[p.site],
            cfg.gpu_models[p.gpu_model.lower()],
            slot_h,
            (reserves or {}).get(p.name),
            T,
            dict(work_by_site_class[p.site]),
        )
        for p in cfg.pools
    ]
    site_gpus = dict.fromkeys(site_idx, 0)
    for p in cfg.pools:
        site_gpus[p.site] += p.nodes * p.gpus_per_node
    jobs = []
    for j in cfg.jobs:
        allowed = allowed_sites(j, cfg.sites)
        submit, rule = baseline_submit_site(j, cfg.sites, cfg.pools)
        order = [submit] + sorted(
            (s_ for s_ in allowed if s_ != submit), key=lambda s_: (-site_gpus[s_], s_)
        )
        jobs.append(
            replace(
                make_job(j, tuple(site_idx[n] for n in allowed), start, slot_h, T),
                baseline_sites=tuple(site_idx[n] for n in order),
                submit_rule=rule,
            )
        )
    groups = group_jobs(jobs, T, cfg.solver.window_rounding_slots)
    return PlanInputs(
        name=cfg.name,
        start=start,
        slot_h=slot_h,
        slot_starts=slot_starts,
        sites=sites,
        pools=pools,
        jobs=jobs,
        groups=groups,
        objective=cfg.objective,
        solver=cfg.solver,
    )
