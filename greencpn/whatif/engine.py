"""The replay loop: one slot at a time, a policy decides from what it can see, the simulated
fleet does it, and the accountant prices the energy at the **actual** intensity.

Per slot ``t`` (start ``now``): boots and repairs complete and failures are drawn
(:meth:`SimFleet.begin_slot`); jobs released by ``now`` join the queue; the policy gets a
:class:`~greencpn.whatif.model.View` whose ``forecast`` is the policy's source issued at ``now``
(a :class:`~greencpn.sources.replay.ReplayCarbonSource`: no look-ahead, or actuals for a
``perfect`` policy); the fleet applies the decision and runs the slot; energy per site × the
actual intensity of the slot gives carbon. The accounted window is the same for every policy:
``[start, end + drain)``; jobs are those released in ``[start, end)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from greencpn.clock import SimClock, ensure_utc
from greencpn.errors import ConfigError
from greencpn.sources.replay import ReplayCarbonSource
from greencpn.whatif.fleet import FleetStats, SimFleet
from greencpn.whatif.model import FleetSpec, SimJob, View
from greencpn.whatif.policies import PolicySpec, load_policy, parse_spec


@dataclass(frozen=True)
class ReplaySettings:
    """How a replay runs (times UTC)."""

    start: datetime
    end: datetime
    step: timedelta = timedelta(hours=1)
    drain: timedelta = timedelta(hours=48)  # accounted after ``end`` so late work is priced
    seed: int = 0
    failure_rate_per_node_h: float = 0.0
    repair_h: float = 4.0
    initially_on: bool = True
    forecast_slots: int = 48  # least forecast horizon asked per zone and slot

    def __post_init__(self) -> None:
        ensure_utc(self.start, "--from")
        ensure_utc(self.end, "--to")
        if self.end <= self.start:
            raise ConfigError(
                f"--to {self.end.isoformat()} is not after --from {self.start.isoformat()}",
                field="--to",
                fix="give a later --to",
            )

    @property
    def n_slots(self) -> int:
        return math.ceil((self.end + self.drain - self.start) / self.step)


@dataclass
class RunResult:
    policy: str
    jobs: list[SimJob]
    settings: ReplaySettings
    sites: list[str]
    energy_kwh: np.ndarray  # (slots, sites)
    carbon_kg: np.ndarray  # (slots, sites)
    stats: FleetStats
    killed_jobs: int
    wall_s: float
    forecasts: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def run_replay(
    fleet: FleetSpec,
    jobs: list[SimJob],
    policy: PolicySpec | str,
    *,
    forecasts: ReplayCarbonSource,
    actuals: ReplayCarbonSource,
    settings: ReplaySettings,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Replay ``jobs`` on ``fleet`` under one policy.

    Args:
        forecasts: what a policy without perfect foresight is told (mode ``forecast``).
        actuals: the accountant's source (its ``actual``); also the forecast of a ``perfect``
            policy (its mode must be ``perfect``).
        progress: called with the number of slots done since the last call.

    Raises:
        ConfigError: the carbon history does not cover the window, a zone is missing, or a
            job can run nowhere.
    """
    t_wall = time.perf_counter()
    spec = parse_spec(policy) if isinstance(policy, str) else policy
    pol = load_policy(spec)
    pol.reset(fleet)
    source = actuals if spec.perfect else forecasts
    step = settings.step
    n = settings.n_slots
    sites = [s.name for s in fleet.sites]
    zone_of = {s.name: s.zone for s in fleet.sites}
    truth = {z: actuals.actual(z, settings.start, n) for z in set(zone_of.values())}
    for z in truth:
        if pd_step(actuals, z) != step:
            raise ConfigError(
                f"the carbon series of {z} has slots of {pd_step(actuals, z)}, the replay {step}",
                source=f"zone {z}",
                fix="resample the carbon file to the replay step (--step)",
            )
    all_jobs = {j.id: replace(j) for j in jobs if settings.start <= j.release < settings.end}
    for j in all_jobs.values():
        if not set(j.sites) & set(sites):
            raise ConfigError(
                f"job {j.id} may run at {list(j.sites)}, none of the fleet's sites {sites}",
                field=f"jobs({j.id})",
                fix="fix its residency tags or the site assignment rule",
            )
    pending = sorted(all_jobs.values(), key=lambda j: (j.release, j.id))
    clock = SimClock(settings.start)
    sim = SimFleet(
        fleet,
        clock,
        seed=settings.seed,
        failure_rate_per_node_h=settings.failure_rate_per_node_h,
        repair_h=settings.repair_h,
        initially_on=settings.initially_on,
    )
    waiting: dict[str, SimJob] = {}
    running: dict[str, SimJob] = {}
    energy = np.zeros((n, len(sites)))
    carbon = np.zeros((n, len(sites)))
    site_idx = {s: i for i, s in enumerate(sites)}
    nxt = 0
    n_fc = 0
    for k in range(n):
        now = settings.start + k * step
        clock.set(now)
        for job in sim.begin_slot(now, step, all_jobs):
            running.pop(job.id, None)
            waiting[job.id] = job
        while nxt < len(pending) and pending[nxt].release <= now:
            waiting[pending[nxt].id] = pending[nxt]
            nxt += 1
        forecast = _SlotForecasts(source, now, settings.forecast_slots)
        view = View(
            now=now,
            step=step,
            pools={p.name: sim.view(p.name) for p in fleet.pools},
            waiting=list(waiting.values()),
            running=list(running.values()),
            forecast=forecast,
            site_zone=zone_of,
            clock=clock,
            backends=sim.backends,
        )
        decision = pol.decide(view)
        n_fc += forecast.calls
        clock.set(now)  # a controller may have slept (drain waits) on the replay's clock
        for job in sim.sync_from_hooks(now, all_jobs):
            running.pop(job.id, None)
            waiting[job.id] = job
        for job in sim.apply(decision, all_jobs, now):
            waiting.pop(job.id, None)
            running[job.id] = job
        e, finished = sim.run_slot(now, step, list(running.values()))
        for job in finished:
            running.pop(job.id, None)
        for s, kwh in e.items():
            i = site_idx[s]
            energy[k, i] = kwh
            carbon[k, i] = kwh * truth[zone_of[s]][k] / 1000.0
        if progress is not None:
            progress(1)
    close = getattr(pol, "close", None)
    if callable(close):
        close()
    return RunResult(
        policy=spec.label,
        jobs=sorted(all_jobs.values(), key=lambda j: (j.release, j.id)),
        settings=settings,
        sites=sites,
        energy_kwh=energy,
        carbon_kg=carbon,
        stats=sim.stats,
        killed_jobs=sim.killed_jobs,
        wall_s=time.perf_counter() - t_wall,
        forecasts=n_fc,
        extra={"steps": getattr(pol, "steps", None)} if hasattr(pol, "steps") else {},
    )


def pd_step(src: ReplayCarbonSource, zone: str) -> timedelta:
    return src.step(zone)


class _SlotForecasts:
    """A policy's ``view.forecast`` for one slot: forecasts issued at ``now``, asked once per
    zone for at least ``min_slots`` (rounded up to whole days) and cut to what is asked, so the
    answer does not depend on the order of a policy's questions."""

    def __init__(self, source: ReplayCarbonSource, now: datetime, min_slots: int) -> None:
        self.source, self.now, self.min_slots = source, now, min_slots
        self.cache: dict[str, np.ndarray] = {}
        self.calls = 0

    def __call__(self, zone: str, slots: int) -> np.ndarray:
        have = self.cache.get(zone)
        if have is None or len(have) < slots:
            want = 24 * math.ceil(max(slots, self.min_slots) / 24)
            have = self.cache[zone] = self.source.forecast_values(zone, self.now, want)
            self.calls += 1
        return have[:slots]
