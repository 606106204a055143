"""The plan's carbon saving split by lever, by re-pricing the plan with one lever undone.

The what-if layer attributes a policy's saving by replaying it with levers switched off
(:mod:`greencpn.whatif.attribution`); a one-off plan has no replay, so here each lever is undone
on the executed schedule itself and the result priced by :func:`~greencpn.optimize.evaluate.evaluate`
(the same arithmetic as the plan and the baselines):

* ``time`` (shifting in time): every job's runs moved earlier so that it starts at its release
  slot, same pool, GPUs and cap level per slot;
* ``space`` (moving between sites): every job's runs moved, at the same slots, to the largest
  pool of its submit site (:func:`greencpn.config.baseline_submit_site`), at that pool's level;
* ``sleep`` (sleeping nodes): every node on in every slot;
* ``caps`` (power caps): every slot at the top cap level, the same work done at full speed
  (busy GPU-time × the level's relative throughput).

A lever's saving is ``carbon(plan with that lever undone) − carbon(plan)`` (the leave-one-out
saving of the what-if attribution). Undoing a lever re-prices the plan; it does not re-check
capacity or budgets, so an undone schedule may be one the fleet could not run. The savings need
not add up to the saving against the carbon-agnostic baseline: levers interact; the difference
is ``interaction_kg`` (positive: the levers do more together than apart).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from greencpn.optimize.evaluate import evaluate
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.schedule import Schedule

LEVERS = ("time", "space", "sleep", "caps")
LEVER_LABELS = {
    "time": "shifting in time",
    "space": "moving between sites",
    "sleep": "sleeping nodes",
    "caps": "power caps",
}


def _job_busy(inp: PlanInputs, sched: Schedule) -> tuple[np.ndarray, list[np.ndarray]]:
    """The busy GPUs not owed to any job (reserves) and each job's busy GPUs [P, T2]."""
    rest = sched.busy.astype(float).copy()
    per_job = []
    for j in range(len(inp.jobs)):
        b = np.zeros_like(rest)
        p = int(sched.pool[j])
        for t, g, f in sched.runs[j]:
            b[p, t] += g * f
        rest -= b
        per_job.append(b)
    return np.maximum(rest, 0.0), per_job


def _priced(inp: PlanInputs, sched: Schedule, busy: np.ndarray, n: np.ndarray, u: np.ndarray):
    return evaluate(inp, replace(sched, busy=busy), n, u).totals["carbon_kg_in_horizon"]


def lever_savings(
    inp: PlanInputs, sched: Schedule, n: np.ndarray, u: np.ndarray, baseline_carbon_kg: float
) -> dict:
    """The plan's in-horizon carbon saving per lever (module docstring); ``baseline_carbon_kg``
    is the carbon-agnostic baseline's in-horizon carbon (the total to split)."""
    T2 = sched.busy.shape[1]
    plan_kg = _priced(inp, sched, sched.busy.astype(float), n, u)
    rest, per_job = _job_busy(inp, sched)
    site_pools: dict[int, int] = {}
    for p, pool in enumerate(inp.pools):
        best = site_pools.get(pool.site)
        if best is None or (-pool.gpus, pool.name) < (-inp.pools[best].gpus, inp.pools[best].name):
            site_pools[pool.site] = p
    undone = {}
    # time: each job from its release slot
    busy = rest.copy()
    for j, job in enumerate(inp.jobs):
        b = per_job[j]
        cols = np.nonzero(b.sum(axis=0) > 0)[0]
        if cols.size == 0:
            continue
        shift = max(0, int(cols[0]) - max(0, job.release_slot))
        busy[:, : T2 - shift] += b[:, shift:]
    undone["time"] = _priced(inp, sched, busy, n, u)
    # space: each job at its submit site's largest pool, same slots
    busy = rest.copy()
    for j, job in enumerate(inp.jobs):
        b = per_job[j]
        p = int(sched.pool[j])
        if p < 0 or not b.any():
            continue
        home = (job.baseline_sites or job.sites)[0]
        q = p if inp.pools[p].site == home else site_pools.get(home, p)
        busy[q] += b.sum(axis=0)
    undone["space"] = _priced(inp, sched, busy, n, u)
    # sleep: every node on
    all_on = np.repeat(np.array([pl.nodes for pl in inp.pools])[:, None], inp.T, axis=1)
    u_on = np.zeros_like(u)
    u_on[:, 0] = np.maximum(0, all_on[:, 0] - np.array([pl.initial_on for pl in inp.pools]))
    undone["sleep"] = _priced(inp, sched, sched.busy.astype(float), all_on, u_on)
    # caps: top level, the same work at full speed
    thr = np.zeros(sched.level.shape)
    for p, pool in enumerate(inp.pools):
        thr[p] = pool.level_thr[sched.level[p]]
    full = sched.busy * thr
    for j, (_cap, thr_j, _eps) in (sched.job_cap or {}).items():
        # a job at its own cap (cap_mode = "job"): its work at its own throughput
        p = int(sched.pool[j])
        full += per_job[j] * (thr_j - thr) * (np.arange(len(inp.pools)) == p)[:, None]
    top = replace(sched, level=np.zeros_like(sched.level), job_cap=None)
    undone["caps"] = _priced(inp, top, full, n, u)
    total = baseline_carbon_kg - plan_kg
    rows = []
    for lv in LEVERS:
        saving = undone[lv] - plan_kg
        rows.append(
            {
                "lever": lv,
                "label": LEVER_LABELS[lv],
                "carbon_kg_with_lever_undone": undone[lv],
                "saving_kg": saving,
                "share_of_saving": saving / total if abs(total) > 1e-9 else None,
            }
        )
    return {
        "method": "each lever undone alone on the executed schedule and re-priced "
        "(in-horizon carbon; capacity and budgets not re-checked)",
        "plan_carbon_kg_in_horizon": plan_kg,
        "carbon_agnostic_carbon_kg_in_horizon": baseline_carbon_kg,
        "saving_kg": total,
        "levers": rows,
        "interaction_kg": total - sum(r["saving_kg"] for r in rows),
    }
