""":func:`execute`: carry the actions out through a cluster's actuator — original fields recorded
in the ledger first, an intent row, the call, the job read back, the result recorded — or, in
shadow mode, only record what would be done."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from greencpn.actuate.jobs.base import (
    BEGIN,
    HELD,
    STEER_FIELDS,
    JobActuator,
    JobChange,
    JobNotFoundError,
    JobNotPendingError,
    PendingJob,
)
from greencpn.actuate.jobs.decisions import JobAction
from greencpn.actuate.jobs.rules import BEGIN_TOLERANCE_S, PHASE
from greencpn.actuate.ledger import Ledger, _iso

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
