"""Job decisions of the act phase, and the interface job actuators plug into.

A job actuator (the separate job-actuation work, ``greencpn/actuate/jobs/``) implements
:class:`JobActuator`: ``defer`` (hold a pending job until a time), ``steer`` (send it to a site /
pool) and ``release`` (let the scheduler start it). Until one is configured the controller
records, per job, what it *would* do (status ``shadow``).

:func:`decide_jobs` turns the current slot of a plan into those decisions:

* a running job is never touched (``keep``, no call);
* a job the plan starts in the current slot is steered to its planned pool (if the plan places
  it) and released;
* a job the plan starts later is deferred until its planned start or its latest start
  (deadline minus its run time at full speed), whichever is earlier — and released now if that
  latest start comes before the next step (the end of this slot): no job is held past the point
  where holding it makes it miss its deadline, even if no later step runs;
* such a release at the latest start is the **fail-safe** (``detail["failsafe"]``): a ledger
  row ``job.release`` with that reason, and once per job the daemon's counter
  ``greencpn_jobs_failsafe_released_total{site,pool,backend}`` (:func:`failsafe_counts`);
* a pending job the plan does not mention (it arrived after the plan was made, or the plan is
  the safe plan) is released: the safe default is the scheduler's own behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from greencpn.config import JobConfig


@runtime_checkable
class JobActuator(Protocol):
    """Acts on queued jobs. Every method is idempotent and raises TemporaryError /
    PermanentError (greencpn.errors) on failure."""

    def defer(self, job_id: str, until: datetime) -> object: ...

    def steer(self, job_id: str, site: str, pool: str | None) -> object: ...

    def release(self, job_id: str) -> object: ...


@dataclass
class RecordingJobActuator:
    """A job actuator that only records the calls (tests and the what-if replay)."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)

    def defer(self, job_id: str, until: datetime) -> object:
        self.calls.append(("defer", job_id, until))
        return None

    def steer(self, job_id: str, site: str, pool: str | None) -> object:
        self.calls.append(("steer", job_id, (site, pool)))
        return None

    def release(self, job_id: str) -> object:
        self.calls.append(("release", job_id, None))
        return None


@dataclass(frozen=True)
class JobDecision:
    job_id: str
    kind: str  # defer | steer | release | keep
    detail: dict[str, Any]


def _parse(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def latest_start(job: JobConfig) -> datetime:
    return job.deadline - timedelta(hours=job.work_gpu_h / max(job.gpus, 1))


def decide_jobs(
    plan: dict[str, Any] | None,
    pending: Iterable[JobConfig],
    running_ids: set[str],
    now: datetime,
    slot_end: datetime,
) -> list[JobDecision]:
    planned = {j["id"]: j for j in (plan or {}).get("jobs", [])}
    out: list[JobDecision] = []
    for rid in sorted(running_ids):
        out.append(JobDecision(rid, "keep", {"reason": "running: never touched"}))
    for job in pending:
        if job.id in running_ids:
            continue
        pj = planned.get(job.id)
        start = _parse(pj.get("start")) if pj else None
        must = latest_start(job)
        if pj is None:
            out.append(JobDecision(job.id, "release", {"reason": "not in the plan"}))
            continue
        if start is not None and start < slot_end:
            if pj.get("pool"):
                out.append(
                    JobDecision(
                        job.id,
                        "steer",
                        {"site": pj.get("site"), "pool": pj.get("pool"), "start": pj.get("start")},
                    )
                )
            out.append(JobDecision(job.id, "release", {"reason": "planned start in this slot"}))
        elif must <= slot_end:
            # the fail-safe: the plan would hold it past its latest start (its pool has no room
            # or no nodes before then, or it is beyond the horizon): released anyway
            out.append(
                JobDecision(
                    job.id,
                    "release",
                    {
                        "reason": f"latest start {must.isoformat()} reached; never held past it",
                        "failsafe": True,
                        "site": pj.get("site"),
                        "pool": pj.get("pool"),
                        "latest_start": must.isoformat(),
                    },
                )
            )
        else:
            # never held past its latest start, even if no later step comes to release it
            until = min(start, must) if start is not None else must
            out.append(
                JobDecision(
                    job.id,
                    "defer",
                    {
                        "until": until.isoformat(),
                        "site": pj.get("site"),
                        "pool": pj.get("pool"),
                        "reason": "planned start" if start is not None else "beyond the horizon",
                    },
                )
            )
    return out


def failsafe_counts(
    released: Iterable[tuple[str, str, str, str]], last_ids: Iterable[str]
) -> tuple[list[dict[str, str]], list[str]]:
    """The fail-safe releases carried out in one step, once per job.

    ``released``: ``(job id, site, pool, backend)`` of each fail-safe release the job actuator
    carried out this step; ``last_ids``: the jobs counted by the previous step (a job the
    scheduler has not started yet is released again each step: counted once). Returns the
    new ``{"site", "pool", "backend"}`` entries and the ids to remember for the next step."""
    seen = set(last_ids)
    out = [
        {"site": site, "pool": pool, "backend": backend}
        for jid, site, pool, backend in released
        if jid not in seen
    ]
    return out, sorted({jid for jid, *_ in released})
