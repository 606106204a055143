"""The control step's public types (the shape the daemon codes against; see CONTROLLER_API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from greencpn.config import JobConfig
from greencpn.errors import GreencpnError


class Mode(StrEnum):
    """``shadow`` records what would be done and changes nothing; ``enforce`` acts."""

    SHADOW = "shadow"
    ENFORCE = "enforce"


@dataclass(frozen=True)
class Levers:
    """Per-pool opt-in, so an operator can trust the controller lever by lever.

    Attributes:
        caps: set GPU power caps.
        power: switch nodes on and off.
        jobs: defer / steer / release jobs.
    """

    caps: bool = True
    power: bool = True
    jobs: bool = True


class StepStatus(StrEnum):
    OK = "ok"  # every phase did what it should
    DEGRADED = "degraded"  # a fallback was used or some actions failed; the rest went on
    FAILED = "failed"  # no plan could be made; the safe plan was applied
    SKIPPED = "skipped"  # not run (e.g. not the leader)


class NotLeaderError(GreencpnError):
    """Raised by a fence callable: this instance no longer leads; the act phase stops acting."""


@dataclass(frozen=True)
class RunningJob:
    """A job the queue reports as running (observed, never moved by a re-plan).

    Attributes:
        job: the job as submitted (its id, GPUs, work, deadline, checkpointable flag).
        pool: the pool it runs in.
        started_at: when it started (UTC).
        remaining_gpu_h: work still to do, GPU-hours at full power.
        nodes: the nodes it holds (if known).
    """

    job: JobConfig
    pool: str
    started_at: datetime
    remaining_gpu_h: float
    nodes: tuple[str, ...] = ()


@dataclass
class QueueState:
    """What the queue looks like now: jobs waiting and jobs running."""

    pending: list[JobConfig] = field(default_factory=list)
    running: list[RunningJob] = field(default_factory=list)
    source: str = "config"


@dataclass
class StepResult:
    step_id: int
    started_at: datetime
    finished_at: datetime
    slot_start: datetime
    status: StepStatus
    mode: Mode
    solver_status: str | None
    mip_gap: float | None
    phase_s: dict[str, float]  # observe, forecast, optimize, reconcile, act, record
    sources: dict[str, dict]  # per site: {"source", "issued_at", "freshness"}
    actions: list[dict]  # {"kind","target","detail","status","epoch"}
    errors: list[dict]  # {"type","where","message"}
    plan: dict[str, Any] | None  # the plan document (plan.json shape)
    metrics: dict[str, Any]
    plan_origin: str = "optimized"  # optimized | previous_shifted | safe | none
