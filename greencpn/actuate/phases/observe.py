"""Phase 0, observe: record what was seen in the ledger; mark overdue boots failed."""

from __future__ import annotations

from typing import Any

from greencpn.actuate.base import NodePower
from greencpn.actuate.ledger import NodeRecord
from greencpn.actuate.outcomes import StepStatus
from greencpn.actuate.phases.state import RunState


class ObservePhase(RunState):
    """Record the observed node states (before anything is touched)."""

    # ---------------------------------------------------------------- observations
    def record_observations(self) -> None:
        with self.ledger.batch():
            self._record_observations()

    def _record_observations(self) -> None:
        now = self.now()
        # one query for the fleet; each node is in one pool, so its record is read before its
        # own update below
        known = self.ledger.node_records() if any(d.actuated for d in self.diffs) else {}
        for d in self.diffs:
            if not d.actuated:
                continue
            for st in d.statuses:
                if st.power == NodePower.UNKNOWN:
                    continue
                rec = known.get(st.name) or NodeRecord(name=st.name)
                fields: dict[str, Any] = {"pool": d.name, "power": st.power.value, "seen_at": now}
                was_on = rec.power in ("on", "booting")
                is_on = st.power in (NodePower.ON, NodePower.BOOTING)
                if rec.power is not None and was_on != is_on:  # changed outside greencpn
                    fields["on_since" if is_on else "off_since"] = now
                if st.power == NodePower.ON and rec.boot_deadline is not None and not rec.failed:
                    fields.update(boot_requested_at=None, boot_deadline=None)
                self.ledger.update_node(st.name, **fields)
            for h in d.mark_failed:
                self.ledger.update_node(
                    h.node, failed=True, failed_at=now, failed_reason=h.reason, boot_deadline=None
                )
                self.decide("observe", "mark_failed", d.name, [h.node], StepStatus.FAILED, h.reason)
                self.report.failed_nodes.append(h.node)
