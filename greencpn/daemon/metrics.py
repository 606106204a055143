"""Prometheus metrics of the daemon, one registry per daemon (prometheus-client).

Names follow Prometheus conventions: base units in the name (seconds, watts, grams per kWh,
kilograms, kilowatt-hours, ratio), ``_total`` for running sums. The step's
``StepResult.metrics`` (kW, g/kWh, kg) are converted here.

==================================================== ======= ==============================
series                                               type    meaning
==================================================== ======= ==============================
greencpn_carbon_intensity_grams_per_kwh{site}        gauge   intensity used for this slot
greencpn_planned_power_watts{site}                   gauge   planned IT power, this slot
greencpn_measured_power_watts{site}                  gauge   measured power (absent: none)
greencpn_nodes{pool,state}                           gauge   nodes on/off/booting/draining/…
greencpn_gpu_power_cap_watts{pool}                   gauge   planned GPU cap
greencpn_jobs{state=held|released|shifted}           gauge   job decisions of the last step
greencpn_jobs_failsafe_released_total{site,pool,     counter jobs released at their latest
  backend}                                                   start though the plan held them
greencpn_step_duration_seconds                       histo   whole step (observe → record)
greencpn_step_phase_duration_seconds{phase}          gauge   last step, per phase
greencpn_solve_duration_seconds                      histo   the optimize phase
greencpn_mip_gap_ratio                               gauge   (incumbent − bound) / incumbent
greencpn_errors_total{type}                          counter step errors + daemon errors
greencpn_steps_total{status,reason}                  counter steps run
greencpn_saved_co2e_kilograms_total                  gauge   sum over slots vs the baseline
greencpn_saved_energy_kilowatt_hours_total           gauge   sum over slots vs the baseline
greencpn_savings_baseline_age_seconds                gauge   age of the baseline the last
                                                             step's saving used (0: priced)
greencpn_savings_baseline_age_steps                  gauge   the same in steps
                                                             (``[controller] baselines_every``)
greencpn_leader                                      gauge   1 while this instance leads
greencpn_leader_epoch                                gauge   the leader epoch (if leading)
greencpn_enforce                                     gauge   1 in enforce mode, 0 in shadow
greencpn_last_step_timestamp_seconds                 gauge   end of the last step, Unix s
greencpn_config_reload_success                       gauge   1 if the last reload worked
==================================================== ======= ==============================

The two ``saved`` series are gauges although named ``_total``: one slot can save a negative
amount (work shifted into it), so the running sum may go down. Each slot counts once (an
extra step in the same slot replaces that slot's contribution); the sum survives restarts
(kept in the daemon's state file).
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NODE_STATES = ("on", "off", "booting", "draining", "failed", "unknown")
JOB_STATES = ("held", "released", "shifted")


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.carbon = Gauge(
            "greencpn_carbon_intensity_grams_per_kwh",
            "Carbon intensity used for the current slot, gCO2e/kWh",
            ["site"],
            registry=r,
        )
        self.planned_power = Gauge(
            "greencpn_planned_power_watts",
            "Planned IT power in the current slot, W",
            ["site"],
            registry=r,
        )
        self.measured_power = Gauge(
            "greencpn_measured_power_watts",
            "Measured power in the current slot, W",
            ["site"],
            registry=r,
        )
        self.nodes = Gauge(
            "greencpn_nodes", "Nodes per pool and state", ["pool", "state"], registry=r
        )
        self.cap = Gauge(
            "greencpn_gpu_power_cap_watts",
            "Planned GPU power cap per pool, W",
            ["pool"],
            registry=r,
        )
        self.jobs = Gauge("greencpn_jobs", "Job decisions of the last step", ["state"], registry=r)
        self.jobs_failsafe = Counter(
            "greencpn_jobs_failsafe_released",
            "Jobs released at their latest start although the plan would hold them longer "
            "(no room or no nodes in time): the fail-safe, counted once per job",
            ["site", "pool", "backend"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "greencpn_step_duration_seconds",
            "Duration of a control step, s",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.phase_seconds = Gauge(
            "greencpn_step_phase_duration_seconds",
            "Duration of each phase of the last step, s",
            ["phase"],
            registry=r,
        )
        self.solve_seconds = Histogram(
            "greencpn_solve_duration_seconds",
            "Duration of the optimize phase, s",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.mip_gap = Gauge(
            "greencpn_mip_gap_ratio", "Relative MIP gap of the last solve (ratio)", registry=r
        )
        self.errors = Counter("greencpn_errors", "Errors by type", ["type"], registry=r)
        self.steps = Counter(
            "greencpn_steps", "Control steps run", ["status", "reason"], registry=r
        )
        self.saved_co2e = Gauge(
            "greencpn_saved_co2e_kilograms_total",
            "Estimated emissions avoided vs the carbon-agnostic baseline, summed over slots, kgCO2e",
            registry=r,
        )
        self.saved_energy = Gauge(
            "greencpn_saved_energy_kilowatt_hours_total",
            "Estimated energy saved vs the carbon-agnostic baseline, summed over slots, kWh",
            registry=r,
        )
        self.baseline_age_s = Gauge(
            "greencpn_savings_baseline_age_seconds",
            "Age of the carbon-agnostic baseline the last step's saving figure used, s "
            "(0: priced in that step; [controller] baselines_every)",
            registry=r,
        )
        self.baseline_age_steps = Gauge(
            "greencpn_savings_baseline_age_steps",
            "Age of the carbon-agnostic baseline the last step's saving figure used, steps",
            registry=r,
        )
        self.leader = Gauge("greencpn_leader", "1 while this instance is the leader", registry=r)
        self.epoch = Gauge("greencpn_leader_epoch", "Leader epoch while leading", registry=r)
        self.enforce = Gauge("greencpn_enforce", "1 in enforce mode, 0 in shadow mode", registry=r)
        self.last_step = Gauge(
            "greencpn_last_step_timestamp_seconds",
            "When the last step finished, Unix time, s",
            registry=r,
        )
        self.reload_ok = Gauge(
            "greencpn_config_reload_success", "1 if the last config reload worked", registry=r
        )
        self.reload_ok.set(1)
        for t in ("step", "config_reload", "leader", "state_file"):
            self.errors.labels(type=t)  # zero series, so rate() works from the start

    def observe_step(self, result: Any, *, reason: str, duration_s: float | None = None) -> None:
        """Export one ``StepResult``; ``duration_s`` is the step's wall time as the daemon
        measured it (default: finished_at − started_at, which a simulated clock makes 0)."""
        m = result.metrics or {}
        self.steps.labels(status=str(result.status), reason=reason).inc()
        if duration_s is None:
            duration_s = (result.finished_at - result.started_at).total_seconds()
        self.step_seconds.observe(max(0.0, duration_s))
        for phase, secs in (result.phase_s or {}).items():
            self.phase_seconds.labels(phase=phase).set(float(secs))
        if "optimize" in (result.phase_s or {}):
            self.solve_seconds.observe(float(result.phase_s["optimize"]))
        if result.mip_gap is not None:
            self.mip_gap.set(float(result.mip_gap))
        for err in result.errors or []:
            self.errors.labels(type=str(err.get("type", "unknown"))).inc()
        _set_each(self.carbon, "site", m.get("carbon_intensity_g_per_kwh"), 1.0)
        _set_each(self.planned_power, "site", m.get("planned_power_kw"), 1000.0)
        _set_each(self.measured_power, "site", m.get("measured_power_kw"), 1000.0)
        _set_each(self.cap, "pool", m.get("power_cap_w"), 1.0)
        for pool, states in (m.get("nodes") or {}).items():
            for state in NODE_STATES:
                self.nodes.labels(pool=pool, state=state).set(float(states.get(state, 0)))
        jobs = m.get("jobs") or {}
        for state in JOB_STATES:
            if state in jobs:
                self.jobs.labels(state=state).set(float(jobs[state]))
        for e in m.get("jobs_failsafe_released") or []:
            self.jobs_failsafe.labels(
                site=e.get("site") or "", pool=e.get("pool") or "", backend=e.get("backend") or ""
            ).inc()
        base = m.get("baseline")
        if isinstance(base, dict):
            self.baseline_age_s.set(float(base.get("age_s") or 0.0))
            self.baseline_age_steps.set(float(base.get("age_steps") or 0))
        self.last_step.set(result.finished_at.timestamp())

    def set_savings(self, kg_co2e: float, kwh: float) -> None:
        self.saved_co2e.set(kg_co2e)
        self.saved_energy.set(kwh)

    def set_leader(self, is_leader: bool, epoch: int | None) -> None:
        self.leader.set(1 if is_leader else 0)
        self.epoch.set(float(epoch) if is_leader and epoch is not None else 0)


def _set_each(gauge: Gauge, label: str, values: dict[str, Any] | None, scale: float) -> None:
    for key, value in (values or {}).items():
        if value is None:
            with contextlib.suppress(KeyError):
                gauge.remove(key)
        else:
            gauge.labels(**{label: key}).set(float(value) * scale)
