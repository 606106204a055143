"""The observe phase: node and GPU state through the pools' hooks, the apply ledger's
failed marks, and the queue (pending and running jobs). Split from ``step.py`` (pure moves).
"""

from __future__ import annotations

from greencpn.actuate.base import NodePower, NodeStatus
from greencpn.actuate.hostlist import expand
from greencpn.actuate.ledger import LEDGER_FILE as APPLY_LEDGER_FILE
from greencpn.actuate.ledger import Ledger
from greencpn.controller.base import NODE_STATES, ControllerBase, Observation
from greencpn.controller.types import (
    QueueState,
)


class ObservePhase(ControllerBase):
    def _apply_failed(self) -> set[str]:
        if not (self.state_dir / APPLY_LEDGER_FILE).is_file():
            return set()
        led = Ledger.open_readonly(self.state_dir)
        try:
            return led.failed_names()
        finally:
            led.close()

    def observe(self, errors: list[dict], *, hardware: bool = True) -> Observation:
        obs = Observation()
        marked_failed = self._apply_failed()
        hooks = self.backends.hooks if hardware else {}
        for pool in self._cfg.pools:
            nodes = expand(pool.hostlist) if pool.hostlist else []
            hook = hooks.get(pool.name)
            counts = dict.fromkeys(NODE_STATES, 0)
            if hook is None or not nodes:
                on = pool.nodes if pool.initial_on is None else pool.initial_on
                obs.initial_on[pool.name] = on
                obs.failed[pool.name] = len(marked_failed & set(nodes))
                counts["on"], counts["off"] = on, pool.nodes - on
                obs.counts[pool.name] = counts
                continue
            try:
                got = {s.name: s for s in hook.status(nodes)}
                sts = [
                    got.get(n) or NodeStatus(n, NodePower.UNKNOWN, detail="no reply") for n in nodes
                ]
            except Exception as exc:
                errors.append(
                    {
                        "type": "observe",
                        "where": f"pool {pool.name}",
                        "message": f"{type(exc).__name__}: {exc}",
                    }
                )
                sts = [NodeStatus(n, NodePower.UNKNOWN, detail="status failed") for n in nodes]
            obs.statuses[pool.name] = sts
            failed = 0
            on = 0
            for st in sts:
                if st.power == NodePower.FAILED or st.name in marked_failed:
                    counts["failed"] += 1
                    failed += 1
                    continue
                if st.power == NodePower.ON and st.drained:
                    counts["draining"] += 1
                elif st.power == NodePower.ON:
                    counts["on"] += 1
                elif st.power == NodePower.BOOTING:
                    counts["booting"] += 1
                elif st.power in (NodePower.OFF, NodePower.SHUTTING_DOWN):
                    counts["off"] += 1
                else:
                    counts["unknown"] += 1
                if st.power in (NodePower.ON, NodePower.BOOTING, NodePower.UNKNOWN):
                    on += 1  # unknown counts as on: the plan never assumes capacity is free
            # the plan's pool has nodes − failed nodes (inputs.without_failed)
            obs.initial_on[pool.name] = min(on, len(nodes) - failed)
            obs.failed[pool.name] = failed
            obs.counts[pool.name] = counts
        try:
            obs.queue = self.queue.observe(self.clock.now())
        except Exception as exc:
            errors.append(
                {"type": "queue", "where": "observe", "message": f"{type(exc).__name__}: {exc}"}
            )
            obs.queue = QueueState(pending=list(self._cfg.jobs), source="config (queue failed)")
        return obs
