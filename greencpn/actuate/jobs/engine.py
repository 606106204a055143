"""Job actuation logic: decide per pending job what the plan asks, carry it out, undo it.

:func:`decide` is pure (jobs, plan entries, policy, ``now`` in; :class:`JobAction` out):

* jobs of excluded users / accounts / partitions / QOS, jobs held by someone else, jobs not in
  the plan and jobs without a time limit are never touched (the last: no latest safe start);
* **latest safe start** = deadline − time limit (the job at full power), where the deadline is
  the scheduler's own (Slurm ``--deadline``) or release + time limit + slack (per QOS, else per
  partition, else the default);
* a job whose planned start is ahead is **deferred** to ``min(planned start, latest safe start)``
  (never before the begin time its user asked for) — or held, with the release scheduled in the
  ledger, when ``defer_with = "hold"`` or the scheduler has no begin time (Kubernetes gates);
* it is **steered** to its planned pool (partition / features / nodes / node affinity);
* once the planned start has come it is **released** when its pool is ready; while the pool is
  not ready it waits (re-deferred to the next step), but never past its latest safe start, where
  it is released anyway (``failsafe_release``: a ledger row and a counter in the report).

:func:`execute` records the original value of every field before changing it (ledger table
``jobs``), writes an intent row, calls the actuator, reads the job back and records the result.
In shadow mode it records what would be done and changes nothing. :func:`undo_jobs` restores
every touched job from the recorded originals.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from greencpn.actuate.jobs.base import (
    BEGIN,
    HELD,
    STEER_FIELDS,
    JobActuator,
    JobChange,
    JobNotFoundError,
    JobNotPendingError,
    PendingJob,
    SteerMode,
    SteerTarget,
)
from greencpn.actuate.ledger import JobRecord, Ledger, _dt, _iso

if TYPE_CHECKING:
    from greencpn.config import JobActuationConfig, JobClusterConfig

log = logging.getLogger("greencpn.actuate.jobs")

PHASE = "jobs"
BEGIN_TOLERANCE_S = 1.0  # Slurm stores begin times in whole seconds


@dataclass(frozen=True)
class JobPolicy:
    """The rules of :func:`decide` (built from ``[job_actuation]`` by :meth:`from_config`)."""

    defer_with: str = "begin_time"  # or "hold"
    excluded_users: frozenset[str] = frozenset()
    excluded_accounts: frozenset[str] = frozenset()
    excluded_partitions: frozenset[str] = frozenset()
    excluded_qos: frozenset[str] = frozenset()
    default_slack_h: float = 24.0
    slack_h_per_partition: Mapping[str, float] = field(default_factory=dict)
    slack_h_per_qos: Mapping[str, float] = field(default_factory=dict)
    min_defer_s: float = 60.0

    @classmethod
    def from_config(cls, cfg: JobActuationConfig) -> JobPolicy:
        return cls(
            defer_with=cfg.defer_with,
            excluded_users=frozenset(cfg.excluded_users),
            excluded_accounts=frozenset(cfg.excluded_accounts),
            excluded_partitions=frozenset(cfg.excluded_partitions),
            excluded_qos=frozenset(cfg.excluded_qos),
            default_slack_h=cfg.default_slack_h,
            slack_h_per_partition=dict(cfg.slack_h_per_partition),
            slack_h_per_qos=dict(cfg.slack_h_per_qos),
            min_defer_s=cfg.min_defer_s,
        )

    def excluded(self, job: PendingJob) -> str | None:
        """Why the job must not be touched, or None."""
        for what, value, rule in (
            ("user", job.user, self.excluded_users),
            ("account", job.account, self.excluded_accounts),
            ("partition", job.partition, self.excluded_partitions),
            ("qos", job.qos, self.excluded_qos),
        ):
            if value and value in rule:
                return f"excluded {what} {value!r}"
        return None

    def slack_h(self, job: PendingJob) -> float:
        if job.qos in self.slack_h_per_qos:
            return self.slack_h_per_qos[job.qos]
        if job.partition in self.slack_h_per_partition:
            return self.slack_h_per_partition[job.partition]
        return self.default_slack_h


def deadline_of(
    job: PendingJob, policy: JobPolicy, original_begin: datetime | None
) -> datetime | None:
    """The scheduler's deadline, else release + time limit + slack (None: no time limit)."""
    if job.deadline is not None:
        return job.deadline
    if job.time_limit_s is None:
        return None
    release = original_begin or job.submit_at
    if release is None:
        return None
    return release + timedelta(seconds=job.time_limit_s, hours=policy.slack_h(job))


def latest_safe_start(
    job: PendingJob, policy: JobPolicy, original_begin: datetime | None = None
) -> datetime | None:
    """The last start that still meets the deadline at full power (None: unbounded, not deferred)."""
    if job.time_limit_s is None:
        return None
    deadline = deadline_of(job, policy, original_begin)
    return None if deadline is None else deadline - timedelta(seconds=job.time_limit_s)


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


def gated_release_by(job: PendingJob, policy: JobPolicy) -> datetime | None:
    """When a pod gated at creation and in no plan must be let go: its latest safe start
    (created + time limit + slack − time limit, or its deadline annotation), else created +
    slack; never later than its ``greencpn.io/release-by`` annotation when it has one."""
    limit = latest_safe_start(job, policy, job.submit_at)
    if limit is None and job.submit_at is not None:
        limit = job.submit_at + timedelta(hours=policy.slack_h(job))
    marked = job.extra.get("release_by")
    if isinstance(marked, datetime):
        limit = marked if limit is None else min(limit, marked)
    return limit


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


# --------------------------------------------------------------------------- carrying out


@dataclass(frozen=True)
class JobOutcome:
    cluster: str
    job_id: str
    action: str
    status: str  # ok | shadow | skipped | error
    message: str = ""
    changes: tuple[JobChange, ...] = ()


@dataclass
class JobReport:
    """What the job phase did; ``counts`` are the metrics (per action and status)."""

    outcomes: list[JobOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            key = f"{o.action}_{o.status}"
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def problems(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "error"]

    def format(self) -> str:
        lines = []
        for o in self.outcomes:
            lines.append(
                f"  [{o.status:8}] jobs        {o.action:16} {o.cluster:12} {o.job_id}"
                + (f"  — {o.message}" if o.message else "")
            )
        lines += [f"  jobs: {n}" for n in self.notes]
        return "\n".join(lines)


def _json(value: object) -> object:
    return _iso(value) if isinstance(value, datetime) else value


def _remember(
    ledger: Ledger, cluster: str, job: PendingJob, fields: Sequence[str], **extra: Any
) -> None:
    """Record the original value of ``fields`` before the first change (kept forever)."""
    rec = ledger.job(cluster, job.id)
    originals = dict(rec.originals or {}) if rec else {}
    for f in fields:
        originals.setdefault(f, _json(job.value(f)))
    ledger.update_job(cluster, job.id, originals=originals, **extra)


def _matches(change: JobChange, wanted: object) -> bool:
    if isinstance(wanted, datetime):
        got = change.after
        return (
            isinstance(got, datetime) and abs((got - wanted).total_seconds()) <= BEGIN_TOLERANCE_S
        )
    return change.after == wanted


def execute(
    actions: Sequence[JobAction],
    actuator: JobActuator,
    ledger: Ledger,
    apply_id: int,
    *,
    clock_now: Callable[[], datetime],
    shadow: bool,
    jobs: Mapping[str, PendingJob],
    report: JobReport | None = None,
) -> JobReport:
    """Carry out ``actions`` (or, in shadow mode, record them); every change read back."""
    report = report or JobReport()
    cluster = actuator.cluster
    hold_mode = not actuator.supports_begin_time
    combined = getattr(actuator, "steer_and_defer", None)  # one scheduler call for both
    i = 0
    while i < len(actions):
        a = actions[i]
        if a.kind == "skip" or shadow:
            ledger.record(
                apply_id,
                clock_now(),
                phase=PHASE,
                action=a.kind,
                pool=a.pool,
                targets=[a.job_id],
                status="skipped" if a.kind == "skip" else "shadow",
                detail=_detail(a, cluster),
            )
            status, msg = (
                ("skipped", a.reason) if a.kind == "skip" else ("shadow", "would " + _describe(a))
            )
            report.outcomes.append(JobOutcome(cluster, a.job_id, a.kind, status, msg))
            i += 1
            continue
        nxt = actions[i + 1] if i + 1 < len(actions) else None
        if (
            callable(combined)
            and a.kind == "steer"
            and nxt is not None
            and nxt.kind == "defer"
            and nxt.job_id == a.job_id
        ):
            group = [a, nxt]
        else:
            group = [a]
        i += len(group)
        _run_group(group, actuator, ledger, apply_id, clock_now, jobs, report, hold_mode)
    return report


def _detail(a: JobAction, cluster: str) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "reason": a.reason,
        "begin_at": _iso(a.begin_at),
        "latest_safe_start": _iso(a.latest_safe_start),
        "planned_start": _iso(a.planned_start),
        "steer": None if a.steer is None else f"{a.steer.mode.value}={a.steer.value}",
    }


def _run_group(
    group: list[JobAction],
    actuator: JobActuator,
    ledger: Ledger,
    apply_id: int,
    clock_now: Callable[[], datetime],
    jobs: Mapping[str, PendingJob],
    report: JobReport,
    hold_mode: bool,
) -> None:
    """One action, or a steer + defer of the same job in one scheduler call: intents and
    originals durable first, then the call, then each action's result from the read back."""
    cluster = actuator.cluster
    first = group[0]
    note = getattr(actuator, "note_plan", None)  # backends that pass the plan on (command)
    if callable(note):
        note(
            first.job_id,
            pool=first.pool,
            start=first.planned_start,
            latest_safe_start=first.latest_safe_start,
        )
    sids: list[int] = []
    try:
        job = jobs.get(first.job_id) or actuator.read(first.job_id)
        with ledger.batch():
            for a in group:
                sids.append(
                    ledger.intent(
                        apply_id,
                        clock_now(),
                        phase=PHASE,
                        action=a.kind,
                        pool=a.pool,
                        targets=[a.job_id],
                        detail=_detail(a, cluster),
                    )
                )
                _prepare(a, ledger, cluster, job, hold_mode)
        if len(group) == 2:
            steer, defer = group
            assert steer.steer is not None and defer.begin_at is not None
            both = actuator.steer_and_defer(first.job_id, steer.steer, defer.begin_at)  # type: ignore[attr-defined]
            per_action = [
                [c for c in both if c.what != BEGIN],
                [c for c in both if c.what == BEGIN],
            ]
        else:
            per_action = [_carry_out(first, actuator, ledger, job, hold_mode)]
    except Exception as exc:  # typed scheduler errors, and any surprise from a backend
        # (e.g. an unparsable read back): recorded as this job's outcome, the others go on
        gone = isinstance(exc, JobNotPendingError | JobNotFoundError)
        status = "skipped" if gone else "error"
        err = str(exc) if gone else f"{type(exc).__name__}: {exc}"
        for i, a in enumerate(group):
            if i < len(sids):
                ledger.result(sids[i], clock_now(), status, {"error": err})
            else:
                ledger.record(
                    apply_id,
                    clock_now(),
                    phase=PHASE,
                    action=a.kind,
                    pool=a.pool,
                    targets=[a.job_id],
                    status=status,
                    detail={**_detail(a, cluster), "error": err},
                )
            report.outcomes.append(JobOutcome(cluster, a.job_id, a.kind, status, err))
        return
    for a, sid, changes in zip(group, sids, per_action, strict=True):
        wrong = [c for c in changes if not _expected(a, c)]
        status = "error" if wrong else "ok"
        msg = _describe(a) + (
            f"; read back differs: {[(c.what, _json(c.after)) for c in wrong]}" if wrong else ""
        )
        ledger.result(
            sid,
            clock_now(),
            status,
            {
                "changes": [
                    {
                        "what": c.what,
                        "before": _json(c.before),
                        "after": _json(c.after),
                        "changed": c.changed,
                    }
                    for c in changes
                ]
            },
        )
        tasks = job.extra.get("array_tasks")
        if isinstance(tasks, list) and job.extra.get("array_spec"):
            msg += f" (array {job.extra.get('array_job_id')}_[{job.extra['array_spec']}]: {len(tasks)} tasks)"
        report.outcomes.append(JobOutcome(cluster, a.job_id, a.kind, status, msg, tuple(changes)))


def _describe(a: JobAction) -> str:
    if a.kind == "steer" and a.steer is not None:
        return f"steer to {a.steer.mode.value} {a.steer.value!r}"
    if a.kind == "defer":
        return f"begin at {_iso(a.begin_at)} (latest safe start {_iso(a.latest_safe_start)})"
    if a.kind == "hold":
        return f"hold until {_iso(a.begin_at)} (latest safe start {_iso(a.latest_safe_start)})"
    return f"{a.kind.replace('_', ' ')}: {a.reason}"


def _expected(a: JobAction, c: JobChange) -> bool:
    if a.kind == "defer":
        return _matches(c, a.begin_at)
    if a.kind == "hold":
        return c.after is True
    if a.kind in ("release", "failsafe_release"):
        if c.what == HELD:
            return c.after is False
        return (
            isinstance(c.after, datetime)
            and a.begin_at is not None
            and c.after <= a.begin_at + timedelta(seconds=5)
        )
    if a.kind == "steer" and a.steer is not None:
        return c.after == a.steer.value
    return True


def _prepare(a: JobAction, ledger: Ledger, cluster: str, job: PendingJob, hold_mode: bool) -> None:
    """Ledger writes that must precede the scheduler call (originals, scheduled release)."""
    if a.kind == "steer" and a.steer is not None:
        fields = [STEER_FIELDS[a.steer.mode]] if a.steer.mode in STEER_FIELDS else []
        _remember(ledger, cluster, job, fields, pool=a.pool)
    elif a.kind == "defer":
        _remember(ledger, cluster, job, [BEGIN], pool=a.pool, latest_safe_start=a.latest_safe_start)
    elif a.kind == "hold":
        # the release is scheduled BEFORE the hold: a crash in between still has it on record
        _remember(
            ledger,
            cluster,
            job,
            [HELD],
            pool=a.pool,
            latest_safe_start=a.latest_safe_start,
            release_at=a.begin_at,
            held_by_us=True,
        )
    elif a.kind in ("release", "failsafe_release") and not job.held and not hold_mode:
        # release_at of a begin-time job = when greencpn let it go (a fail-safe is noted once)
        _remember(ledger, cluster, job, [BEGIN], pool=a.pool, release_at=a.begin_at)


def _carry_out(
    a: JobAction, act: JobActuator, ledger: Ledger, job: PendingJob, hold_mode: bool
) -> list[JobChange]:
    """The scheduler call of one action (after :func:`_prepare`); changes read back."""
    cluster = act.cluster
    if a.kind == "steer":
        assert a.steer is not None
        return act.steer(a.job_id, a.steer)
    if a.kind == "defer":
        assert a.begin_at is not None
        return [act.defer(a.job_id, a.begin_at)]
    if a.kind == "hold":
        until = getattr(act, "hold_until", None)  # Kubernetes: writes the release-by mark
        if callable(until):
            return [until(a.job_id, a.latest_safe_start)]
        if job.held:
            return [
                JobChange(a.job_id, HELD, True, True, False, "already held; release rescheduled")
            ]
        return [act.hold(a.job_id)]
    if a.kind in ("release", "failsafe_release"):
        rec = ledger.job(cluster, a.job_id)
        if job.held and ((rec is not None and rec.held_by_us) or job.gated):
            change = act.release(a.job_id)
            ledger.update_job(cluster, a.job_id, held_by_us=False, release_at=None)
            return [change]
        if hold_mode or job.held:
            return []
        assert a.begin_at is not None
        return [act.defer(a.job_id, a.begin_at)]
    raise ValueError(f"unknown job action {a.kind!r}")


# --------------------------------------------------------------------------- undo


def undo_jobs(
    actuator: JobActuator, ledger: Ledger, apply_id: int, *, clock_now: Callable[[], datetime]
) -> JobReport:
    """Put every job greencpn touched on this cluster back to its recorded original values.

    Jobs that started or left the queue meanwhile are reported as skipped (nothing to restore
    on a running job); each restored field is read back and compared with the original.
    """
    report = JobReport()
    cluster = actuator.cluster
    order = [f for f in STEER_FIELDS.values()] + [HELD, BEGIN]
    for rec in ledger.jobs(cluster):
        if rec.restored_at is not None or not rec.originals:
            continue
        now = clock_now()
        sid = ledger.intent(
            apply_id,
            now,
            phase=PHASE,
            action="restore",
            pool=rec.pool,
            targets=[rec.job_id],
            detail={"cluster": cluster, "originals": rec.originals},
        )
        changes: list[JobChange] = []
        expect = dict(rec.originals)
        try:
            for what in sorted(rec.originals, key=lambda f: order.index(f) if f in order else 99):
                value: object = rec.originals[what]
                if what == BEGIN:
                    begin = _dt(value) if isinstance(value, str) else None
                    value = begin if begin is not None and begin > now else None
                if what == HELD and not rec.held_by_us:
                    continue  # released by greencpn already: the original state holds
                if what == HELD and value is True and not actuator.supports_begin_time:
                    expect[HELD] = False  # greencpn's own gate (Kubernetes): undo lets it run
                changes.append(actuator.restore(rec.job_id, what, value))
        except (JobNotPendingError, JobNotFoundError) as exc:
            ledger.result(sid, clock_now(), "skipped", {"error": str(exc)})
            ledger.update_job(cluster, rec.job_id, restored_at=clock_now(), held_by_us=False)
            report.outcomes.append(JobOutcome(cluster, rec.job_id, "restore", "skipped", str(exc)))
            continue
        except Exception as exc:  # typed scheduler errors or a surprise: reported, next job
            err = f"{type(exc).__name__}: {exc}"
            ledger.result(
                sid, clock_now(), "error", {"error": err, "restored": [c.what for c in changes]}
            )
            report.outcomes.append(
                JobOutcome(cluster, rec.job_id, "restore", "error", err, tuple(changes))
            )
            continue
        wrong = []
        for c in changes:
            orig = expect[c.what]
            if c.what == BEGIN:
                o = _dt(orig) if isinstance(orig, str) else None
                if o is not None and o > now:
                    ok = isinstance(c.after, datetime) and (
                        abs((c.after - o).total_seconds()) <= BEGIN_TOLERANCE_S
                    )
                else:  # eligible now: no begin time, or one that has come
                    ok = c.after is None or (
                        isinstance(c.after, datetime)
                        and c.after <= clock_now() + timedelta(seconds=5)
                    )
            else:
                ok = (c.after or "") == (orig or "") if c.what != HELD else c.after == orig
            if not ok:
                wrong.append(c.what)
        status = "error" if wrong else "ok"
        ledger.result(
            sid,
            clock_now(),
            status,
            {
                "changes": [
                    {"what": c.what, "before": _json(c.before), "after": _json(c.after)}
                    for c in changes
                ],
                "not_restored": wrong,
            },
        )
        if not wrong:
            ledger.update_job(
                cluster, rec.job_id, restored_at=clock_now(), held_by_us=False, release_at=None
            )
        report.outcomes.append(
            JobOutcome(
                cluster,
                rec.job_id,
                "restore",
                status,
                "restored "
                + ", ".join(c.what for c in changes)
                + (f"; differs: {wrong}" if wrong else ""),
                tuple(changes),
            )
        )
    return report


def steer_targets(cluster: JobClusterConfig) -> dict[str, SteerTarget]:
    """Pool -> :class:`SteerTarget` from a cluster's config (empty when ``steer = "none"``)."""
    mode = SteerMode(cluster.steer)
    if mode == SteerMode.NONE:
        return {}
    return {
        pool: SteerTarget(
            mode=mode,
            partition=t.partition or "",
            features=t.features or "",
            nodes=t.nodes or ",".join(f"{k}={v}" for k, v in sorted(t.node_selector.items())),
            node_selector=dict(t.node_selector),
        )
        for pool, t in cluster.pools.items()
    }
