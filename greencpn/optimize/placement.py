"""Stage 2: job-level placement that respects the MILP, then a node repair — an executable plan.

The MILP (stage 1) decides nodes on, cap levels and where each *group* of jobs works. Here
every job gets one pool and its GPU schedule:

* jobs are taken earliest deadline first (larger jobs first on ties);
* a non-checkpointable job runs contiguously on one pool from one start slot; a checkpointable
  job runs on one pool in any slots (its cheapest ones);
* an option's cost is what it adds to the objective: busy-GPU energy at the slot's cap level ×
  (carbon + price), the idle energy of nodes that must be switched on beyond the MILP's, and
  lateness; options that exceed a pool's GPUs or a site's power budget are not taken;
* work that cannot finish inside the horizon runs on past its end (capacity beyond the horizon
  is not modelled; its energy is reported separately).

Then :func:`repair_nodes` re-solves the node family alone (Pyomo + HiGHS, a small MIP) with the
placement fixed, so nodes on cover every allocated GPU and min up / min down / spares /
initial state hold exactly. :mod:`greencpn.optimize.evaluate` prices the result with the same
code as the baselines, and the plan reports its gap to the MILP bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from greencpn.optimize.inputs import JobIn, PlanInputs

BIG = 1e18


@dataclass
class Schedule:
    """Job-level schedule on an extended timeline of ``T2 ≥ T`` slots."""

    pool: np.ndarray  # [J] pool index, -1 = not placed (no work required in the horizon)
    runs: list[list[tuple[int, int, float]]]  # per job: (slot, gpus, busy fraction of the slot)
    alloc: np.ndarray  # [P, T2] GPUs held (whole slots)
    busy: np.ndarray  # [P, T2] time-averaged busy GPUs
    level: np.ndarray  # [P, T2] cap level used
    T: int
    start_h: np.ndarray  # [J] start in hours from the horizon start (nan = not placed)
    end_h: np.ndarray  # [J] end in hours from the horizon start (nan = not placed)


def _unit_energy_cost(inp: PlanInputs, carbon_w: float, cost_w: float, T2: int) -> np.ndarray:
    """Objective units per kWh at each site's meter, per slot, extended past the horizon."""
    out = np.empty((len(inp.sites), T2))
    for s, site in enumerate(inp.sites):
        c = carbon_w * site.planning_intensity / 1000.0 + cost_w * site.price_per_kwh
        out[s, : inp.T] = c
        out[s, inp.T :] = c[-1] if inp.T else 0.0
    return out


def _extended(arr: np.ndarray, T2: int) -> np.ndarray:
    """``arr`` [..., T] continued to T2 slots by repeating its last slot."""
    T = arr.shape[-1]
    if T2 == T:
        return arr.copy()
    return np.concatenate([arr, np.repeat(arr[..., -1:], T2 - T, axis=-1)], axis=-1)


def extension_slots(inp: PlanInputs) -> int:
    """How far past the horizon a job may run: its longest run at the slowest level."""
    slow = min(float(p.level_thr.min()) for p in inp.pools)
    longest = max(
        (math.ceil(j.work_gpu_h / (j.gpus * slow * inp.slot_h)) for j in inp.jobs), default=0
    )
    return inp.T + longest + 1


def place_jobs(
    inp: PlanInputs,
    nodes_on: np.ndarray,
    level: np.ndarray,
    *,
    mode: str = "plan",
    carbon_w: float | None = None,
    cost_w: float | None = None,
    job_order: list[int] | None = None,
    subslots: int = 4,
    guide: np.ndarray | None = None,
    reserve_kwh: np.ndarray | None = None,
) -> Schedule:
    """Place every job on one pool.

    Placement works on a finer grid than the MILP (``subslots`` steps per slot, 15 min for
    hourly slots): jobs start on a step boundary, so a job that ends early in a slot frees its
    GPUs for the next one instead of holding them to the end of the slot.

    Args:
        nodes_on: [P, T] nodes the MILP keeps on (their capacity is free to use).
        level: [P, T] cap level per pool and slot.
        mode: ``"plan"`` — cheapest option by the objective; ``"asap"`` — the carbon-agnostic
            baseline: earliest start, first allowed site on ties, all capacity available.
        guide: [K, S, T] the MILP's work per group, site and slot. Steps where the job's group
            has no planned work left at that site cost extra (the dearest busy-GPU cost among
            its sites), so jobs follow the MILP and leave room for the jobs it planned there.
        reserve_kwh: [S, T] meter energy to keep free under each budget (found by an earlier
            pass whose node repair or start-ups went over it).
    """
    P, T = len(inp.pools), inp.T
    T2 = extension_slots(inp)
    k = max(1, int(subslots))
    F = T2 * k  # fine steps
    obj = inp.objective
    cw = obj.carbon_weight_per_kg if carbon_w is None else carbon_w
    pw = obj.cost_weight if cost_w is None else cost_w
    unit = np.repeat(_unit_energy_cost(inp, cw, pw, T2), k, axis=1)  # [S, F]
    lev_slot = _extended(level.astype(int), T2)
    lev = np.repeat(lev_slot, k, axis=1)
    n_slot = _extended(nodes_on.astype(float), T2)
    n_slot[:, T:] = np.array([p.nodes for p in inp.pools])[:, None]
    n_free = np.repeat(n_slot, k, axis=1)
    gpn = np.array([p.gpus_per_node for p in inp.pools], dtype=float)
    pool_gpus = np.array([p.gpus for p in inp.pools], dtype=float)
    pue = np.array([inp.sites[p.site].pue for p in inp.pools])
    thr = np.stack([p.level_thr[lev[i]] for i, p in enumerate(inp.pools)])  # [P, F]
    extra_kw = np.stack([p.level_extra_kw[lev[i]] for i, p in enumerate(inp.pools)])  # [P, F]
    idle_kw = np.array([p.node_idle_kw - p.node_off_kw for p in inp.pools])
    site_of = np.array([p.site for p in inp.pools])
    dt = inp.slot_h / k
    # A busy GPU costs its extra power plus its share of its node's idle power: a node kept on
    # only for this job could otherwise be off (the repair turns unused nodes off).
    gpu_kw = extra_kw + (idle_kw / gpn)[:, None]
    gpu_cost = gpu_kw * dt * pue[:, None] * unit[site_of]  # per busy GPU and step
    thr_top = np.stack([np.full(F, p.level_thr[0]) for p in inp.pools])
    extra_kw_top = np.stack([np.full(F, p.level_extra_kw[0]) for p in inp.pools])
    gpu_cost_top = (extra_kw_top + (idle_kw / gpn)[:, None]) * dt * pue[:, None] * unit[site_of]

    def busy_gain_kwh(cand: np.ndarray) -> np.ndarray:
        """Extra meter energy if the GPUs already busy on these pools went to full power."""
        return pue[cand, None] * dt * (extra_kw_top[cand] - extra_kw[cand]) * busy[cand]

    head = np.full((len(inp.sites), F), np.inf)  # budget headroom at the meter, kWh per step
    for s_, site in enumerate(inp.sites):
        head[s_, : T * k] = np.repeat(site.budget_kw, k) * dt
    for p, pool in enumerate(inp.pools):
        base_kw = pool.node_idle_kw * nodes_on[p] + pool.node_off_kw * (pool.nodes - nodes_on[p])
        head[pool.site, : T * k] -= pue[p] * dt * np.repeat(base_kw, k)
    if reserve_kwh is not None:
        head[:, : T * k] -= np.repeat(reserve_kwh, k, axis=1) / k
    # GPUs kept free for forecast interactive load count as held from the start
    reserve = np.zeros((P, F))
    for p, pool in enumerate(inp.pools):
        reserve[p, : T * k] = np.repeat(pool.reserve_gpus, k)
    alloc = reserve.copy()
    busy = np.zeros((P, F))
    J = len(inp.jobs)
    fine_runs: list[list[tuple[int, float]]] = [[] for _ in range(J)]
    placed = np.full(J, -1)
    if job_order is None:
        if mode == "asap":
            job_order = sorted(range(J), key=lambda i: (inp.jobs[i].release, inp.jobs[i].id))
        else:
            job_order = sorted(
                range(J),
                key=lambda i: (
                    inp.jobs[i].deadline_slot,
                    -inp.jobs[i].gpus * inp.jobs[i].work_gpu_h,
                    inp.jobs[i].id,
                ),
            )
    tidx = np.arange(F)
    group_of = np.full(J, -1)
    for gi, grp in enumerate(inp.groups):
        group_of[list(grp.jobs)] = gi
    residual = None if guide is None else guide.astype(float).copy()
    candidates: dict[tuple, np.ndarray] = {}  # pools a job may use, by (allowed sites, GPUs)
    for j in job_order:
        job = inp.jobs[j]
        if job.required_gpu_h <= 0 or job.release_slot >= T:
            continue  # nothing has to happen inside this horizon: deferred
        key = (job.sites, job.gpus)
        cand = candidates.get(key)
        if cand is None:
            cand = candidates[key] = np.array(
                [
                    p
                    for p, pool in enumerate(inp.pools)
                    if pool.site in job.sites and pool.gpus >= job.gpus
                ],
                dtype=int,
            )
        if mode == "asap":  # first allowed site first: order candidates by the job's site list
            rank = {s_: i for i, s_ in enumerate(job.sites)}
            cand = np.array(
                sorted(cand.tolist(), key=lambda p: (rank[int(site_of[p])], p)), dtype=int
            )
        if cand.size == 0:
            continue
        extra_cost = None
        gi = group_of[j]
        if residual is not None and gi >= 0 and mode == "plan":
            onplan = np.zeros((cand.size, F), dtype=bool)
            onplan[:, : T * k] = np.repeat(residual[gi][site_of[cand]] > 1e-6, k, axis=1)
            dearest = float(gpu_cost[cand, : T * k].mean(axis=1).max()) * job.gpus
            extra_cost = np.where(onplan, 0.0, dearest)
        best = _best_option(
            job,
            cand,
            inp,
            mode,
            T * k,
            F,
            k,
            tidx,
            thr[cand],
            gpu_cost[cand],
            n_free[cand],
            alloc[cand],
            gpn[cand],
            pool_gpus[cand],
            extra_kw[cand],
            pue[cand],
            idle_kw[cand],
            head[site_of[cand]],
            dt,
            obj.lateness_weight_per_gpu_h,
            extra_cost,
        )
        late_at = (job.deadline_slot + 1) * k  # first fine step after the deadline
        if (
            mode == "plan"
            and job.deadline_slot < T
            and (best is None or best[1][-1] + best[2][-1] > late_at + 1e-9)
        ):
            # Late at the planned caps: try full power (level 0) on the candidate pools. If that
            # is on time, those pool-slots switch to full power (jobs already there only speed up).
            fast = _best_option(
                job,
                cand,
                inp,
                mode,
                T * k,
                F,
                k,
                tidx,
                thr_top[cand],
                gpu_cost_top[cand],
                n_free[cand],
                alloc[cand],
                gpn[cand],
                pool_gpus[cand],
                extra_kw_top[cand],
                pue[cand],
                idle_kw[cand],
                head[site_of[cand]] - busy_gain_kwh(cand),
                dt,
                obj.lateness_weight_per_gpu_h,
                extra_cost,
            )
            if fast is not None and fast[1][-1] + fast[2][-1] <= late_at + 1e-9:
                best = fast
                pf = int(cand[fast[0]])
                for slot in sorted({int(t) // k for t in fast[1] if t < T * k}):
                    sl = slice(slot * k, (slot + 1) * k)
                    # the site now carries the pool's busy GPUs at full power in this slot
                    head[site_of[pf], sl] -= (
                        pue[pf] * dt * (extra_kw_top[pf, sl] - extra_kw[pf, sl]) * busy[pf, sl]
                    )
                    lev[pf, sl] = 0
                    thr[pf, sl] = thr_top[pf, sl]
                    extra_kw[pf, sl] = extra_kw_top[pf, sl]
                    gpu_cost[pf, sl] = gpu_cost_top[pf, sl]
        if best is None:
            continue
        ci, steps, fracs = best
        p = int(cand[ci])
        placed[j] = p
        if residual is not None and gi >= 0:
            for t, f in zip(steps.tolist(), fracs.tolist(), strict=True):
                if t < T * k:
                    residual[gi, site_of[p], t // k] -= job.gpus * thr[p, t] * dt * f
        for t, f in zip(steps.tolist(), fracs.tolist(), strict=True):
            fine_runs[j].append((t, f))
            alloc[p, t] += job.gpus
            busy[p, t] += job.gpus * f
            head[site_of[p], t] -= pue[p] * dt * extra_kw[p, t] * job.gpus * f
            over = alloc[p, t] - n_free[p, t] * gpn[p]
            if over > 0:  # the job needs nodes beyond the MILP's for this slot
                add = math.ceil(over / gpn[p])
                slot = t // k
                n_free[p, slot * k : (slot + 1) * k] += add
                head[site_of[p], slot * k : (slot + 1) * k] -= pue[p] * dt * idle_kw[p] * add
    # back to slots: GPUs held = the most held in any step; busy = time average
    lev_slot = lev.reshape(P, T2, k)[:, :, 0]
    alloc_slot = alloc.reshape(P, T2, k).max(axis=2)  # includes the reserve
    busy_slot = busy.reshape(P, T2, k).mean(axis=2)
    runs: list[list[tuple[int, int, float]]] = [[] for _ in range(J)]
    start_h = np.full(J, np.nan)
    end_h = np.full(J, np.nan)
    for j in range(J):
        fr = fine_runs[j]
        if not fr:
            continue
        start_h[j] = fr[0][0] * dt
        end_h[j] = (fr[-1][0] + fr[-1][1]) * dt
        per_slot: dict[int, float] = {}
        for t, f in fr:
            per_slot[t // k] = per_slot.get(t // k, 0.0) + f / k
        runs[j] = [(t, inp.jobs[j].gpus, v) for t, v in sorted(per_slot.items())]
    return Schedule(
        pool=placed,
        runs=runs,
        alloc=alloc_slot,
        busy=busy_slot,
        level=lev_slot,
        T=T,
        start_h=start_h,
        end_h=end_h,
    )


def _best_option(
    job: JobIn,
    cand,
    inp: PlanInputs,
    mode: str,
    T: int,
    T2: int,
    k: int,
    tidx,
    thr,
    gpu_cost,
    n_free,
    alloc,
    gpn,
    pool_gpus,
    extra_kw,
    pue,
    idle_kw,
    head,
    dt,
    w_late,
    extra_cost=None,
):
    """Cheapest (pool, steps, fractions) for one job among candidate pools, or None.

    ``T`` and ``T2`` are in fine steps here (horizon and extended timeline), ``dt`` the step in h.
    """
    g = job.gpus
    W = job.required_gpu_h if job.deadline_slot >= inp.T else job.work_gpu_h
    r = job.release_slot * k
    D = (job.deadline_slot + 1) * k - 1
    rate = g * thr * dt  # [C, T2] work per full slot
    fits = (alloc + g <= pool_gpus[:, None]) & (tidx[None, :] >= r)
    free_gpus = n_free * gpn[:, None] - alloc
    extra_nodes = np.ceil(np.maximum(0.0, g - np.maximum(free_gpus, 0.0)) / gpn[:, None])
    power_need = pue[:, None] * dt * (extra_kw * g + extra_nodes * idle_kw[:, None])
    fits &= (head - power_need >= -1e-9) | (tidx[None, :] >= T)
    late_h = np.maximum(0, tidx - D) * dt  # [T2]
    prio = job.priority
    if mode == "asap":
        slot_cost = np.where(fits, 0.0, BIG) + tidx[None, :] * 1e-6  # earliest wins
        late_cost = np.zeros_like(rate)
    else:
        # gpu_cost already carries each GPU's share of its node's idle power
        slot_cost = np.where(fits, g * gpu_cost, BIG) + tidx[None, :] * 1e-9
        if extra_cost is not None:
            slot_cost = slot_cost + extra_cost
        late_cost = w_late * prio * late_h[None, :] * rate
    if job.checkpointable:
        # cheapest slots per unit of work, taken until the work is done
        per_work = (slot_cost + late_cost) / np.maximum(rate, 1e-12)
        if mode == "asap":
            per_work = np.where(fits, tidx[None, :].astype(float), BIG)
        order = np.argsort(per_work, axis=1, kind="stable")
        rate_sorted = np.take_along_axis(rate, order, axis=1)
        ok_sorted = np.take_along_axis(fits, order, axis=1)
        rate_sorted = np.where(ok_sorted, rate_sorted, 0.0)
        cum = np.cumsum(rate_sorted, axis=1)
        enough = cum[:, -1] >= W - 1e-9
        if not enough.any():
            return None
        n_take = np.argmax(cum >= W - 1e-9, axis=1)  # index of last slot taken
        # total per candidate: the full slots before the last plus the fraction of the last
        cost_sorted = np.take_along_axis(slot_cost + late_cost, order, axis=1)
        ccum = np.cumsum(np.minimum(cost_sorted, BIG), axis=1)
        kk = n_take[:, None]
        prev_cum = np.where(kk > 0, np.take_along_axis(cum, np.maximum(kk - 1, 0), axis=1), 0.0)[
            :, 0
        ]
        prev_cost = np.where(kk > 0, np.take_along_axis(ccum, np.maximum(kk - 1, 0), axis=1), 0.0)[
            :, 0
        ]
        last_rate = np.take_along_axis(rate_sorted, kk, axis=1)[:, 0]
        last_cost = np.take_along_axis(cost_sorted, kk, axis=1)[:, 0]
        frac_last = (W - prev_cum) / np.maximum(last_rate, 1e-12)
        totals = np.where(enough, prev_cost + frac_last * last_cost, np.inf)
        if mode == "asap":  # earliest finish; exact ties go to the first candidate (first site)
            last_step = np.take_along_axis(order, kk, axis=1)[:, 0]
            totals = np.where(enough, last_step + frac_last, np.inf)
        c = int(np.argmin(totals))
        k = int(n_take[c])
        sl = order[c, : k + 1]
        prev = cum[c, k - 1] if k > 0 else 0.0
        fr = np.ones(k + 1)
        fr[-1] = (W - prev) / rate_sorted[c, k]
        srt = np.argsort(sl)
        return c, sl[srt], fr[srt]
    # contiguous: for each start s the end slot e(s) where cumulative work reaches W
    C = np.concatenate([np.zeros((len(cand), 1)), np.cumsum(rate, axis=1)], axis=1)  # [C, T2+1]
    target = C[:, :-1] + W  # [C, T2] work level to reach when starting at s
    # e = number of full slots needed: first index i with C[i+1] >= target
    # one searchsorted for all rows: lift row i by i·span so the rows stay sorted end to end
    span = float(C[:, -1].max() + W + 1.0)
    lift = np.arange(len(cand))[:, None] * span
    found = np.searchsorted((C + lift).ravel(), (target - 1e-9 + lift).ravel(), side="left")
    end_idx = found.reshape(target.shape) - np.arange(len(cand))[:, None] * (T2 + 1) - 1
    valid = end_idx < T2
    end_idx = np.minimum(end_idx, T2 - 1)
    bad = np.concatenate([np.zeros((len(cand), 1)), np.cumsum(~fits, axis=1)], axis=1)
    cost_cum = np.concatenate(
        [np.zeros((len(cand), 1)), np.cumsum(np.minimum(slot_cost + late_cost, BIG), axis=1)],
        axis=1,
    )
    starts = tidx[None, :].repeat(len(cand), 0)
    n_bad = np.take_along_axis(bad, end_idx + 1, axis=1) - np.take_along_axis(bad, starts, axis=1)
    valid &= (n_bad == 0) & (starts >= r)
    if not valid.any():
        return None
    # cost of full slots [s, e) plus the fraction of slot e
    full_cost = np.take_along_axis(cost_cum, end_idx, axis=1) - np.take_along_axis(
        cost_cum, starts, axis=1
    )
    done_before_e = np.take_along_axis(C, end_idx, axis=1) - C[:, :-1]
    last_rate = np.take_along_axis(rate, end_idx, axis=1)
    frac = np.clip((W - done_before_e) / np.maximum(last_rate, 1e-12), 0.0, 1.0)
    last_cost = np.take_along_axis(slot_cost + late_cost, end_idx, axis=1) * frac
    total = np.where(valid, full_cost + last_cost, np.inf)
    if mode == "asap":
        total = np.where(valid, starts.astype(float), np.inf)
    flat = int(np.argmin(total))
    c, s = divmod(flat, T2)
    e = int(end_idx[c, s])
    slots = np.arange(s, e + 1)
    fr = np.ones(slots.size)
    fr[-1] = frac[c, s]
    if fr[-1] <= 1e-12 and slots.size > 1:
        slots, fr = slots[:-1], fr[:-1]
    return c, slots, fr


def needed_nodes(inp: PlanInputs, sched: Schedule) -> np.ndarray:
    """[P, T] nodes that must be on to hold every allocated GPU."""
    gpn = np.array([p.gpus_per_node for p in inp.pools])[:, None]
    return np.ceil(sched.alloc[:, : inp.T] / gpn - 1e-9).astype(int)


def repair_nodes(
    inp: PlanInputs,
    sched: Schedule,
    *,
    carbon_w: float | None = None,
    cost_w: float | None = None,
    time_limit_s: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cheapest node on/off schedule that covers the placement and obeys the node family.

    Solves family 3 (:mod:`greencpn.optimize.nodes`) alone with ``n[p,t] ≥ need[p,t]`` and the
    boot-time capacity loss, minimising the energy cost of idle and booting nodes. Returns
    ``(n, u, d)`` as integer arrays [P, T].
    """
    import pyomo.environ as pyo
    from pyomo.contrib.solver.solvers.highs import Highs

    from greencpn.optimize import nodes as nodes_family
    from greencpn.optimize.builder import ModelBuilder
    from greencpn.optimize.variables import Vars

    P, T = len(inp.pools), inp.T
    need = needed_nodes(inp, sched)
    obj = inp.objective
    cw = obj.carbon_weight_per_kg if carbon_w is None else carbon_w
    pw = obj.cost_weight if cost_w is None else cost_w
    unit = _unit_energy_cost(inp, cw, pw, T)
    mb = ModelBuilder()
    nodes_arr = np.array([p.nodes for p in inp.pools], dtype=float)
    lb = np.maximum(need, np.array([p.spares for p in inp.pools])[:, None]).astype(float)
    if (lb > nodes_arr[:, None]).any():
        raise AssertionError("placement allocated more GPUs than a pool has")
    n = mb.new_vars("int", (P, T), lb=lb, ub=nodes_arr[:, None])
    u = mb.new_vars("int", (P, T), lb=0.0)
    d = mb.new_vars("int", (P, T), lb=0.0)
    empty = np.zeros(0, dtype=int)
    V = Vars(
        n=n,
        u=u,
        d=d,
        y=None,
        g=np.zeros((P, 1, T), dtype=int),
        x_id=empty,
        x_k=empty,
        x_s=empty,
        x_t=empty,
        q=empty,
        e=np.zeros((0, T), dtype=int),
        v=np.zeros((0, T), dtype=int),
        n_levels=np.ones(P, dtype=int),
    )
    nodes_family.add(mb, inp, V)
    busy = sched.busy[:, :T]
    for p, pool in enumerate(inp.pools):
        if pool.boot_frac > 0:
            m_ = float(pool.gpus_per_node)
            for t in range(T):
                if busy[p, t] > 0:
                    mb.add_row(
                        "boot_capacity",
                        [n[p, t], u[p, t]],
                        [m_, -m_ * pool.boot_frac],
                        float(busy[p, t]),
                        None,
                    )
    # site budgets (family 5) with the placement's busy power fixed, overrun penalised
    S = len(inp.sites)
    v = mb.new_vars("cont", (S, T), lb=0.0)
    lev = sched.level[:, :T]
    for s_, site in enumerate(inp.sites):
        at = [p for p, pool in enumerate(inp.pools) if pool.site == s_]
        for t in range(T):
            if not math.isfinite(site.budget_kw[t]):
                continue
            fixed = sum(
                site.pue
                * inp.slot_h
                * (
                    inp.pools[p].node_off_kw * inp.pools[p].nodes
                    + inp.pools[p].level_extra_kw[lev[p, t]] * busy[p, t]
                )
                for p in at
            )
            ids, cf = [int(v[s_, t])], [-1.0]
            for p in at:
                pool = inp.pools[p]
                ids += [int(n[p, t]), int(u[p, t])]
                cf += [
                    site.pue * inp.slot_h * (pool.node_idle_kw - pool.node_off_kw),
                    site.pue * pool.boot_extra_kwh,
                ]
            mb.add_row("site_budget", ids, cf, None, site.budget_kw[t] * inp.slot_h - fixed)
    mb.finalize()
    from greencpn.optimize.objective import BUDGET_OVERRUN_WEIGHT_PER_KWH

    coefs, vars_ = [], []
    for i in v.ravel().tolist():
        coefs.append(BUDGET_OVERRUN_WEIGHT_PER_KWH)
        vars_.append(mb.vars[int(i)])
    for p, pool in enumerate(inp.pools):
        site = inp.sites[pool.site]
        for t in range(T):
            c = unit[pool.site, t] * site.pue
            coefs.append(c * inp.slot_h * (pool.node_idle_kw - pool.node_off_kw) + 1e-6)
            vars_.append(mb.vars[int(n[p, t])])
            coefs.append(c * pool.boot_extra_kwh + 1e-6)
            vars_.append(mb.vars[int(u[p, t])])
    from pyomo.core.expr.numeric_expr import LinearExpression

    mb.m.objective = pyo.Objective(
        expr=LinearExpression(constant=0, linear_coefs=coefs, linear_vars=vars_)
    )
    res = Highs().solve(
        mb.m,
        time_limit=time_limit_s,
        rel_gap=1e-2,
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
        solver_options={"output_flag": False, "mip_heuristic_run_feasibility_jump": False},
    )
    if str(res.solution_status.name) not in ("optimal", "feasible"):
        # Always possible: all nodes on from the first slot satisfies every row.
        full = np.repeat(nodes_arr[:, None], T, axis=1).astype(int)
        init = np.array([p.initial_on for p in inp.pools])
        u0 = np.zeros((P, T), dtype=int)
        u0[:, 0] = np.maximum(0, full[:, 0] - init)
        return full, u0, np.zeros((P, T), dtype=int)
    res.solution_loader.load_vars()
    return (
        np.rint(mb.value(n)).astype(int),
        np.rint(mb.value(u)).astype(int),
        np.rint(mb.value(d)).astype(int),
    )
