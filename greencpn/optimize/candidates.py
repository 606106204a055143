"""The executable candidates a plan is chosen from, besides the MILP-guided placement itself.

:func:`~greencpn.optimize.plan.finish_plan` places the MILP's groups as jobs in several ways
and keeps the candidate with the lowest evaluated objective (plus, on a re-plan, its
stability cost :func:`~greencpn.optimize.stability.stability_cost`). This module builds them:

* :func:`place_and_repair` — one placement with the budget feedback passes: place, repair the
  nodes exactly, and where a site's meter energy went over its budget hold that energy back
  and place again (at most ``PLACEMENT_PASSES_BUDGET_S`` after the second pass);
* :func:`job_orders` — the job orders tried (largest first, earliest deadline first);
* :func:`kept_candidate` — on a re-plan, the newest plan's placement with only the changed
  jobs placed afresh (``KEPT``; incremental when at least ``INCREMENTAL_MIN_SHARE`` of the jobs
  are kept);
* :func:`improved_candidates` — the best candidates after the re-insertion pass
  (:mod:`greencpn.optimize.improve`), skipped for a loser worse than ``IMPROVE_SKIP_RATIO`` ×
  the best;
* :func:`job_caps_pass` — ``solver.cap_mode = "job"``: the chosen plan with each job at its own
  cap level, kept only when the objective is not higher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from greencpn.config import FleetConfig
from greencpn.optimize.document import iso_utc, work_by_group
from greencpn.optimize.evaluate import Evaluation, evaluate
from greencpn.optimize.improve import improve_schedule
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.jobcaps import recap_jobs
from greencpn.optimize.milp import MilpSolution, PlanModel
from greencpn.optimize.placement import PlacementAbandoned, place_jobs
from greencpn.optimize.repair import repair_nodes
from greencpn.optimize.schedule import NodeAnchor, Schedule
from greencpn.optimize.stability import Anchor, kept_runs

log = logging.getLogger(__name__)


#: wall-clock budgets (s) of the placement's budget feedback passes after its second pass, and
#: of the per-job cap level candidates' retry passes after each order's first: on fleets whose
#: budgets bind (L-loaded) every pass is a full placement + node repair, and the FIFO candidate
#: with re-insertion is the plan there; S, M and L finish inside them
PLACEMENT_PASSES_BUDGET_S = 20.0


LEVELS_BUDGET_S = 15.0


#: the plan_source name of the FIFO candidate (the shutdown-idle baseline's schedule)
FIFO = "FIFO with spill (shutdown-idle)"


def job_caps_pass(
    cfg: FleetConfig,
    inp: PlanInputs,
    sched: Schedule,
    n: np.ndarray,
    u: np.ndarray,
    executed: Evaluation,
) -> tuple[Schedule, Evaluation, dict]:
    """``solver.cap_mode = "job"``: the chosen plan with each placed job at its own cap level
    (:func:`~greencpn.optimize.jobcaps.recap_jobs`), kept only when the evaluated objective is
    not higher than the same plan with its jobs on their own curves at their pools' caps (and
    moved only where that misses their deadline: ``jobs_corrected``), which is kept anyway.
    Returns the schedule and evaluation to use and what the pass did (plan.json
    ``solver.job_caps``)."""
    if inp.solver.cap_mode != "job":
        return sched, executed, {"mode": "pool"}
    t0 = time.perf_counter()
    classes = {jc.id: jc.workload_class for jc in cfg.jobs}
    rc = recap_jobs(inp, sched, n, executed, classes, u)
    info: dict = {
        "mode": "job",
        "jobs_considered": rc.considered,
        "carbon_kg_before": executed.totals["carbon_kg"],
        "objective_before": executed.objective,
    }
    kept = False
    took = None
    # the same plan with every job on its own curve at its pool's cap, moved only where that
    # misses its deadline or the budget: kept even when the objective (which timed the jobs on
    # the pool's curve) rises — it is what the plan really does
    rs = recap_jobs(inp, sched, n, executed, classes, u, stay_unless_late=True)
    if rs.on_own_curve:
        evs = evaluate(inp, rs.schedule, n, u)  # nodes and start-ups are unchanged
        info["objective_own_curves"] = evs.objective
        sched, executed, kept, took = rs.schedule, evs, True, rs
    if rc.on_own_curve:
        ev = evaluate(inp, rc.schedule, n, u)
        info["objective_recapped"] = ev.objective
        if ev.objective <= executed.objective + 1e-9:
            sched, executed, kept, took = rc.schedule, ev, True, rc
    info.update(
        kept=kept,
        jobs_recapped=took.recapped if took else 0,
        jobs_corrected=took.corrected if took else 0,
        jobs_on_own_curve=took.on_own_curve if took else 0,
        jobs_own_curve_late=rc.own_late,
        carbon_kg_after=executed.totals["carbon_kg"],
        objective_after=executed.objective,
        s=time.perf_counter() - t0,
    )
    return sched, executed, info


#: the MILP-guided placement is re-inserted beside the best candidate only when its objective
#: is at most this multiple of the best's: far above it, its objective is lateness and budget
#: penalties the pass cannot remove (L-loaded: 64 M against FIFO's 0.13 M; after 20 s of the
#: pass 29 M), on S, M, L and the example it is within a few % of the best
IMPROVE_SKIP_RATIO = 2.0


#: the re-insertion pass's time per candidate: one-job sweeps, then multi-job moves
IMPROVE_TIME_LIMIT_S = 20.0


IMPROVE_GROUP_MOVES_S = 5.0


def improved_candidates(inp: PlanInputs, cands: list) -> tuple[list, list[dict]]:
    """The best candidate by the objective and the MILP-guided placement ("optimised
    placement", the one the MILP steers; measured: after the pass it is the best on S and M)
    after the re-insertion pass (:func:`~greencpn.optimize.improve.improve_schedule`), nodes
    repaired exactly and priced by :func:`evaluate`; each is added as "<name> + re-insertion"."""
    info: list[dict] = []
    out = list(cands)
    ranked = sorted(cands, key=lambda c: c[0])
    picked = ranked[:1] + [
        c
        for c in ranked[1:]
        if c[1] == "optimised placement" and c[0] <= IMPROVE_SKIP_RATIO * max(ranked[0][0], 1e-9)
    ]
    for obj_, name, cand in picked:
        sched1, stats = improve_schedule(
            inp,
            cand[0],
            time_limit_s=IMPROVE_TIME_LIMIT_S,
            group_moves_s=IMPROVE_GROUP_MOVES_S,
        )
        n1, u1, d1 = repair_nodes(inp, sched1)
        ev1 = evaluate(inp, sched1, n1, u1)
        info.append({"from": name, "objective_before": obj_, "objective": ev1.objective, **stats})
        out.append((ev1.objective, f"{name} + re-insertion", (sched1, n1, u1, d1, ev1)))
    return out, info


def abandon_threshold(incumbent: float, reinserted: bool) -> float | None:
    """The objective a candidate still being built must stay under to matter, given the best
    score of the candidates built so far (``incumbent``): a candidate above it can neither be
    the plan (the plan is the lowest score, and a score is the objective plus a stability
    cost ≥ 0) nor, when the re-insertion pass runs (``reinserted``), the MILP-guided placement
    it re-inserts (only within ``IMPROVE_SKIP_RATIO`` × the best; the best only falls as more
    candidates are built). Passed as ``abandon_above`` to
    :func:`~greencpn.optimize.placement.place_jobs`; None (no bound) before any candidate."""
    if not np.isfinite(incumbent):
        return None
    return incumbent * (IMPROVE_SKIP_RATIO if reinserted else 1.0)


def no_later_pass(last: bool, t_start: float, budget_s: float) -> Callable[[], bool]:
    """``abandon_when`` of a feedback pass: true when no later pass will be built from this
    one — it is the ``last``, or the passes' budget (``budget_s`` since ``t_start``) is spent
    already, so the loop's check before the next pass stops it."""
    return lambda: last or time.perf_counter() - t_start > budget_s


def abandon_record(name: str, i_pass: int, ab: PlacementAbandoned, above: float | None) -> dict:
    """plan.json ``solver.abandoned`` entry: a candidate pass stopped by its lower bound."""
    return {
        "name": name,
        "pass": i_pass,
        "lower_bound": round(ab.lower_bound, 6),
        "abandon_above": round(float(above or 0.0), 6),
        "jobs_placed_before": ab.jobs_done,
    }


def job_orders(inp: PlanInputs) -> dict[str, list[int]]:
    """Orders the placement tries. Largest jobs first packs rigid jobs best (measured on the
    example: 17 % lower objective than earliest deadline first); EDF protects tight deadlines."""
    J = range(len(inp.jobs))
    jobs = inp.jobs
    return {
        "largest-first": sorted(
            J, key=lambda i: (-jobs[i].gpus * jobs[i].work_gpu_h, jobs[i].deadline_slot, jobs[i].id)
        ),
        "earliest-deadline-first": sorted(
            J, key=lambda i: (jobs[i].deadline_slot, -jobs[i].gpus * jobs[i].work_gpu_h, jobs[i].id)
        ),
    }


KEPT = "kept placement"


#: an incremental re-plan needs the newest plan to be keepable for this share of the jobs
INCREMENTAL_MIN_SHARE = 0.75


def kept_candidate(
    inp: PlanInputs, model: PlanModel, sol: MilpSolution, anchor: Anchor
) -> tuple | None:
    """The newest plan with only what changed placed afresh: every unchanged job keeps its
    pool and start (:func:`~greencpn.optimize.stability.kept_runs`), at the newest plan's cap
    levels and nodes on (the MILP's in slots it does not cover); new and changed jobs are then
    placed around them, guided by the MILP, and the nodes repaired with the anchor.
    Returns ``(sched, n, u, d, evaluation, jobs kept, jobs unchanged)`` or None when no job is kept."""
    doc = anchor.latest
    assert doc is not None
    fixed = kept_runs(inp, doc, skip=set(inp.extras.get("running_job_ids", ())))
    if not fixed:
        return None
    prev_n = anchor.latest_nodes_on
    n0 = sol.n.astype(float).copy()
    level = sol.level.copy()
    if prev_n is not None:
        known = np.isfinite(prev_n)
        n0[known] = prev_n[known]
    by_name = {pp["name"]: pp for pp in doc.get("pools", [])}
    starts = {s_: i for i, s_ in enumerate(doc["horizon"]["slot_starts"])}
    for p, pool in enumerate(inp.pools):
        pp = by_name.get(pool.name)
        if pp is None:
            continue
        slots = {int(x["slot"]): x for x in pp["slots"]}
        for t, ts in enumerate(inp.slot_starts):
            i = starts.get(iso_utc(ts))
            if i is not None and i in slots:
                lv = int(slots[i].get("cap_level", level[p, t]))
                if 0 <= lv < len(pool.level_thr):
                    level[p, t] = lv
    guide = work_by_group(inp, model, sol)
    sched = place_jobs(inp, n0, level, mode="plan", guide=guide, fixed=fixed)
    kept = sum(1 for j, (p, *_) in fixed.items() if int(sched.pool[j]) == p)
    n, u, d = repair_nodes(inp, sched, anchor=anchor.nodes())
    ev = evaluate(inp, sched, n, u)
    return sched, n, u, d, ev, kept, len(fixed)


def place_and_repair(
    inp: PlanInputs,
    model: PlanModel,
    sol: MilpSolution,
    max_passes: int = 8,
    node_anchor: NodeAnchor | None = None,
    abandon_above: float | None = None,
    abandoned: list[dict] | None = None,
):
    """Stage 2. Place jobs in each order of :func:`job_orders`, repair their nodes and keep the
    one with the lower carbon + cost; then a feedback loop — when the node repair (min up, start-up energy) pushes a site over its
    budget, or a job ends late, place again with that energy held back and the late jobs first.
    Keeps the best pass by the objective.

    ``abandon_above``: the objective a feedback pass must stay under to matter (see
    :func:`abandon_threshold`). A pass is stopped
    (:class:`~greencpn.optimize.placement.PlacementAbandoned`, recorded in ``abandoned``) once
    its lower bound exceeds it *and* no later pass can be built from it — the last pass, or
    the passes' time budget already spent (the next pass would not start): each pass is built
    from the previous one's overrun and late jobs, and a later one may well win (a pass that
    leaves a job unserved can be followed by one that serves it). The first pass of each order
    is always built (it picks the order)."""
    guide = work_by_group(inp, model, sol)
    ranked = []
    orders = job_orders(inp)
    if model.placement_order in orders:  # a re-plan reuses the order that won last time
        orders = {model.placement_order: orders[model.placement_order]}
    for name, order in orders.items():
        sched = place_jobs(inp, sol.n, sol.level, mode="plan", guide=guide, job_order=order)
        n, u, d = repair_nodes(inp, sched, anchor=node_anchor)
        ev = evaluate(inp, sched, n, u)
        # ranked on carbon and cost only: the passes below remove budget overruns and lateness
        energy_terms = (
            inp.objective.carbon_weight_per_kg * ev.totals["carbon_kg_in_horizon"]
            + inp.objective.cost_weight * ev.totals["cost_in_horizon"]
        )
        log.debug(
            "placement %s: objective %.2f, carbon + cost terms %.2f",
            name,
            ev.objective,
            energy_terms,
        )
        ranked.append((energy_terms, name, order, (sched, n, u, d, ev)))
    ranked.sort(key=lambda r: r[0])
    _, name, base, first_pass = ranked[0]
    model.placement_order = name
    reserve = np.zeros((len(inp.sites), inp.T))
    best = None
    order = base
    stale = 0
    first: set[int] = set()
    t_start = time.perf_counter()
    for i in range(max_passes):
        if i > 1 and time.perf_counter() - t_start > PLACEMENT_PASSES_BUDGET_S:
            break  # a loaded fleet: the FIFO candidate and re-insertion carry the plan
        if i == 0:
            sched, n, u, d, ev = first_pass
        else:
            try:
                sched = place_jobs(
                    inp,
                    sol.n,
                    sol.level,
                    mode="plan",
                    guide=guide,
                    reserve_kwh=reserve,
                    job_order=order,
                    abandon_above=abandon_above,
                    abandon_when=no_later_pass(
                        i == max_passes - 1, t_start, PLACEMENT_PASSES_BUDGET_S
                    ),
                )
            except PlacementAbandoned as ab:
                if abandoned is not None:
                    abandoned.append(
                        abandon_record(f"optimised placement ({name})", i, ab, abandon_above)
                    )
                break
            n, u, d = repair_nodes(inp, sched, anchor=node_anchor)
            ev = evaluate(inp, sched, n, u)
        late = [j for j in range(len(inp.jobs)) if ev.job_late_h[j] > 1e-6]
        log.debug(
            "placement %s pass %d: %d late, overrun %.3f kWh, objective %.2f",
            name,
            i,
            len(late),
            ev.budget_overrun_kwh.sum(),
            ev.objective,
        )
        if best is None or ev.objective < best[4].objective - 1e-9:
            best = (sched, n, u, d, ev)
            stale = 0
        else:
            stale += 1
        over = ev.budget_overrun_kwh
        if (over.sum() <= 1e-6 and not late) or (stale >= 2 and over.sum() <= 1e-6):
            break  # done, or two passes without improvement (overloaded fleets)
        # the energy held back grows geometrically where a budget is still overrun: what the
        # placement does not see there (the node repair's spares, min up, boot energy) can be
        # many times the overrun itself
        reserve = (
            np.where(over > 0, reserve * 2.0, reserve) + over * 2.0 + (over > 0) * 0.1 * inp.slot_h
        )
        first |= set(late)  # every job found late so far goes first (no oscillation)
        order = [j for j in base if j in first] + [j for j in base if j not in first]
    assert best is not None
    return best
