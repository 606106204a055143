"""The journal: every step of an apply goes to the ledger before it runs (intent) and after
(result), and into the apply's report (:class:`~greencpn.actuate.outcomes.StepOutcome`).

:class:`Journal` is the base of the phases' state (:mod:`greencpn.actuate.phases`): its
methods are the only places a phase writes a step. A hook call's exception becomes the
step's outcome in :func:`greencpn.actuate.execution.execute` (with the retry a
``TemporaryError(retry_after_s)`` asks for, within :attr:`retry_budget_s`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from greencpn.actuate.base import NodePowerHook
from greencpn.actuate.execution import Outcome, execute
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.outcomes import StepOutcome, StepStatus
from greencpn.actuate.reconcile import Backends, PoolDiff, _status_all
from greencpn.actuate.report import ApplyReport
from greencpn.clock import Clock


class Journal:
    """Ledger and report of one apply (``apply_id``), and the hooks the steps go through."""

    def __init__(
        self,
        report: ApplyReport,
        backends: Backends,
        ledger: Ledger,
        clock: Clock,
        apply_id: int,
        *,
        sleep: Callable[[float], None],
        retry_budget_s: float = 0.0,
    ) -> None:
        self.report = report
        self.backends = backends
        self.ledger = ledger
        self.clock = clock
        self.apply_id = apply_id
        self.sleep = sleep
        self.retry_budget_s = retry_budget_s

    def execute(self, fn: Callable[[], Any], what: str) -> Outcome[Any]:
        """Run one hook or GPU call: its exception becomes the outcome (see
        :mod:`greencpn.actuate.execution`)."""
        return execute(
            fn, clock=self.clock, sleep=self.sleep, budget_s=self.retry_budget_s, what=what
        )

    def now(self) -> datetime:
        return self.clock.now()

    def out(
        self,
        phase: str,
        action: str,
        pool: str | None,
        targets: Sequence[str],
        status: StepStatus,
        message: str = "",
    ) -> None:
        self.report.steps.append(
            StepOutcome(phase, action, pool, tuple(targets), StepStatus(status), message)
        )

    def decide(
        self,
        phase: str,
        action: str,
        pool: str | None,
        targets: Sequence[str],
        status: StepStatus,
        message: str,
    ) -> None:
        """A decision with no hardware call (skip, defer, mark failed): recorded and reported."""
        self.ledger.record(
            self.apply_id,
            self.now(),
            phase=phase,
            action=action,
            pool=pool,
            targets=list(targets),
            status=status,
            detail={"message": message},
        )
        self.out(phase, action, pool, targets, status, message)

    def _hook(self, d: PoolDiff) -> NodePowerHook:
        hook = self.backends.hooks.get(d.name)
        assert hook is not None
        return hook

    def _call(
        self,
        phase: str,
        action: str,
        d: PoolDiff,
        nodes: list[str],
        fn: Callable[[], object],
        detail: dict[str, Any] | None = None,
    ) -> Exception | None:
        """Run one hook call with intent/result in the ledger; returns the exception, if any."""
        sid = self.ledger.intent(
            self.apply_id,
            self.now(),
            phase=phase,
            action=action,
            pool=d.name,
            targets=nodes,
            detail=detail,
        )
        outcome = self.execute(fn, f"{phase} {action} {d.name}")
        retries = (
            {"attempts": outcome.attempts, "retry_waits_s": outcome.waited_s}
            if outcome.attempts > 1
            else {}
        )
        if outcome.exception is not None:
            after = {s.name: s.power.value for s in _status_all(self._hook(d), nodes)}
            self.ledger.result(
                sid,
                self.now(),
                StepStatus.ERROR,
                {"error": outcome.error, "observed_after": after, **retries},
            )
            self.out(
                phase,
                action,
                d.name,
                nodes,
                StepStatus.ERROR,
                f"{outcome.error}; observed after: "
                + ", ".join(f"{n}={p}" for n, p in after.items()),
            )
            return outcome.exception
        changes = outcome.result
        self.ledger.result(
            sid,
            self.now(),
            StepStatus.OK,
            {
                "changes": [
                    dataclasses.asdict(c)
                    if dataclasses.is_dataclass(c) and not isinstance(c, type)
                    else str(c)
                    for c in (changes if isinstance(changes, list) else [])
                ],
                **retries,
            },
        )
        self.out(
            phase,
            action,
            d.name,
            nodes,
            StepStatus.OK,
            f"after {outcome.attempts} attempts" if outcome.attempts > 1 else "",
        )
        return None

    def _mark(self, nodes: Sequence[str], **fields: Any) -> None:
        """Update the ledger records of many nodes in one transaction."""
        with self.ledger.batch():
            for n in nodes:
                self.ledger.update_node(n, **fields)
