"""An in-memory :class:`~greencpn.actuate.jobs.base.JobActuator`: logic tests, demos, replay.

It behaves like a scheduler with begin times: :meth:`FakeJobActuator.start_due` starts every
pending, not-held job whose begin time has come (time is passed in). Failures are injected per
operation (and job) with :meth:`FakeJobActuator.fail`; every call is appended to ``calls``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from greencpn.actuate.jobs.base import (
    BEGIN,
    FEATURES,
    HELD,
    NODES,
    PARTITION,
    STEER_FIELDS,
    JobChange,
    JobNotFoundError,
    JobNotPendingError,
    PendingJob,
    SteerMode,
    SteerTarget,
)


class FakeJobActuator:
    name = "fake"
    supports_begin_time = True

    def __init__(self, jobs: Iterable[PendingJob] = (), *, cluster: str = "fake") -> None:
        self.cluster = cluster
        self.jobs: dict[str, PendingJob] = {j.id: j for j in jobs}
        self.calls: list[tuple[str, str, object]] = []
        self.started: dict[str, datetime] = {}
        self._failures: list[tuple[str, str | None, Exception]] = []

    # ------------------------------------------------------------------ test helpers
    def fail(self, op: str, exc: Exception, job_id: str | None = None) -> None:
        """Make ``op`` (``defer``, ``steer``, ``hold``, ``release``, ``restore``, ``pending_jobs``)
        raise ``exc`` (for ``job_id`` only, if given) until :meth:`clear_failures`."""
        self._failures.append((op, job_id, exc))

    def clear_failures(self) -> None:
        self._failures.clear()

    def start_due(self, now: datetime) -> list[str]:
        """Start every pending, unheld job whose begin time is due; returns their ids."""
        started = []
        for j in list(self.jobs.values()):
            if j.pending and not j.held and (j.begin_at is None or j.begin_at <= now):
                self.jobs[j.id] = dataclasses.replace(j, pending=False, state="RUNNING")
                self.started[j.id] = now
                started.append(j.id)
        return started

    # ------------------------------------------------------------------ interface
    def _check(self, op: str, job_id: str | None) -> None:
        for f_op, f_job, exc in self._failures:
            if f_op == op and (f_job is None or f_job == job_id):
                raise exc

    def _get(self, job_id: str, *, pending: bool = True) -> PendingJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"job {job_id} is not in the queue")
        if pending and not job.pending:
            raise JobNotPendingError(f"job {job_id} is {job.state}: not changed")
        return job

    def pending_jobs(self) -> list[PendingJob]:
        self.calls.append(("pending_jobs", "", None))
        self._check("pending_jobs", None)
        return [j for j in self.jobs.values() if j.pending]

    def running_jobs(self) -> list[PendingJob]:
        """Jobs :meth:`start_due` started (``extra["started_at"]``), still running."""
        return [
            dataclasses.replace(j, extra={**j.extra, "started_at": self.started.get(j.id)})
            for j in self.jobs.values()
            if j.state == "RUNNING"
        ]

    def read(self, job_id: str) -> PendingJob:
        return self._get(job_id, pending=False)

    def _set(self, op: str, job_id: str, what: str, value: object) -> JobChange:
        self.calls.append((op, job_id, value))
        self._check(op, job_id)
        job = self._get(job_id)
        before = job.value(what)
        key = {BEGIN: "begin_at", HELD: "held", PARTITION: "partition", FEATURES: "features"}
        changes: dict[str, Any] = {key.get(what, what): value}
        self.jobs[job_id] = dataclasses.replace(job, **changes)
        after = self.read(job_id).value(what)
        return JobChange(job_id, what, before, after, before != after)

    def defer(self, job_id: str, begin_at: datetime) -> JobChange:
        return self._set("defer", job_id, BEGIN, begin_at)

    def hold(self, job_id: str) -> JobChange:
        return self._set("hold", job_id, HELD, True)

    def release(self, job_id: str) -> JobChange:
        return self._set("release", job_id, HELD, False)

    def steer(self, job_id: str, target: SteerTarget) -> list[JobChange]:
        if target.mode == SteerMode.NONE:
            return []
        return [self._set("steer", job_id, STEER_FIELDS[target.mode], target.value)]

    def restore(self, job_id: str, what: str, value: object) -> JobChange:
        if what not in (BEGIN, HELD, PARTITION, FEATURES, NODES):
            raise ValueError(f"unknown job field {what!r}")
        return self._set("restore", job_id, what, value)
