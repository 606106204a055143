"""The plan document: ``plan.json`` (schema ``greencpn.plan/1``, docs/plan-schema.md) from a
:class:`~greencpn.optimize.plan.PlanResult`.

:func:`build_document` writes the horizon, per pool and slot the nodes on and power caps, per
job its pool, runs and times, the executed totals beside each baseline's with the saving
``carbon_pct_vs_<baseline> = 100 · (baseline − plan) / baseline``, the solver outcome and the
diagnostics. Around it: :func:`carbon_signal` (which carbon data the plan used and how
trustworthy it is), :func:`reprice` (the same schedules priced on another intensity series —
the report's realised-carbon view), :func:`report_extras` (the report's lever split and
trade-off table), :func:`work_by_group` and the carbon/cost weight sweep behind the trade-off
table (:func:`weight_sweep`). Timestamps are written UTC with a ``Z`` (:func:`iso_utc`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from greencpn.clock import Clock
from greencpn.config import FleetConfig
from greencpn.optimize.baselines import baseline_rules
from greencpn.optimize.evaluate import BEYOND_HORIZON_RULE, evaluate, tail_rates
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.levers import lever_savings
from greencpn.optimize.milp import MilpSolution, PlanModel
from greencpn.optimize.stability import encode_runs

if TYPE_CHECKING:
    from greencpn.optimize.plan import PlanResult


SCHEMA = "greencpn.plan/1"


def iso_utc(ts: datetime) -> str:
    if ts.tzinfo is None:  # read as local time (never cached: it depends on the TZ setting)
        return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _iso_utc(ts)


@functools.lru_cache(maxsize=4096)
def _iso_utc(ts: datetime) -> str:
    """Memoised (a pure function of the instant: equal datetimes are the same instant, and
    the text is in UTC): a plan document writes ~600 of them, mostly the same slot starts,
    releases and deadlines step after step."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def work_by_group(inp: PlanInputs, model: PlanModel, sol: MilpSolution) -> np.ndarray:
    """[K, S, T] the MILP's work per group, site and slot."""
    out = np.zeros((len(inp.groups), len(inp.sites), inp.T))
    V = model.V
    np.add.at(out, (V.x_k, V.x_s, V.x_t), sol.x)
    return out


def weight_sweep(inp: PlanInputs, model: PlanModel, sol: MilpSolution) -> list[dict]:
    """The carbon/cost trade-off around the configured weights (MILP level).

    Points: carbon only (cost weight 0), the configured weights (the plan's own MILP
    solution), cost only (carbon weight 0), and ``tradeoff_points`` more with the cost weight
    scaled by 4^±i. Each extra point re-solves the built model with new weight Params on the
    warm solver; the plan's own solution has already been extracted.
    """
    obj = inp.objective
    S, T = len(inp.sites), inp.T
    inten = np.array([s.intensity_g_per_kwh for s in inp.sites])
    price = np.array([s.price_per_kwh for s in inp.sites])

    def point(wc: float, wp: float, e: np.ndarray, status: str) -> dict:
        return {
            "carbon_weight_per_kg": wc,
            "cost_weight": wp,
            "carbon_kg": float((e * inten).sum() / 1000.0),
            "cost": float((e * price).sum()),
            "energy_kwh": float(e.sum()),
            "status": status,
        }

    weights = [(obj.carbon_weight_per_kg, 0.0), (0.0, obj.cost_weight)]
    for i in range(1, obj.tradeoff_points + 1):
        f = 4.0 ** (i if i % 2 else -i)
        weights.append((obj.carbon_weight_per_kg, obj.cost_weight * f))
    pts = [point(obj.carbon_weight_per_kg, obj.cost_weight, sol.e, "configured")]
    for wc, wp in weights:
        model.set_weights(wc, wp)
        out = model.solve()
        if out.usable:
            pts.append(point(wc, wp, model.mb.value(model.V.e).reshape(S, T), out.status.value))
    model.set_weights(obj.carbon_weight_per_kg, obj.cost_weight)
    return sorted(pts, key=lambda p: p["carbon_kg"])


def report_extras(cfg: FleetConfig, res: PlanResult) -> dict:
    """What the report shows beside the plan (plan.json keys): work per site and slot and
    carbon per slot of the plan and each baseline, energy by what draws it, the saving by
    lever (:mod:`greencpn.optimize.levers`), where data residency placed jobs, and the pools
    greencpn cannot actuate. ``greencpn plan`` adds them to the document; the control step
    does not compute them (five more evaluations each period for figures only the report
    shows)."""
    inp = res.inputs
    T, dt = inp.T, inp.slot_h
    runs = {"plan": (res.schedule, res.nodes_on, res.startups, res.executed)}
    for k, (sc, n_, u_) in res.baseline_schedules.items():
        runs[k] = (sc, n_, u_, res.baselines[k])
    work: dict[str, dict[str, list[float]]] = {}
    carbon: dict[str, list[float]] = {}
    energy: dict[str, dict] = {}
    for k, (sc, _n, _u, ev) in runs.items():
        per_site = np.zeros((len(inp.sites), T))
        for p, pool in enumerate(inp.pools):
            per_site[pool.site] += sc.busy[p, :T] * dt
        work[k] = {
            site.name: [round(float(x), 4) for x in per_site[s]] for s, site in enumerate(inp.sites)
        }
        carbon[k] = [round(float(x), 4) for x in ev.site_carbon_kg.sum(axis=0)]
        energy[k] = {key: round(v, 4) for key, v in ev.energy_breakdown_kwh.items()}
    agn = res.baselines["carbon_agnostic"].totals["carbon_kg_in_horizon"]
    levers = lever_savings(inp, res.schedule, res.nodes_on, res.startups, agn)
    site_jur = {s.name: s.jurisdictions for s in cfg.sites}
    jur = {jc.id: jc.jurisdictions for jc in cfg.jobs}
    residency = []
    for i, j in enumerate(inp.jobs):
        if not jur.get(j.id):
            continue
        p = int(res.schedule.pool[i])
        site = inp.sites[inp.pools[p].site].name if p >= 0 else None
        residency.append(
            {
                "job": j.id,
                "jurisdictions": jur[j.id],
                "allowed_sites": [inp.sites[s].name for s in j.sites],
                "site": site,
                "site_jurisdictions": site_jur.get(site, []) if site else [],
            }
        )
    not_actuated = []
    for pc in cfg.pools:
        if pc.planned_always_on:
            why = (
                'hook = { kind = "none" }: greencpn cannot switch its nodes, so they are planned '
                "always on (no node saving is credited)"
            )
        elif "hook" not in pc.model_fields_set:
            why = (
                "no hook table: planning only — `greencpn apply` cannot power its nodes, "
                "so its planned node savings are not realised"
            )
        elif pc.hook.advisory:
            why = "advisory hook: greencpn reports the plan, an operator acts on it"
        else:
            continue
        not_actuated.append({"pool": pc.name, "reason": why})
    return {
        "work_by_site_gpu_h": work,
        "carbon_by_slot_kg": carbon,
        "energy_breakdown_kwh": energy,
        "lever_savings": levers,
        "residency": residency,
        "not_actuated": not_actuated,
    }


def carbon_signal(cfg: FleetConfig, inp: PlanInputs) -> dict:
    """What carbon signal the plan decided on, per site, and what it is priced on.

    A site whose values come from a file (``[carbon] file`` or a ``csv:`` source) decided on
    the very values it is priced on: a perfect forecast, so its saving is an upper bound of
    what a forecast would give. A live source is a forecast (its ``fallback`` says whether a
    cache or the forecaster answered); ``[carbon] actuals_file`` then prices it on measured
    values too (``on_actuals``)."""
    prov = inp.extras.get("carbon_provenance", {})
    file_accounting = cfg.carbon.accounting if cfg.carbon is not None else None
    # with measured values beside it, the [carbon] file is the forecast the plan decided on
    has_actuals = cfg.carbon is not None and cfg.carbon.actuals_file is not None
    sites = {}
    for site in inp.sites:
        pv = prov.get(site.name) or {}
        source = str(pv.get("source") or "")
        is_file = source.startswith("csv:") and not pv.get("fallback")
        sites[site.name] = {
            "zone": site.zone,
            "kind": "actual (file values)"
            if is_file and not has_actuals
            else ("forecast (file values)" if is_file else "forecast"),
            "source": source,
            "fallback": pv.get("fallback"),
            "signal": pv.get("signal", "average"),
            "accounting": pv.get("accounting") if not is_file else file_accounting,
        }
    perfect = all(v["kind"].startswith("actual") for v in sites.values())
    return {
        "sites": sites,
        "priced_on": "the same values the plan decided on",
        "perfect_forecast": perfect,
        "summary": (
            "perfect forecast: the plan decided on the file's actual values and is priced on "
            "the same values (the saving is what a perfect forecast would give)"
            if perfect
            else "forecast: the plan is priced on the forecast it decided on"
            + (
                " (the sites with file values decided on a perfect forecast)"
                if any(v["kind"].startswith("actual") for v in sites.values())
                else ""
            )
        ),
    }


def reprice(res: PlanResult, intensity_by_zone: dict[str, np.ndarray], source: str) -> dict:
    """The plan and its baselines priced on other carbon values (the measured ones,
    ``[carbon] actuals_file``): the same schedules, evaluated on ``intensity_by_zone``."""
    inp = res.inputs
    sites = [
        replace(s, intensity_g_per_kwh=np.asarray(intensity_by_zone[s.zone], dtype=float))
        for s in inp.sites
    ]
    inp2 = replace(inp, sites=sites)
    plan_tot = evaluate(inp2, res.schedule, res.nodes_on, res.startups).totals
    base = {k: evaluate(inp2, *sc).totals for k, sc in res.baseline_schedules.items()}
    savings = {}
    for k, b in base.items():
        savings[f"carbon_kg_vs_{k}"] = b["carbon_kg"] - plan_tot["carbon_kg"]
        savings[f"carbon_pct_vs_{k}"] = _pct(b["carbon_kg"] - plan_tot["carbon_kg"], b["carbon_kg"])
    return {"source": source, "totals": plan_tot, "baselines": base, "savings": savings}


def _pct(saved: float, base: float) -> float:
    return 100.0 * saved / base if base else 0.0


def build_document(cfg: FleetConfig, clock: Clock, res: PlanResult, outcome: dict) -> dict:
    inp = res.inputs
    T, dt = inp.T, inp.slot_h
    ex = res.executed
    bound = res.outcome.bound
    if bound is not None and not math.isfinite(bound):
        bound = None  # no incumbent (the safe plan): HiGHS's NaN / inf is not a bound
    gap = None
    if bound is not None and ex.objective:
        # how far the executed plan lies above the bound, relative to the bound
        gap = (ex.objective - bound) / abs(bound) if bound else None
    pools = []
    # the arrays as Python numbers once (the same values: .tolist() converts each float64 /
    # int64 exactly), not one NumPy scalar per element and slot
    nodes_on_l = np.asarray(res.nodes_on).tolist()
    startups_l = np.asarray(res.startups).tolist()
    shutdowns_l = np.asarray(res.shutdowns).tolist()
    alloc_l = np.asarray(res.schedule.alloc).tolist()
    busy_l = np.asarray(res.schedule.busy).tolist()
    pool_it_l = np.asarray(ex.pool_it_kw).tolist()
    for p, pool in enumerate(inp.pools):
        pc = cfg.pools[p]
        lev = [int(x) for x in np.asarray(res.schedule.level[p, :T]).tolist()]
        cap_l = np.asarray(pool.level_cap_w).tolist()
        res_l = np.asarray(pool.reserve_gpus).tolist()
        gm = pool.gpu_model
        pools.append(
            {
                "name": pool.name,
                "site": inp.sites[pool.site].name,
                "gpu_model": gm.name,
                "nodes": pool.nodes,
                "gpus_per_node": pool.gpus_per_node,
                "spares": pool.spares,
                "hostlist": pc.hostlist,
                "hook": pc.hook.model_dump(),
                "power_limit_min_w": gm.power_limit_min_w,
                "power_limit_max_w": gm.power_limit_max_w,
                "power_limit_default_w": gm.power_limit_default_w,
                "slots": [
                    {
                        "slot": t,
                        "nodes_on": int(nodes_on_l[p][t]),
                        "startups": int(startups_l[p][t]),
                        "shutdowns": int(shutdowns_l[p][t]),
                        "cap_level": lev[t],
                        "power_cap_w": float(cap_l[lev[t]]),
                        "busy_gpus": int(math.ceil(alloc_l[p][t] - res_l[t] - 1e-9)),
                        "busy_gpu_avg": round(float(busy_l[p][t]), 3),
                        "reserve_gpus": int(res_l[t]),
                        "it_power_kw": round(float(pool_it_l[p][t]), 3),
                    }
                    for t in range(T)
                ],
            }
        )
    jur = {jc.id: jc.jurisdictions for jc in cfg.jobs}
    jobs = []
    fine = res.schedule.fine_runs
    for j, job in enumerate(inp.jobs):
        runs = res.schedule.runs[j]
        p = int(res.schedule.pool[j])
        start = end = None
        if runs:
            start = inp.start + timedelta(hours=float(res.schedule.start_h[j]))
            end = inp.start + timedelta(hours=float(res.schedule.end_h[j]))
        jobs.append(
            {
                "id": job.id,
                "site": inp.sites[inp.pools[p].site].name if p >= 0 else None,
                "pool": inp.pools[p].name if p >= 0 else None,
                "gpus": job.gpus,
                "work_gpu_h": job.work_gpu_h,
                "checkpointable": job.checkpointable,
                "release": iso_utc(job.release),
                "deadline": iso_utc(job.deadline),
                "start": iso_utc(start) if start else None,
                "end": iso_utc(end) if end else None,
                "late_h": round(float(ex.job_late_h[j]), 4),
                "unserved_gpu_h": round(float(ex.job_unserved_gpu_h[j]), 4),
                "delay_h": round(max(0.0, (start - job.release).total_seconds() / 3600.0), 4)
                if start
                else None,
                "jurisdictions": list(jur.get(job.id, [])),
                "deferred": bool(job.required_gpu_h <= 0 or job.release_slot >= T),
                "submit_site": inp.sites[(job.baseline_sites or job.sites)[0]].name,
                # cap_mode = "job": the job's own GPU cap (null: its pool's cap per slot)
                "power_cap_w": res.schedule.job_cap[j][0]
                if res.schedule.job_cap and j in res.schedule.job_cap
                else None,
                "schedule": [
                    {"slot": t, "gpus": g, "busy_fraction": round(f, 4)} for t, g, f in runs
                ],
            }
        )
        if fine is not None:  # the exact placement steps (a re-plan rebuilds the job from them)
            jobs[-1]["placement_runs"] = encode_runs(fine[j])
    sites = []
    it_l, meter_l = np.asarray(ex.site_it_kw).tolist(), np.asarray(ex.site_meter_kw).tolist()
    kwh_l, kg_l = np.asarray(ex.site_energy_kwh).tolist(), np.asarray(ex.site_carbon_kg).tolist()
    cost_l = np.asarray(ex.site_cost).tolist()
    for s, site in enumerate(inp.sites):
        budget_l = np.asarray(site.budget_kw).tolist()
        inten_l = np.asarray(site.intensity_g_per_kwh).tolist()
        price_l = np.asarray(site.price_per_kwh).tolist()
        sites.append(
            {
                "name": site.name,
                "zone": site.zone,
                "pue": site.pue,
                "carbon": inp.extras.get("carbon_provenance", {}).get(site.name),
                "slots": [
                    {
                        "slot": t,
                        "it_power_kw": round(float(it_l[s][t]), 3),
                        "meter_power_kw": round(float(meter_l[s][t]), 3),
                        "budget_kw": float(budget_l[t]) if math.isfinite(budget_l[t]) else None,
                        "intensity_g_per_kwh": float(inten_l[t]),
                        "price_per_kwh": float(price_l[t]),
                        "energy_kwh": round(float(kwh_l[s][t]), 4),
                        "carbon_kg": round(float(kg_l[s][t]), 4),
                        "cost": round(float(cost_l[s][t]), 4),
                    }
                    for t in range(T)
                ],
            }
        )
    base = {k: v.totals for k, v in res.baselines.items()}
    tot = ex.totals
    savings = {}
    for k, b in base.items():
        savings[f"carbon_kg_vs_{k}"] = b["carbon_kg"] - tot["carbon_kg"]
        savings[f"carbon_pct_vs_{k}"] = _pct(b["carbon_kg"] - tot["carbon_kg"], b["carbon_kg"])
        savings[f"energy_kwh_vs_{k}"] = b["energy_kwh"] - tot["energy_kwh"]
        savings[f"cost_vs_{k}"] = b["cost"] - tot["cost"]
        savings[f"carbon_kg_in_horizon_vs_{k}"] = (
            b["carbon_kg_in_horizon"] - tot["carbon_kg_in_horizon"]
        )
    tail_inten, tail_price = tail_rates(inp)
    beyond_rule = {
        "rule": BEYOND_HORIZON_RULE,
        "intensity_g_per_kwh": {
            site.name: round(float(tail_inten[s]), 3) for s, site in enumerate(inp.sites)
        },
        "price_per_kwh": {
            site.name: round(float(tail_price[s]), 6) for s, site in enumerate(inp.sites)
        },
    }
    return {
        "schema": SCHEMA,
        "created_at": iso_utc(clock.now()),
        "config": str(cfg.path),
        "fleet": inp.name,
        "horizon": {
            "start": iso_utc(inp.start),
            "slot_minutes": int(round(dt * 60)),
            "slots": T,
            "slot_starts": [iso_utc(t) for t in inp.slot_starts],
            **(
                {"placement_step_minutes": dt * 60 / res.schedule.subslots}
                if fine is not None
                else {}
            ),
        },
        "objective_weights": inp.objective.model_dump(),
        "solver": outcome,
        "executed": {
            "objective": ex.objective,
            "milp_bound": bound,
            "gap_to_bound": gap,
            "milp_objective": res.outcome.objective
            if res.outcome.objective is not None and math.isfinite(res.outcome.objective)
            else None,
            "objective_terms": {
                "carbon": inp.objective.carbon_weight_per_kg * ex.totals["carbon_kg_in_horizon"],
                "cost": inp.objective.cost_weight * ex.totals["cost_in_horizon"],
                "lateness": float(ex.job_lateness_penalty.sum()),
                "unserved": inp.objective.unserved_weight_per_gpu_h * ex.totals["unserved_gpu_h"],
                "budget_overrun": ex.objective
                - inp.objective.carbon_weight_per_kg * ex.totals["carbon_kg_in_horizon"]
                - inp.objective.cost_weight * ex.totals["cost_in_horizon"]
                - float(ex.job_lateness_penalty.sum())
                - inp.objective.unserved_weight_per_gpu_h * ex.totals["unserved_gpu_h"],
            },
        },
        "pools": pools,
        "jobs": jobs,
        "sites": sites,
        "totals": tot,
        "baselines": base,
        "currency": cfg.currency,
        "carbon_signal": carbon_signal(cfg, inp),
        "baseline_rules": baseline_rules(inp),
        "beyond_horizon_rule": beyond_rule,
        "savings": savings,
        "diagnostics": res.diagnostics,
        "tradeoff": res.tradeoff,
    }
