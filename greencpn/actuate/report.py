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
    job_caps_not_applied: list[str] = field(default_factory=list)
    """Jobs (``job:ID``) whose own cap was not applied; their GPUs kept the pool's cap."""
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

    def as_dict(self) -> dict[str, Any]:
        """The report as one JSON document, schema ``greencpn.apply-report/1``
        (docs/apply.md, "--json"): ``slot`` {index, start, end}, ``mode``, ``outcome``,
        ``exit_code``, ``pools`` (per pool: plan / target / observed nodes on and the nodes to
        power off, on and resume), ``steps`` (phase, action, pool, targets, status, message),
        ``warnings``, ``interrupted``, ``failed_nodes``, ``caps_not_applied``,
        ``caps_not_read``, ``job_caps_not_applied``, ``unknown_nodes`` and ``jobs`` (counts and outcomes, or null)."""

        def iso(ts: Any) -> str:
            return ts.strftime("%Y-%m-%dT%H:%M:%SZ")

        jobs = None
        if self.jobs is not None:
            jobs = {
                "counts": self.jobs.counts,
                "outcomes": [
                    {
                        k: (v if isinstance(v, str | int | float | bool | None) else str(v))
                        for k, v in vars(o).items()
                    }
                    for o in self.jobs.outcomes
                ],
                "notes": list(self.jobs.notes),
            }
        return {
            "schema": "greencpn.apply-report/1",
            "slot": {
                "index": self.slot.index,
                "start": iso(self.slot.start),
                "end": iso(self.slot.end),
            },
            "mode": str(self.mode),
            "outcome": str(self.outcome.value if hasattr(self.outcome, "value") else self.outcome),
            "exit_code": self.exit_code,
            "pools": [
                {
                    "name": d.name,
                    "site": d.site,
                    "hook": d.hook_kind,
                    "plan_nodes_on": d.plan_nodes_on,
                    "target_nodes_on": d.target_nodes_on,
                    "on_now": d.on_now,
                    "power_off": list(d.power_off),
                    "power_on": list(d.power_on),
                    "resume": list(d.resume),
                }
                for d in self.diffs
            ],
            "steps": [
                {
                    "phase": st.phase,
                    "action": st.action,
                    "pool": st.pool,
                    "targets": list(st.targets),
                    "status": str(st.status.value if hasattr(st.status, "value") else st.status),
                    "message": st.message,
                }
                for st in self.steps
            ],
            "warnings": list(self.warnings),
            "interrupted": list(self.interrupted),
            "failed_nodes": list(self.failed_nodes),
            "caps_not_applied": list(self.caps_not_applied),
            "caps_not_read": list(self.caps_not_read),
            "job_caps_not_applied": list(self.job_caps_not_applied),
            "unknown_nodes": list(self.unknown_nodes),
            "jobs": jobs,
        }
