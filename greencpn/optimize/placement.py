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

Then :func:`~greencpn.optimize.repair.repair_nodes` re-solves the node family alone (Pyomo +
HiGHS, a small MIP) with the placement fixed, so nodes on cover every allocated GPU and min up /
min down / spares / initial state hold exactly. :mod:`greencpn.optimize.evaluate` prices the
result with the same code as the baselines, and the plan reports its gap to the MILP bound.

The rooms around this one: the grid and the :class:`~greencpn.optimize.schedule.Schedule` it
fills (:mod:`greencpn.optimize.schedule`), one job's window chooser
(:mod:`greencpn.optimize.options`), the node repair (:mod:`greencpn.optimize.repair`).

Size: :func:`place_jobs` is one ~600-line function whose closures (``place``, ``unplace``,
``retime``, ``set_level``, …) share the placement state (GPUs held, busy, budget headroom, node
profile, greedy levels); cutting it further means turning that state into a class — a rewrite
with its own risk, not a move (issue 13).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.options import _best_option
from greencpn.optimize.schedule import (
    Schedule,
    boot_steps,
    extended,
    extension_slots,
    job_steps,
    node_profile,
    nodes_to_hold,
    schedule_from_fine,
    unit_energy_cost,
)

#: how many more options a job tries when the one it chose pushes a site over its budget once
#: the node dynamics are counted (each try closes the steps behind that overrun on that pool)
BUDGET_RETRIES = 6


class PlacementAbandoned(Exception):
    """:func:`place_jobs` stopped early: a valid lower bound on the evaluated objective of the
    schedule it was building (``lower_bound``) already exceeded ``abandon_above``, so that
    schedule could not have been the plan (see :func:`unserved_lower_bound`)."""

    def __init__(self, lower_bound: float, jobs_done: int) -> None:
        super().__init__(f"placement abandoned: lower bound {lower_bound:,.2f}")
        self.lower_bound = lower_bound
        self.jobs_done = jobs_done


def objective_bound_valid(inp: PlanInputs) -> bool:
    """Every term of :func:`~greencpn.optimize.evaluate.evaluate`'s objective other than the
    unserved work is ≥ 0 (non-negative intensities and prices): only then is the unserved
    term alone a lower bound on the objective."""
    return all(
        np.all(np.asarray(s_.intensity_g_per_kwh) >= 0)
        and np.all(np.asarray(s_.price_per_kwh) >= 0)
        for s_ in inp.sites
    )


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
    fixed: dict[int, tuple[int, list[int]] | tuple[int, list[int], list[float]]] | None = None,
    abandon_above: float | None = None,
    abandon_when: Callable[[], bool] | None = None,
) -> Schedule:
    """Place every job on one pool.

    Placement works on a finer grid than the MILP (``subslots`` steps per slot, 15 min for
    hourly slots): jobs start on a step boundary, so a job that ends early in a slot frees its
    GPUs for the next one instead of holding them to the end of the slot.

    Args:
        nodes_on: [P, T] nodes the MILP keeps on (their capacity is free to use).
        level: [P, T] cap level per pool and slot.
        mode: ``"plan"`` — cheapest option by the objective; ``"asap"`` — the carbon-agnostic
            baseline: earliest start, first allowed site on ties, all capacity available;
            ``"greedy"`` — the carbon-aware greedy baseline (levels fixed per pool and slot).
        guide: [K, S, T] the MILP's work per group, site and slot. Steps where the job's group
            has no planned work left at that site cost extra (the dearest busy-GPU cost among
            its sites), so jobs follow the MILP and leave room for the jobs it planned there.
        reserve_kwh: [S, T] meter energy to keep free under each budget (found by an earlier
            pass whose node repair or start-ups went over it).
        fixed: job index → (pool, fine steps) kept from the previous plan (re-planning, see
            :func:`greencpn.optimize.stability.kept_runs`): such a job is placed first on those
            steps, in that order, until its work is done at this placement's cap levels; a job
            whose steps no longer fit (GPUs, budget) or no longer deliver its work is placed
            like any other. A third element, the busy fraction per kept step (the plan's
            exact runs), is used as it is when those steps still deliver exactly its work.
        abandon_above: stop with :class:`PlacementAbandoned` as soon as a lower bound on the
            evaluated objective of the schedule being built exceeds this (the objective the
            schedule would have to beat to matter). The bound, counted after each job is
            placed: ``unserved_weight_per_gpu_h`` × the work that can no longer be served
            inside the horizon — a job's whole required work when it found no option, else
            what its steps inside the horizon cannot deliver even at the pool's fastest level
            (a job's steps only ever shrink later: re-timing keeps a prefix of them). Every
            other term of the objective is ≥ 0 (checked: :func:`objective_bound_valid`; else
            no bound is used). None: place every job.
        abandon_when: a condition the caller adds (asked only once the bound is above
            ``abandon_above``; the placement goes on while it is false): e.g. that no later
            pass will be built from this one.
    """
    P, T = len(inp.pools), inp.T
    T2 = extension_slots(inp)
    k = max(1, int(subslots))
    F = T2 * k  # fine steps
    obj = inp.objective
    cw = obj.carbon_weight_per_kg if carbon_w is None else carbon_w
    pw = obj.cost_weight if cost_w is None else cost_w
    unit = np.repeat(unit_energy_cost(inp, cw, pw, T2), k, axis=1)  # [S, F]
    lev_slot = extended(level.astype(int), T2)
    lev = np.repeat(lev_slot, k, axis=1)
    n_slot = extended(nodes_on.astype(float), T2)
    n_slot[:, T:] = np.array([p.nodes for p in inp.pools])[:, None]
    n_free = np.repeat(n_slot, k, axis=1)
    gpn = np.array([p.gpus_per_node for p in inp.pools], dtype=float)
    # GPUs usable per step: all of the pool's, except while the nodes off at the horizon start
    # boot in slot 0 (a node started later can be started a slot earlier by the node repair)
    cap_fine = np.repeat(np.array([p.gpus for p in inp.pools], dtype=float)[:, None], F, axis=1)
    for p, pool in enumerate(inp.pools):
        nb = boot_steps(inp, p, k)
        if nb and pool.initial_on < pool.nodes:
            cap_fine[p, :nb] = pool.initial_on * pool.gpus_per_node
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
    # Sites with a budget, FIFO ("asap": the baselines and the FIFO candidate, placed with idle
    # nodes off): the nodes each pool needs are counted as the node repair will keep
    # them (:func:`node_profile` over :func:`nodes_to_hold`: min up after a start, a node on a
    # slot early for a job in its boot steps, boot energy per start), not only in the slots
    # its jobs run; the headroom there is the budget less that energy and the busy power.
    budgeted = np.array([bool(np.isfinite(s_.budget_kw).any()) for s_ in inp.sites])
    count_nodes = bool(budgeted.any()) and mode == "asap"
    base_n = np.ceil(nodes_on.astype(float) - 1e-9).astype(int)  # [P, T]
    prof = base_n.copy()
    node_e = np.zeros((P, T * k))  # meter kWh per step of each pool's nodes (idle, off, boot)

    def node_energy(p: int, pr: np.ndarray) -> np.ndarray:
        pool = inp.pools[p]
        prev = np.concatenate([[pool.initial_on], pr[:-1]])
        per_slot = pue[p] * (
            inp.slot_h * (pool.node_idle_kw * pr + pool.node_off_kw * (pool.nodes - pr))
            + pool.boot_extra_kwh * np.maximum(0, pr - prev)
        )
        return np.repeat(per_slot / k, k)

    def profile(p: int) -> np.ndarray:
        pool = inp.pools[p]
        need = np.maximum(nodes_to_hold(inp, p, alloc[p], k), base_n[p])
        return np.array(
            node_profile(need.tolist(), pool.initial_on, pool.min_up_slots, pool.spares), dtype=int
        )

    if count_nodes:
        for p, pool in enumerate(inp.pools):
            if not budgeted[pool.site]:
                continue
            base_kw = pool.node_idle_kw * nodes_on[p] + pool.node_off_kw * (
                pool.nodes - nodes_on[p]
            )
            head[pool.site, : T * k] += pue[p] * dt * np.repeat(base_kw, k)  # counted below
            prof[p] = profile(p)
            node_e[p] = node_energy(p, prof[p])
            head[pool.site, : T * k] -= node_e[p]
            n_free[p, : T * k] = np.repeat(np.maximum(base_n[p], prof[p]), k)
    J = len(inp.jobs)
    fine_runs: list[list[tuple[int, float]]] = [[] for _ in range(J)]
    placed = np.full(J, -1)
    if job_order is None:
        if mode == "asap":
            job_order = sorted(range(J), key=lambda i: (inp.jobs[i].release, inp.jobs[i].id))
        elif mode == "greedy":
            job_order = sorted(range(J), key=lambda i: (inp.jobs[i].deadline, inp.jobs[i].id))
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
    retries = BUDGET_RETRIES
    jobs_on: list[list[int]] = [[] for _ in range(P)]
    work_of = np.zeros(J)
    # greedy: one cap level per pool and slot, fixed by the first job placed there (-1 = free);
    # levels tried from the least GPU energy per unit of work up
    lvl_set = np.full((P, T2), -1, dtype=int)
    eff_order = [
        np.argsort(
            (p.level_busy_kw + p.node_idle_kw / p.gpus_per_node) / p.level_thr, kind="stable"
        )
        for p in inp.pools
    ]
    # the same per rank as a table: [P, ranks] level, its throughput and extra power (a pool
    # with fewer levels repeats its last): rank_levels reads rows of it
    n_rank = max(len(o) for o in eff_order)
    rank_lv = np.array([[o[min(rk, len(o) - 1)] for rk in range(n_rank)] for o in eff_order])
    rank_thr = np.array([p.level_thr[rank_lv[i]] for i, p in enumerate(inp.pools)])
    rank_ext = np.array([p.level_extra_kw[rank_lv[i]] for i, p in enumerate(inp.pools)])

    def add_runs(j: int, p: int, steps, fracs, sign: float = 1.0) -> None:
        g = inp.jobs[j].gpus
        for t, f in zip(steps, fracs, strict=True):
            alloc[p, t] += sign * g
            busy[p, t] += sign * g * f
            head[site_of[p], t] -= sign * pue[p] * dt * extra_kw[p, t] * g * f

    def place(j: int, p: int, steps: list[int], fracs: list[float]) -> None:
        """Put job j on pool p in these fine steps: its runs, the MILP guide's residual work,
        and the nodes it needs beyond those already counted on."""
        job = inp.jobs[j]
        placed[j] = p
        jobs_on[p].append(j)
        gi = group_of[j]
        if residual is not None and gi >= 0:
            for t, f in zip(steps, fracs, strict=True):
                if t < T * k:
                    residual[gi, site_of[p], t // k] -= job.gpus * thr[p, t] * dt * f
        fine_runs[j] = list(zip(steps, fracs, strict=True))
        add_runs(j, p, steps, fracs)
        if count_nodes and budgeted[site_of[p]]:
            refresh(p)
            return
        for t in steps:
            over = alloc[p, t] - n_free[p, t] * gpn[p]
            if over > 0:  # the job needs nodes beyond the MILP's for this slot
                add = math.ceil(over / gpn[p] - 1e-9)
                slot = t // k
                n_free[p, slot * k : (slot + 1) * k] += add
                head[site_of[p], slot * k : (slot + 1) * k] -= pue[p] * dt * idle_kw[p] * add

    def refresh(p: int) -> None:
        """Count pool p's nodes again from what it holds now (sites with a budget)."""
        pr = profile(p)
        new_e = node_energy(p, pr)
        head[site_of[p], : T * k] -= new_e - node_e[p]
        node_e[p] = new_e
        prof[p] = pr
        n_free[p, : T * k] = np.repeat(np.maximum(base_n[p], pr), k)

    def snapshot(j: int, p: int) -> tuple:
        gi = group_of[j]
        res_row = residual[gi].copy() if residual is not None and gi >= 0 else None
        return head[site_of[p]].copy(), n_free[p].copy(), node_e[p].copy(), prof[p].copy(), res_row

    def unplace(j: int, p: int, steps: list[int], fracs: list[float], snap: tuple) -> None:
        """Take back :func:`place` (the state saved by :func:`snapshot` just before it)."""
        add_runs(j, p, steps, fracs, -1.0)
        placed[j] = -1
        jobs_on[p].remove(j)
        fine_runs[j] = []
        head[site_of[p]], n_free[p], node_e[p], prof[p], res_row = snap
        if res_row is not None and residual is not None:
            residual[group_of[j]] = res_row

    def ban_mask(p: int, over_slots: np.ndarray, steps) -> np.ndarray:
        """[F] steps of the refused option to close on pool p: those in the slots whose node
        start (min up, boot energy) reaches an overrun slot, and the boot steps of the slot
        after one (a node on a slot early); all of them when none lies there."""
        nb = boot_steps(inp, p, k)
        up = inp.pools[p].min_up_slots
        mask = np.zeros(F, dtype=bool)
        st = np.asarray(steps, dtype=int)
        sl, pos = st // k, st % k
        for v in np.unique(over_slots).tolist():
            mask[st[(sl >= v - up + 1) & (sl <= v)]] = True
            mask[st[(sl == v + 1) & (pos < nb)]] = True
        if not mask.any():
            mask[st] = True
        return mask

    def retime(j: int, p: int) -> None:
        """Re-time job j on pool p at the pool's current throughput: its runs end as soon as
        its work is done (after a cap was raised under it), freeing the steps it no longer
        needs."""
        steps = [t for t, _ in fine_runs[j]]
        fr = [f for _, f in fine_runs[j]]
        add_runs(j, p, steps, fr, -1.0)
        left = work_of[j]
        new: list[tuple[int, float]] = []
        for t in steps:
            if left <= 1e-12:
                break
            rate = inp.jobs[j].gpus * thr[p, t] * dt
            f = min(1.0, left / rate)
            new.append((t, f))
            left -= f * rate
        fine_runs[j] = new
        add_runs(j, p, [t for t, _ in new], [f for _, f in new])

    def set_level(p: int, slots, lv_of_slot) -> None:
        """Give pool p level ``lv_of_slot`` in these slots; jobs already there are re-timed."""
        slots = sorted(slots)
        if not slots:
            return
        touched = {t for t in slots}
        affected = [
            jj for jj in jobs_on[p] if any(int(t) // k in touched for t, _ in fine_runs[jj])
        ]
        for jj in affected:  # take them out at the old power
            add_runs(jj, p, [t for t, _ in fine_runs[jj]], [f for _, f in fine_runs[jj]], -1.0)
        pool = inp.pools[p]
        for slot in slots:
            sl = slice(slot * k, (slot + 1) * k)
            lv = int(lv_of_slot)
            lev[p, sl] = lv
            thr[p, sl] = pool.level_thr[lv]
            extra_kw[p, sl] = pool.level_extra_kw[lv]
            gpu_cost[p, sl] = (
                (pool.level_extra_kw[lv] + idle_kw[p] / gpn[p]) * dt * pue[p] * unit[site_of[p], sl]
            )
        for jj in affected:  # back in at the new power, then shortened to their work
            add_runs(jj, p, [t for t, _ in fine_runs[jj]], [f for _, f in fine_runs[jj]])
            retime(jj, p)
        if affected and count_nodes and budgeted[site_of[p]]:
            refresh(p)

    score = (
        pue[:, None]
        * np.repeat(
            extended(np.array([s_.intensity_g_per_kwh for s_ in inp.sites]), T2), k, axis=1
        )[site_of]
    )  # [P, F] PUE × intensity: what best-window tools rank windows by
    kept: set[int] = set()
    # contiguous jobs first (their steps are exact), then checkpointable ones, whose steps
    # inside a slot may move to the free steps of that slot
    fixed_items = sorted((fixed or {}).items(), key=lambda kv: inp.jobs[kv[0]].checkpointable)
    for j, (p, steps_kept, *given) in fixed_items:
        job = inp.jobs[j]
        if job.required_gpu_h <= 0 or job.release_slot >= T or not steps_kept:
            continue
        W = job.required_gpu_h if job.deadline_slot >= T else job.work_gpu_h
        st = np.asarray(steps_kept, dtype=int)
        if st.min() < 0:
            continue
        st = st[st < F]
        if st.size == 0:
            continue
        if job.checkpointable:
            moved: list[int] = []
            for slot in sorted({int(t) // k for t in st.tolist()}):
                want = [int(t) for t in st.tolist() if int(t) // k == slot]
                free = [
                    t
                    for t in range(slot * k, (slot + 1) * k)
                    if alloc[p, t] + job.gpus <= cap_fine[p, t] + 1e-9
                ]
                keep = [t for t in want if t in free]
                rest = [t for t in free if t not in keep]
                moved += sorted(keep + rest[: max(0, len(want) - len(keep))])
            st = np.asarray(sorted(moved), dtype=int)
            if st.size == 0:
                continue
        rate = job.gpus * thr[p, st] * dt
        fr_given = dict(zip(steps_kept, given[0], strict=True)) if given else {}
        exact = np.array([fr_given.get(int(t), np.nan) for t in st.tolist()])
        if given and np.isfinite(exact).all() and abs(rate @ exact - W) <= 1e-9 * max(1.0, W):
            frk = exact  # the plan's own runs, still its exact work: kept as they were
        else:
            cum = np.cumsum(rate)
            if cum[-1] < W - 1e-9:
                continue  # the kept steps no longer deliver the work (a lower cap level)
            last = int(np.argmax(cum >= W - 1e-9))
            st = st[: last + 1]
            frk = np.ones(st.size)
            frk[-1] = (W - (cum[last - 1] if last > 0 else 0.0)) / rate[last]
            if frk[-1] <= 1e-12 and st.size > 1:
                st, frk = st[:-1], frk[:-1]
        if (alloc[p, st] + job.gpus > cap_fine[p, st] + 1e-9).any():
            continue
        # no budget check here: the previous plan kept its budgets per slot (evaluate prices
        # any overrun in the candidate's score), while the headroom here is per placement step
        kept.add(j)
        work_of[j] = W
        place(j, p, st.tolist(), frk.tolist())
    use_bound = abandon_above is not None and objective_bound_valid(inp)
    w_unserved = obj.unserved_weight_per_gpu_h
    thr_max = np.array([float(p.level_thr.max()) for p in inp.pools])
    lower_bound = 0.0
    n_done = 0

    def count_bound(j: int) -> None:
        """Add job j's share of the lower bound (see ``abandon_above``); stop when above."""
        nonlocal lower_bound, n_done
        job = inp.jobs[j]
        n_done += 1
        if placed[j] < 0:
            short = job.required_gpu_h
        else:
            inside = sum(1 for t, _ in fine_runs[j] if t < T * k)
            short = job.required_gpu_h - job.gpus * thr_max[placed[j]] * dt * inside
        if short > 1e-6:  # evaluate() charges a job's unserved work above 1e-6 GPU-h
            lower_bound += w_unserved * short
        if lower_bound > abandon_above * (1.0 + 1e-9) + 1e-9 and (  # type: ignore[operator]
            abandon_when is None or abandon_when()
        ):
            raise PlacementAbandoned(float(lower_bound), n_done)

    if use_bound:
        for j in kept:
            count_bound(j)
    pending: int | None = None  # the job placed (or not) in the previous iteration
    for j in job_order:
        if pending is not None:
            count_bound(pending)
            pending = None
        job = inp.jobs[j]
        if job.required_gpu_h <= 0 or job.release_slot >= T:
            continue  # nothing has to happen inside this horizon: deferred
        if j in kept:
            continue
        if use_bound:
            pending = j
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
        if mode == "asap":  # the submit site first, then the job's baseline site order
            rank = {s_: i for i, s_ in enumerate(job.baseline_sites or job.sites)}
            cand = np.array(
                sorted(
                    cand.tolist(),
                    key=lambda p: (rank[int(site_of[p])], -inp.pools[p].gpus, inp.pools[p].name),
                ),
                dtype=int,
            )
        if cand.size == 0:
            continue
        W = job.required_gpu_h if job.deadline_slot >= T else job.work_gpu_h
        r_step, d_step = job_steps(job, inp, k)
        late_at = d_step + 1  # first fine step after the deadline
        work_of[j] = W
        common = dict(
            job=job,
            W=W,
            r=r_step,
            D=d_step,
            T=T * k,
            T2=F,
            tidx=tidx,
            n_free=n_free[cand],
            alloc=alloc[cand],
            gpn=gpn[cand],
            pue=pue[cand],
            idle_kw=idle_kw[cand],
            dt=dt,
            w_late=obj.lateness_weight_per_gpu_h,
        )
        # a site budget with the node dynamics counted (FIFO: min up after a start, a node on a
        # slot early for a job in its first steps, boot energy): an option that adds overrun
        # there is refused and placed again with the steps behind the overrun closed to it on
        # that pool
        ban = np.zeros((cand.size, F), dtype=bool)
        for attempt in range(retries + 1):
            capc = cap_fine[cand] if attempt == 0 else np.where(ban, -1.0, cap_fine[cand])
            lvl_new: tuple[int, list[int]] | None = None
            if mode == "greedy":
                # the work that must happen inside the horizon happens inside it
                common["D"] = min(d_step, T * k - 1)
                best = None
                chosen_lv = None
                n_lv = max(len(o) for o in (eff_order[p] for p in cand))
                # the most efficient level that is on time in some window, then that level's window
                # with the lowest mean PUE × intensity (pools whose slots already run another level
                # cannot take the job there)
                pick = None  # (total, end_idx, frac, rank) combined over ranks

                def rank_levels(rk: int, cand=cand, capc=capc):
                    """Each candidate pool's rk-th most efficient level, and the chooser's
                    arrays at it (pools whose slots run another level cannot take the job)."""
                    lv_c = rank_lv[cand, min(rk, n_rank - 1)]
                    ok = (lvl_set[cand] == -1) | (lvl_set[cand] == lv_c[:, None])  # [C, T2]
                    return lv_c, dict(
                        thr=np.repeat(rank_thr[cand, min(rk, n_rank - 1)][:, None], F, axis=1),
                        gpu_cost=gpu_cost[cand],
                        cap=np.where(np.repeat(ok, k, axis=1), capc, -1.0),
                        extra_kw=np.repeat(rank_ext[cand, min(rk, n_rank - 1)][:, None], F, axis=1),
                        head=head[site_of[cand]],
                    )

                for rk in range(n_lv):
                    tab = _best_option(
                        **common,
                        mode="greedy",
                        **rank_levels(rk)[1],
                        score=score[cand],
                        table=True,
                    )
                    tot, e_i, fr_ = tab
                    if pick is not None and np.isfinite(pick[0]).any():
                        break  # the most efficient level that is on time somewhere wins
                    if pick is None:
                        pick = (tot.copy(), e_i.copy(), fr_.copy(), np.zeros(tot.shape, dtype=int))
                    else:
                        take = ~np.isfinite(pick[0]) & np.isfinite(tot)
                        pick[0][take] = tot[take]
                        pick[1][take] = e_i[take]
                        pick[2][take] = fr_[take]
                        pick[3][take] = rk
                if pick is not None and np.isfinite(pick[0]).any():
                    c_, s0 = divmod(int(np.argmin(pick[0])), F)
                    e0 = int(pick[1][c_, s0])
                    stp = np.arange(s0, e0 + 1)
                    frs = np.ones(stp.size)
                    frs[-1] = pick[2][c_, s0]
                    if frs[-1] <= 1e-12 and stp.size > 1:
                        stp, frs = stp[:-1], frs[:-1]
                    best = (c_, stp, frs)
                    rk = int(pick[3][c_, s0])
                    chosen_lv = rank_levels(rk)[0]
                if best is None:  # no level meets the deadline anywhere: the earliest finish
                    ends = []
                    for rk in range(n_lv):
                        lv_c, arrays = rank_levels(rk)
                        opt = _best_option(**{**common, "D": F}, mode="finish", **arrays)
                        if opt is not None:
                            ends.append((float(opt[1][-1] + opt[2][-1]), rk, opt, lv_c))
                    if ends:
                        _, _, best, chosen_lv = min(ends, key=lambda e: (e[0], e[1]))
                if best is None:
                    continue
                assert chosen_lv is not None
                ci = best[0]
                p = int(cand[ci])
                lv_p = int(chosen_lv[ci])
                new_slots = sorted(
                    {int(t) // k for t in best[1]} - set(np.nonzero(lvl_set[p] >= 0)[0])
                )
                lvl_set[p, new_slots] = lv_p
                lvl_new = (p, new_slots)
                set_level(p, new_slots, lv_p)
            elif mode == "levels":
                # the cap level travels with the job: every level of every candidate pool is priced
                # by the objective (busy energy + the GPU's share of its node's idle power, at the
                # slot's carbon and price, + lateness); a slot another job already runs at another
                # level is closed to it; the cheapest (pool, level, start) wins
                best, chosen_lv, best_cost = None, None, np.inf
                n_lv = max(len(inp.pools[p].level_thr) for p in cand)
                # searched from the job's release on (no step before it can take the job): the
                # window's own step numbers, 0 = lo
                lo = min(r_step, F - 1)
                nw = F - lo
                late_h_all = np.maximum(0, tidx[lo:] - d_step) * dt
                win_c = dict(
                    common,
                    r=r_step - lo,
                    D=d_step - lo,
                    T=T * k - lo,
                    T2=nw,
                    tidx=tidx[:nw],
                    n_free=n_free[cand, lo:],
                    alloc=alloc[cand, lo:],
                )
                head_c = head[site_of[cand], lo:]
                unit_c = unit[site_of[cand], lo:] * pue[cand][:, None]
                lvl_c = np.repeat(lvl_set[cand], k, axis=1)[:, lo:]
                cap_c = capc[:, lo:]
                for lv in range(n_lv):
                    lv_c = np.array([min(lv, len(inp.pools[p].level_thr) - 1) for p in cand])
                    ok = (lvl_c == -1) | (lvl_c == lv_c[:, None])
                    thr_1 = np.array(
                        [inp.pools[p].level_thr[x] for p, x in zip(cand, lv_c, strict=True)]
                    )
                    ext_1 = np.array(
                        [inp.pools[p].level_extra_kw[x] for p, x in zip(cand, lv_c, strict=True)]
                    )
                    thr_c = np.repeat(thr_1[:, None], nw, axis=1)
                    ext_c = np.repeat(ext_1[:, None], nw, axis=1)
                    cost_c = ((ext_1 + idle_kw[cand] / gpn[cand]) * dt)[:, None] * unit_c
                    opt = _best_option(
                        **win_c,
                        mode="plan",
                        thr=thr_c,
                        gpu_cost=cost_c,
                        cap=np.where(ok, cap_c, -1.0),
                        extra_kw=ext_c,
                        head=head_c,
                    )
                    if opt is None:
                        continue
                    c_, stp, frs = opt
                    rate = job.gpus * thr_1[c_] * dt
                    total = float(
                        (job.gpus * cost_c[c_, stp] * frs).sum()
                        + (
                            obj.lateness_weight_per_gpu_h
                            * job.priority
                            * late_h_all[stp]
                            * rate
                            * frs
                        ).sum()
                    )
                    if total < best_cost - 1e-12:
                        best, chosen_lv, best_cost = (c_, stp + lo, frs), lv_c, total
                if job.deadline_slot < T and (
                    best is None or best[1][-1] + best[2][-1] > late_at + 1e-9
                ):
                    # late at every level the slots allow: full power on any slot (the jobs
                    # already there at a lower level are sped up and re-timed)
                    fast = _best_option(
                        **common,
                        mode="plan",
                        thr=thr_top[cand],
                        gpu_cost=gpu_cost_top[cand],
                        cap=capc,
                        extra_kw=extra_kw_top[cand],
                        head=head[site_of[cand]] - busy_gain_kwh(cand),
                    )
                    if fast is not None and (
                        best is None or fast[1][-1] + fast[2][-1] < best[1][-1] + best[2][-1]
                    ):
                        pf = int(cand[fast[0]])
                        up = sorted({int(t) // k for t in fast[1] if lvl_set[pf, int(t) // k] != 0})
                        lvl_set[pf, up] = 0
                        set_level(pf, up, 0)
                        best, chosen_lv = fast, np.zeros(cand.size, dtype=int)
                if best is None:
                    continue
                assert chosen_lv is not None
                p = int(cand[best[0]])
                lv_p = int(chosen_lv[best[0]])
                new_slots = sorted(
                    {int(t) // k for t in best[1]} - set(np.nonzero(lvl_set[p] >= 0)[0])
                )
                lvl_set[p, new_slots] = lv_p
                lvl_new = (p, new_slots)
                set_level(p, new_slots, lv_p)
            else:
                extra_cost = None
                gi = group_of[j]
                if residual is not None and gi >= 0 and mode == "plan":
                    onplan = np.zeros((cand.size, F), dtype=bool)
                    onplan[:, : T * k] = np.repeat(residual[gi][site_of[cand]] > 1e-6, k, axis=1)
                    dearest = float(gpu_cost[cand, : T * k].mean(axis=1).max()) * job.gpus
                    extra_cost = np.where(onplan, 0.0, dearest)
                best = _best_option(
                    **common,
                    mode=mode,
                    thr=thr[cand],
                    gpu_cost=gpu_cost[cand],
                    cap=capc,
                    extra_kw=extra_kw[cand],
                    head=head[site_of[cand]],
                    extra_cost=extra_cost,
                )
                if (
                    mode == "plan"
                    and job.deadline_slot < T
                    and (best is None or best[1][-1] + best[2][-1] > late_at + 1e-9)
                ):
                    # Late at the planned caps: try full power (level 0) on the candidate pools. If
                    # that is on time, those pool-slots switch to full power, and the jobs already
                    # there are re-timed to end when their work is done.
                    fast = _best_option(
                        **common,
                        mode=mode,
                        thr=thr_top[cand],
                        gpu_cost=gpu_cost_top[cand],
                        cap=capc,
                        extra_kw=extra_kw_top[cand],
                        head=head[site_of[cand]] - busy_gain_kwh(cand),
                        extra_cost=extra_cost,
                    )
                    if fast is not None and fast[1][-1] + fast[2][-1] <= late_at + 1e-9:
                        best = fast
                        pf = int(cand[fast[0]])
                        raise_slots = sorted(
                            {int(t) // k for t in fast[1] if t < T * k and lev[pf, t] != 0}
                        )
                        set_level(pf, raise_slots, 0)
            if best is None:
                break
            ci, steps, fracs = best
            p = int(cand[ci])
            s_p = int(site_of[p])
            if not count_nodes or not budgeted[s_p] or attempt == retries:
                place(j, p, steps.tolist(), fracs.tolist())
                break
            snap = snapshot(j, p)
            before = head[s_p, : T * k].copy()
            place(j, p, steps.tolist(), fracs.tolist())
            after = head[s_p, : T * k]
            worse = (after < -1e-9) & (after < before - 1e-9)
            if not worse.any():
                break
            unplace(j, p, steps.tolist(), fracs.tolist(), snap)
            if lvl_new is not None:
                lvl_set[lvl_new[0], lvl_new[1]] = -1
            ban[ci] |= ban_mask(p, np.nonzero(worse)[0] // k, steps)
            if attempt == retries - 1:
                ban[:] = False  # every try added overrun: the first choice, as before
    if pending is not None:
        count_bound(pending)
    return schedule_from_fine(inp, fine_runs, placed, alloc, busy, lev, k, T2)
