"""The power phases: drain, wait idle and power off (2–3); power on (4). Power operations draw
from the rate limiter round-robin over pools; those without a token are deferred."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from greencpn.actuate.base import DeferredPowerOff, NodePower, PowerOffResult, PowerOffState
from greencpn.actuate.outcomes import StepStatus
from greencpn.actuate.phases.state import RunState
from greencpn.actuate.reconcile import (
    PoolDiff,
    _status_all,
)
from greencpn.actuate.safety import WORK_UNKNOWN, boot_timeout_s, counts_as_on


class PowerPhases(RunState):
    """Draining, powering off and powering on nodes through the pools' hooks."""

    def _grant(self, wanted: dict[str, list[str]]) -> dict[str, list[str]]:
        """Hand out rate-limit tokens round-robin over pools, in each pool's preference order,
        so one big pool cannot starve the others."""
        granted: dict[str, list[str]] = {k: [] for k in wanted}
        for i in range(max((len(v) for v in wanted.values()), default=0)):
            for pool, nodes in wanted.items():
                if i < len(nodes) and self.bucket.take():
                    granted[pool].append(nodes[i])
        return granted

    def _defer_over_rate(
        self, phase: str, op: str, pool: str, wanted: list[str], granted: list[str]
    ) -> list[str]:
        """Record the wanted nodes the rate limit did not grant as deferred; return the granted."""
        ok = set(granted)
        deferred = [n for n in wanted if n not in ok]
        if deferred:
            self.decide(
                phase,
                op,
                pool,
                deferred,
                StepStatus.DEFERRED,
                f"rate limit {self.settings.max_power_ops_per_min:g}/min; "
                f"next token in {self.bucket.seconds_until():.0f} s",
            )
        return granted

    def power_off_phase(self) -> None:
        """Drain every pool's chosen nodes, wait for all of them under one deadline, then
        power off the idle ones pool by pool (busy ones are resumed and skipped)."""
        granted = self._grant({d.name: d.power_off for d in self.diffs if d.power_off})
        drained: list[tuple[PoolDiff, list[str]]] = []
        for d in self.diffs:
            if d.work_unknown:
                self.decide(
                    "drain", "power_off", d.name, d.work_unknown, StepStatus.SKIPPED, WORK_UNKNOWN
                )
            if not d.power_off:
                continue
            nodes = self._defer_over_rate(
                "drain", "power_off", d.name, d.power_off, granted[d.name]
            )
            if not nodes:
                continue
            status = {s.name: s for s in _status_all(self._hook(d), nodes)}
            to_drain = [n for n in nodes if not status[n].drained]
            if to_drain:
                # marked before the call: after a crash or an error greencpn still knows it
                # may have drained them, and resumes them once they are not to be powered off
                self._mark(to_drain, drained_by_us=True)
                exc = self._call(
                    "drain",
                    "drain",
                    d,
                    to_drain,
                    partial(self._hook(d).drain, to_drain, "greencpn: power saving"),
                )
                if exc is not None:
                    self.failed_sites.add(d.site)
                    self.bucket.give_back(len(nodes))
                    continue
            drained.append((d, nodes))
        idle_all = self._wait_idle(drained)
        for d, nodes in drained:
            idle = [n for n in nodes if n in idle_all]
            busy = [n for n in nodes if n not in idle_all]
            if busy:
                self.bucket.give_back(len(busy))
                ours = [n for n in busy if self.ledger.node(n).drained_by_us]
                if ours:
                    exc = self._call(
                        "drain", "resume", d, ours, partial(self._hook(d).resume, ours)
                    )
                    if exc is None:
                        self._mark(ours, drained_by_us=False)
                self.decide(
                    "drain",
                    "power_off",
                    d.name,
                    busy,
                    StepStatus.SKIPPED,
                    f"still running work after {self.settings.drain_timeout_s:g} s drain; kept on",
                )
            if idle:
                self._power_off(d, idle)

    def _power_off(self, d: PoolDiff, idle: list[str]) -> None:
        exc = self._call("power_off", "power_off", d, idle, partial(self._hook(d).power_off, idle))
        if exc is not None:
            self.failed_sites.add(d.site)
            # nodes still on must not stay drained: give them back to the scheduler
            still_on = [
                st.name
                for st in _status_all(self._hook(d), idle)
                if counts_as_on(st) and self.ledger.node(st.name).drained_by_us
            ]
            if (
                still_on
                and self._call(
                    "power_off", "resume", d, still_on, partial(self._hook(d).resume, still_on)
                )
                is None
            ):
                self._mark(still_on, drained_by_us=False)
            for st in _status_all(self._hook(d), [n for n in idle if n not in still_on]):
                if st.power == NodePower.OFF:
                    now = self.now()
                    self.ledger.update_node(st.name, power="off", off_since=now, seen_at=now)
                    self.powered_off.add(st.name)
            return
        hook = self._hook(d)
        if isinstance(hook, DeferredPowerOff):
            idle = self._confirm_power_off(d, hook, idle)
            if not idle:
                return
        now = self.now()
        self._mark(
            idle,
            power="off",
            off_since=now,
            seen_at=now,
            boot_requested_at=None,
            boot_deadline=None,
        )
        self.powered_off.update(idle)

    def _confirm_power_off(
        self, d: PoolDiff, hook: DeferredPowerOff, nodes: list[str]
    ) -> list[str]:
        """The nodes whose deferred power-off was carried out (see
        :class:`~greencpn.actuate.base.DeferredPowerOff`), asked until none is pending or
        ``power_off_confirm_s`` has passed. A node whose power-off was aborted (work appeared
        at the agent's final check) is recorded as on, given back to the scheduler if
        greencpn drained it, and reported as an error; one still pending at the deadline is
        recorded as shutting down and reported. Either way its site's power-raising steps
        are skipped, as after any failed power-reducing step."""
        deadline = self.now() + timedelta(seconds=self.settings.power_off_confirm_s)
        decided: dict[str, PowerOffResult] = {}
        last: dict[str, PowerOffResult] = {}
        while True:
            waiting = [n for n in nodes if n not in decided]
            read = self.execute(partial(hook.power_off_results, waiting), f"confirm {d.name}")
            for r in read.result or []:
                last[r.node] = r
                if r.state != PowerOffState.PENDING:
                    decided[r.node] = r
            waiting = [n for n in nodes if n not in decided]
            if not waiting or self.now() >= deadline:
                break
            self.sleep(
                min(
                    self.settings.poll_interval_s, max(0.0, (deadline - self.now()).total_seconds())
                )
            )
        done = [n for n in nodes if n in decided and decided[n].state == PowerOffState.DONE]
        aborted = [n for n in nodes if n in decided and decided[n].state == PowerOffState.ABORTED]
        if aborted:
            self.failed_sites.add(d.site)
            self.decide(
                "power_off",
                "power_off",
                d.name,
                aborted,
                StepStatus.ERROR,
                "power off not carried out: "
                + "; ".join(f"{n}: {decided[n].message}" for n in aborted),
            )
            now = self.now()
            self._mark(aborted, power="on", seen_at=now)
            ours = [n for n in aborted if self.ledger.node(n).drained_by_us]
            if ours and (
                self._call("power_off", "resume", d, ours, partial(self._hook(d).resume, ours))
                is None
            ):
                self._mark(ours, drained_by_us=False)
        if waiting:
            self.failed_sites.add(d.site)
            why = read.error or "; ".join(
                f"{n}: {last[n].message}" for n in waiting if n in last and last[n].message
            )
            self.decide(
                "power_off",
                "power_off",
                d.name,
                waiting,
                StepStatus.ERROR,
                f"power off accepted but not reported done after "
                f"{self.settings.power_off_confirm_s:g} s; recorded as shutting down"
                + (f" ({why})" if why else ""),
            )
            self._mark(waiting, power="shutting_down", seen_at=self.now())
        return done

    def _wait_idle(self, drained: list[tuple[PoolDiff, list[str]]]) -> set[str]:
        """Poll the drained nodes until all are idle or ``drain_timeout_s`` has passed."""
        deadline = self.now() + timedelta(seconds=self.settings.drain_timeout_s)
        idle: set[str] = set()
        total = sum(len(nodes) for _, nodes in drained)
        while True:
            for d, nodes in drained:
                waiting = [n for n in nodes if n not in idle]
                if not waiting:
                    continue
                # drained by the hook call above; not every hook reports the flag back in status
                idle |= {s.name for s in _status_all(self._hook(d), waiting) if s.idle}
            if len(idle) == total or self.now() >= deadline:
                return idle
            self.sleep(
                min(
                    self.settings.poll_interval_s, max(0.0, (deadline - self.now()).total_seconds())
                )
            )

    def power_on_phase(self) -> None:
        granted = self._grant(
            {
                d.name: d.power_on
                for d in self.diffs
                if d.power_on and d.site not in self.failed_sites
            }
        )
        for d in self.diffs:
            if not d.power_on:
                continue
            if d.site in self.failed_sites:
                self.decide(
                    "power_on",
                    "power_on",
                    d.name,
                    d.power_on,
                    StepStatus.SKIPPED,
                    f"a power-reducing step failed at site {d.site}",
                )
                continue
            nodes = self._defer_over_rate(
                "power_on", "power_on", d.name, d.power_on, granted[d.name]
            )
            if not nodes:
                continue
            exc = self._call(
                "power_on", "power_on", d, nodes, partial(self._hook(d).power_on, nodes)
            )
            if exc is not None:
                continue
            now = self.now()
            assert d.pool_cfg is not None
            deadline = now + timedelta(
                seconds=boot_timeout_s(d.pool_cfg.boot_time_min, self.settings)
            )
            self._mark(
                nodes,
                power="booting",
                on_since=now,
                seen_at=now,
                boot_requested_at=now,
                boot_deadline=deadline,
            )
            for n in nodes:
                self.booting[n] = (d, deadline)
