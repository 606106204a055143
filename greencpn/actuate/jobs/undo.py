""":func:`undo_jobs`: restore every job greencpn touched from the originals in the ledger."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from greencpn.actuate.jobs.base import (
    BEGIN,
    HELD,
    STEER_FIELDS,
    JobActuator,
    JobChange,
    JobNotFoundError,
    JobNotPendingError,
)
from greencpn.actuate.jobs.execution import JobOutcome, JobReport, _json
from greencpn.actuate.jobs.rules import BEGIN_TOLERANCE_S, PHASE
from greencpn.actuate.ledger import Ledger, _dt

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
