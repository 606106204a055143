"""Price an executable schedule: power, energy, carbon, cost and lateness.

One function, :func:`evaluate`, serves the plan and both baselines, so they are compared by the
same arithmetic. Energy is counted inside the horizon; work a schedule pushes past the horizon
end is reported as ``beyond_horizon_gpu_h`` (at its busy power it is not priced, because the
carbon there is unknown); work a job had to do inside the horizon and does past its end is
unserved there, priced like the MILP's unserved slack.

Power of pool p in slot t (kW, IT side): κ_p·n + ω_p·(N_p − n) + ε_{p,level}·busy + b_p·u/Δ;
meter power = IT × PUE; energy = meter × Δ; carbon = energy × I / 1000 (kg).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.objective import BUDGET_OVERRUN_WEIGHT_PER_KWH
from greencpn.optimize.placement import Schedule


@dataclass
class Evaluation:
    pool_it_kw: np.ndarray  # [P, T]
    site_it_kw: np.ndarray  # [S, T]
    site_meter_kw: np.ndarray  # [S, T]
    site_energy_kwh: np.ndarray  # [S, T]
    site_carbon_kg: np.ndarray  # [S, T]
    site_cost: np.ndarray  # [S, T]
    budget_overrun_kwh: np.ndarray  # [S, T]
    job_late_h: np.ndarray  # [J]
    job_lateness_penalty: np.ndarray  # [J] objective units, as the MILP charges it
    job_unserved_gpu_h: np.ndarray  # [J]
    beyond_horizon_gpu_h: float
    objective: float
    totals: dict = field(default_factory=dict)


def evaluate(
    inp: PlanInputs,
    sched: Schedule,
    n: np.ndarray,
    u: np.ndarray,
    carbon_w: float | None = None,
    cost_w: float | None = None,
) -> Evaluation:
    P, T, S = len(inp.pools), inp.T, len(inp.sites)
    dt = inp.slot_h
    obj = inp.objective
    cw = obj.carbon_weight_per_kg if carbon_w is None else carbon_w
    pw = obj.cost_weight if cost_w is None else cost_w
    lev = sched.level[:, :T]
    busy = sched.busy[:, :T]
    pool_kw = np.zeros((P, T))
    for p, pool in enumerate(inp.pools):
        pool_kw[p] = (
            pool.node_idle_kw * n[p]
            + pool.node_off_kw * (pool.nodes - n[p])
            + pool.level_extra_kw[lev[p]] * busy[p]
            + pool.boot_extra_kwh * u[p] / dt
        )
    site_it = np.zeros((S, T))
    for p, pool in enumerate(inp.pools):
        site_it[pool.site] += pool_kw[p]
    pue = np.array([s.pue for s in inp.sites])[:, None]
    meter = site_it * pue
    energy = meter * dt
    inten = np.array([s.intensity_g_per_kwh for s in inp.sites])
    price = np.array([s.price_per_kwh for s in inp.sites])
    budget = np.array([s.budget_kw for s in inp.sites])
    carbon = energy * inten / 1000.0
    cost = energy * price
    overrun = np.maximum(0.0, energy - budget * dt)
    overrun[~np.isfinite(overrun)] = 0.0
    J = len(inp.jobs)
    late_h = np.zeros(J)
    penalty = np.zeros(J)
    unserved = np.zeros(J)
    beyond = 0.0
    for j, job in enumerate(inp.jobs):
        runs = sched.runs[j]
        if job.required_gpu_h <= 0 or job.release_slot >= T:
            continue
        if not runs:
            unserved[j] = job.required_gpu_h
            continue
        p = int(sched.pool[j])
        pool = inp.pools[p]
        deadline_h = (job.deadline - inp.start).total_seconds() / 3600.0
        late_h[j] = max(0.0, float(sched.end_h[j]) - deadline_h)
        inside = 0.0
        for t, g, f in runs:
            work = g * pool.level_thr[sched.level[p, t]] * dt * f
            if t >= T:
                beyond += work
                continue
            inside += work
            if job.deadline_slot < T:
                penalty[j] += (
                    obj.lateness_weight_per_gpu_h
                    * job.priority
                    * max(0, t - job.deadline_slot)
                    * dt
                    * work
                )
        # As in the MILP (its q): work that had to be done inside the horizon and is not is
        # unserved, even where the schedule carries it past the end (charged as lateness, it
        # let the executed objective fall below the MILP bound)
        if job.required_gpu_h - inside > 1e-6:
            unserved[j] = job.required_gpu_h - inside
    objective = (
        cw * carbon.sum()
        + pw * cost.sum()
        + penalty.sum()
        + obj.unserved_weight_per_gpu_h * unserved.sum()
        + BUDGET_OVERRUN_WEIGHT_PER_KWH * overrun.sum()
    )
    totals = {
        "energy_kwh": float(energy.sum()),
        "carbon_kg": float(carbon.sum()),
        "cost": float(cost.sum()),
        "late_jobs": int((late_h > 1e-6).sum()),
        "late_h_max": float(late_h.max()) if J else 0.0,
        "late_gpu_h": float(sum(inp.jobs[j].work_gpu_h for j in range(J) if late_h[j] > 1e-6)),
        "unserved_gpu_h": float(unserved.sum()),
        "beyond_horizon_gpu_h": float(beyond),
        "budget_overrun_kwh": float(overrun.sum()),
        "node_hours_on": float(n.sum() * dt),
        "startups": int(u.sum()),
        "objective": float(objective),
    }
    return Evaluation(
        pool_kw,
        site_it,
        meter,
        energy,
        carbon,
        cost,
        overrun,
        late_h,
        penalty,
        unserved,
        beyond,
        float(objective),
        totals,
    )
