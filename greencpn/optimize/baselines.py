"""The report's baselines: what the fleet would emit without greencpn, priced like the plan.

Three schedules, each placed on the same grid as the plan
(:func:`~greencpn.optimize.placement.place_jobs`), its nodes repaired by
:func:`~greencpn.optimize.repair.repair_nodes` where it turns idle nodes off, and priced by
:func:`~greencpn.optimize.evaluate.evaluate` — the plan's saving is ``1 − plan / baseline`` on
those figures:

* ``carbon_agnostic`` — FIFO at release at the submit site (:func:`baseline_rules`), spilling
  to the next allowed site when full or at budget, full power, every node on all the time;
* ``shutdown_idle`` — the same schedule with idle nodes off (:func:`fifo_spill`; its schedule is
  also the plan's "FIFO" candidate);
* ``carbon_aware_greedy`` — best-window tools plus Slurm power saving: earliest deadline first,
  each job in the contiguous window with the lowest PUE × mean intensity that fits
  (:func:`greedy_baseline`).

:data:`BASELINE_SETS` names which of them a run prices (``[controller] baselines``).
"""

from __future__ import annotations

import numpy as np

from greencpn.config import SUBMIT_SITE_RULE
from greencpn.optimize.evaluate import Evaluation, evaluate
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.placement import place_jobs
from greencpn.optimize.repair import repair_nodes
from greencpn.optimize.schedule import Schedule


def fifo_spill(
    inp: PlanInputs, spare_on: np.ndarray, top: np.ndarray, passes: int = 3
) -> tuple[Schedule, np.ndarray, np.ndarray, Evaluation]:
    """First in, first out at release, idle nodes off while placing (nodes come on as jobs need
    them, so the idle power of unused nodes does not eat the site budgets), spilling to the next
    allowed site when a site is full or at its budget; late jobs go first in a retry pass, and
    energy the node repair drew over a budget is held back in it. Keeps the pass without
    budget overrun with the fewest late jobs (else the least overrun).

    A retry pass whose order and held-back energy are those of the pass before would place the
    same schedule again (the placement is deterministic): it is skipped — e.g. when the same
    jobs are late in every pass because no order can make them on time."""
    best: tuple[Schedule, np.ndarray, np.ndarray, Evaluation] | None = None
    best_key = None
    order = None
    reserve = np.zeros((len(inp.sites), inp.T))
    best_late: list[int] = []
    previous: tuple | None = None
    for _ in range(passes):
        inputs = (None if order is None else tuple(order), reserve.tobytes())
        if inputs == previous:
            break
        previous = inputs
        sched = place_jobs(inp, spare_on, top, mode="asap", job_order=order, reserve_kwh=reserve)
        late = late_jobs(inp, sched)
        n, u, _d = repair_nodes(inp, sched)
        ev = evaluate(inp, sched, n, u)
        over = ev.budget_overrun_kwh
        key = (over.sum() > 1e-6, len(late), float(over.sum()))
        if best_key is None or key < best_key:
            best, best_key, best_late = (sched, n, u, ev), key, late
        if not late and over.sum() <= 1e-6:
            break
        # hold back what the node repair (min up, start-ups) drew over a budget
        reserve = reserve + over * 2.0 + (over > 0) * 0.1 * inp.slot_h
        base = sorted(range(len(inp.jobs)), key=lambda i: (inp.jobs[i].release, inp.jobs[i].id))
        first = set(best_late) | set(late)
        order = [j for j in base if j in first] + [j for j in base if j not in first]
    assert best is not None
    return best


def late_jobs(inp: PlanInputs, sched: Schedule) -> list[int]:
    out = []
    for j, job in enumerate(inp.jobs):
        if job.required_gpu_h <= 0 or job.release_slot >= inp.T:
            continue
        deadline_h = (job.deadline - inp.start).total_seconds() / 3600.0
        if not sched.runs[j] or float(sched.end_h[j]) > deadline_h + 1e-6:
            out.append(j)
    return out


#: what ``baselines=`` computes: ``[controller] baselines`` in the control step
BASELINE_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "agnostic": ("carbon_agnostic",),
    "all": ("carbon_agnostic", "shutdown_idle", "carbon_aware_greedy"),
}


def price_baselines(
    inp: PlanInputs, which: tuple[str, ...] = BASELINE_SETS["all"]
) -> tuple[dict[str, Evaluation], dict]:
    """The three baselines (or those named in ``which``), each priced by :func:`evaluate`
    like the plan.

    * ``carbon_agnostic``: first in, first out at release, at the job's submit site
      (``submit_site``, else the allowed site with the most GPUs; spilling to the next allowed
      site by GPUs when full or at budget: :func:`baseline_rules`), full power, every node on
      all the time;
    * ``shutdown_idle``: the same schedule with idle nodes off (the node repair: nodes on =
      what the held GPUs need plus spares, min up / min down kept);
    * ``carbon_aware_greedy``: what best-window tools plus Slurm power saving give — jobs in
      earliest-deadline order, each in the contiguous window (placement grid) with the lowest
      PUE × mean intensity over its allowed sites and pools that fits the free GPUs and the
      site budget, at the cap level with the lowest GPU energy per unit of work whose slowed
      run still meets the deadline (one level per pool and slot); nodes as for shutdown-idle.

    Both schedules are placed with idle nodes off (only spares on, nodes added as jobs need
    them), so no baseline is judged against a budget its idle nodes already use up.
    """
    P, T = len(inp.pools), inp.T
    all_on = np.repeat(np.array([p.nodes for p in inp.pools])[:, None], T, axis=1)
    spare_on = np.repeat(np.array([p.spares for p in inp.pools])[:, None], T, axis=1)
    top = np.zeros((P, T), dtype=int)
    evals: dict[str, Evaluation] = {}
    scheds: dict[str, tuple[Schedule, np.ndarray, np.ndarray]] = {}
    if "carbon_agnostic" in which or "shutdown_idle" in which:
        sched, n_si, u_si, ev_si = fifo_spill(inp, spare_on, top)
        u_all = np.zeros((P, T), dtype=int)
        u_all[:, 0] = np.maximum(0, all_on[:, 0] - np.array([p.initial_on for p in inp.pools]))
        if "carbon_agnostic" in which:
            evals["carbon_agnostic"] = evaluate(inp, sched, all_on, u_all)
            scheds["carbon_agnostic"] = (sched, all_on, u_all)
        if "shutdown_idle" in which:  # its nodes: the node repair's, found in fifo_spill
            evals["shutdown_idle"] = ev_si
            scheds["shutdown_idle"] = (sched, n_si, u_si)
    if "carbon_aware_greedy" in which:
        evals["carbon_aware_greedy"], scheds["carbon_aware_greedy"] = greedy_baseline(
            inp, spare_on, top
        )
    return evals, scheds


def greedy_baseline(
    inp: PlanInputs, spare_on: np.ndarray, top: np.ndarray
) -> tuple[Evaluation, tuple[Schedule, np.ndarray, np.ndarray]]:
    """The carbon-aware greedy baseline (see :func:`price_baselines`)."""
    # earliest deadline first; jobs it leaves late are retried first once (keep the better)
    g_sched = place_jobs(inp, spare_on, top, mode="greedy")
    n_g, u_g, d_g = repair_nodes(inp, g_sched)
    gr = evaluate(inp, g_sched, n_g, u_g)
    late = [j for j in range(len(inp.jobs)) if gr.job_late_h[j] > 1e-6]
    if late:
        edf = sorted(range(len(inp.jobs)), key=lambda i: (inp.jobs[i].deadline, inp.jobs[i].id))
        first = set(late)
        order = [j for j in edf if j in first] + [j for j in edf if j not in first]
        s2 = place_jobs(inp, spare_on, top, mode="greedy", job_order=order)
        n2, u2, _ = repair_nodes(inp, s2)
        ev2 = evaluate(inp, s2, n2, u2)
        if ev2.objective < gr.objective:
            g_sched, n_g, u_g, gr = s2, n2, u2, ev2
    return gr, (g_sched, n_g, u_g)


def baseline_rules(inp: PlanInputs) -> dict:
    """How the baselines chose what the fleet would do without greencpn (plan.json)."""
    by_rule: dict[str, int] = {}
    for job in inp.jobs:
        by_rule[job.submit_rule or "first allowed site"] = (
            by_rule.get(job.submit_rule or "first allowed site", 0) + 1
        )
    return {
        "submit_site": {
            "rule": "each job starts at its submit site: the job's submit_site field, else "
            + SUBMIT_SITE_RULE
            + "; when that site is full or at its budget, the next allowed site by GPUs "
            "(most first), then name",
            "jobs_by_rule": by_rule,
        },
    }
