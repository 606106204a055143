"""How much of a plan's job-timing saving is realised when jobs start where and when the job
actuators (greencpn/actuate/jobs) put them — issue #12's "realised share of planned saving".

A small, self-contained replay (kept apart from the what-if engine): one simulated scheduler
per site, behind the in-memory :class:`~greencpn.actuate.jobs.fake.FakeJobActuator`. At every
plan slot, :func:`~greencpn.actuate.jobs.act_on_jobs` runs over the plan exactly as
``greencpn apply`` does (defer by begin time, steer by partition = pool, release at the latest
safe start); between steps the scheduler starts every pending, unheld job whose begin time has
come, first come first served, on its partition's pool when enough GPUs are free (no
backfill). Jobs are submitted at their release time to a site's scheduler (``queue``):

* ``"home"``: the first site the job may run at (a queued job cannot move between clusters,
  so a plan that moves it elsewhere is not followed: greencpn skips it and it runs at home);
* ``"planned"``: the site the plan chose (as ``greencpn submit`` would queue it).

Three placements are priced with one accountant — energy of a job = GPUs × the pool's
``power_limit_max_w`` × duration at full power × the site's PUE, at the plan's hourly site
intensity over the job's run (the last slot's value past the horizon). Node idle power, boots
and power caps are **not** in this figure (the plan's own totals have them):

* **baseline**: the same scheduler without greencpn (every job queued at home at its release,
  on the site's first pool large enough — carbon-agnostic);
* **planned**: each job at the plan's pool and start (the plan's promise, no capacity check);
* **realised**: the starts the simulated scheduler made under actuation.

``share = (baseline − realised) / (baseline − planned)`` (1.0: the whole planned saving
happens; the denominator is the planned saving of this accountant, not the plan's own
``savings``). Jobs the plan does not place (``start`` null) are left out of all three.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from greencpn.actuate.jobs import JobBackends, act_on_jobs
from greencpn.actuate.jobs.base import PendingJob
from greencpn.actuate.jobs.fake import FakeJobActuator
from greencpn.actuate.ledger import Ledger, _dt
from greencpn.config import JobActuationConfig


def _identity(at: datetime) -> datetime:
    return at


def _when(text: object) -> datetime:
    got = _dt(str(text))
    if got is None:
        raise ValueError(f"not a time: {text!r}")
    return got


@dataclass(frozen=True)
class ReplayJob:
    id: str
    gpus: int
    duration_h: float  # at full power
    release: datetime
    deadline: datetime
    sites: tuple[str, ...]  # where it may run, the first is its home


@dataclass(frozen=True)
class ReplayPool:
    name: str
    site: str
    gpus: int  # capacity
    gpu_kw: float  # per GPU at full power
    pue: float


@dataclass
class RealisedResult:
    queue: str
    jobs: int  # jobs priced (placed by the plan)
    baseline_kg: float
    planned_kg: float
    realised_kg: float
    starts: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    planned_starts: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    late_jobs: int = 0  # realised finishes after the job's deadline
    not_started: int = 0
    actions: dict[str, int] = field(default_factory=dict)  # job actions by kind_status

    @property
    def planned_saving_kg(self) -> float:
        return self.baseline_kg - self.planned_kg

    @property
    def realised_saving_kg(self) -> float:
        return self.baseline_kg - self.realised_kg

    @property
    def share(self) -> float | None:
        """Realised saving / planned saving (None when the plan saves nothing)."""
        if abs(self.planned_saving_kg) < 1e-9:
            return None
        return self.realised_saving_kg / self.planned_saving_kg

    @property
    def on_plan(self) -> int:
        """Jobs that started on their planned pool within a minute of their planned start."""
        n = 0
        for jid, (pool, at) in self.planned_starts.items():
            got = self.starts.get(jid)
            if got and got[0] == pool and abs((got[1] - at).total_seconds()) <= 60:
                n += 1
        return n


class Intensity:
    """Hourly (or slot) site intensity from a plan document, g/kWh."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        hz = plan["horizon"]
        self.starts = [_when(s) for s in hz["slot_starts"]]
        self.step = timedelta(minutes=int(hz["slot_minutes"]))
        self.by_site: dict[str, list[float]] = {}
        for s in plan.get("sites") or []:
            vals = sorted(s.get("slots") or [], key=lambda x: int(x["slot"]))
            self.by_site[s["name"]] = [float(v["intensity_g_per_kwh"]) for v in vals]

    def kg(self, site: str, start: datetime, hours: float, kw: float) -> float:
        """kg CO2e of ``kw`` drawn at ``site`` for ``hours`` from ``start``."""
        vals = self.by_site[site]
        end = start + timedelta(hours=hours)
        t0 = self.starts[0]
        total = 0.0
        i = max(0, int((start - t0) / self.step))
        while True:
            lo = t0 + i * self.step
            hi = lo + self.step
            if lo >= end:
                break
            over = (min(hi, end) - max(lo, start)).total_seconds() / 3600.0
            if over > 0:
                total += over * kw * vals[min(i, len(vals) - 1)]
            i += 1
        return total / 1000.0


def _price(
    placed: Mapping[str, tuple[str, datetime]],
    jobs: Mapping[str, ReplayJob],
    pools: Mapping[str, ReplayPool],
    intensity: Intensity,
) -> float:
    total = 0.0
    for jid, (pool, start) in placed.items():
        j, p = jobs[jid], pools[pool]
        total += intensity.kg(p.site, start, j.duration_h, j.gpus * p.gpu_kw * p.pue)
    return total


def _simulate(
    jobs: Sequence[ReplayJob],
    pools: Sequence[ReplayPool],
    plan: Mapping[str, Any] | None,
    queue_site: Mapping[str, str],
    *,
    start: datetime,
    step: timedelta,
    until: datetime,
    config: JobActuationConfig | None,
    actions: dict[str, int],
) -> dict[str, tuple[str, datetime]]:
    """The schedulers' starts (pool, time); with ``plan``, greencpn acts at every step."""
    sites = sorted({p.site for p in pools})
    fakes = {s: FakeJobActuator(cluster=s) for s in sites}
    free = {p.name: p.gpus for p in pools}
    by_site = {s: [p for p in pools if p.site == s] for s in sites}
    todo = sorted(jobs, key=lambda j: (j.release, j.id))
    submitted = 0
    running: list[tuple[datetime, str, int]] = []  # (finish, pool, gpus)
    starts: dict[str, tuple[str, datetime]] = {}
    dur = {j.id: j.duration_h for j in jobs}
    site_of = {j.id: queue_site[j.id] for j in jobs}
    backends = None
    if plan is not None and config is not None:
        backends = JobBackends(config=config, actuators=fakes)

    def submit(upto: datetime) -> None:
        nonlocal submitted
        while submitted < len(todo) and todo[submitted].release <= upto:
            j = todo[submitted]
            site = site_of[j.id]
            first = next((p for p in by_site[site] if p.gpus >= j.gpus), by_site[site][0])
            fakes[site].jobs[j.id] = PendingJob(
                id=j.id,
                cluster=site,
                gpus=j.gpus,
                time_limit_s=j.duration_h * 3600.0,
                submit_at=j.release,
                deadline=j.deadline,
                partition=first.name,
            )
            submitted += 1

    def schedule(at: datetime) -> None:
        nonlocal running
        done = [r for r in running if r[0] <= at]
        running = [r for r in running if r[0] > at]
        for _, pool, g in done:
            free[pool] += g
        queue = [
            (fake, j)
            for fake in fakes.values()
            for j in fake.jobs.values()
            if j.pending and not j.held and (j.begin_at is None or j.begin_at <= at)
        ]
        queue.sort(key=lambda fj: (fj[1].begin_at or fj[1].submit_at or at, fj[1].id))
        for fake, j in queue:
            if free.get(j.partition, 0) >= j.gpus:
                free[j.partition] -= j.gpus
                fake.jobs[j.id] = dataclasses.replace(j, pending=False, state="RUNNING")
                starts[j.id] = (j.partition, at)
                running.append((at + timedelta(hours=dur[j.id]), j.partition, j.gpus))

    with (
        tempfile.TemporaryDirectory(prefix="greencpn-realised-") as tmp,
        Ledger.open(tmp) as ledger,
    ):
        t = start
        while t < until and len(starts) < len(jobs):
            submit(t)
            if backends is not None and plan is not None:
                now = t
                clock_now = functools.partial(_identity, now)
                aid = ledger.begin_apply(now, plan_path=None, slot=None, slot_start=now, mode="act")
                rep = act_on_jobs(
                    plan,
                    backends,
                    ledger,
                    aid,
                    clock_now=clock_now,
                    next_step_at=now + step,
                    pool_ready=lambda _pool: True,
                    shadow=False,
                )
                for k, v in rep.counts.items():
                    actions[k] = actions.get(k, 0) + v
            end = t + step
            events = {t}
            events |= {j.release for j in todo[submitted:] if t < j.release < end}
            events |= {r[0] for r in running if t < r[0] < end}
            for fake in fakes.values():
                events |= {
                    j.begin_at
                    for j in fake.jobs.values()
                    if j.pending and j.begin_at is not None and t < j.begin_at < end
                }
            # finishes of jobs started inside the step are added as they come
            pending_events = sorted(events)
            while pending_events:
                at = pending_events.pop(0)
                submit(at)
                before = len(running)
                schedule(at)
                new = {r[0] for r in running[before:] if at < r[0] < end}
                pending_events = sorted(set(pending_events) | new)
            t = end
    return starts


def realised_share(
    plan: Mapping[str, Any],
    jobs: Sequence[ReplayJob],
    pools: Sequence[ReplayPool],
    *,
    queue: str = "home",
    drain: timedelta = timedelta(hours=48),
    min_defer_s: float = 60.0,
) -> RealisedResult:
    """Baseline, planned and realised carbon of the plan's jobs (see the module docstring)."""
    if queue not in ("home", "planned"):
        raise ValueError(f'queue must be "home" or "planned", not {queue!r}')
    intensity = Intensity(plan)
    pool_by = {p.name: p for p in pools}
    entries = {str(j["id"]): j for j in plan.get("jobs") or []}
    placed = {
        jid: (str(e["pool"]), _when(e["start"]))
        for jid, e in entries.items()
        if e.get("start") and e.get("pool") in pool_by
    }
    use = [j for j in jobs if j.id in placed]
    by_id = {j.id: j for j in use}
    home = {j.id: j.sites[0] for j in use}
    target = home if queue == "home" else {j: pool_by[placed[j][0]].site for j in by_id}
    sites = sorted({p.site for p in pools})
    config = JobActuationConfig.model_validate(
        {
            "min_defer_s": min_defer_s,
            "clusters": [
                {
                    "name": s,
                    "kind": "fake",
                    "sites": [s],
                    "steer": "partition",
                    "pools": {p.name: {"partition": p.name} for p in pools if p.site == s},
                }
                for s in sites
            ],
        }
    )
    start = intensity.starts[0]
    until = intensity.starts[-1] + intensity.step + drain
    actions: dict[str, int] = {}
    base = _simulate(
        use, pools, None, home, start=start, step=intensity.step, until=until, config=None,
        actions={},
    )  # fmt: skip
    real = _simulate(
        use, pools, plan, target, start=start, step=intensity.step, until=until, config=config,
        actions=actions,
    )  # fmt: skip
    both = set(real) & set(base)  # priced on the jobs both runs started
    started = {k: v for k, v in real.items() if k in both}
    base = {k: v for k, v in base.items() if k in both}
    planned = {k: placed[k] for k in started}
    late = sum(
        1
        for k, (_, at) in started.items()
        if at + timedelta(hours=by_id[k].duration_h) > by_id[k].deadline + timedelta(seconds=1)
    )
    return RealisedResult(
        queue=queue,
        jobs=len(started),
        baseline_kg=_price(base, by_id, pool_by, intensity),
        planned_kg=_price(planned, by_id, pool_by, intensity),
        realised_kg=_price(started, by_id, pool_by, intensity),
        starts=started,
        planned_starts=planned,
        late_jobs=late,
        not_started=len(use) - len(started),
        actions=actions,
    )
