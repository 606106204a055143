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
from greencpn.config import SUBMIT_SITE_RULE, FleetConfig, slot_times
from greencpn.errors import ConfigError, SolverError
from greencpn.optimize.checks import run_checks
from greencpn.optimize.evaluate import BEYOND_HORIZON_RULE, Evaluation, evaluate, tail_rates
from greencpn.optimize.improve import improve_schedule
from greencpn.optimize.inputs import PlanInputs, build_inputs, deadband
from greencpn.optimize.jobcaps import recap_jobs
from greencpn.optimize.joblevel import joblevel_size, solve_joblevel
from greencpn.optimize.levers import lever_savings
from greencpn.optimize.milp import MilpSolution, PlanModel, SolveOutcome, SolveStatus
from greencpn.optimize.placement import place_jobs
from greencpn.optimize.repair import repair_nodes
from greencpn.optimize.residency import check_residency
from greencpn.optimize.schedule import NodeAnchor, Schedule
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
) -> tuple[Schedule, np.ndarray, np.ndarray, Evaluation]:
    """First in, first out at release, idle nodes off while placing (nodes come on as jobs need
    them, so the idle power of unused nodes does not eat the site budgets), spilling to the next
    allowed site when a site is full or at its budget; late jobs go first in a retry pass, and
    energy the node repair drew over a budget is held back in it. Keeps the pass without
    budget overrun with the fewest late jobs (else the least overrun)."""
    best: tuple[Schedule, np.ndarray, np.ndarray, Evaluation] | None = None
    best_key = None
    order = None
    reserve = np.zeros((len(inp.sites), inp.T))
    best_late: list[int] = []
    for _ in range(passes):
        sched = place_jobs(inp, spare_on, top, mode="asap", job_order=order, reserve_kwh=reserve)
        late = _late_jobs(inp, sched)
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
        sched, n_si, u_si, ev_si = _fifo_spill(inp, spare_on, top)
        u_all = np.zeros((P, T), dtype=int)
        u_all[:, 0] = np.maximum(0, all_on[:, 0] - np.array([p.initial_on for p in inp.pools]))
        if "carbon_agnostic" in which:
            evals["carbon_agnostic"] = evaluate(inp, sched, all_on, u_all)
            scheds["carbon_agnostic"] = (sched, all_on, u_all)
        if "shutdown_idle" in which:  # its nodes: the node repair's, found in _fifo_spill
            evals["shutdown_idle"] = ev_si
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
    improve: bool = True,
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
        improve: re-insert the jobs of the best candidates one at a time, packing them onto
            nodes that are on anyway (:mod:`greencpn.optimize.improve`); each result competes
            as one more candidate. Only without an anchor (a one-off plan): the control step
            ranks its candidates with the stability cost, which moving jobs would pay.
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
    )


#: wall-clock budgets (s) of the placement's budget feedback passes after its second pass, and
#: of the per-job cap level candidates' retry passes after each order's first: on fleets whose
#: budgets bind (L-loaded) every pass is a full placement + node repair, and the FIFO candidate
#: with re-insertion is the plan there; S, M and L finish inside them
PLACEMENT_PASSES_BUDGET_S = 20.0
LEVELS_BUDGET_S = 15.0

#: the plan_source name of the FIFO candidate (the shutdown-idle baseline's schedule)
FIFO = "FIFO with spill (shutdown-idle)"


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
    baselines, base_scheds = _baselines(inp)
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
    log.info("progress: placement")
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
    if not anchored:  # the greedy and FIFO schedules compete as candidates
        which = (*which, *(b for b in ("shutdown_idle", "carbon_aware_greedy") if b not in which))
    log.info("progress: baselines")
    t1 = time.perf_counter()
    all_base, all_scheds = _baselines(inp, which)
    baselines_s = time.perf_counter() - t1
    base_eval = {k: all_base[k] for k in report_which}
    base_scheds = {k: all_scheds[k] for k in report_which}
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
        # FIFO at release, idle nodes off, spilling to the next allowed site, late jobs retried
        # first (the shutdown-idle baseline's schedule): on a loaded fleet with binding budgets
        # it can finish every job on time where the carbon-aware placements cannot (issue 11.3)
        f_sched, f_n, f_u = all_scheds["shutdown_idle"]
        fifo = all_base["shutdown_idle"]
        prev = np.concatenate([np.array([[p.initial_on] for p in inp.pools]), f_n[:, :-1]], axis=1)
        f_d = np.maximum(0, prev - f_n)
        if node_anchor is not None:
            f_n, f_u, f_d = repair_nodes(inp, f_sched, anchor=node_anchor)
            fifo = evaluate(inp, f_sched, f_n, f_u)
        cands.append((fifo.objective, FIFO, (f_sched, f_n, f_u, f_d, fifo)))
    improve_info: list[dict] = []
    t4 = time.perf_counter()
    if improve and not anchored and anchor is None:
        cands, improve_info = _improved_candidates(inp, cands)
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
    sched, executed, jobcaps_info = _job_caps(cfg, inp, sched, n, u, executed)
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
    if tradeoff_curve and inp.objective.cost_weight > 0 and inp.objective.carbon_weight_per_kg > 0:
        log.info("progress: trade-off (%d extra MILP solves)", inp.objective.tradeoff_points + 2)
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
    outcome_dict["reinsertion"] = {"s": improve_s, "runs": improve_info}
    outcome_dict["job_caps"] = jobcaps_info
    log.info("progress: plan document")
    res.document = build_document(cfg, clock, res, outcome_dict)
    return res


def _job_caps(
    cfg: FleetConfig,
    inp: PlanInputs,
    sched: Schedule,
    n: np.ndarray,
    u: np.ndarray,
    executed: Evaluation,
) -> tuple[Schedule, Evaluation, dict]:
    """``solver.cap_mode = "job"``: the chosen plan with each placed job at its own cap level
    (:func:`~greencpn.optimize.jobcaps.recap_jobs`), kept only when the evaluated objective is
    not higher. Returns the schedule and evaluation to use and what the pass did (plan.json
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
    if rc.recapped:
        ev = evaluate(inp, rc.schedule, n, u)  # nodes and start-ups are unchanged
        info["objective_recapped"] = ev.objective
        if ev.objective <= executed.objective + 1e-9:
            sched, executed, kept = rc.schedule, ev, True
    info.update(
        kept=kept,
        jobs_recapped=rc.recapped if kept else 0,
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


def _improved_candidates(inp: PlanInputs, cands: list) -> tuple[list, list[dict]]:
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
    max_passes: int = 8,
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
    site_jur = {s.name: s.jurisdictions for s in cfg.raw.sites}
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
    for pc in cfg.raw.pools:
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
    file_accounting = cfg.raw.carbon.accounting if cfg.raw.carbon is not None else None
    # with measured values beside it, the [carbon] file is the forecast the plan decided on
    has_actuals = cfg.raw.carbon is not None and cfg.raw.carbon.actuals_file is not None
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
                "release": _iso(job.release),
                "deadline": _iso(job.deadline),
                "start": _iso(start) if start else None,
                "end": _iso(end) if end else None,
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
        "currency": cfg.raw.currency,
        "carbon_signal": carbon_signal(cfg, inp),
        "baseline_rules": baseline_rules(inp),
        "beyond_horizon_rule": beyond_rule,
        "savings": savings,
        "diagnostics": res.diagnostics,
        "tradeoff": res.tradeoff,
    }
