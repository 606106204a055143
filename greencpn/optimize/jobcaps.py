"""Per-job cap levels (issue #14.3, building block): the level of one placed job.

A job placed at ``start_h`` on a pool runs contiguously; at level ``l`` (class throughput
``θ_l`` relative to the top cap, busy power above idle ``ε_l`` kW per GPU) it needs
``D_l = W / (g θ_l)`` hours and its GPUs draw ``g ε_l`` kW (× PUE at the meter) while it runs.
The idle power of its nodes is drawn anyway (they are on for the placed window), so the level
changes only the busy energy ``E_l = g ε_l D_l × PUE`` and where in time it falls.

:func:`choose_level` takes the level with the least carbon (busy meter energy × the slot's
intensity, slot by slot) among the levels whose slowed run

* still ends by ``end_limit_h`` — the job's deadline, or the end of the window its nodes are
  on for if earlier (no added node-hours), and
* fits the site's power budget: ``g ε_l × PUE`` ≤ the headroom left in every slot it touches.

No feasible level → the fastest level that fits the budget, else the top level (``ok=False``).
Ties go to the higher cap (shorter run).

``throughput_low`` (optional, per level): the deadline test uses the run at this throughput
(``W / (g θ_low)``) instead of the estimate — a lower confidence bound from the spread of the
metered runs the curve was learned from (``GpuLevel.throughput_low``, ``solver.job_cap_slowdown
= "bound"``), so a level is taken only if it meets the end limit *with confidence*; its
carbon, energy and planned duration stay those of the estimate. A bound of 0 never meets it.

:func:`recap_jobs` is the plan's pass with ``solver.cap_mode = "job"``: it runs
:func:`choose_level` for every placed job of the chosen schedule and returns a copy in which the
re-capped jobs carry their own level (``Schedule.job_cap``, priced by
:func:`~greencpn.optimize.evaluate.evaluate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from greencpn.config import GpuModelConfig
from greencpn.optimize.evaluate import Evaluation
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.schedule import Schedule, boot_steps


@dataclass(frozen=True)
class LevelChoice:
    level: int  # index into the levels
    duration_h: float
    energy_kwh: float  # busy meter energy above idle
    carbon_kg: float
    ok: bool  # False: no level met the deadline and the budget


def _slot_shares(start_h: float, dur_h: float, slot_h: float, n_slots: int) -> list[float]:
    """Hours of [start_h, start_h + dur_h) in each slot (the last slot takes any overhang)."""
    out = [0.0] * n_slots
    t, end = start_h, start_h + dur_h
    while t < end - 1e-12:
        s = min(n_slots - 1, int(math.floor(t / slot_h + 1e-12)))
        nxt = end if s == n_slots - 1 else min(end, (s + 1) * slot_h)
        out[s] += nxt - t
        t = nxt
    return out


def choose_level(
    *,
    work_gpu_h: float,
    gpus: int,
    throughput: Sequence[float],
    busy_extra_kw: Sequence[float],
    start_h: float,
    end_limit_h: float,
    intensity_g_per_kwh: Sequence[float],
    slot_h: float,
    pue: float = 1.0,
    headroom_kw: Sequence[float] | None = None,
    throughput_low: Sequence[float | None] | None = None,
) -> LevelChoice:
    """The least-carbon level of one job; see the module docstring.

    ``throughput``/``busy_extra_kw`` are per level (the job's class curve); ``intensity`` and
    ``headroom_kw`` (site budget minus everything else, meter kW; None = no budget) per slot.
    """
    n = len(intensity_g_per_kwh)
    options: list[tuple[float, float, LevelChoice]] = []
    fallback: list[tuple[float, LevelChoice]] = []
    lows = list(throughput_low) if throughput_low is not None else [None] * len(throughput)
    if len(lows) != len(throughput):
        raise ValueError("throughput_low needs one entry per level")
    for lv, (th, eps, lo) in enumerate(zip(throughput, busy_extra_kw, lows, strict=True)):
        dur = work_gpu_h / (gpus * th)
        sure = lo if lo is not None else th
        dur_sure = work_gpu_h / (gpus * sure) if sure > 0 else math.inf
        kw = gpus * eps * pue
        shares = _slot_shares(start_h, dur, slot_h, n)
        energy = kw * dur
        carbon = sum(kw * h * i for h, i in zip(shares, intensity_g_per_kwh, strict=True)) / 1e3
        fits_budget = headroom_kw is None or all(
            kw <= headroom_kw[s] + 1e-9 for s, h in enumerate(shares) if h > 0
        )
        fits_time = start_h + dur_sure <= end_limit_h + 1e-9
        choice = LevelChoice(lv, dur, energy, carbon, True)
        if fits_budget and fits_time:
            options.append((carbon, dur, choice))
        elif fits_budget:
            fallback.append((dur, LevelChoice(lv, dur, energy, carbon, False)))
    if options:
        return min(options, key=lambda o: (round(o[0], 12), o[1]))[2]
    if fallback:
        return min(fallback, key=lambda o: o[0])[1]
    top = max(range(len(throughput)), key=lambda i: throughput[i])
    dur = work_gpu_h / (gpus * throughput[top])
    kw = gpus * busy_extra_kw[top] * pue
    shares = _slot_shares(start_h, dur, slot_h, n)
    carbon = sum(kw * h * i for h, i in zip(shares, intensity_g_per_kwh, strict=True)) / 1e3
    return LevelChoice(top, dur, kw * dur, carbon, False)


def class_curve(
    gm: GpuModelConfig, workload_class: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cap W, throughput relative to the class's top cap, busy kW above idle per GPU) per
    level of a job's class on this GPU model, highest cap first."""
    levels = sorted(gm.levels_for(workload_class), key=lambda lv: lv.cap_w, reverse=True)
    top = levels[0].throughput
    cap = np.array([lv.cap_w for lv in levels])
    thr = np.array([lv.throughput / top for lv in levels])
    eps = np.array(
        [lv.power_factor * gm.power_limit_max_w / 1e3 - gm.idle_w / 1e3 for lv in levels]
    )
    return cap, thr, eps


def class_curve_low(gm: GpuModelConfig, workload_class: str | None) -> np.ndarray | None:
    """The lower confidence bounds of :func:`class_curve`'s throughputs (same order and
    normalisation; NaN where a level has none), or None when no level of the curve has one."""
    levels = sorted(gm.levels_for(workload_class), key=lambda lv: lv.cap_w, reverse=True)
    if all(lv.throughput_low is None for lv in levels):
        return None
    top = levels[0].throughput
    return np.array(
        [np.nan if lv.throughput_low is None else lv.throughput_low / top for lv in levels]
    )


@dataclass
class RecapResult:
    schedule: Schedule
    recapped: int  # jobs whose level differs from the pool's
    considered: int  # placed contiguous jobs inside the horizon the pass looked at
    corrected: int = (
        0  # jobs that had to move: their own curve missed the end limit at the pool's cap
    )
    own_late: int = 0  # jobs whose own curve misses it at the pool's cap and no level fits in time
    on_own_curve: int = 0  # jobs the schedule carries at their own curve (Schedule.job_cap)


def recap_jobs(
    inp: PlanInputs,
    sched: Schedule,
    n: np.ndarray,
    ev: Evaluation,
    workload_class: dict[str, str | None],
    u: np.ndarray | None = None,
    *,
    stay_unless_late: bool = False,
) -> RecapResult:
    """Each placed job at its own cap level (:func:`choose_level`), one job at a time.

    Only jobs that run contiguously on the placement grid and end inside the horizon are
    considered (others keep the pool level). A job keeps its start; its run may grow only into
    the placement steps right after it in which its pool's nodes are already on (``n``) and
    hold ``gpus`` free GPUs (not counting nodes still booting, ``u``), up to its deadline and
    the horizon end — so nodes, node-hours and
    other jobs are untouched. The budget headroom per slot is the site budget minus the plan's
    meter power there without this job's busy power (``ev``), updated after each job.

    Every job is priced on its *own* class curve, not on its pool's (the plan timed it on the
    pool's curve, at each cap the mix of its jobs' classes). At its pool's cap its own run may
    miss its end limit or the headroom: then it must move (``corrected``) to the least-carbon
    level that fits, whatever the plan's pool-curve objective says (the job would really be
    late); if none fits it keeps the pool's level and is counted (``own_late``). Otherwise it
    takes the least-carbon level of its own curve (``stay_unless_late``: it stays at its
    pool's cap, on its own curve — the baseline the pass is judged against). A job at its
    pool's cap whose curve is the pool's there is left as it is. ``recapped`` counts the jobs
    at a cap other than their pool's. Schedules without a placement grid (the job-level
    MILP's) are read at one step per slot.
    """
    k, T, dt = sched.subslots, inp.T, inp.slot_h
    step_h = dt / k
    fine, alloc_f = _fine_grid(sched)
    busy_f = np.zeros_like(alloc_f, dtype=float)
    for j, fr in enumerate(fine):
        p = int(sched.pool[j])
        for t, f in fr:
            busy_f[p, t] += inp.jobs[j].gpus * f
    base_busy = busy_f.reshape(*sched.alloc.shape, k).mean(axis=2)
    meter = ev.site_meter_kw.copy()
    budget = np.array([s.budget_kw for s in inp.sites])
    job_cap: dict[int, tuple[float, float, float]] = {}
    considered = corrected = own_late = recapped = 0
    order = sorted(range(len(inp.jobs)), key=lambda i: (float(np.nan_to_num(sched.start_h[i])), i))
    for j in order:
        p = int(sched.pool[j])
        fr = fine[j]
        if p < 0 or not fr:
            continue
        steps = [t for t, _ in fr]
        if steps != list(range(steps[0], steps[0] + len(steps))) or steps[-1] >= T * k:
            continue
        job, pool = inp.jobs[j], inp.pools[p]
        site = inp.sites[pool.site]
        g = job.gpus
        lev0 = int(sched.level[p, steps[0] // k])
        if any(int(sched.level[p, t // k]) != lev0 for t in steps):
            continue  # the pool changes level under the job: keep what placement made
        considered += 1
        cap, thr, eps = class_curve(pool.gpu_model, workload_class.get(job.id))
        low = (
            class_curve_low(pool.gpu_model, workload_class.get(job.id))
            if inp.solver.job_cap_slowdown == "bound"
            else None
        )
        lows = None if low is None else [None if np.isnan(x) else float(x) for x in low]
        at_pool = np.flatnonzero(np.abs(cap - pool.level_cap_w[lev0]) < 1e-9)
        if at_pool.size == 0:
            continue
        i0 = int(at_pool[0])
        start_h = steps[0] * step_h
        # how far the run may grow: free GPUs on nodes already on, before deadline and horizon
        deadline_h = (job.deadline - inp.start).total_seconds() / 3600.0
        last = steps[-1]
        nb = boot_steps(inp, p, k)
        while last + 1 < T * k and (last + 2) * step_h <= deadline_h + 1e-9:
            t = last + 1
            booting = u[p, t // k] if u is not None and t % k < nb else 0
            if alloc_f[p, t] + g > (n[p, t // k] - booting) * pool.gpus_per_node + 1e-9:
                break
            last = t
        end_limit_h = min(deadline_h, (last + 1) * step_h)
        if float(sched.end_h[j]) > end_limit_h + 1e-9:
            end_limit_h = float(sched.end_h[j])  # already late: a level may not make it later
        # headroom: budget minus the plan's meter power without this job's busy power
        own = np.zeros(T)
        eps_now = pool.level_extra_kw[lev0]
        for t, f in fr:
            own[t // k] += g * f * eps_now * site.pue / k
        head = budget[pool.site] - (meter[pool.site] - own)
        head = np.where(np.isfinite(head), head, np.inf)
        common = {
            "work_gpu_h": job.work_gpu_h,
            "gpus": g,
            "start_h": start_h,
            "end_limit_h": end_limit_h,
            "intensity_g_per_kwh": site.planning_intensity.tolist(),
            "slot_h": dt,
            "pue": site.pue,
            "headroom_kw": None if not np.isfinite(head).any() else head.tolist(),
        }
        choice = choose_level(
            throughput=thr.tolist(), busy_extra_kw=eps.tolist(), throughput_low=lows, **common
        )
        # the pool's cap on the job's own curve: the plan timed the job on the pool's curve (a
        # mix of its jobs' classes); if its own run there misses the end limit or the budget
        # headroom, the job must move
        stay = choose_level(
            throughput=[thr[i0]],
            busy_extra_kw=[eps[i0]],
            throughput_low=None if lows is None else [lows[i0]],
            **common,
        )
        must_move = not stay.ok
        if must_move and not choice.ok:
            own_late += 1
            continue
        lv, dur = (
            (i0, stay.duration_h)
            if stay_unless_late and not must_move
            else (
                choice.level,
                choice.duration_h,
            )
        )
        if (
            lv == i0
            and abs(thr[i0] - pool.level_thr[lev0]) < 1e-9
            and abs(eps[i0] - eps_now) < 1e-9
        ):
            continue  # the pool's cap, and the job's curve is the pool's there: nothing changes
        # the new run on the placement grid: whole steps, the last one partly busy
        whole = dur / step_h
        n_steps = max(1, math.ceil(whole - 1e-9))
        new = [(steps[0] + i, 1.0) for i in range(n_steps)]
        new[-1] = (new[-1][0], whole - (n_steps - 1))
        if new[-1][0] > last:
            continue  # rounding pushed it past the free steps
        for t, f in fr:
            alloc_f[p, t] -= g
            busy_f[p, t] -= g * f
        for t, f in new:
            alloc_f[p, t] += g
            busy_f[p, t] += g * f
        newown = np.zeros(T)
        for t, f in new:
            newown[t // k] += g * f * eps[lv] * site.pue / k
        meter[pool.site] += newown - own
        fine[j] = new
        job_cap[j] = (float(cap[lv]), float(thr[lv]), float(eps[lv]))
        recapped += int(lv != i0)
        corrected += int(must_move)
    if not job_cap:
        return RecapResult(sched, 0, considered, 0, own_late)
    P, T2 = sched.alloc.shape
    runs = list(sched.runs)
    start_h_arr, end_h_arr = sched.start_h.copy(), sched.end_h.copy()
    for j in job_cap:
        per_slot: dict[int, float] = {}
        for t, f in fine[j]:
            per_slot[t // k] = per_slot.get(t // k, 0.0) + f / k
        runs[j] = [(t, inp.jobs[j].gpus, v) for t, v in sorted(per_slot.items())]
        end_h_arr[j] = (fine[j][-1][0] + fine[j][-1][1]) * step_h
    out = replace(
        sched,
        runs=runs,
        alloc=alloc_f.reshape(P, T2, k).max(axis=2),
        busy=busy_f.reshape(P, T2, k).mean(axis=2) + (sched.busy - base_busy),
        start_h=start_h_arr,
        end_h=end_h_arr,
        alloc_fine=alloc_f if sched.alloc_fine is not None else None,
        fine_runs=fine if sched.fine_runs is not None else None,
        job_cap=job_cap,
    )
    return RecapResult(out, recapped, considered, corrected, own_late, len(job_cap))


def _fine_grid(sched: Schedule) -> tuple[list[list[tuple[int, float]]], np.ndarray]:
    """(per job: (step, busy fraction), GPUs held per step) on the placement grid; a schedule
    without one (the job-level MILP's, one step per slot) gets it from its runs — a job whose
    runs are not whole slots followed by one partly busy slot gets none (it is not re-capped)."""
    if sched.fine_runs is not None and sched.alloc_fine is not None:
        return [list(fr) for fr in sched.fine_runs], sched.alloc_fine.copy()
    assert sched.subslots == 1
    fine: list[list[tuple[int, float]]] = []
    for runs in sched.runs:
        fr = [(t, float(f)) for t, _, f in runs]
        whole = all(f > 1.0 - 1e-9 for _, f in fr[:-1]) and len({g for _, g, _ in runs}) <= 1
        fine.append(fr if whole else [])
    return fine, sched.alloc.copy()
