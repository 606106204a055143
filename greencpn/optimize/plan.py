"""One planning run: inputs → MILP → placement → repair → evaluation → the plan document.

:func:`make_plan` is the optimise phase of the control step (:mod:`greencpn.controller`), the
single code path the one-off report, the daemon and the what-if replay share. It receives the
forecasts as arrays (the controller's forecast phase gathers them; nothing here reads a source)
and returns a :class:`PlanResult` whose ``document`` is the versioned ``plan.json`` (schema
``greencpn.plan/1``, see docs/plan-schema.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from greencpn.clock import Clock
from greencpn.config import FleetConfig, slot_times
from greencpn.errors import ConfigError, SolverError
from greencpn.optimize.checks import run_checks
from greencpn.optimize.evaluate import Evaluation, evaluate
from greencpn.optimize.inputs import PlanInputs, build_inputs, deadband
from greencpn.optimize.joblevel import joblevel_size, solve_joblevel
from greencpn.optimize.milp import MilpSolution, PlanModel, SolveOutcome
from greencpn.optimize.placement import NodeAnchor, Schedule, place_jobs, repair_nodes
from greencpn.optimize.residency import check_residency
from greencpn.optimize.stability import Anchor, encode_runs, kept_runs, stability_cost

log = logging.getLogger(__name__)

SCHEMA = "greencpn.plan/1"

#: the job-level MILP is solved beside the placement when it has at most this many binaries
#: (measured: S 6,256, M 183,576, L 2,162,240, the example 444,144)
JOBLEVEL_MAX_BINARIES = 20_000


@dataclass
class PlanResult:
    inputs: PlanInputs
    outcome: SolveOutcome
    milp: MilpSolution
    schedule: Schedule
    nodes_on: np.ndarray
    startups: np.ndarray
    shutdowns: np.ndarray
    executed: Evaluation
    baselines: dict[str, Evaluation]
    baseline_schedules: dict[str, tuple[Schedule, np.ndarray, np.ndarray]]
    diagnostics: list[str]
    tradeoff: list[dict]
    document: dict


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def horizon_start(cfg: FleetConfig, clock: Clock | None) -> datetime:
    """The configured start, else the clock's now rounded down to a slot boundary."""
    if cfg.raw.horizon.start is not None:
        return cfg.raw.horizon.start
    if clock is None:
        raise ConfigError(
            "no horizon start",
            source=str(cfg.path),
            field="horizon.start",
            fix="set horizon.start or pass a clock (the CLI uses now)",
        )
    now = clock.now()
    step = cfg.raw.horizon.slot_minutes * 60
    epoch = int(now.timestamp()) // step * step
    return datetime.fromtimestamp(epoch, UTC)


def make_inputs(
    cfg: FleetConfig,
    clock: Clock | None = None,
    intensity_by_zone: dict[str, np.ndarray] | None = None,
    failed_nodes: dict[str, int] | None = None,
    *,
    provenance: dict[str, dict] | None = None,
    forecast_error: dict[str, np.ndarray] | None = None,
    reserves: dict[str, np.ndarray] | None = None,
    start: datetime | None = None,
) -> PlanInputs:
    """The plan's numeric inputs from the config and the forecasts the caller gathered.

    ``optimize`` reads no files and opens no sources: the control step
    (:mod:`greencpn.controller`) gathers carbon per zone, its provenance and error per site and
    the interactive-load reserves per pool, and passes them here as arrays.
    """
    if intensity_by_zone is None:
        raise ValueError(
            "make_inputs needs intensity_by_zone; gather the forecasts with "
            "greencpn.controller.forecast.make_inputs (the control step does)"
        )
    start = start or horizon_start(cfg, clock)
    T = cfg.raw.horizon.slots
    starts = slot_times(start, T, cfg.raw.horizon.slot_minutes)
    provenance = {k: dict(v) for k, v in (provenance or {}).items()}
    errors = forecast_error or {}
    for s in cfg.raw.sites:
        provenance.setdefault(s.name, {"source": f"csv:{cfg.carbon_path}", "fallback": None})
    inp = build_inputs(
        cfg,
        intensity_by_zone,
        start,
        starts,
        reserves=reserves,
        failed_nodes=failed_nodes,
    )
    if cfg.raw.objective.ignore_gains_within_forecast_error and errors:
        sites = []
        for site in inp.sites:
            err = errors.get(site.name)
            if err is not None:
                site = replace(
                    site, plan_intensity_g_per_kwh=deadband(site.intensity_g_per_kwh, err)
                )
                provenance[site.name]["deadband_mean_error_g_per_kwh"] = round(
                    float(np.mean(err)), 2
                )
            sites.append(site)
        inp = replace(inp, sites=sites)
    inp.extras["carbon_provenance"] = provenance
    return inp


def _fifo_spill(
    inp: PlanInputs, spare_on: np.ndarray, top: np.ndarray, passes: int = 3
) -> Schedule:
    """First in, first out at release, idle nodes off while placing (nodes come on as jobs need
    them, so the idle power of unused nodes does not eat the site budgets), spilling to the next
    allowed site when a site is full or at its budget; late jobs go first in a retry pass, and
    energy the node repair drew over a budget is held back in it. Keeps the pass without
    budget overrun with the fewest late jobs (else the least overrun)."""
    best, best_key = None, None
    order = None
    reserve = np.zeros((len(inp.sites), inp.T))
    best_late: list[int] = []
    for _ in range(passes):
        sched = place_jobs(inp, spare_on, top, mode="asap", job_order=order, reserve_kwh=reserve)
        late = _late_jobs(inp, sched)
        n, u, _d = repair_nodes(inp, sched)
        over = evaluate(inp, sched, n, u).budget_overrun_kwh
        key = (over.sum() > 1e-6, len(late), float(over.sum()))
        if best_key is None or key < best_key:
            best, best_key, best_late = sched, key, late
        if not late and over.sum() <= 1e-6:
            break
        # hold back what the node repair (min up, start-ups) drew over a budget
        reserve = reserve + over * 2.0 + (over > 0) * 0.1 * inp.slot_h
        base = sorted(range(len(inp.jobs)), key=lambda i: (inp.jobs[i].release, inp.jobs[i].id))
        first = set(best_late) | set(late)
        order = [j for j in base if j in first] + [j for j in base if j not in first]
    assert best is not None
    return best


def _late_jobs(inp: PlanInputs, sched: Schedule) -> list[int]:
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


def _baselines(
    inp: PlanInputs, which: tuple[str, ...] = BASELINE_SETS["all"]
) -> tuple[dict[str, Evaluation], dict]:
    """The three baselines (or those named in ``which``), each priced by :func:`evaluate`
    like the plan.

    * ``carbon_agnostic``: first in, first out at release, first allowed site first (spilling
      to the next when full or at budget), full power, every node on all the time;
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
        sched = _fifo_spill(inp, spare_on, top)
        u_all = np.zeros((P, T), dtype=int)
        u_all[:, 0] = np.maximum(0, all_on[:, 0] - np.array([p.initial_on for p in inp.pools]))
        if "carbon_agnostic" in which:
            evals["carbon_agnostic"] = evaluate(inp, sched, all_on, u_all)
            scheds["carbon_agnostic"] = (sched, all_on, u_all)
        if "shutdown_idle" in which:
            n_si, u_si, _d_si = repair_nodes(inp, sched)
            evals["shutdown_idle"] = evaluate(inp, sched, n_si, u_si)
            scheds["shutdown_idle"] = (sched, n_si, u_si)
    if "carbon_aware_greedy" in which:
        evals["carbon_aware_greedy"], scheds["carbon_aware_greedy"] = _greedy_baseline(
            inp, spare_on, top
        )
    return evals, scheds


def _greedy_baseline(
    inp: PlanInputs, spare_on: np.ndarray, top: np.ndarray
) -> tuple[Evaluation, tuple[Schedule, np.ndarray, np.ndarray]]:
    """The carbon-aware greedy baseline (see :func:`_baselines`)."""
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


def make_plan(
    cfg: FleetConfig,
    clock: Clock,
    *,
    intensity_by_zone: dict[str, np.ndarray] | None = None,
    model: PlanModel | None = None,
    failed_nodes: dict[str, int] | None = None,
    inputs: PlanInputs | None = None,
    new_model: Callable[[PlanInputs], PlanModel] | None = None,
    tradeoff_curve: bool = True,
    joblevel: bool = True,
    candidates: bool = True,
    incremental: bool = False,
    baselines: str = "all",
) -> PlanResult:
    """Plan the fleet over the horizon.

    Args:
        model: a built model to re-plan with new carbon data (same fleet, jobs, horizon).
        failed_nodes: per pool, nodes that failed to boot (from the apply ledger): the plan
            leaves them out, so their work is re-planned onto the rest of the fleet.
        inputs: inputs already built by the caller (the control step adjusts them for the
            observed world); ``intensity_by_zone`` and ``failed_nodes`` are then not used.
        new_model: builds the model when ``model`` is not given (default :class:`PlanModel`).
        tradeoff_curve: sweep the carbon/cost weights (the report's trade-off table); the
            control step skips it (extra solves every period for a figure nobody reads there).
        joblevel: try the job-level MILP candidate where the fleet is small enough
            (``solver.joblevel_time_limit_s``; ``[controller] joblevel_candidate`` in the step).
        candidates: compete the MILP-guided placement with the other executable candidates
            (per-job cap levels, job-level MILP, carbon-aware greedy). With an anchor (the
            control step) every candidate is scored with its stability cost against the newest
            plan and the kept placement competes too (``[controller] candidates``).
        incremental: a re-plan whose newest plan can be kept for most jobs places only the
            changed jobs (``INCREMENTAL_MIN_SHARE``; the control step sets it on large fleets,
            ``[controller] incremental_min_jobs``).
        baselines: which report baselines are priced (:data:`BASELINE_SETS`: ``none``,
            ``agnostic``, ``all``; ``[controller] baselines`` in the step). None of them
            decides the plan; the greedy schedule is built anyway when it is a candidate.
    """
    if baselines not in BASELINE_SETS:
        raise ValueError(f"baselines={baselines!r}: use one of {sorted(BASELINE_SETS)}")
    inp = inputs or make_inputs(cfg, clock, intensity_by_zone, failed_nodes=failed_nodes)
    diagnostics = run_checks(inp)
    for name, k in sorted((failed_nodes or {}).items()):
        if k:
            diagnostics.append(
                f"nodes: pool {name} has {k} failed node(s) (apply ledger); planned without them"
            )
    if model is None:
        model = (new_model or PlanModel)(inp)
        outcome = model.solve()
    else:
        outcome = model.resolve(inp)
    if not outcome.usable:
        raise SolverError(
            f"the MILP gave no usable plan: {outcome.status.value} ({outcome.termination})"
            + ("; checks found: " + "; ".join(diagnostics) if diagnostics else "")
        )
    t0 = time.perf_counter()
    sol = model.extract()
    outcome.extract_s = time.perf_counter() - t0
    return finish_plan(
        cfg,
        clock,
        inp,
        model,
        outcome,
        sol,
        diagnostics,
        tradeoff_curve,
        joblevel=joblevel,
        candidates=candidates,
        incremental=incremental,
        baselines=baselines,
    )


def finish_plan(
    cfg: FleetConfig,
    clock: Clock,
    inp: PlanInputs,
    model: PlanModel,
    outcome: SolveOutcome,
    sol: MilpSolution,
    diagnostics: list[str],
    tradeoff_curve: bool = True,
    *,
    joblevel: bool = True,
    candidates: bool = True,
    incremental: bool = False,
    baselines: str = "all",
) -> PlanResult:
    # A re-plan (the control step) carries an anchor: the newest plan and the power history.
    # Every candidate's node schedule keeps min up / min down from the history and pays the
    # flap weight against the newest plan (repair_nodes), every candidate is scored with its
    # stability cost (moved jobs, shifted starts, switched nodes), and the newest plan itself,
    # with only the jobs that changed placed afresh, is one more candidate ("kept placement").
    anchor = getattr(model, "anchor", None)
    node_anchor = anchor.nodes() if anchor is not None else None
    cands = []
    kept_s = 0.0
    kept_info: dict = {"status": "no previous plan"}
    kept = None
    if anchor is not None and anchor.latest is not None:
        tk = time.perf_counter()
        kept = _kept_candidate(inp, model, sol, anchor)
        kept_s = time.perf_counter() - tk
        if kept is not None:
            cands.append((kept[4].objective, KEPT, kept[:5]))
            tk_ = kept[4].totals
            kept_info = {
                "status": "built",
                "jobs_kept": kept[5],
                "jobs_unchanged": kept[6],
                # what its objective is made of, beyond energy (why it lost, when it does)
                **{
                    x: tk_[x]
                    for x in ("carbon_kg", "late_jobs", "unserved_gpu_h", "budget_overrun_kwh")
                },
            }
        else:
            kept_info = {"status": "no job of the newest plan is unchanged"}
    # incremental re-plan (large fleets, the control step): when the newest plan can be kept
    # for at least INCREMENTAL_MIN_SHARE of the jobs, only the changed jobs are placed (the
    # kept placement) — no full re-placement, no other candidates
    incremental_now = bool(
        incremental
        and kept is not None
        and kept[6] >= INCREMENTAL_MIN_SHARE * max(1, len(inp.jobs))
    )
    kept_info["incremental"] = incremental_now
    t0 = time.perf_counter()
    if incremental_now:
        assert kept is not None
        sched, n, u, d, executed = kept[:5]
        chosen = KEPT
    else:
        sched, n, u, d, executed = place_and_repair(inp, model, sol, node_anchor=node_anchor)
        chosen = "optimised placement"
        cands.append((executed.objective, chosen, (sched, n, u, d, executed)))
    placement_s = time.perf_counter() - t0
    # More executable candidates, the best by the objective is the plan (the summary says
    # which): the job-level MILP where it is small enough to solve in seconds, and the
    # carbon-aware greedy schedule as a floor (the plan never scores worse than it).
    jl_info: dict | None = None
    anchored = not candidates or incremental_now
    # the report's baselines (``baselines``) plus the greedy schedule when it competes
    report_which = BASELINE_SETS[baselines]
    which = report_which
    if not anchored and "carbon_aware_greedy" not in which:
        which = (*which, "carbon_aware_greedy")
    t1 = time.perf_counter()
    all_base, all_scheds = _baselines(inp, which)
    baselines_s = time.perf_counter() - t1
    base_eval = {k: all_base[k] for k in report_which}
    base_scheds = {k: all_scheds[k] for k in report_which}
    if incremental_now:
        diagnostics.append(
            f"plan: incremental re-plan: {kept_info['jobs_kept']} of {len(inp.jobs)} jobs kept "
            "where the newest plan put them, only the changed ones placed"
        )
    elif anchored:
        diagnostics.append(
            "plan: the other candidates (per-job cap levels, job-level MILP, greedy) are off "
            "here (candidates = false)"
        )
    # the cap level carried by each job (priced by the objective, one level per pool-slot)
    t3 = time.perf_counter()
    spare_on = np.repeat(np.array([p.spares for p in inp.pools])[:, None], inp.T, axis=1)
    for oname, base_order in ({} if anchored else job_orders(inp)).items():
        order, first = base_order, set[int]()
        reserve = np.zeros((len(inp.sites), inp.T))
        for _ in range(3):
            # jobs found late go first in the next pass, and the energy by which the node
            # repair (min up, start-ups) went over a budget is held back there
            s_lv = place_jobs(
                inp, spare_on, sol.level, mode="levels", job_order=order, reserve_kwh=reserve
            )
            n_lv, u_lv, d_lv = repair_nodes(inp, s_lv, anchor=node_anchor)
            ev_lv = evaluate(inp, s_lv, n_lv, u_lv)
            over = ev_lv.budget_overrun_kwh
            reserve = reserve + over * 2.0 + (over > 0) * 0.1 * inp.slot_h
            cands.append(
                (
                    ev_lv.objective,
                    f"placement with per-job cap levels ({oname})",
                    (s_lv, n_lv, u_lv, d_lv, ev_lv),
                )
            )
            late = {j for j in range(len(inp.jobs)) if ev_lv.job_late_h[j] > 1e-6}
            if (not late or late <= first) and over.sum() <= 1e-6:
                break
            first |= late
            order = [j for j in base_order if j in first] + [
                j for j in base_order if j not in first
            ]
    levels_s = time.perf_counter() - t3
    size = joblevel_size(inp)
    jl_limit_s = min(inp.solver.joblevel_time_limit_s, inp.solver.time_limit_s)
    if joblevel and not anchored and jl_limit_s > 0 and size <= JOBLEVEL_MAX_BINARIES:
        t2 = time.perf_counter()
        warm = (
            all_scheds["carbon_aware_greedy"][0]
            if all_base["carbon_aware_greedy"].objective < executed.objective
            else sched
        )
        jl = solve_joblevel(inp, time_limit_s=jl_limit_s, start=warm)
        jl_info = {
            "status": jl.status,
            "objective": jl.objective,
            "bound": jl.bound,
            "binaries": size,
            "n_vars": jl.n_vars,
            "n_rows": jl.n_rows,
            "solve_s": jl.solve_s,
            "total_s": time.perf_counter() - t2,
        }
        if jl.schedule is not None:
            assert jl.n is not None and jl.u is not None and jl.d is not None
            jn, ju, jd = jl.n, jl.u, jl.d
            if node_anchor is not None:  # its own nodes know neither history nor anchor
                jn, ju, jd = repair_nodes(inp, jl.schedule, anchor=node_anchor)
            ev_jl = evaluate(inp, jl.schedule, jn, ju)
            cands.append((ev_jl.objective, "job-level MILP", (jl.schedule, jn, ju, jd, ev_jl)))
    else:
        jl_info = {
            "status": "skipped",
            "binaries": size,
            "limit": JOBLEVEL_MAX_BINARIES,
            "reason": "too large"
            if size > JOBLEVEL_MAX_BINARIES
            else (
                "not in the control step"
                if not joblevel or anchored
                else "joblevel_time_limit_s = 0"
            ),
        }
    greedy_repair_s = 0.0
    if not anchored:
        greedy = all_base["carbon_aware_greedy"]
        g_sched, g_n, g_u = all_scheds["carbon_aware_greedy"]
        prev = np.concatenate([np.array([[p.initial_on] for p in inp.pools]), g_n[:, :-1]], axis=1)
        g_d = np.maximum(0, prev - g_n)  # starts and stops never share a slot (net_switches)
        if node_anchor is not None:
            tg = time.perf_counter()
            g_n, g_u, g_d = repair_nodes(inp, g_sched, anchor=node_anchor)
            greedy = evaluate(inp, g_sched, g_n, g_u)
            greedy_repair_s = time.perf_counter() - tg
        cands.append((greedy.objective, "carbon-aware greedy", (g_sched, g_n, g_u, g_d, greedy)))
    optimised_totals = dict(executed.totals)
    opt_obj = next((c[0] for c in cands if c[1] == chosen), executed.objective)
    # the score: the objective plus, when re-planning, what moving away from the newest plan
    # costs; ties go to the kept placement, then the optimised placement
    rank = {KEPT: 0, "optimised placement": 1}
    scored = []
    for obj_, name, cand in cands:
        stab = 0.0 if anchor is None else stability_cost(inp, anchor, cand[0], cand[1])
        scored.append((obj_ + stab, rank.get(name, 2), obj_, stab, name, cand))
    scored.sort(key=lambda c: (c[0] + 1e-9 * c[1], c[1]))
    best_score, _, best_obj, best_stab, chosen, (sched, n, u, d, executed) = scored[0]
    cand_info = [
        {"name": c[4], "objective": round(c[2], 6), "stability_cost": round(c[3], 6)}
        for c in scored
    ]
    if chosen != "optimised placement" and not incremental_now:
        diagnostics.append(
            f"plan: the {chosen} schedule scores {best_obj:,.2f}"
            + (f" (+ {best_stab:,.2f} stability)" if anchor is not None else "")
            + f" against the optimised placement's {opt_obj:,.2f}: it is the plan"
        )
    bad = check_residency(
        inp,
        {
            j.id: (inp.pools[int(sched.pool[i])].site if sched.pool[i] >= 0 else None)
            for i, j in enumerate(inp.jobs)
        },
    )
    if bad:  # cannot happen by construction; refuse to emit such a plan
        raise SolverError("placement broke data residency: " + "; ".join(bad[:5]))
    for s, site in enumerate(inp.sites):
        for t in np.nonzero(executed.budget_overrun_kwh[s] > 1e-6)[0]:
            diagnostics.append(
                f"budget: site {site.name} slot {t} ({_iso(inp.slot_starts[t])}) exceeds its "
                f"{site.budget_kw[t]:.1f} kW budget by {executed.budget_overrun_kwh[s, t] / inp.slot_h:.1f} kW"
            )
    for j, job in enumerate(inp.jobs):
        if executed.job_late_h[j] > 1e-6:
            diagnostics.append(
                f"deadline: job {job.id} finishes {executed.job_late_h[j]:.2f} h late"
            )
        if executed.job_unserved_gpu_h[j] > 1e-6:
            diagnostics.append(
                f"capacity: job {job.id} could not be placed inside the horizon "
                f"({executed.job_unserved_gpu_h[j]:.1f} GPU-h)"
            )
    tradeoff = (
        _tradeoff(inp, model, sol)
        if (
            tradeoff_curve
            and inp.objective.cost_weight > 0
            and inp.objective.carbon_weight_per_kg > 0
        )
        else []
    )
    res = PlanResult(
        inp,
        outcome,
        sol,
        sched,
        n,
        u,
        d,
        executed,
        base_eval,
        base_scheds,
        diagnostics,
        tradeoff,
        {},
    )
    outcome_dict = outcome.as_dict()
    outcome_dict["placement_s"] = placement_s
    outcome_dict["baselines_s"] = baselines_s
    outcome_dict["baselines"] = baselines
    outcome_dict["plan_source"] = chosen
    outcome_dict["levels_placement_s"] = levels_s
    outcome_dict["optimised_placement_totals"] = optimised_totals
    outcome_dict["joblevel"] = jl_info
    outcome_dict["kept_placement"] = {**kept_info, "s": kept_s}
    outcome_dict["greedy_anchor_repair_s"] = greedy_repair_s
    outcome_dict["candidates"] = cand_info
    res.document = build_document(cfg, clock, res, outcome_dict)
    return res


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


def _kept_candidate(
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
            i = starts.get(_iso(ts))
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
    max_passes: int = 6,
    node_anchor: NodeAnchor | None = None,
):
    """Stage 2. Place jobs in each order of :func:`job_orders`, repair their nodes and keep the
    one with the lower carbon + cost; then a feedback loop — when the node repair (min up, start-up energy) pushes a site over its
    budget, or a job ends late, place again with that energy held back and the late jobs first.
    Keeps the best pass by the objective."""
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
            inp.objective.carbon_weight_per_kg * ev.totals["carbon_kg"]
            + inp.objective.cost_weight * ev.totals["cost"]
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
    for i in range(max_passes):
        if i == 0:
            sched, n, u, d, ev = first_pass
        else:
            sched = place_jobs(
                inp,
                sol.n,
                sol.level,
                mode="plan",
                guide=guide,
                reserve_kwh=reserve,
                job_order=order,
            )
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
        if (ev.budget_overrun_kwh.sum() <= 1e-6 and not late) or stale >= 2:
            break  # done, or two passes without improvement (overloaded fleets)
        reserve += ev.budget_overrun_kwh * 2.0 + (ev.budget_overrun_kwh > 0) * 0.1 * inp.slot_h
        first |= set(late)  # every job found late so far goes first (no oscillation)
        order = [j for j in base if j in first] + [j for j in base if j not in first]
    assert best is not None
    return best


def work_by_group(inp: PlanInputs, model: PlanModel, sol: MilpSolution) -> np.ndarray:
    """[K, S, T] the MILP's work per group, site and slot."""
    out = np.zeros((len(inp.groups), len(inp.sites), inp.T))
    V = model.V
    np.add.at(out, (V.x_k, V.x_s, V.x_t), sol.x)
    return out


def _tradeoff(inp: PlanInputs, model: PlanModel, sol: MilpSolution) -> list[dict]:
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


def _pct(saved: float, base: float) -> float:
    return 100.0 * saved / base if base else 0.0


def build_document(cfg: FleetConfig, clock: Clock, res: PlanResult, outcome: dict) -> dict:
    inp = res.inputs
    T, dt = inp.T, inp.slot_h
    ex = res.executed
    bound = res.outcome.bound
    gap = None
    if bound is not None and ex.objective:
        # how far the executed plan lies above the bound, relative to the bound
        gap = (ex.objective - bound) / abs(bound) if bound else None
    pools = []
    for p, pool in enumerate(inp.pools):
        pc = cfg.raw.pools[p]
        lev = res.schedule.level[p, :T]
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
                        "nodes_on": int(res.nodes_on[p, t]),
                        "startups": int(res.startups[p, t]),
                        "shutdowns": int(res.shutdowns[p, t]),
                        "cap_level": int(lev[t]),
                        "power_cap_w": float(pool.level_cap_w[lev[t]]),
                        "busy_gpus": int(
                            math.ceil(res.schedule.alloc[p, t] - pool.reserve_gpus[t] - 1e-9)
                        ),
                        "busy_gpu_avg": round(float(res.schedule.busy[p, t]), 3),
                        "reserve_gpus": int(pool.reserve_gpus[t]),
                        "it_power_kw": round(float(ex.pool_it_kw[p, t]), 3),
                    }
                    for t in range(T)
                ],
            }
        )
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
                "release": _iso(job.release),
                "deadline": _iso(job.deadline),
                "start": _iso(start) if start else None,
                "end": _iso(end) if end else None,
                "late_h": round(float(ex.job_late_h[j]), 4),
                "unserved_gpu_h": round(float(ex.job_unserved_gpu_h[j]), 4),
                "deferred": bool(job.required_gpu_h <= 0 or job.release_slot >= T),
                "schedule": [
                    {"slot": t, "gpus": g, "busy_fraction": round(f, 4)} for t, g, f in runs
                ],
            }
        )
        if fine is not None:  # the exact placement steps (a re-plan rebuilds the job from them)
            jobs[-1]["placement_runs"] = encode_runs(fine[j])
    sites = []
    for s, site in enumerate(inp.sites):
        sites.append(
            {
                "name": site.name,
                "zone": site.zone,
                "pue": site.pue,
                "carbon": inp.extras.get("carbon_provenance", {}).get(site.name),
                "slots": [
                    {
                        "slot": t,
                        "it_power_kw": round(float(ex.site_it_kw[s, t]), 3),
                        "meter_power_kw": round(float(ex.site_meter_kw[s, t]), 3),
                        "budget_kw": float(site.budget_kw[t])
                        if math.isfinite(site.budget_kw[t])
                        else None,
                        "intensity_g_per_kwh": float(site.intensity_g_per_kwh[t]),
                        "price_per_kwh": float(site.price_per_kwh[t]),
                        "energy_kwh": round(float(ex.site_energy_kwh[s, t]), 4),
                        "carbon_kg": round(float(ex.site_carbon_kg[s, t]), 4),
                        "cost": round(float(ex.site_cost[s, t]), 4),
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
    return {
        "schema": SCHEMA,
        "created_at": _iso(clock.now()),
        "config": str(cfg.path),
        "fleet": inp.name,
        "horizon": {
            "start": _iso(inp.start),
            "slot_minutes": int(round(dt * 60)),
            "slots": T,
            "slot_starts": [_iso(t) for t in inp.slot_starts],
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
            "milp_objective": res.outcome.objective,
            "objective_terms": {
                "carbon": inp.objective.carbon_weight_per_kg * ex.totals["carbon_kg"],
                "cost": inp.objective.cost_weight * ex.totals["cost"],
                "lateness": float(ex.job_lateness_penalty.sum()),
                "unserved": inp.objective.unserved_weight_per_gpu_h * ex.totals["unserved_gpu_h"],
                "budget_overrun": ex.objective
                - inp.objective.carbon_weight_per_kg * ex.totals["carbon_kg"]
                - inp.objective.cost_weight * ex.totals["cost"]
                - float(ex.job_lateness_penalty.sum())
                - inp.objective.unserved_weight_per_gpu_h * ex.totals["unserved_gpu_h"],
            },
        },
        "pools": pools,
        "jobs": jobs,
        "sites": sites,
        "totals": tot,
        "baselines": base,
        "savings": savings,
        "diagnostics": res.diagnostics,
        "tradeoff": res.tradeoff,
    }
