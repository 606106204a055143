"""The job actuation rules every step shares: the policy (exclusions, slack, defer mode), a job's
deadline and latest safe start, and the steer targets of a cluster."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from greencpn.actuate.jobs.base import (
    PendingJob,
    SteerMode,
    SteerTarget,
)

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
