"""Job actuation: pending jobs start where and when the plan says (docs/jobs.md).

One interface, :class:`~greencpn.actuate.jobs.base.JobActuator`, with backends ``slurm``,
``kubernetes`` (scheduling gates), ``command`` (any other scheduler) and ``fake`` (in memory).
:func:`make_job_actuator` builds one from a ``[[job_actuation.clusters]]`` entry.

Entry points (used by ``greencpn apply`` and the daemon's act phase):

* :func:`act_on_jobs` — one control step: read each cluster's pending jobs, decide (defer /
  hold / steer / release / fail-safe release), carry out or (shadow) record, read back, ledger;
* :func:`undo_all_jobs` — ``greencpn apply --undo-jobs``: restore every touched job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greencpn.actuate.jobs.base import (
    JobActuator,
    JobActuatorPermanentError,
    JobActuatorTemporaryError,
    JobChange,
    JobNotFoundError,
    JobNotPendingError,
    PendingJob,
    SteerMode,
    SteerTarget,
)
from greencpn.actuate.jobs.engine import (
    JobAction,
    JobOutcome,
    JobPolicy,
    JobReport,
    PlannedJob,
    decide,
    execute,
    latest_safe_start,
    planned_jobs,
    steer_targets,
    undo_jobs,
)
from greencpn.errors import ConfigError

if TYPE_CHECKING:
    from greencpn.actuate.ledger import Ledger
    from greencpn.config import JobActuationConfig, JobClusterConfig

__all__ = [
    "JobAction",
    "JobActuator",
    "JobActuatorPermanentError",
    "JobActuatorTemporaryError",
    "JobBackends",
    "JobChange",
    "JobNotFoundError",
    "JobNotPendingError",
    "JobOutcome",
    "JobPolicy",
    "JobReport",
    "PendingJob",
    "PlannedJob",
    "SteerMode",
    "SteerTarget",
    "act_on_jobs",
    "decide",
    "execute",
    "latest_safe_start",
    "make_job_actuator",
    "make_job_backends",
    "planned_jobs",
    "undo_all_jobs",
]


def _resolve_paths(cluster: JobClusterConfig, source: str | None) -> JobClusterConfig:
    """Relative ``slurm_conf``, ``token_file``, ``ca_file`` and ``command[0]`` (when it names a
    path) are relative to the config file, like every path in it."""
    if source is None:
        return cluster
    base = Path(source).parent

    def rel(value: str | None) -> str | None:
        return value if value is None or Path(value).is_absolute() else str(base / value)

    changes: dict[str, Any] = {
        "slurm_conf": rel(cluster.slurm_conf),
        "token_file": rel(cluster.token_file),
        "ca_file": rel(cluster.ca_file),
    }
    if cluster.command and "/" in cluster.command[0]:
        changes["command"] = [rel(cluster.command[0]), *cluster.command[1:]]
    return cluster.model_copy(update=changes)


def make_job_actuator(cluster: JobClusterConfig, *, source: str | None = None) -> JobActuator:
    """The actuator a ``[[job_actuation.clusters]]`` entry describes (``source``: the config
    file, which relative paths are resolved against)."""
    cluster = _resolve_paths(cluster, source)
    if cluster.kind == "slurm":
        from greencpn.actuate.jobs.slurm import SlurmJobActuator

        return SlurmJobActuator(
            cluster=cluster.name, slurm_conf=cluster.slurm_conf, timeout_s=cluster.timeout_s
        )
    if cluster.kind == "command":
        from greencpn.actuate.jobs.command import CommandJobActuator

        assert cluster.command is not None
        return CommandJobActuator(
            cluster=cluster.name, argv=list(cluster.command), timeout_s=cluster.timeout_s
        )
    if cluster.kind == "kubernetes":
        from greencpn.actuate.jobs.kubernetes import KubernetesJobActuator

        assert cluster.host is not None
        return KubernetesJobActuator(
            cluster=cluster.name,
            host=cluster.host,
            token_file=cluster.token_file,
            ca_file=cluster.ca_file,
            insecure_skip_tls_verify=cluster.insecure_skip_tls_verify,
            namespace=cluster.namespace,
            gate=cluster.gate,
            timeout_s=cluster.timeout_s,
            lease_namespace=cluster.lease_namespace,
            heartbeat_s=cluster.heartbeat_s,
        )
    if cluster.kind == "fake":
        from greencpn.actuate.jobs.fake import FakeJobActuator

        return FakeJobActuator(cluster=cluster.name)
    raise ConfigError(
        f"unknown job actuator kind {cluster.kind!r}",
        source=source,
        field="job_actuation.clusters.kind",
        fix='use "slurm", "kubernetes", "command" or "fake"',
    )


@dataclass
class JobBackends:
    """The job side of ``apply``: the ``[job_actuation]`` settings and one actuator per cluster."""

    config: JobActuationConfig
    actuators: Mapping[str, JobActuator]

    def cluster(self, name: str) -> JobClusterConfig:
        return next(c for c in self.config.clusters if c.name == name)

    def job_gpu_lookup(self) -> Callable[[str], Any] | None:
        """Job id -> its GPU indices per node, from the first cluster that reads them (Slurm:
        ``scontrol show job -d``) and knows the job running; None when no cluster can. A
        cluster that fails to answer raises (the job keeps the pool's cap)."""
        readers = [
            a.job_gpus  # type: ignore[attr-defined]
            for a in self.actuators.values()
            if callable(getattr(a, "job_gpus", None))
        ]
        if not readers:
            return None

        def lookup(job_id: str) -> Any:
            for read in readers:
                gpus = read(job_id)
                if gpus is not None:
                    return gpus
            return None

        return lookup


def make_job_backends(
    config: JobActuationConfig | None, *, source: str | None = None
) -> JobBackends | None:
    """All actuators of ``[job_actuation]`` (None when the config has no such section)."""
    if config is None:
        return None
    return JobBackends(
        config=config,
        actuators={c.name: make_job_actuator(c, source=source) for c in config.clusters},
    )


def act_on_jobs(
    plan: Mapping[str, Any],
    backends: JobBackends,
    ledger: Ledger,
    apply_id: int,
    *,
    clock_now: Callable[[], datetime],
    next_step_at: datetime,
    pool_ready: Callable[[str], bool],
    shadow: bool,
) -> JobReport:
    """One control step of job actuation over every configured cluster.

    A cluster whose scheduler cannot be read is reported (a note and an ``error`` outcome)
    and skipped; the others go on. Nothing here raises for a scheduler fault.
    """
    report = JobReport()
    plan_jobs = planned_jobs(plan)
    policy = JobPolicy.from_config(backends.config)
    for name, actuator in backends.actuators.items():
        ccfg = backends.cluster(name)
        try:
            pending = actuator.pending_jobs()
        except Exception as exc:  # typed scheduler errors or a surprise: this cluster waits
            err = f"{type(exc).__name__}: {exc}"
            ledger.record(
                apply_id,
                clock_now(),
                phase="jobs",
                action="read_pending",
                pool=None,
                targets=[name],
                status="error",
                detail={"error": err},
            )
            report.outcomes.append(JobOutcome(name, "-", "read_pending", "error", err))
            continue
        records = {r.job_id: r for r in ledger.jobs(name)}
        actions = decide(
            pending,
            plan_jobs,
            policy,
            now=clock_now(),
            next_step_at=next_step_at,
            pool_ready=pool_ready,
            targets=steer_targets(ccfg),
            records=records,
            sites=ccfg.sites,
            supports_begin_time=actuator.supports_begin_time,
            cluster=name,
        )
        # shadow rows change nothing outside the ledger: one transaction; act rows are each
        # durable before the scheduler call they describe
        with ledger.batch() if shadow else contextlib.nullcontext():
            execute(
                actions,
                actuator,
                ledger,
                apply_id,
                clock_now=clock_now,
                shadow=shadow,
                jobs={j.id: j for j in pending},
                report=report,
            )
        beat = getattr(actuator, "heartbeat", None)
        if callable(beat) and not shadow:
            _heartbeat(beat, name, ledger, apply_id, clock_now, report)
    return report


def _heartbeat(
    beat: Callable[[datetime], Any],
    cluster: str,
    ledger: Ledger,
    apply_id: int,
    clock_now: Callable[[], datetime],
    report: JobReport,
) -> None:
    """Renew a cluster's heartbeat lease (Kubernetes: the webhook gates only while it is
    fresh). Only when acting: in shadow mode nobody would release the pods it gates."""
    detail: dict[str, Any]
    try:
        lease = beat(clock_now())
        status, detail = "ok", {"lease": (lease.get("spec") if isinstance(lease, dict) else None)}
    except Exception as exc:  # the API is down: the lease runs out, the webhook stops gating
        err = f"{type(exc).__name__}: {exc}"
        status, detail = "error", {"error": err}
        report.outcomes.append(JobOutcome(cluster, "-", "heartbeat", "error", err))
    ledger.record(
        apply_id,
        clock_now(),
        phase="jobs",
        action="heartbeat",
        pool=None,
        targets=[cluster],
        status=status,
        detail=detail,
    )


def undo_all_jobs(
    backends: JobBackends, ledger: Ledger, apply_id: int, *, clock_now: Callable[[], datetime]
) -> JobReport:
    """``--undo-jobs``: restore every job greencpn touched, on every cluster."""
    report = JobReport()
    for actuator in backends.actuators.values():
        r = undo_jobs(actuator, ledger, apply_id, clock_now=clock_now)
        report.outcomes += r.outcomes
    return report
