"""Typed outcomes of an apply: the status of each step, the apply's mode and its verdict.

The statuses are :class:`~enum.StrEnum` members whose values are the strings the ledger and
the printed report have always used (``"ok"``, ``"partial"``, …): a member compares, hashes,
formats and serialises (JSON, SQLite) exactly as its value, so neither changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StepStatus(StrEnum):
    """The status of one step (a hook call, a cap change, or a decision without a call)."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"
    """Not done on purpose (a safety rule, a failed site, a cap outside the device range)."""
    DEFERRED = "deferred"
    """Over the power-operation rate limit: left to a later apply."""
    FAILED = "failed"
    """A node marked failed (boot timeout); left alone until cleared."""
    SHADOW = "shadow"
    """Shadow mode: recorded as what would be done, nothing changed."""

    @property
    def is_ok(self) -> bool:
        """Done, or (shadow) nothing was to be done: not a problem of the apply."""
        return self in (StepStatus.OK, StepStatus.SHADOW)


class Mode(StrEnum):
    """How an apply runs."""

    DRY_RUN = "dry-run"
    """Show the diff only; nothing is changed or written."""
    SHADOW = "shadow"
    """Record what would be done in the ledger; change nothing."""
    ACT = "act"


class ApplyOutcome(StrEnum):
    """The verdict of one apply (the ledger's ``applies.outcome``)."""

    DRY_RUN = "dry-run"
    SHADOW = "shadow"
    APPLIED = "applied"
    NOTHING_TO_DO = "nothing_to_do"
    PARTIAL = "partial"
    """Acted, but some step was not done (recorded in the ledger); exit status 1."""
    ERROR = "error"
    """An unexpected fault stopped the apply (recorded, then raised)."""


EXIT_NOT_OBSERVABLE = 3
"""Exit status when some nodes' status could not be read (docs/apply.md, "Exit status")."""


@dataclass(frozen=True)
class StepOutcome:
    """One reported step of an apply."""

    phase: str
    action: str
    pool: str | None
    targets: tuple[str, ...]
    status: StepStatus
    message: str = ""
