"""The job side of actuation: one interface for every scheduler, typed errors, value types.

A :class:`JobActuator` makes a *pending* job start where and when the plan says:

* :meth:`~JobActuator.pending_jobs` reads the scheduler's pending jobs with what greencpn needs
  (GPUs, time limit as the work estimate, the scheduler's own deadline, user/account/partition/QOS
  for the exclusion rules, current begin time, partition, features, required nodes);
* :meth:`~JobActuator.defer` sets the job's begin time (the scheduler starts it by itself then,
  even if greencpn is gone); :meth:`~JobActuator.hold` / :meth:`~JobActuator.release` for sites
  that prefer holds (or schedulers without a begin time, e.g. a Kubernetes scheduling gate);
* :meth:`~JobActuator.steer` moves it to the planned pool (partition, features or nodes);
* :meth:`~JobActuator.read` reads one job back (every change is checked against it);
* :meth:`~JobActuator.restore` puts one field back to its recorded original (undo).

Every write returns :class:`JobChange` rows (field, before, after, changed), read back from the
scheduler, never from what was asked. Errors are typed by what the caller should do:
:class:`JobActuatorTemporaryError` (retry later), :class:`JobActuatorPermanentError` (skip the
job and report), :class:`JobNotFoundError` and :class:`JobNotPendingError` (the job left the
queue or started: nothing to do, never an error for the plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from greencpn.errors import PermanentError, TemporaryError


class JobActuatorTemporaryError(TemporaryError):
    """The scheduler did not answer or refused for now (controller down, busy, timeout)."""


class JobActuatorPermanentError(PermanentError):
    """The change cannot be made as configured (no permission, bad partition, unknown field)."""


class JobNotFoundError(JobActuatorPermanentError):
    """The job is not (or no longer) in the scheduler's queue."""


class JobNotPendingError(JobActuatorPermanentError):
    """The job has started (or ended): greencpn never changes running jobs."""


class SteerMode(StrEnum):
    """How a job is sent to its planned pool."""

    NONE = "none"
    PARTITION = "partition"
    FEATURES = "features"
    NODES = "nodes"


# Field names used in JobChange.what and in the ledger's recorded originals.
BEGIN = "begin_at"
HELD = "held"
PARTITION = "partition"
FEATURES = "features"
NODES = "required_nodes"
STEER_FIELDS = {
    SteerMode.PARTITION: PARTITION,
    SteerMode.FEATURES: FEATURES,
    SteerMode.NODES: NODES,
}


@dataclass(frozen=True)
class PendingJob:
    """A job as the scheduler shows it (all times UTC).

    Attributes:
        id: the scheduler's job id (Slurm ``job_id``, Kubernetes ``namespace/name``).
        cluster: which cluster it is queued on.
        state: the scheduler's state word (``PENDING``, ``RUNNING``, ``Pending``...).
        pending: True when greencpn may touch it (not started, not finished).
        gpus: GPUs it asks for (0 if none).
        time_limit_s: its time limit, the work estimate at full power; None = unlimited.
        submit_at: when it was submitted.
        begin_at: its current begin time (earliest start), None if not set.
        deadline: the scheduler's own deadline (Slurm ``--deadline``), None if none.
        held: whether it is held (Slurm priority 0 / user hold; Kubernetes: gated).
        partition, features, required_nodes: placement constraints as the scheduler has them.
        user, account, qos: for the exclusion rules.
        gated: held by greencpn's scheduling gate since creation (greencpn releases it).
        extra: backend-specific details (read only).
    """

    id: str
    cluster: str = ""
    state: str = "PENDING"
    pending: bool = True
    gpus: int = 0
    time_limit_s: float | None = None
    submit_at: datetime | None = None
    begin_at: datetime | None = None
    deadline: datetime | None = None
    held: bool = False
    partition: str = ""
    features: str = ""
    required_nodes: str = ""
    user: str = ""
    account: str = ""
    qos: str = ""
    gated: bool = False
    """Held by greencpn's own gate from creation (Kubernetes scheduling gate): greencpn's to release."""
    extra: dict[str, object] = field(default_factory=dict)

    def value(self, what: str) -> object:
        """The current value of a field greencpn changes (``begin_at``, ``held``, ...)."""
        return {
            BEGIN: self.begin_at,
            HELD: self.held,
            PARTITION: self.partition,
            FEATURES: self.features,
            NODES: self.required_nodes,
        }[what]


@dataclass(frozen=True)
class SteerTarget:
    """Where a job should run, in the scheduler's terms (only the mode's field is used)."""

    mode: SteerMode
    partition: str = ""
    features: str = ""
    nodes: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)  # Kubernetes node labels

    @property
    def value(self) -> str:
        return {
            SteerMode.NONE: "",
            SteerMode.PARTITION: self.partition,
            SteerMode.FEATURES: self.features,
            SteerMode.NODES: self.nodes,
        }[self.mode]


@dataclass(frozen=True)
class JobChange:
    """One field of one job: the value before, the value read back after, whether it changed."""

    job_id: str
    what: str
    before: object
    after: object
    changed: bool
    message: str = ""


@runtime_checkable
class JobActuator(Protocol):
    """Makes pending jobs start when and where the plan says. See the module docstring."""

    name: str
    cluster: str
    supports_begin_time: bool
    """False for schedulers without a begin time (Kubernetes gates): defer = hold."""

    def pending_jobs(self) -> list[PendingJob]: ...

    def read(self, job_id: str) -> PendingJob:
        """The job as the scheduler has it now (raises JobNotFoundError if it is gone)."""
        ...

    def defer(self, job_id: str, begin_at: datetime) -> JobChange:
        """Set the job's begin time (earliest start) to ``begin_at``; read back."""
        ...

    def hold(self, job_id: str) -> JobChange: ...

    def release(self, job_id: str) -> JobChange: ...

    def steer(self, job_id: str, target: SteerTarget) -> list[JobChange]:
        """Constrain the job to ``target`` (partition / features / nodes); read back."""
        ...

    def restore(self, job_id: str, what: str, value: object) -> JobChange:
        """Put one field (``begin_at``, ``held``, ``partition``, ...) back to ``value``."""
        ...


def find_jobs(actuator: JobActuator, ids: Sequence[str]) -> dict[str, PendingJob]:
    """The pending jobs among ``ids`` (one listing call, not one per job)."""
    wanted = set(ids)
    return {j.id: j for j in actuator.pending_jobs() if j.id in wanted}
