"""One control step: observe → forecast → optimise → reconcile → act → record.

:class:`Controller` is the one code path of the one-off report (``greencpn plan`` calls
:meth:`Controller.plan`), the daemon (:meth:`Controller.step` on a schedule) and the what-if
replay (the same step on a simulated clock with recording backends). See docs/controller.md.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from greencpn.controller import forecast as fcmod
from greencpn.controller.act import ActPhase
from greencpn.controller.base import (
    NODE_STATES,
    PHASES,
    ConfigQueue,
    ControllerBase,
    Observation,
    Queue,
    default_backends,
)
from greencpn.controller.fallback import safe_plan, shift_plan
from greencpn.controller.forecast_phase import ForecastPhase
from greencpn.controller.observe import ObservePhase
from greencpn.controller.optimise import OptimizePhase, _chosen_stab
from greencpn.controller.record import RecordPhase
from greencpn.controller.types import (
    QueueState,
    StepResult,
    StepStatus,
)
from greencpn.errors import ConfigError, GreencpnError, SolverError
from greencpn.optimize import plan as planmod
from greencpn.optimize.builder import paused_gc
from greencpn.optimize.milp import SolveStatus
from greencpn.optimize.stability import StablePlanModel, plan_moves

log = logging.getLogger(__name__)

__all__ = [
    "NODE_STATES",
    "PHASES",
    "ConfigQueue",
    "Controller",
    "ControllerBase",
    "Observation",
    "Queue",
    "StablePlanModel",
    "default_backends",
    "safe_plan",
    "shift_plan",
]


class Controller(ObservePhase, ForecastPhase, OptimizePhase, ActPhase, RecordPhase):
    """The control step (see the module docstring and docs/controller.md).

    Args:
        config_path: the fleet config (TOML).
        clock: the time source (real or simulated); nothing reads the time elsewhere.
        state_dir: where the step ledger (``steps.sqlite``) and the apply ledger live.
        mode: ``shadow`` (default) records what would be done; ``enforce`` acts.
        levers: per pool, which levers may act (default: all, in enforce mode).
        backends: node hooks and GPU backends (default: built from the config's hooks).
        fence: called before every action; returns the leader epoch or raises NotLeaderError.
        queue: where jobs come from (default: the config's jobs as pending).
        job_actuator: acts on jobs (defer / steer / release); ``None``: record what it would do.
        settings: apply safety settings (default: ``control.toml`` beside the config).
        sleep: waits inside the step (retries, boot waits); tests advance a SimClock.
        rolling: the horizon starts at the current slot (daemon); ``False`` keeps the config's
            ``horizon.start`` when it is set (the one-off report).

    Raises:
        ConfigError: a bad config (the only exception for user input).
    """

    # ------------------------------------------------------------------ the report
    def plan(self, *, safe_fallback: bool = False) -> planmod.PlanResult:
        """Observe (config and apply ledger only, no hardware) → forecast → optimise, strictly:
        a fault raises (``greencpn plan``). The same phases :meth:`step` runs. With
        ``safe_fallback``, a solve that ends with no incumbent gives :func:`safe_plan`, priced
        (:func:`greencpn.optimize.plan.safe_result`; its document says ``origin = "safe"``)."""
        errors: list[dict] = []
        start = self.slot_start()
        obs = self.observe(errors, hardware=False)
        fc, _ = self.forecast(start, errors, strict=True)
        cfg2 = self.world_config(obs, start)
        inp = self.pin_running(fcmod.inputs_from(cfg2, fc, obs.failed), obs)
        try:
            res = planmod.make_plan(
                cfg2,
                self.clock,
                failed_nodes=obs.failed,
                inputs=inp,
                baseline_worker=self.baseline_worker(len(inp.jobs), step=False),
            )
        except planmod.NoIncumbentError as exc:
            if not safe_fallback:
                raise
            log.warning("no incumbent (%s): the safe plan is the plan", exc.outcome.status.value)
            doc = safe_plan(self._cfg, start, obs.failed)
            res = planmod.safe_result(
                cfg2, self.clock, exc.inputs, exc.outcome, exc.diagnostics, doc
            )
        self.last_plan_result = res
        return res

    # ------------------------------------------------------------------ the step
    def step(self) -> StepResult:
        """One observe → forecast → optimise → reconcile → act → record. Never raises for
        faults: they are in ``errors`` (and the ledger), the status says how it went.

        Python's cyclic garbage collector is paused for the step and restored after it
        (:func:`greencpn.optimize.builder.paused_gc`): with a large fleet's plan model alive,
        its full passes inside the step cost seconds (bench/results/controller.md); paused,
        they run once after the step instead of several times inside it."""
        with paused_gc():
            return self._step()

    def _step(self) -> StepResult:
        ledger = self.ledger
        started = self.clock.now()
        start = self.slot_start()
        phase_s = dict.fromkeys(PHASES, 0.0)
        errors: list[dict] = []
        sources: dict[str, dict] = {}
        status = StepStatus.OK
        origin = "optimized"
        solver_status = mip_gap = None
        res: planmod.PlanResult | None = None
        doc: dict[str, Any] | None = None
        step_id = ledger.begin_step(started, start, self.mode.value)
        self._step_id = step_id
        self._baseline_reuse = None
        self._moves = None
        for note in self.recovered:
            errors.append({"type": "recovered", "where": "start", "message": note})
        self.recovered = []

        t = time.perf_counter()
        obs = self.observe(errors)
        phase_s["observe"] = time.perf_counter() - t

        prev_id = self._previous_plan_id(start, earlier_slot=True)
        prev_entry = None if prev_id is None else self.ledger.plan(prev_id)
        t = time.perf_counter()
        fc = None
        try:
            fc, sources = self.forecast(start, errors, strict=False)
            if any(s["freshness"] != "fresh" for s in sources.values()):
                status = StepStatus.DEGRADED
        except Exception as exc:
            errors.append(
                {
                    "type": "source",
                    "where": "forecast",
                    "message": f"no forecast and no fallback: {exc}",
                }
            )
        phase_s["forecast"] = time.perf_counter() - t

        t = time.perf_counter()
        if fc is not None:
            try:
                cfg2 = self.world_config(obs, start)
                inp = self.pin_running(fcmod.inputs_from(cfg2, fc, obs.failed), obs)
                inp.extras["running_job_ids"] = [r.job.id for r in obs.queue.running]
                latest_id = self._previous_plan_id(start, earlier_slot=False)
                # read (decompressed, parsed) once when the newest plan is the anchor's too,
                # as in the first step of each slot (anchor() only reads both)
                latest = (
                    prev_entry
                    if latest_id is not None and latest_id == prev_id
                    else (None if latest_id is None else self.ledger.plan(latest_id))
                )
                anchor = self.anchor(inp, prev_entry, started, latest)
                res = self.optimize(cfg2, inp, obs.failed, anchor)
                doc = res.document
                doc["origin"] = "optimized"
                self._moves = {**plan_moves(latest, doc), "stability_cost": _chosen_stab(doc)}
                solver_status = res.outcome.status.value
                mip_gap = res.outcome.mip_gap
                if res.outcome.status is SolveStatus.TIME_LIMIT:
                    status = StepStatus.DEGRADED
                    errors.append(
                        {
                            "type": "solver_time_limit",
                            "where": "optimize",
                            "message": f"time limit {cfg2.solver.time_limit_s:g} s: incumbent used (gap {mip_gap})",
                        }
                    )
            except (SolverError, ConfigError, GreencpnError, ValueError, RuntimeError) as exc:
                errors.append(
                    {
                        "type": "solver",
                        "where": "optimize",
                        "message": f"{type(exc).__name__}: {exc}",
                    }
                )
                solver_status = "error"
                res = None
        if doc is None:
            last = self._previous_plan(start, earlier_slot=False)
            shifted = shift_plan(last, start, self._cfg, obs.failed) if last else None
            if shifted is not None:
                doc, origin, status = shifted, "previous_shifted", StepStatus.DEGRADED
            else:
                doc, origin, status = (
                    safe_plan(self._cfg, start, obs.failed),
                    "safe",
                    StepStatus.FAILED,
                )
        phase_s["optimize"] = time.perf_counter() - t

        actions: list[dict] = []
        try:
            act_status = self._reconcile_and_act(step_id, doc, start, obs, phase_s, errors, actions)
        except Exception as exc:  # an unexpected fault in the act phase: recorded, not raised
            log.exception("act phase failed")
            errors.append(
                {"type": "act", "where": "act", "message": f"{type(exc).__name__}: {exc}"}
            )
            act_status = StepStatus.DEGRADED
        if act_status is StepStatus.DEGRADED and status is StepStatus.OK:
            status = act_status

        t = time.perf_counter()
        metrics = self._metrics(obs, doc, res, actions)
        ledger.record_inputs(step_id, sources)
        for e in errors:
            if e["type"] not in ("actuator_temporary", "actuator_permanent", "not_leader"):
                ledger.failure(step_id, self.clock.now(), e["type"], e["where"], e["message"])
        metrics["ledger_plan_bytes"] = ledger.record_plan(step_id, doc)
        finished = self.clock.now()
        phase_s["record"] = time.perf_counter() - t
        ledger.finish_step(
            step_id,
            finished,
            status=status.value,
            plan_origin=origin,
            solver_status=solver_status,
            mip_gap=mip_gap,
            epoch=self._epoch,
            phase_s=phase_s,
            sources=sources,
            errors=errors,
            metrics=metrics,
        )
        self.last_plan_result = res
        return StepResult(
            step_id=step_id,
            started_at=started,
            finished_at=finished,
            slot_start=start,
            status=status,
            mode=self.mode,
            solver_status=solver_status,
            mip_gap=mip_gap,
            phase_s=phase_s,
            sources=sources,
            actions=actions,
            errors=errors,
            plan=doc,
            metrics=metrics,
            plan_origin=origin,
        )

    # ------------------------------------------------------------------ restore on exit
    def restore(self) -> StepResult:
        """Default caps, release held jobs, wake all nodes (GEOPM's restore-on-exit): the safe
        plan through the same reconcile and act phases (in shadow mode: recorded only)."""
        ledger = self.ledger
        started = self.clock.now()
        start = self.slot_start()
        phase_s = dict.fromkeys(PHASES, 0.0)
        errors: list[dict] = []
        step_id = ledger.begin_step(started, start, self.mode.value)
        obs = self.observe(errors)
        doc = safe_plan(self._cfg, start, obs.failed)
        doc["origin"] = "restore"
        actions: list[dict] = []
        held = [j for j in obs.queue.pending]
        obs.queue = QueueState(pending=held, running=obs.queue.running, source=obs.queue.source)
        ledger.set_kv("job_decisions", {})  # every held job gets its release row
        st = self._reconcile_and_act(step_id, doc, start, obs, phase_s, errors, actions)
        metrics = self._metrics(obs, doc, None, actions)
        ledger.record_plan(step_id, doc)
        finished = self.clock.now()
        status = StepStatus.OK if st is StepStatus.OK else StepStatus.DEGRADED
        ledger.finish_step(
            step_id,
            finished,
            status=status.value,
            plan_origin="restore",
            phase_s=phase_s,
            errors=errors,
            metrics=metrics,
            epoch=self._epoch,
        )
        return StepResult(
            step_id,
            started,
            finished,
            start,
            status,
            self.mode,
            None,
            None,
            phase_s,
            {},
            actions,
            errors,
            doc,
            metrics,
            "restore",
        )
