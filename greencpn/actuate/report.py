"""The report of one apply: what was observed, each step's outcome, the verdict, the exit status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from greencpn.actuate.outcomes import (
    EXIT_NOT_OBSERVABLE,
    ApplyOutcome,
    Mode,
    StepOutcome,
    StepStatus,
)
from greencpn.actuate.plan_slot import SlotRef
from greencpn.actuate.reconcile import PoolDiff, unobservable
from greencpn.actuate.render import format_report


@dataclass
class ApplyReport:
    slot: SlotRef
    mode: str
    """A :class:`Mode` value: ``dry-run``, ``shadow`` or ``act``."""
    diffs: list[PoolDiff]
    steps: list[StepOutcome] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    apply_id: int | None = None
    failed_nodes: list[str] = field(default_factory=list)
    caps_not_applied: list[str] = field(default_factory=list)
    """GPUs (``node:gpuN``) whose cap was not applied: the target is outside the device range."""
    caps_not_read: list[str] = field(default_factory=list)
    """Nodes whose GPU caps could not be read or set (no GPU backend, GPU read error)."""
    jobs: Any = None  # greencpn.actuate.jobs.JobReport when [job_actuation] is configured

    @property
    def problems(self) -> list[StepOutcome]:
        return [s for s in self.steps if s.status not in (StepStatus.OK, StepStatus.SHADOW)]

    @property
    def changed(self) -> bool:
        jobs_ok = self.jobs is not None and any(o.status == "ok" for o in self.jobs.outcomes)
        return jobs_ok or any(s.status == StepStatus.OK for s in self.steps)

    @property
    def job_problems(self) -> bool:
        return self.jobs is not None and bool(self.jobs.problems)

    @property
    def outcome(self) -> ApplyOutcome:
        if self.mode != Mode.ACT:
            return ApplyOutcome(self.mode)
        if self.problems or self.job_problems:
            return ApplyOutcome.PARTIAL
        return ApplyOutcome.APPLIED if self.changed else ApplyOutcome.NOTHING_TO_DO

    @property
    def unknown_nodes(self) -> list[str]:
        return unobservable(self.diffs)

    @property
    def exit_code(self) -> int:
        """0 done/nothing to do/dry run/shadow; 1 partial (act); 3 some nodes not observable."""
        if self.unknown_nodes:
            return EXIT_NOT_OBSERVABLE
        return 1 if self.mode == Mode.ACT and (self.problems or self.job_problems) else 0

    def format(self) -> str:
        """The report as text (:func:`greencpn.actuate.render.format_report`)."""
        return format_report(self)
