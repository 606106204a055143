"""One planning run: inputs → MILP → placement → repair → evaluation → the plan document.

:func:`make_plan` is the optimise phase of the control step (:mod:`greencpn.controller`), the
single code path the one-off report, the daemon and the what-if replay share. It receives the
forecasts as arrays (the controller's forecast phase gathers them; nothing here reads a source)
and returns a :class:`PlanResult` whose ``document`` is the versioned ``plan.json`` (schema
``greencpn.plan/1``, see docs/plan-schema.md).

This module keeps the sequencing (:func:`make_plan`, :func:`finish_plan`, the safe plan
:func:`safe_result`); the steps live by role: the executable candidates a plan is chosen from
(:mod:`greencpn.optimize.candidates`), the report's baselines
(:mod:`greencpn.optimize.baselines`), the plan document (:mod:`greencpn.optimize.document`).

Size (~730 lines, above the ~600 of issue 13; :func:`make_plan` pauses the collector and
hands the baselines to the worker process (:mod:`greencpn.optimize.baseline_worker`),
``_make_plan`` solves): :func:`finish_plan` is one sequence (~320 lines: candidates,
the incumbent their passes are abandoned against, their competition, the job-level MILP, the
diagnostics) that reads best unbroken; every step it calls lives in the modules above.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from greencpn.clock import Clock
from greencpn.config import FleetConfig, slot_times
from greencpn.errors import ConfigError, SolverError
from greencpn.optimize.baseline_worker import (
    BaselineWorker,
    PendingBaselines,
    collect,
    worker_set,
)
from greencpn.optimize.baselines import BASELINE_SETS, price_baselines
from greencpn.optimize.builder import paused_gc
from greencpn.optimize.candidates import (
    FIFO,
    INCREMENTAL_MIN_SHARE,
    KEPT,
    LEVELS_BUDGET_S,
    abandon_record,
    abandon_threshold,
    improved_candidates,
    job_caps_pass,
    job_orders,
    kept_candidate,
    no_later_pass,
    place_and_repair,
)
from greencpn.optimize.checks import run_checks
from greencpn.optimize.document import SCHEMA as SCHEMA  # the controller names it planmod.SCHEMA
from greencpn.optimize.document import build_document, iso_utc, weight_sweep
from greencpn.optimize.evaluate import Evaluation, evaluate
from greencpn.optimize.inputs import PlanInputs, build_inputs, deadband
from greencpn.optimize.joblevel import joblevel_size, solve_joblevel
from greencpn.optimize.milp import MilpSolution, PlanModel, SolveOutcome, SolveStatus
from greencpn.optimize.placement import PlacementAbandoned, place_jobs
from greencpn.optimize.repair import repair_nodes
from greencpn.optimize.residency import check_residency
from greencpn.optimize.schedule import Schedule
from greencpn.optimize.stability import stability_cost

log = logging.getLogger(__name__)

#: the job-level MILP is solved beside the placement when it has at most this many binaries
#: (measured: S 6,256, M 183,576, L 2,162,240, the example 444,144)
JOBLEVEL_MAX_BINARIES = 20_000


@dataclass
class PlanResult:
    inputs: PlanInputs
    outcome: SolveOutcome
    milp: MilpSolution | None  # None for the safe plan (no incumbent)
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


class NoIncumbentError(SolverError):
    """The MILP stopped without any feasible solution (e.g. the time limit hit before the
    first incumbent). Carries what a caller needs to fall back to the safe plan
    (:func:`safe_result`): the inputs, the outcome and the checks' diagnostics."""

    def __init__(
        self, message: str, inputs: PlanInputs, outcome: SolveOutcome, diagnostics: list[str]
    ) -> None:
        super().__init__(message)
        self.inputs = inputs
        self.outcome = outcome
        self.diagnostics = diagnostics


def horizon_start(cfg: FleetConfig, clock: Clock | None) -> datetime:
    """The configured start, else the clock's now rounded down to a slot boundary."""
    if cfg.horizon.start is not None:
        return cfg.horizon.start
    if clock is None:
        raise ConfigError(
            "no horizon start",
            source=str(cfg.path),
            field="horizon.start",
            fix="set horizon.start or pass a clock (the CLI uses now)",
        )
    now = clock.now()
    step = cfg.horizon.slot_minutes * 60
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
    T = cfg.horizon.slots
    starts = slot_times(start, T, cfg.horizon.slot_minutes)
    provenance = {k: dict(v) for k, v in (provenance or {}).items()}
    errors = forecast_error or {}
    for s in cfg.sites:
        provenance.setdefault(s.name, {"source": f"csv:{cfg.carbon_path}", "fallback": None})
    inp = build_inputs(
        cfg,
        intensity_by_zone,
        start,
        starts,
        reserves=reserves,
        failed_nodes=failed_nodes,
    )
    if cfg.objective.ignore_gains_within_forecast_error and errors:
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
    improve: bool = True,
    baselines: str = "all",
    baseline_worker: BaselineWorker | None = None,
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
        improve: re-insert the jobs of the best candidates one at a time, packing them onto
            nodes that are on anyway (:mod:`greencpn.optimize.improve`); each result competes
            as one more candidate. Only without an anchor (a one-off plan): the control step
            ranks its candidates with the stability cost, which moving jobs would pay.
        baselines: which report baselines are priced (:data:`BASELINE_SETS`: ``none``,
            ``agnostic``, ``all``; ``[controller] baselines`` in the step). None of them
            decides the plan; the greedy schedule is built anyway when it is a candidate.
        baseline_worker: price the baselines in this worker process while the MILP is built
            and solved (:mod:`greencpn.optimize.baseline_worker`; the same figures, in-process
            if it fails); ``None``: in-process.

    Python's cyclic garbage collector is paused for the run (:func:`paused_gc`): with the
    plan's Pyomo model alive, each of its full passes walks the whole model again (inside an L
    re-plan step 6–7 of them took 1.4–3.3 s in all); objects the run drops are still freed by
    reference counting, cyclic garbage once the collector is restored when the run ends.
    """
    if baselines not in BASELINE_SETS:
        raise ValueError(f"baselines={baselines!r}: use one of {sorted(BASELINE_SETS)}")
    with paused_gc():
        inp = inputs or make_inputs(cfg, clock, intensity_by_zone, failed_nodes=failed_nodes)
        pending = None
        if baseline_worker is not None and BASELINE_SETS[baselines]:
            pending = baseline_worker.submit(inp, worker_set(baselines))  # beside the MILP
        try:
            return _make_plan(
                cfg, clock, inp, model, failed_nodes, new_model, tradeoff_curve, pending,
                joblevel=joblevel, candidates=candidates, incremental=incremental,
                improve=improve, baselines=baselines,
            )  # fmt: skip
        finally:
            if pending is not None:
                pending.abandon()  # dropped unless collected (e.g. the solve failed)


def _make_plan(
    cfg: FleetConfig,
    clock: Clock,
    inp: PlanInputs,
    model: PlanModel | None,
    failed_nodes: dict[str, int] | None,
    new_model: Callable[[PlanInputs], PlanModel] | None,
    tradeoff_curve: bool,
    pending: PendingBaselines | None,
    *,
    joblevel: bool,
    candidates: bool,
    incremental: bool,
    improve: bool,
    baselines: str,
) -> PlanResult:
    diagnostics = run_checks(inp)
    for name, k in sorted((failed_nodes or {}).items()):
        if k:
            diagnostics.append(
                f"nodes: pool {name} has {k} failed node(s) (apply ledger); planned without them"
            )
    if model is None:
        log.info(
            "progress: model (%d jobs, %d pools, %d slots)", len(inp.jobs), len(inp.pools), inp.T
        )
        model = (new_model or PlanModel)(inp)
        log.info("progress: solve (HiGHS, time limit %g s)", inp.solver.time_limit_s)
        outcome = model.solve()
    else:
        log.info("progress: solve (re-plan on the built model)")
        outcome = model.resolve(inp)
    log.info(
        "progress: solved — %s, objective %s, gap %s",
        outcome.status.value,
        "–" if outcome.objective is None else f"{outcome.objective:,.3f}",
        "–" if outcome.mip_gap is None else f"{100 * outcome.mip_gap:.2f} %",
    )
    if not outcome.usable:
        msg = f"the MILP gave no usable plan: {outcome.status.value} ({outcome.termination})" + (
            "; checks found: " + "; ".join(diagnostics) if diagnostics else ""
        )
        if outcome.status is SolveStatus.NO_SOLUTION:
            raise NoIncumbentError(msg, inp, outcome, diagnostics)
        raise SolverError(msg)
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
        improve=improve,
        baselines=baselines,
        pending=pending,
    )


#: what the safe plan is, word for word in plan.json, the summary and the report
SAFE_RULE = (
    "every usable node on, GPUs at their default power cap, every job at its release "
    "(first in, first out at its submit site, as the carbon-agnostic baseline places them)"
)


def safe_result(
    cfg: FleetConfig,
    clock: Clock,
    inp: PlanInputs,
    outcome: SolveOutcome,
    diagnostics: list[str],
    safe_doc: dict,
) -> PlanResult:
    """The safe plan, priced: the fallback of ``greencpn plan`` when the MILP found no
    incumbent (:class:`NoIncumbentError`).

    ``safe_doc`` is the control step's plan of last resort
    (:func:`greencpn.controller.step.safe_plan`): its nodes on and power caps per pool and slot
    are taken as they are; jobs start at release (the carbon-agnostic baseline's placement,
    :func:`place_jobs` ``mode="asap"``). The result is evaluated and compared with the
    baselines like any plan, and its document says ``"origin": "safe"``."""
    P, T = len(inp.pools), inp.T
    by_name = {pp["name"]: pp for pp in safe_doc.get("pools", [])}
    n = np.zeros((P, T), dtype=int)
    level = np.zeros((P, T), dtype=int)
    for p, pool in enumerate(inp.pools):
        slots = (by_name.get(pool.name) or {}).get("slots", [])
        for sl in slots[:T]:
            t = int(sl["slot"])
            n[p, t] = min(pool.nodes, int(sl.get("nodes_on", pool.nodes)))
            cap = float(sl.get("power_cap_w", pool.gpu_model.power_limit_default_w))
            level[p, t] = int(np.argmin(np.abs(pool.level_cap_w - cap)))
    sched = place_jobs(inp, n.astype(float), level, mode="asap")
    u = np.zeros((P, T), dtype=int)
    u[:, 0] = np.maximum(0, n[:, 0] - np.array([pl.initial_on for pl in inp.pools]))
    u[:, 1:] = np.maximum(0, n[:, 1:] - n[:, :-1])
    d = np.zeros((P, T), dtype=int)
    d[:, 1:] = np.maximum(0, n[:, :-1] - n[:, 1:])
    executed = evaluate(inp, sched, n, u)
    t1 = time.perf_counter()
    baselines, base_scheds = price_baselines(inp)
    baselines_s = time.perf_counter() - t1
    reason = (
        f"the solver stopped with no feasible solution ({outcome.status.value}: "
        f"{outcome.termination}) after {outcome.solve_s:.1f} s"
    )
    diags = [f"SAFE PLAN: {reason}; this is the safe plan — {SAFE_RULE}", *diagnostics]
    for j, job in enumerate(inp.jobs):
        if executed.job_late_h[j] > 1e-6:
            diags.append(f"deadline: job {job.id} finishes {executed.job_late_h[j]:.2f} h late")
        if executed.job_unserved_gpu_h[j] > 1e-6:
            diags.append(
                f"capacity: job {job.id} could not be placed inside the horizon "
                f"({executed.job_unserved_gpu_h[j]:.1f} GPU-h)"
            )
    res = PlanResult(
        inp, outcome, None, sched, n, u, d, executed, baselines, base_scheds, diags, [], {}
    )
    # HiGHS reports a NaN/inf bound and objective without an incumbent: plan.json is strict JSON
    outcome_dict = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in outcome.as_dict().items()
    }
    outcome_dict.update(placement_s=0.0, baselines_s=baselines_s, plan_source="safe plan")
    doc = build_document(cfg, clock, res, outcome_dict)
    doc["origin"] = "safe"
    doc["safe_fallback"] = {"reason": reason, "rule": SAFE_RULE}
    res.document = doc
    return res


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
    improve: bool = True,
    baselines: str = "all",
    pending: PendingBaselines | None = None,
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
        kept = kept_candidate(inp, model, sol, anchor)
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
    # More executable candidates, the best by the objective is the plan (the summary says
    # which): the job-level MILP where it is small enough to solve in seconds, and the
    # carbon-aware greedy schedule as a floor (the plan never scores worse than it).
    jl_info: dict | None = None
    anchored = not candidates or incremental_now
    # the report's baselines (``baselines``) plus the greedy schedule when it competes
    report_which = BASELINE_SETS[baselines]
    which = report_which
    if not anchored:  # the greedy and FIFO schedules compete as candidates
        which = (*which, *(b for b in ("shutdown_idle", "carbon_aware_greedy") if b not in which))
    log.info("progress: baselines")
    t1 = time.perf_counter()
    all_base, all_scheds, baselines_where = collect(inp, which, pending)
    baselines_s = time.perf_counter() - t1  # what this process spent on them (waiting included)
    base_eval = {k: all_base[k] for k in report_which}
    base_scheds = {k: all_scheds[k] for k in report_which}
    # the greedy and FIFO candidates are built first (they are the report's baselines anyway):
    # their scores are the incumbent a candidate still being placed must beat to matter
    # (abandon_threshold); they join the candidate list below, in the place they always had
    late_cands: list = []
    greedy_repair_s = fifo_repair_s = 0.0
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
        late_cands.append(
            (greedy.objective, "carbon-aware greedy", (g_sched, g_n, g_u, g_d, greedy))
        )
        # FIFO at release, idle nodes off, spilling to the next allowed site, late jobs retried
        # first (the shutdown-idle baseline's schedule): on a loaded fleet with binding budgets
        # it can finish every job on time where the carbon-aware placements cannot (issue 11.3)
        f_sched, f_n, f_u = all_scheds["shutdown_idle"]
        fifo = all_base["shutdown_idle"]
        prev = np.concatenate([np.array([[p.initial_on] for p in inp.pools]), f_n[:, :-1]], axis=1)
        f_d = np.maximum(0, prev - f_n)
        if node_anchor is not None:
            tf = time.perf_counter()
            f_n, f_u, f_d = repair_nodes(inp, f_sched, anchor=node_anchor)
            fifo = evaluate(inp, f_sched, f_n, f_u)
            fifo_repair_s = time.perf_counter() - tf
        late_cands.append((fifo.objective, FIFO, (f_sched, f_n, f_u, f_d, fifo)))
    incumbent = math.inf
    for obj_, _name, cand in [*cands, *late_cands]:
        stab = 0.0 if anchor is None else stability_cost(inp, anchor, cand[0], cand[1])
        incumbent = min(incumbent, obj_ + stab)
    reinserted = improve and not anchored and anchor is None
    abandoned: list[dict] = []
    log.info("progress: placement")
    t0 = time.perf_counter()
    if incremental_now:
        assert kept is not None
        sched, n, u, d, executed = kept[:5]
        chosen = KEPT
    else:
        sched, n, u, d, executed = place_and_repair(
            inp,
            model,
            sol,
            node_anchor=node_anchor,
            abandon_above=abandon_threshold(incumbent, reinserted),
            abandoned=abandoned,
        )
        chosen = "optimised placement"
        cands.append((executed.objective, chosen, (sched, n, u, d, executed)))
        stab_opt = 0.0 if anchor is None else stability_cost(inp, anchor, sched, n)
        incumbent = min(incumbent, executed.objective + stab_opt)
    placement_s = time.perf_counter() - t0
    log.info("progress: candidates (per-job cap levels, job-level MILP, greedy)")
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
        for i_pass in range(3):
            if i_pass > 0 and time.perf_counter() - t3 > LEVELS_BUDGET_S:
                break
            # jobs found late go first in the next pass, and the energy by which the node
            # repair (min up, start-ups) went over a budget is held back there
            try:
                s_lv = place_jobs(
                    inp,
                    spare_on,
                    sol.level,
                    mode="levels",
                    job_order=order,
                    reserve_kwh=reserve,
                    abandon_above=abandon_threshold(incumbent, False),
                    # only a pass no later one is built from: the last, or the budget spent
                    abandon_when=no_later_pass(i_pass == 2, t3, LEVELS_BUDGET_S),
                )
            except PlacementAbandoned as ab:
                # cannot be the plan, and no later pass of this order would be built
                lname = f"placement with per-job cap levels ({oname})"
                above = abandon_threshold(incumbent, False)
                abandoned.append(abandon_record(lname, i_pass, ab, above))
                break
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
            stab_lv = 0.0 if anchor is None else stability_cost(inp, anchor, s_lv, n_lv)
            incumbent = min(incumbent, ev_lv.objective + stab_lv)
            late = {j for j in range(len(inp.jobs)) if ev_lv.job_late_h[j] > 1e-6}
            if (not late or late <= first) and over.sum() <= 1e-6:
                break
            first |= late
            order = [j for j in base_order if j in first] + [
                j for j in base_order if j not in first
            ]
    levels_s = time.perf_counter() - t3
    cands.extend(late_cands)
    improve_info: list[dict] = []
    t4 = time.perf_counter()
    if improve and not anchored and anchor is None:
        cands, improve_info = improved_candidates(inp, cands)
    improve_s = time.perf_counter() - t4
    size = joblevel_size(inp)
    jl_limit_s = min(inp.solver.joblevel_time_limit_s, inp.solver.time_limit_s)
    if joblevel and not anchored and jl_limit_s > 0 and size <= JOBLEVEL_MAX_BINARIES:
        t2 = time.perf_counter()
        # warm-started from the best candidate so far (re-inserted ones included)
        warm = min(cands, key=lambda c: c[0])[2][0] if cands else sched
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
            tr = time.perf_counter()
            if node_anchor is not None:  # its own nodes know neither history nor anchor
                jn, ju, jd = repair_nodes(inp, jl.schedule, anchor=node_anchor)
            ev_jl = evaluate(inp, jl.schedule, jn, ju)
            # its node repair against the anchor (a HiGHS solve) and its pricing
            jl_info["repair_s"] = time.perf_counter() - tr
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
    sched, executed, jobcaps_info = job_caps_pass(cfg, inp, sched, n, u, executed)
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
                f"budget: site {site.name} slot {t} ({iso_utc(inp.slot_starts[t])}) exceeds its "
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
    if tradeoff_curve and inp.objective.cost_weight > 0 and inp.objective.carbon_weight_per_kg > 0:
        log.info("progress: trade-off (%d extra MILP solves)", inp.objective.tradeoff_points + 2)
    tradeoff = (
        weight_sweep(inp, model, sol)
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
    outcome_dict.update(baselines_where)
    outcome_dict["plan_source"] = chosen
    outcome_dict["levels_placement_s"] = levels_s
    outcome_dict["optimised_placement_totals"] = optimised_totals
    outcome_dict["joblevel"] = jl_info
    outcome_dict["kept_placement"] = {**kept_info, "s": kept_s}
    outcome_dict["greedy_anchor_repair_s"] = greedy_repair_s
    # the FIFO candidate's node repair against the anchor (a HiGHS solve) and its pricing
    outcome_dict["fifo_anchor_repair_s"] = fifo_repair_s
    outcome_dict["candidates"] = cand_info
    # candidate passes stopped early: their lower bound was already above what they had to beat
    outcome_dict["abandoned"] = abandoned
    outcome_dict["reinsertion"] = {"s": improve_s, "runs": improve_info}
    outcome_dict["job_caps"] = jobcaps_info
    log.info("progress: plan document")
    res.document = build_document(cfg, clock, res, outcome_dict)
    return res
