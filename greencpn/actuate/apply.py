"""Apply one slot of a plan to the fleet, safely.

``apply_plan`` reads the plan's target for one slot (per pool: nodes on and the GPU power
cap), observes the fleet (node status through each pool's hook, GPU caps through each node's
:class:`~greencpn.actuate.base.GpuBackend`), computes the diff, prints it, and — unless it is a
dry run or the controller is in shadow mode — carries it out in this order:

1. **lower caps** on GPUs whose cap is above the target (power goes down first);
2. **drain** the nodes chosen for power-off (all pools) and wait (bounded, one deadline for
   all) until they are idle; a node still busy is resumed (if greencpn drained it), skipped
   and reported;
3. **power off** the idle drained nodes;
4. **power on** the nodes chosen for start-up (wake before work moves there);
5. **wait for boot** (bounded by each pool's boot timeout); a node not up in time is marked
   *failed* and left alone;
6. **resume** nodes greencpn drained that are on again, so the scheduler can use them;
7. **raise caps** (and set caps on freshly booted nodes) — power goes up last.

Steps 4–7 increase power; they are skipped at a site where a power-reducing step (1–3) failed
with an error, so a site never ends above the plan because a reduction failed. Power
operations (3, 4) draw from the rate limiter, round-robin over pools; those without a token
are deferred to a later apply. Every step is written to the ledger before it runs (intent) and after (result); on a GPU
error the caps already set on that pool in that step are rolled back, and the rollback is
recorded too. See :mod:`greencpn.actuate.safety` for the rules.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from greencpn.actuate.base import NodePower, NodePowerHook
from greencpn.actuate.hooks._common import HookLifecycle, hook_lifecycle
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.outcomes import (
    StepOutcome,
    StepStatus,
)
from greencpn.actuate.plan_file import (
    SCHEMA_RE,
    check_plan_against_config,
    validate_plan,
)
from greencpn.actuate.plan_slot import (
    SlotRef,
    load_plan,
    other_slot_warning,
    resolve_slot,
)
from greencpn.actuate.reconcile import (
    NO_GPU_BACKEND,
    Backends,
    CapChange,
    PoolDiff,
    _cap_changes,
    _list_gpus,
    _status_all,
    compute_diff,
)
from greencpn.actuate.render import format_diff
from greencpn.actuate.report import ApplyReport
from greencpn.actuate.safety import (
    WORK_UNKNOWN,
    ControlSettings,
    Held,
    TokenBucket,
    boot_timeout_s,
    counts_as_on,
)
from greencpn.clock import Clock
from greencpn.config import FleetConfig
from greencpn.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["SCHEMA_RE", "load_plan"]
TOKEN_KEY = "power_ops_bucket"


# --------------------------------------------------------------------------- execution


class _Run:
    """One apply in ``act`` or ``shadow`` mode (state for the phases)."""

    def __init__(
        self,
        diffs: list[PoolDiff],
        report: ApplyReport,
        backends: Backends,
        ledger: Ledger,
        settings: ControlSettings,
        clock: Clock,
        sleep: Callable[[float], None],
        apply_id: int,
    ) -> None:
        self.diffs = diffs
        self.report = report
        self.backends = backends
        self.ledger = ledger
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.apply_id = apply_id
        self.failed_sites: set[str] = set()
        self.bucket = TokenBucket.from_state(
            ledger.get_kv(TOKEN_KEY),
            settings.max_power_ops_per_min,
            settings.power_ops_burst,
            clock,
        )
        self.booting: dict[str, tuple[PoolDiff, datetime]] = {}  # node -> pool, deadline
        self.powered_off: set[str] = set()

    def now(self) -> datetime:
        return self.clock.now()

    def out(
        self,
        phase: str,
        action: str,
        pool: str | None,
        targets: Sequence[str],
        status: str,
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
        status: str,
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

    # ---------------------------------------------------------------- observations
    def record_observations(self) -> None:
        with self.ledger.batch():
            self._record_observations()

    def _record_observations(self) -> None:
        now = self.now()
        for d in self.diffs:
            if not d.actuated:
                continue
            for st in d.statuses:
                if st.power == NodePower.UNKNOWN:
                    continue
                rec = self.ledger.node(st.name)
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
                self.decide("observe", "mark_failed", d.name, [h.node], "failed", h.reason)
                self.report.failed_nodes.append(h.node)

    # ---------------------------------------------------------------- GPU caps
    def set_caps(self, phase: str, d: PoolDiff, changes: Sequence[CapChange]) -> None:
        if not changes:
            return
        sid = self.ledger.intent(
            self.apply_id,
            self.now(),
            phase=phase,
            action="set_power_cap",
            pool=d.name,
            targets=[c.target for c in changes],
            detail={
                "target_w": d.target_cap_w,
                "before_w": {c.target: c.before_w for c in changes},
            },
        )
        done: list[CapChange] = []
        for c in changes:
            gb = self.backends.gpus(c.node)
            try:
                if gb is None:
                    raise RuntimeError(f"no GPU backend for {c.node}")
                gb.set_power_limit_w(c.index, c.after_w)
            except Exception as exc:
                self._cap_failure(phase, d, sid, done, c, exc)
                return
            done.append(c)
        self.ledger.result(sid, self.now(), "ok", {"set_w": {c.target: c.after_w for c in done}})
        self.out(
            phase,
            "set_power_cap",
            d.name,
            [c.target for c in done],
            "ok",
            f"{len(done)} GPU(s) to {d.target_cap_w:g} W",
        )

    def _cap_failure(
        self,
        phase: str,
        d: PoolDiff,
        sid: int,
        done: list[CapChange],
        failed: CapChange,
        exc: Exception,
    ) -> None:
        err = f"{type(exc).__name__}: {exc}"
        rolled: list[str] = []
        rb_errors: dict[str, str] = {}
        if done:
            rb = self.ledger.intent(
                self.apply_id,
                self.now(),
                phase=phase,
                action="rollback_power_cap",
                pool=d.name,
                targets=[c.target for c in done],
                detail={"restore_w": {c.target: c.before_w for c in done}},
            )
            for c in reversed(done):
                gb = self.backends.gpus(c.node)
                try:
                    if gb is None:
                        raise RuntimeError(f"no GPU backend for {c.node}")
                    gb.set_power_limit_w(c.index, c.before_w)
                    rolled.append(c.target)
                except Exception as rexc:
                    rb_errors[c.target] = f"{type(rexc).__name__}: {rexc}"
            self.ledger.result(
                rb,
                self.now(),
                "error" if rb_errors else "ok",
                {
                    "restored": rolled,
                    "errors": rb_errors,
                    "still_at_new_cap_w": {t: d.target_cap_w for t in rb_errors},
                },
            )
            self.out(
                phase,
                "rollback_power_cap",
                d.name,
                rolled or [c.target for c in done],
                "error" if rb_errors else "ok",
                f"restored {len(rolled)} GPU(s)"
                + (f"; could not restore {sorted(rb_errors)}" if rb_errors else ""),
            )
        self.ledger.result(
            sid,
            self.now(),
            "error",
            {
                "error": err,
                "failed_at": failed.target,
                "set_then_rolled_back": rolled,
                "rollback_errors": rb_errors,
            },
        )
        self.out(
            phase,
            "set_power_cap",
            d.name,
            [failed.target],
            "error",
            f"{err}; pool {d.name} caps left as before; power-raising steps at site {d.site} skipped",
        )
        self.failed_sites.add(d.site)

    # ---------------------------------------------------------------- node operations
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
        try:
            changes = fn()
        except Exception as exc:
            after = {s.name: s.power.value for s in _status_all(self._hook(d), nodes)}
            self.ledger.result(
                sid,
                self.now(),
                "error",
                {"error": f"{type(exc).__name__}: {exc}", "observed_after": after},
            )
            self.out(
                phase,
                action,
                d.name,
                nodes,
                "error",
                f"{type(exc).__name__}: {exc}; observed after: "
                + ", ".join(f"{n}={p}" for n, p in after.items()),
            )
            return exc
        self.ledger.result(
            sid,
            self.now(),
            "ok",
            {
                "changes": [
                    dataclasses.asdict(c)
                    if dataclasses.is_dataclass(c) and not isinstance(c, type)
                    else str(c)
                    for c in (changes if isinstance(changes, list) else [])
                ]
            },
        )
        self.out(phase, action, d.name, nodes, "ok")
        return None

    def _mark(self, nodes: Sequence[str], **fields: Any) -> None:
        """Update the ledger records of many nodes in one transaction."""
        with self.ledger.batch():
            for n in nodes:
                self.ledger.update_node(n, **fields)

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
                "deferred",
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
                self.decide("drain", "power_off", d.name, d.work_unknown, "skipped", WORK_UNKNOWN)
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
                    "skipped",
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
                    "skipped",
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

    def wait_boot_phase(self) -> None:
        if not self.booting:
            return
        if not self.settings.wait_for_boot:
            self.out(
                "wait_boot",
                "wait_boot",
                None,
                sorted(self.booting),
                "ok",
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
                        self.decide("wait_boot", "booted", pool, [st.name], "ok", took)
            now = self.now()
            overdue = [n for n, (_, dl) in pending.items() if now >= dl]
            for n in overdue:
                d, dl = pending.pop(n)
                reason = f"not on within its boot timeout (deadline {dl.isoformat()})"
                self.ledger.update_node(
                    n, failed=True, failed_at=now, failed_reason=reason, boot_deadline=None
                )
                self.decide(
                    "wait_boot", "mark_failed", d.name, [n], "failed", reason + "; left alone"
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

    def raise_caps_phase(self) -> None:
        for d in self.diffs:
            if d.target_cap_w is None:
                continue
            booted = [
                n
                for n, (p, _) in self.booting.items()
                if p is d and self.ledger.node(n).power == "on"
            ]
            changes = list(d.cap_raise)
            not_read: list[Held] = []
            oor: list[Held] = []
            for n in booted:  # fresh nodes come up at their default cap: read, then set
                gb = self.backends.gpus(n)
                gpus = _list_gpus(gb, n, d.notes) if gb is not None else None
                if gb is None:
                    not_read.append(Held(n, NO_GPU_BACKEND))
                elif gpus is None:
                    not_read.append(Held(n, d.notes[-1].removeprefix(f"{n}: ")))
                else:
                    lower, raise_, more = _cap_changes(d.target_cap_w, n, gpus, d.notes)
                    changes += lower + raise_
                    oor += more
            self._caps_not_applied("raise_caps", d, not_read, oor)
            if not changes:
                continue
            if d.site in self.failed_sites and any(c.after_w > c.before_w for c in changes):
                ups = [c for c in changes if c.after_w > c.before_w]
                self.decide(
                    "raise_caps",
                    "set_power_cap",
                    d.name,
                    [c.target for c in ups],
                    "skipped",
                    f"a power-reducing step failed at site {d.site}",
                )
                changes = [c for c in changes if c.after_w <= c.before_w]
            self.set_caps("raise_caps", d, changes)

    def _caps_not_applied(
        self, phase: str, d: PoolDiff, not_read: list[Held], out_of_range: list[Held]
    ) -> None:
        """Record the caps the plan asks for that cannot be applied (a reported outcome)."""
        status = "skipped"
        if not_read:
            self.decide(
                phase,
                "set_power_cap",
                d.name,
                [h.node for h in not_read],
                status,
                "caps not read or set: " + "; ".join(f"{h.node}: {h.reason}" for h in not_read),
            )
        if out_of_range:
            reasons = sorted({h.reason for h in out_of_range})
            self.decide(
                phase,
                "set_power_cap",
                d.name,
                [h.node for h in out_of_range],
                status,
                "caps not applied: " + "; ".join(reasons) + "; left as they are",
            )
        self.report.caps_not_applied += [h.node for h in out_of_range]
        self.report.caps_not_read += [h.node for h in not_read]

    def run(self) -> None:
        self.record_observations()
        for d in self.diffs:
            self.set_caps("lower_caps", d, d.cap_lower)
            self._caps_not_applied("lower_caps", d, d.cap_unreached, d.cap_out_of_range)
        self.power_off_phase()
        self.power_on_phase()
        self.wait_boot_phase()
        self.resume_phase()
        self.raise_caps_phase()
        self.ledger.set_kv(TOKEN_KEY, self.bucket.state())

    def shadow(self) -> None:
        """Record what would be done, change nothing."""
        for d in self.diffs:
            for phase, action, targets in (
                ("lower_caps", "set_power_cap", [c.target for c in d.cap_lower]),
                ("power_off", "power_off", d.power_off),
                ("power_on", "power_on", d.power_on),
                ("resume", "resume", d.resume),
                ("raise_caps", "set_power_cap", [c.target for c in d.cap_raise]),
                ("observe", "mark_failed", [h.node for h in d.mark_failed]),
            ):
                if targets:
                    self.decide(phase, action, d.name, targets, "shadow", "would do (shadow mode)")
            if d.work_unknown:
                self.decide("drain", "power_off", d.name, d.work_unknown, "skipped", WORK_UNKNOWN)
            self._caps_not_applied("lower_caps", d, d.cap_unreached, d.cap_out_of_range)


def apply_plan(
    plan: dict[str, Any],
    slot: str | int,
    config: FleetConfig,
    backends: Backends,
    *,
    clock: Clock,
    state_dir: str | Path,
    settings: ControlSettings | None = None,
    dry_run: bool = False,
    plan_path: str | None = None,
    sleep: Callable[[float], None] | None = None,
    echo: Callable[[str], None] | None = None,
    allow_other_slot: bool = False,
    jobs: Any = None,
) -> ApplyReport:
    """Observe, diff and (unless dry-run or shadow) apply one slot of ``plan``.

    Args:
        plan: the plan dict (docs/plan-schema.md).
        slot: a slot index or ``"now"``.
        config: the fleet config the plan was made with (pool timing, spares, hostlists).
        backends: node hooks per pool and GPU backends per node.
        clock: the time source; ``sleep`` waits (tests pass one that advances a SimClock).
        state_dir: where the ledger lives.
        settings: control settings (shadow by default).
        dry_run: show the diff only; nothing is changed or written.
        echo: called with the diff text before anything is changed (the CLI prints it).
        allow_other_slot: act on a slot that is not the current one (else refused when
            actuation is allowed, warned about otherwise).
        jobs: a :class:`greencpn.actuate.jobs.JobBackends`: job actions for the slot run after
            the node phases, in the same mode (shadow records what would be done).
    """
    settings = settings or ControlSettings()
    sleep = sleep or time.sleep
    # before anything is observed: the plan against its schema, then against the config
    validate_plan(plan, plan_path)
    check_plan_against_config(plan, config, plan_path)
    ref = resolve_slot(plan, slot, clock, source=plan_path)
    mode = "dry-run" if dry_run else ("act" if settings.allow_actuation else "shadow")
    warnings: list[str] = []
    stale = other_slot_warning(plan, ref, clock.now())
    if stale is not None:
        if mode == "act" and not allow_other_slot:
            raise ConfigError(
                stale + "; refusing to act on it",
                source=plan_path,
                field="--slot",
                fix="pass --slot now (or make a fresh plan); to apply this slot anyway, add "
                "--allow-other-slot",
            )
        warnings.append(stale)
    ledger = Ledger.open_readonly(state_dir) if dry_run else Ledger.open(state_dir)
    lifecycle = (
        HookLifecycle()
        if dry_run or ledger.lock_fd is None
        else HookLifecycle(
            pass_fds=(ledger.lock_fd,), on_start=ledger.lease_add, on_end=ledger.lease_remove
        )
    )
    try:
        with hook_lifecycle(lifecycle):
            return _apply_locked(
                plan, ref, config, backends, ledger, clock, settings, sleep, mode,
                dry_run=dry_run, plan_path=plan_path, echo=echo, warnings=warnings, jobs=jobs,
            )  # fmt: skip
    finally:
        ledger.close()


def _apply_locked(
    plan: dict[str, Any],
    ref: SlotRef,
    config: FleetConfig,
    backends: Backends,
    ledger: Ledger,
    clock: Clock,
    settings: ControlSettings,
    sleep: Callable[[float], None],
    mode: str,
    *,
    dry_run: bool,
    plan_path: str | None,
    echo: Callable[[str], None] | None,
    warnings: list[str],
    jobs: Any = None,
) -> ApplyReport:
    """The part of :func:`apply_plan` that runs with the ledger (and the apply lock) open."""
    # observe first: the nodes an interrupted apply touched are re-observed (and that is
    # recorded) before anything else touches them
    diffs = compute_diff(
        plan, ref, config, backends, ledger, settings, clock.now(), source=plan_path
    )
    observed = {s.name: s.power.value for d in diffs for s in d.statuses}
    interrupted: list[str] = []
    if dry_run:
        apps, steps = ledger.unfinished()
    else:
        apps, steps = ledger.close_unfinished(clock.now(), observed)
    for a in apps:
        interrupted.append(f"apply #{a.id} started {a.started_at.isoformat()} never finished")
    for s in steps:
        seen = ", ".join(f"{n}={observed.get(n, 'unknown')}" for n in s.targets if ":" not in n)
        interrupted.append(
            f"apply #{s.apply_id} step {s.seq} {s.action} on {','.join(s.targets)} "
            f"has no recorded result; re-observed: {seen or '-'}"
        )
    report = ApplyReport(
        slot=ref, mode=mode, diffs=diffs, interrupted=interrupted, warnings=warnings
    )
    if echo is not None:
        echo(format_diff(diffs, ref, plan_path=plan_path, mode=mode))
    if dry_run:
        return report
    apply_id = ledger.begin_apply(
        clock.now(), plan_path=plan_path, slot=ref.index, slot_start=ref.start, mode=mode
    )
    report.apply_id = apply_id
    run = _Run(diffs, report, backends, ledger, settings, clock, sleep, apply_id)
    try:
        if mode == "act":
            run.run()
        else:
            run.shadow()
        if jobs is not None:
            from greencpn.actuate.jobs.apply_step import jobs_step

            report.jobs = jobs_step(
                plan,
                diffs,
                jobs,
                ledger,
                apply_id,
                clock_now=clock.now,
                next_step_at=ref.end,
                shadow=mode != "act",
            )
    except BaseException as exc:  # an unexpected fault: record it, then let it surface
        ledger.finish_apply(
            apply_id,
            clock.now(),
            "error",
            {"error": f"{type(exc).__name__}: {exc}", "steps": len(report.steps)},
        )
        raise
    ledger.finish_apply(
        apply_id,
        clock.now(),
        report.outcome,
        {
            "slot": ref.index,
            "steps": len(report.steps),
            "problems": len(report.problems),
            "failed_nodes": report.failed_nodes,
            "unknown_nodes": report.unknown_nodes,
        },
    )
    return report
