"""The reconcile and act phases: the diff of the plan's current slot against the observed
state (:func:`greencpn.actuate.apply.compute_diff`) written as ``intended`` actions, then the
apply engine and the job decisions carried out through the :class:`ActionGuard` (each action
``started`` before its call, ``done``/``failed`` after). Reconcile and act share one apply
ledger session, so they are one method here. Split from ``step.py`` (pure moves).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from greencpn.actuate.apply import ApplyReport, Backends, SlotRef, _Run, compute_diff
from greencpn.actuate.base import NodePowerHook
from greencpn.actuate.hostlist import expand
from greencpn.actuate.ledger import Ledger
from greencpn.controller.actuation import ActionGuard, SkippedAction
from greencpn.controller.base import ControllerBase, Observation, _iso, _parse
from greencpn.controller.jobs import JobActuator, JobDecision, decide_jobs
from greencpn.controller.types import (
    Mode,
    StepStatus,
)


def _job_call(ja: JobActuator, d: JobDecision) -> Callable[[], Any]:
    if d.kind == "defer":
        return lambda: ja.defer(d.job_id, _parse(d.detail["until"]))
    if d.kind == "steer":
        return lambda: ja.steer(d.job_id, d.detail.get("site") or "", d.detail.get("pool"))
    return lambda: ja.release(d.job_id)


class ActPhase(ControllerBase):
    # ------------------------------------------------------------------ reconcile + act
    def _levered(self, doc: dict[str, Any]) -> tuple[dict[str, Any], Backends]:
        pools = []
        hooks: dict[str, NodePowerHook | None] = {}
        base = self.backends
        for p in doc["pools"]:
            lv = self.lever(p["name"])
            if not lv.caps:
                p = {
                    **p,
                    "slots": [
                        {k: v for k, v in s.items() if k != "power_cap_w"} for s in p["slots"]
                    ],
                }
            pools.append(p)
            hooks[p["name"]] = base.hooks.get(p["name"]) if lv.power else None
        out = {**doc, "pools": pools}
        no_caps = {p["name"] for p in doc["pools"] if not self.lever(p["name"]).caps}
        if no_caps and "jobs" in doc:  # a job's own cap is a cap lever of its pool too
            out["jobs"] = [
                {k: v for k, v in j.items() if k != "power_cap_w"}
                if j.get("pool") in no_caps
                else j
                for j in doc["jobs"]
            ]
        return out, Backends(hooks=hooks, gpus=base.gpus, job_gpus=base.job_gpus)

    def _reconcile_and_act(
        self,
        step_id: int,
        doc: dict[str, Any],
        start: datetime,
        obs: Observation,
        phase_s: dict[str, float],
        errors: list[dict],
        actions: list[dict],
    ) -> StepStatus:
        ledger = self.ledger
        ctl = self._cfg.controller
        now = self.clock.now()
        t = time.perf_counter()
        settings = self.settings()
        slot = timedelta(minutes=int(doc["horizon"]["slot_minutes"]))
        ref = SlotRef(0, start, start + slot)
        degraded = {
            p: v
            for p, v in (ledger.get_kv("degraded_pools", {}) or {}).items()
            if (now - _parse(v["at"])).total_seconds() < ctl.degraded_cooldown_s
        }
        guard = ActionGuard(
            ledger,
            step_id,
            self.clock,
            self.sleep,
            self.fence,
            retries=ctl.retries,
            backoff_s=ctl.retry_backoff_s,
            blocked={
                p: f"pool degraded since {v['at']}: {v['message']}" for p, v in degraded.items()
            },
        )
        node_pool = {
            n: p.name for p in self._cfg.pools for n in (expand(p.hostlist) if p.hostlist else [])
        }
        act_doc, levered = self._levered(doc)
        if levered.job_gpus is None:  # per-job caps need the running jobs' GPU indices
            lookup = getattr(self.job_actuator, "job_gpu_lookup", None)
            job_gpus = lookup() if callable(lookup) else None
            if job_gpus is not None:
                levered = replace(levered, job_gpus=job_gpus)
        gb = guard.wrap(levered, node_pool)
        # NORMAL like the step ledger: every commit survives a kill -9 (docs in Ledger.open)
        apply_ledger = Ledger.open(self.state_dir, synchronous="NORMAL")
        try:
            apply_ledger.close_unfinished(now)
            diffs = compute_diff(
                act_doc, ref, self._cfg, gb, apply_ledger, settings, now, source=f"step {step_id}"
            )
            with ledger.tx():
                self._intend_hw(step_id, now, diffs)
            for pool, why in guard.blocked.items():
                ledger.skip_pool(step_id, pool, now, why)
            running = {r.job.id for r in obs.queue.running}
            decisions = decide_jobs(doc, obs.queue.pending, running, now, ref.end)
            job_pool = {j["id"]: j.get("pool") for j in doc.get("jobs", [])}
            with ledger.tx():
                job_rows = self._intend_jobs(step_id, decisions, job_pool)
            phase_s["reconcile"] = time.perf_counter() - t

            t = time.perf_counter()
            mode = "act" if self.mode is Mode.ENFORCE else "shadow"
            apply_id = apply_ledger.begin_apply(
                now, plan_path=f"step:{step_id}", slot=0, slot_start=start, mode=mode
            )
            report = ApplyReport(slot=ref, mode=mode, diffs=diffs)
            run = _Run(diffs, report, gb, apply_ledger, settings, self.clock, self.sleep, apply_id)
            if mode == "act":
                run.run()
                ledger.close_intended(
                    step_id,
                    self.clock.now(),
                    "skipped",
                    f"not carried out by the apply (held, deferred or unsafe; apply #{apply_id})",
                    jobs=False,
                )
            else:
                run.shadow()
            self._act_jobs(step_id, decisions, job_rows, job_pool, guard)
            ledger.close_intended(step_id, self.clock.now(), "shadow", "would do (shadow mode)")
            apply_ledger.finish_apply(
                apply_id,
                self.clock.now(),
                report.outcome,
                {"step": step_id, "steps": len(report.steps), "problems": len(report.problems)},
            )
        finally:
            apply_ledger.close()
        self._epoch = guard.epoch
        for p, msg in guard.degraded.items():
            degraded[p] = {"at": _iso(self.clock.now()), "message": msg}
        ledger.set_kv("degraded_pools", degraded)
        errors.extend(guard.errors)
        actions.extend(ledger.step_actions(step_id))
        phase_s["act"] = time.perf_counter() - t
        self._decisions = decisions
        self._degraded_pools = sorted(degraded)
        bad = any(a["status"] == "failed" for a in actions) or guard.deposed or guard.degraded
        return StepStatus.DEGRADED if bad else StepStatus.OK

    def _intend_hw(self, step_id: int, now: datetime, diffs: list) -> None:
        """The reconcile diff as ``intended`` rows, one per target."""
        ledger = self.ledger
        for d in diffs:
            for c in d.cap_lower + d.cap_raise:
                ledger.intend(
                    step_id,
                    now,
                    "set_power_cap",
                    c.target,
                    d.name,
                    {"before_w": c.before_w, "after_w": c.after_w},
                )
            for kind, nodes in (
                ("power_off", d.power_off),
                ("power_on", d.power_on),
                ("resume", d.resume),
            ):
                for n in nodes:
                    ledger.intend(step_id, now, kind, n, d.name)

    def _intend_jobs(
        self, step_id: int, decisions: list[JobDecision], job_pool: dict[str, Any]
    ) -> dict[tuple[str, str], int]:
        """Job decisions are written when they change for that job (a job deferred to the same
        time step after step is one row, not one per step)."""
        ledger = self.ledger
        last = ledger.get_kv("job_decisions", {}) or {}
        now = self.clock.now()
        rows: dict[tuple[str, str], int] = {}
        new: dict[str, str] = {}
        for d in decisions:
            if d.kind == "keep":
                continue
            sig = f"{d.kind}:{d.detail.get('until') or d.detail.get('pool') or ''}"
            new[d.job_id] = (new.get(d.job_id, "") + "|" + sig).strip("|")
        for d in decisions:
            # a defer repeated unchanged is not written again; a release (and its steer) is
            # re-issued every step while the job still waits (idempotent; the scheduler may
            # not have had room to start it)
            if d.kind == "keep" or (d.kind == "defer" and last.get(d.job_id) == new.get(d.job_id)):
                continue
            rows[(d.job_id, d.kind)] = ledger.intend(
                step_id, now, f"job.{d.kind}", d.job_id, job_pool.get(d.job_id), d.detail
            )
        ledger.set_kv("job_decisions", new)
        return rows

    def _act_jobs(self, step_id, decisions, job_rows, job_pool, guard: ActionGuard) -> None:
        act = self.mode is Mode.ENFORCE and self.job_actuator is not None
        self._failsafe = []
        for d in decisions:
            aid = job_rows.get((d.job_id, d.kind))
            if aid is None:
                continue
            pool = job_pool.get(d.job_id)
            if not act or (pool is not None and not self.lever(pool).jobs):
                why = (
                    "no job actuator configured"
                    if self.job_actuator is None
                    else (
                        "shadow mode" if self.mode is Mode.SHADOW else "jobs lever off for the pool"
                    )
                )
                self.ledger.finish(aid, self.clock.now(), "shadow", f"would {d.kind} ({why})")
                continue
            ja = self.job_actuator
            assert ja is not None
            fn = _job_call(ja, d)
            try:
                guard.call(f"job.{d.kind}", pool, [d.job_id], fn)
                if d.detail.get("failsafe"):
                    backend = getattr(ja, "backend_of", lambda _j: "unknown")(d.job_id)
                    site = str(d.detail.get("site") or "")
                    self._failsafe.append((d.job_id, site, str(pool or ""), backend))
            except SkippedAction:
                pass
            except Exception:  # recorded by the guard; the other jobs continue
                pass
