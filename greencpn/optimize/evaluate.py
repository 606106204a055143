"""Price an executable schedule: power, energy, carbon, cost and lateness.

One function, :func:`evaluate`, serves the plan and both baselines, so they are compared by the
same arithmetic. Energy is counted per slot inside the horizon. Work a schedule pushes past the
horizon end (``beyond_horizon_gpu_h``) is charged too, at :data:`BEYOND_HORIZON_RULE`: its GPUs'
busy power plus their share of their nodes' idle power, times PUE, at the site's mean carbon
intensity and price over the horizon's last day (:func:`tail_rates`) — so a plan cannot look
greener by pushing work out of the window. ``totals`` carry both: ``energy_kwh``,
``carbon_kg`` and ``cost`` include that charge; ``*_in_horizon`` are the figures inside the
horizon only, ``beyond_horizon_*`` the charge. The objective stays the in-horizon one the MILP
prices (its bound is comparable). Work a job had to do inside the horizon and does past its end
is unserved there, priced like the MILP's unserved slack.

Power of pool p in slot t (kW, IT side): κ_p·n + ω_p·(N_p − n) + ε_{p,level}·busy + b_p·u/Δ;
meter power = IT × PUE; energy = meter × Δ; carbon = energy × I / 1000 (kg).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.objective import BUDGET_OVERRUN_WEIGHT_PER_KWH
from greencpn.optimize.schedule import Schedule

#: how work past the horizon end is charged (plan.json ``beyond_horizon_rule``)
BEYOND_HORIZON_RULE = (
    "work past the horizon end is charged at its GPUs' busy power plus their share of node "
    "idle power, times PUE, at the site's mean carbon intensity and price over the horizon's "
    "last 24 h (the whole horizon if shorter)"
)


def tail_rates(inp: PlanInputs) -> tuple[np.ndarray, np.ndarray]:
    """[S] carbon intensity (g/kWh) and price per kWh charged for work past the horizon: each
    site's mean over the horizon's last 24 h (all of it if shorter)."""
    n = max(1, min(inp.T, int(round(24.0 / inp.slot_h))))
    inten = np.array([float(np.mean(s.intensity_g_per_kwh[-n:])) for s in inp.sites])
    price = np.array([float(np.mean(s.price_per_kwh[-n:])) for s in inp.sites])
    return inten, price


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
    beyond_site_energy_kwh: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [S]
    beyond_site_carbon_kg: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [S]
    #: in-horizon meter energy by what draws it (sums to site_energy_kwh.sum())
    energy_breakdown_kwh: dict = field(default_factory=dict)


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
    parts = dict.fromkeys(("gpu_busy", "node_idle", "node_off", "boot"), 0.0)
    pue_p = [inp.sites[pool.site].pue for pool in inp.pools]
    for p, pool in enumerate(inp.pools):
        terms = {
            "node_idle": pool.node_idle_kw * n[p],
            "node_off": pool.node_off_kw * (pool.nodes - n[p]),
            "gpu_busy": pool.level_extra_kw[lev[p]] * busy[p],
            "boot": pool.boot_extra_kwh * u[p] / dt,
        }
        if sched.job_cap:  # jobs at their own level: their busy power replaces the pool's
            for j, (_cap, _thr, eps) in sched.job_cap.items():
                if int(sched.pool[j]) != p:
                    continue
                for t, g, f in sched.runs[j]:
                    if t < T:
                        terms["gpu_busy"][t] += g * f * (eps - pool.level_extra_kw[lev[p, t]])
        pool_kw[p] = terms["node_idle"] + terms["node_off"] + terms["gpu_busy"] + terms["boot"]
        for k, v in terms.items():
            parts[k] += float(np.sum(v)) * dt
    it_kwh = sum(parts.values())
    breakdown = {
        **parts,
        "pue_overhead": float(sum(np.sum(pool_kw[p]) * dt * (pue_p[p] - 1.0) for p in range(P))),
    }
    breakdown["it_total"] = it_kwh
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
    beyond_kwh = np.zeros(S)
    tail_inten, tail_price = tail_rates(inp)
    # the per-run loop reads Python lists (the same float64 values: the same arithmetic, in the
    # same order, as indexing the arrays; ~3x faster on the example fleet's 300 jobs)
    lev_rows = sched.level.tolist()
    last_lv = sched.level.shape[1] - 1
    thr_p = [pool.level_thr.tolist() for pool in inp.pools]
    eps_p = [pool.level_extra_kw.tolist() for pool in inp.pools]
    idle_per_gpu_p = [pool.node_idle_kw / pool.gpus_per_node for pool in inp.pools]
    pue_site = [s.pue for s in inp.sites]
    end_h = sched.end_h.tolist()
    lw = obj.lateness_weight_per_gpu_h
    for j, job in enumerate(inp.jobs):
        runs = sched.runs[j]
        if job.required_gpu_h <= 0 or job.release_slot >= T:
            continue
        if not runs:
            unserved[j] = job.required_gpu_h
            continue
        p = int(sched.pool[j])
        pool = inp.pools[p]
        site = pool.site
        lev_row, thr_l, eps_l = lev_rows[p], thr_p[p], eps_p[p]
        deadline_h = (job.deadline - inp.start).total_seconds() / 3600.0
        late_h[j] = max(0.0, float(end_h[j]) - deadline_h)
        inside = 0.0
        own = sched.job_cap.get(j) if sched.job_cap else None
        ds = job.deadline_slot
        pen = penalty[j]
        for t, g, f in runs:
            lv = lev_row[min(t, last_lv)]
            thr = thr_l[lv] if own is None else own[1]
            work = g * thr * dt * f
            if t >= T:
                beyond += work
                eps = eps_l[lv] if own is None else own[2]
                busy_kw = g * f * (eps + idle_per_gpu_p[p])
                beyond_kwh[site] += busy_kw * dt * pue_site[site]
                continue
            inside += work
            if ds < T:
                pen += lw * job.priority * max(0, t - ds) * dt * work
        penalty[j] = pen
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
    beyond_carbon = beyond_kwh * tail_inten / 1000.0
    beyond_cost = float((beyond_kwh * tail_price).sum())
    totals = {
        "energy_kwh": float(energy.sum() + beyond_kwh.sum()),
        "carbon_kg": float(carbon.sum() + beyond_carbon.sum()),
        "cost": float(cost.sum()) + beyond_cost,
        "energy_kwh_in_horizon": float(energy.sum()),
        "carbon_kg_in_horizon": float(carbon.sum()),
        "cost_in_horizon": float(cost.sum()),
        "beyond_horizon_energy_kwh": float(beyond_kwh.sum()),
        "beyond_horizon_carbon_kg": float(beyond_carbon.sum()),
        "beyond_horizon_cost": beyond_cost,
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
        beyond_kwh,
        beyond_carbon,
        breakdown,
    )
