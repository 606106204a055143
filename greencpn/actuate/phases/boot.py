"""Waiting for boot (5) — a node not up within its boot timeout is marked failed — and
resuming the nodes greencpn drained that are on again (6)."""

from __future__ import annotations

from functools import partial

from greencpn.actuate.base import NodePower
from greencpn.actuate.outcomes import StepStatus
from greencpn.actuate.phases.state import RunState
from greencpn.actuate.reconcile import (
    _status_all,
)


class BootPhases(RunState):
    """Boot wait and resume."""

    def wait_boot_phase(self) -> None:
        if not self.booting:
            return
        if not self.settings.wait_for_boot:
            self.out(
                "wait_boot",
                "wait_boot",
                None,
                sorted(self.booting),
                StepStatus.OK,
                "not waiting (wait_for_boot = false); a later apply checks the boot deadline",
            )
            return
        pending = dict(self.booting)
        while pending:
            by_pool: dict[str, list[str]] = {}
            for n, (d, _) in pending.items():
                by_pool.setdefault(d.name, []).append(n)
            for pool, nodes in by_pool.items():
                d = pending[nodes[0]][0]
                for st in _status_all(self._hook(d), nodes):
                    if st.power == NodePower.ON:
                        del pending[st.name]
                        now = self.now()
                        rec = self.ledger.node(st.name)
                        took = (
                            f"on after {(now - rec.boot_requested_at).total_seconds():.0f} s"
                            if rec.boot_requested_at
                            else "on"
                        )
                        self.ledger.update_node(
                            st.name,
                            power="on",
                            seen_at=now,
                            boot_requested_at=None,
                            boot_deadline=None,
                        )
                        if rec.drained_by_us:
                            d.resume.append(st.name)
                        self.decide("wait_boot", "booted", pool, [st.name], StepStatus.OK, took)
            now = self.now()
            overdue = [n for n, (_, dl) in pending.items() if now >= dl]
            for n in overdue:
                d, dl = pending.pop(n)
                reason = f"not on within its boot timeout (deadline {dl.isoformat()})"
                self.ledger.update_node(
                    n, failed=True, failed_at=now, failed_reason=reason, boot_deadline=None
                )
                self.decide(
                    "wait_boot",
                    "mark_failed",
                    d.name,
                    [n],
                    StepStatus.FAILED,
                    reason + "; left alone",
                )
                self.report.failed_nodes.append(n)
            if pending:
                next_dl = min(dl for _, dl in pending.values())
                self.sleep(
                    max(
                        0.0,
                        min(self.settings.poll_interval_s, (next_dl - self.now()).total_seconds()),
                    )
                )

    def resume_phase(self) -> None:
        for d in self.diffs:
            nodes = sorted(set(d.resume) - self.powered_off)
            if not nodes:
                continue
            exc = self._call("resume", "resume", d, nodes, partial(self._hook(d).resume, nodes))
            if exc is None:
                self._mark(nodes, drained_by_us=False)
