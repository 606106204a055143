""":func:`decide`, pure: pending jobs (array jobs expanded into their planned tasks), the plan's
entries, the policy and ``now`` in, one :class:`JobAction` per job out (the rules:
:mod:`greencpn.actuate.jobs.engine`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from greencpn.actuate.jobs.base import (
    BEGIN,
    STEER_FIELDS,
    PendingJob,
    SteerMode,
    SteerTarget,
)
from greencpn.actuate.jobs.rules import (
    BEGIN_TOLERANCE_S,
    JobPolicy,
    gated_release_by,
    latest_safe_start,
)
from greencpn.actuate.ledger import JobRecord, _dt, _iso


@dataclass(frozen=True)
class PlannedJob:
    """A job's entry in the plan: where and when it should start."""

    id: str
    site: str
    pool: str
    start: datetime | None


def planned_jobs(plan: Mapping[str, Any]) -> dict[str, PlannedJob]:
    """The plan's ``jobs`` list by id (docs/plan-schema.md)."""
    out = {}
    for j in plan.get("jobs") or []:
        start = j.get("start")
        out[str(j["id"])] = PlannedJob(
            id=str(j["id"]),
            site=str(j.get("site") or ""),
            pool=str(j.get("pool") or ""),
            start=_dt(start) if start else None,
        )
    return out


def expand_arrays(
    jobs: list[PendingJob], plan: Mapping[str, PlannedJob], cluster: str = ""
) -> tuple[list[PendingJob], dict[str, PlannedJob]]:
    """Pending job arrays against a plan that names their tasks (``A_t``, as greencpn's queue
    reader expands them).

    A scheduler's pending array record (``extra["array_tasks"]``, Slurm ``A_[0-99]``) is decided
    **per array** when the plan gives every one of its tasks the same site, pool and start: one
    change for all of them (Slurm: ``scontrol update JobId=A_[tasks]``), kept under the
    record's own id. Otherwise it is decided **per task**: each planned task becomes a job
    ``A_t`` of its own (Slurm splits it off the array at its first change), and the tasks the
    plan does not name stay in the record, untouched. Running tasks are not pending: never
    listed, never touched. Returns the jobs to decide and plan entries for whole arrays."""
    out: list[PendingJob] = []
    whole: dict[str, PlannedJob] = {}
    for job in jobs:
        tasks = job.extra.get("array_tasks")
        array = job.extra.get("array_job_id")
        if not isinstance(tasks, list) or not tasks or not array or job.id in plan:
            out.append(job)
            continue
        entries = {t: plan.get(f"{array}_{t}") or plan.get(f"{cluster}:{array}_{t}") for t in tasks}
        planned = {t: e for t, e in entries.items() if e is not None}
        if not planned:
            out.append(job)
            continue
        placements = {(e.site, e.pool, e.start) for e in planned.values()}
        if len(planned) == len(tasks) and len(placements) == 1:
            e = next(iter(planned.values()))
            whole[job.id] = PlannedJob(id=job.id, site=e.site, pool=e.pool, start=e.start)
            out.append(job)
            continue
        base = {k: v for k, v in job.extra.items() if k not in ("array_tasks", "array_spec")}
        for t in planned:
            out.append(dataclasses.replace(job, id=f"{array}_{t}", extra={**base, "array_task": t}))
        if len(planned) < len(tasks):
            out.append(job)  # its unplanned tasks: not in the plan, left as they are
    return out, whole


@dataclass(frozen=True)
class JobAction:
    """What to do with one job (``kind``: defer, hold, release, failsafe_release, steer, skip)."""

    kind: str
    job_id: str
    pool: str | None
    reason: str
    begin_at: datetime | None = None
    steer: SteerTarget | None = None
    latest_safe_start: datetime | None = None
    planned_start: datetime | None = None


def _begin_of_record(rec: JobRecord | None) -> tuple[bool, datetime | None]:
    """(recorded?, the job's original begin time) from the ledger."""
    if rec is None or not rec.originals or BEGIN not in rec.originals:
        return False, None
    return True, _dt(rec.originals[BEGIN])


def decide(
    jobs: Iterable[PendingJob],
    plan: Mapping[str, PlannedJob],
    policy: JobPolicy,
    *,
    now: datetime,
    next_step_at: datetime,
    pool_ready: Callable[[str], bool],
    targets: Mapping[str, SteerTarget],
    records: Mapping[str, JobRecord],
    sites: Sequence[str] = (),
    supports_begin_time: bool = True,
    cluster: str = "",
) -> list[JobAction]:
    """What the plan asks of each pending job at ``now`` (pure; see the module docstring).

    Args:
        jobs: the cluster's pending jobs.
        plan: planned jobs by id (an id may also be written ``cluster:id``).
        now: the current time; ``next_step_at``: when greencpn looks again (a job waiting for
            its pool is deferred to then, never past its latest safe start).
        pool_ready: whether a pool's nodes are up (planned start passed: release or wait).
        targets: pool -> where to steer (missing: not steered).
        records: job id -> its ledger record (originals, hold state).
        sites: this cluster's sites (a job planned elsewhere is not moved: greencpn submit).
    """
    hold = policy.defer_with == "hold" or not supports_begin_time
    jobs, array_plan = expand_arrays(list(jobs), plan, cluster)
    if array_plan:
        plan = {**plan, **array_plan}
    actions: list[JobAction] = []
    for job in jobs:
        if not job.pending:
            continue
        p = plan.get(job.id) or plan.get(f"{cluster}:{job.id}")
        rec = records.get(job.id)
        ours_held = bool(rec and rec.held_by_us) or (job.held and job.gated)
        if p is None:
            if rec is not None and rec.held_by_us:
                # greencpn held it for a plan that no longer has it: let it go
                actions.append(JobAction("release", job.id, None, "no longer in the plan"))
            elif job.held and job.gated:
                # gated at creation, not planned yet: waits for a plan, never past its lss
                limit = gated_release_by(job, policy)
                if limit is not None and now >= limit:
                    actions.append(
                        JobAction(
                            "failsafe_release",
                            job.id,
                            None,
                            f"not in any plan by its latest safe start {_iso(limit)}",
                            begin_at=now,
                            latest_safe_start=limit,
                        )
                    )
            continue
        why = policy.excluded(job)
        if why:
            actions.append(JobAction("skip", job.id, p.pool, why))
            continue
        if job.held and not ours_held:
            actions.append(JobAction("skip", job.id, p.pool, "held by its user or an admin"))
            continue
        recorded, orig_begin = _begin_of_record(rec)
        if not recorded:
            orig_begin = job.begin_at
        lss = latest_safe_start(job, policy, orig_begin)
        if sites and p.site and p.site not in sites:
            actions.append(
                JobAction(
                    "skip",
                    job.id,
                    p.pool,
                    f"planned at site {p.site!r}, not on this cluster: moving a queued job "
                    "between clusters is done at submission (greencpn submit)",
                )
            )
            continue
        if p.start is None:
            if ours_held:
                actions.append(JobAction("release", job.id, p.pool, "not placed in this plan"))
            continue
        if lss is None:
            actions.append(
                JobAction(
                    "skip", job.id, p.pool, "no time limit: no latest safe start, not deferred"
                )
            )
            continue
        target = targets.get(p.pool)
        if target is not None and target.mode != SteerMode.NONE:
            current = job.value(STEER_FIELDS[target.mode]) if target.mode in STEER_FIELDS else None
            if target.mode not in STEER_FIELDS or current != target.value:
                actions.append(
                    JobAction("steer", job.id, p.pool, f"to pool {p.pool}", steer=target)
                )
        base = dict(latest_safe_start=lss, planned_start=p.start, pool=p.pool, job_id=job.id)
        user_floor = orig_begin if orig_begin is not None and orig_begin > now else None
        if p.start > now:
            want = min(p.start, lss)
            if user_floor is not None and user_floor > want:
                continue  # its user asked for a later start than the plan: left alone
            reason = "planned start" if want == p.start else "clamped to its latest safe start"
            if hold:
                if not job.held and not supports_begin_time:
                    actions.append(
                        JobAction("skip", job.id, p.pool, "not gated at creation: cannot be held")
                    )
                elif not job.held or rec is None or rec.release_at != want:
                    actions.append(JobAction("hold", begin_at=want, reason=reason, **base))  # type: ignore[arg-type]
                continue
            gap = (want - now).total_seconds()
            if (
                job.begin_at is not None
                and abs((job.begin_at - want).total_seconds()) <= BEGIN_TOLERANCE_S
            ):
                continue
            if gap < policy.min_defer_s and (job.begin_at is None or job.begin_at <= now):
                continue  # starts soon anyway: not worth a change
            actions.append(JobAction("defer", begin_at=want, reason=reason, **base))  # type: ignore[arg-type]
            continue
        # the planned start has come
        if pool_ready(p.pool) or now >= lss:
            deferred = job.begin_at is not None and (
                (job.begin_at - now).total_seconds() > BEGIN_TOLERANCE_S
            )
            ready = pool_ready(p.pool)
            if not ((job.held and ours_held) or (deferred and recorded)):
                if not ready and recorded and rec is not None and rec.release_at is None:
                    # greencpn's begin time ran out at the lss while the pool is not ready: the
                    # scheduler starts it now; recorded once (a row and the counter)
                    actions.append(
                        JobAction(
                            "failsafe_release",
                            begin_at=now,
                            reason=f"pool {p.pool} not ready at the latest safe start "
                            f"{_iso(lss)}: starts anyway",
                            **base,  # type: ignore[arg-type]
                        )
                    )
                continue  # nothing of greencpn's holds it back
            kind = "release" if ready else "failsafe_release"
            reason = (
                "planned start reached, pool ready"
                if ready
                else f"pool {p.pool} not ready at the latest safe start {_iso(lss)}: released anyway"
            )
            actions.append(JobAction(kind, begin_at=now, reason=reason, **base))  # type: ignore[arg-type]
            continue
        # still pending, pool not ready: wait for it until the next step, never past the lss
        wait_to = min(next_step_at, lss)
        why = f"pool {p.pool} not ready: waits until {_iso(wait_to)} at the latest"
        if hold:
            # held by greencpn: the release moves to the next step; never re-hold a job it released
            first_sight = rec is None and supports_begin_time
            if (job.held and (rec is None or rec.release_at != wait_to)) or (
                not job.held and first_sight
            ):
                actions.append(JobAction("hold", begin_at=wait_to, reason=why, **base))  # type: ignore[arg-type]
            continue
        if (
            job.begin_at is None
            or abs((job.begin_at - wait_to).total_seconds()) > BEGIN_TOLERANCE_S
        ):
            actions.append(JobAction("defer", begin_at=wait_to, reason=why, **base))  # type: ignore[arg-type]
    # held by greencpn and due, but not seen above (e.g. the plan lost the job)
    seen = {a.job_id for a in actions}
    for job in jobs:
        rec = records.get(job.id)
        if (
            job.pending
            and job.held
            and rec is not None
            and rec.held_by_us
            and job.id not in seen
            and rec.release_at is not None
            and rec.release_at <= now
        ):
            actions.append(
                JobAction(
                    "failsafe_release",
                    job.id,
                    rec.pool,
                    f"scheduled release at {_iso(rec.release_at)} is due",
                    begin_at=now,
                    latest_safe_start=rec.latest_safe_start,
                )
            )
    return actions
