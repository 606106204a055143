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

#: how many more options a job tries when the one it chose pushes a site over its budget once
#: the node dynamics are counted (each try closes the steps behind that overrun on that pool)
BUDGET_RETRIES = 6


def node_profile(need: list[int], initial_on: int, min_up: int, lo: int) -> list[int]:
    """Nodes on per slot to cover ``need``: at least ``lo`` (spares), every node started stays
    on ``min_up`` slots, nodes are stopped as soon as nothing needs them (forward pass)."""
    out: list[int] = []
    starts = [0] * len(need)
    prev, held = initial_on, 0  # held = nodes started in the last min_up − 1 slots
    for t, nd in enumerate(need):
        if min_up > 1 and t >= min_up:
            held -= starts[t - min_up]
        n = max(nd, lo, held)
        if n > prev:
            starts[t] = n - prev
            held += n - prev if min_up > 1 else 0
        out.append(n)
        prev = n
    return out


def nodes_to_hold(inp: PlanInputs, p: int, alloc_fine: np.ndarray, k: int) -> np.ndarray:
    """[T] nodes pool ``p`` must have on to hold ``alloc_fine`` ([≥ T·k] GPUs per placement
    step): each slot's most GPUs held, and, for a slot whose first (boot) steps hold GPUs, those
    nodes on in the slot before too — a node started in a slot still boots there."""
    T = inp.T
    pool = inp.pools[p]
    a = alloc_fine[: T * k].reshape(T, k)
    need = np.ceil(a.max(axis=1) / pool.gpus_per_node - 1e-9).astype(int)
    nb = boot_steps(inp, p, k)
    if nb and T > 1:
        at_boot = np.ceil(a[:, :nb].max(axis=1) / pool.gpus_per_node - 1e-9).astype(int)
        need[:-1] = np.maximum(need[:-1], at_boot[1:])
    return need


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
    alloc_fine: np.ndarray | None = None  # [P, T2·k] GPUs held per placement step
    subslots: int = 1  # placement steps per slot (k)
    # per job: (placement step, busy fraction of the step) — the exact runs, so a re-plan can
    # rebuild them (plan.json ``placement_runs``); None where the schedule has no fine grid
    fine_runs: list[list[tuple[int, float]]] | None = None
    # cap_mode = "job" (issue #14.3): job → (cap W, throughput relative to full power, busy kW
    # above idle per GPU) of the job's own level; jobs not in it run at their pool's level
    job_cap: dict[int, tuple[float, float, float]] | None = None


@dataclass
class NodeAnchor:
    """What a re-plan's node schedule must respect (arrays [P, T] on this horizon): nodes that
    may not stop / start yet by the power history, and the previous plan's nodes on (nan where
    it does not cover the slot) with the weight per node switched against it."""

    must_on: np.ndarray | None = None
    must_off: np.ndarray | None = None
    prev_nodes_on: np.ndarray | None = None
    flap_weight: float = 0.0


def boot_steps(inp: PlanInputs, p: int, k: int) -> int:
    """Placement steps at the start of a slot during which a node started in it still boots.

    A start-up begins at the slot start and lasts ``boot_time_min`` (at most one slot); a step
    is usable only if the node is up for all of it, so the count is rounded up.
    """
    boot_h = inp.pools[p].boot_frac * inp.slot_h
    if boot_h <= 0:
        return 0
    return min(k, math.ceil(boot_h / (inp.slot_h / k) - 1e-9))


def job_steps(job: JobIn, inp: PlanInputs, k: int) -> tuple[int, int]:
    """(first step, last step ending by the deadline) of a job on the placement grid.

    Exact at placement resolution: a job released at 10:15 may start at 10:15 on a 15-minute
    grid, not at the next whole slot; a deadline at 11:45 lets it run until 11:45.
    """
    step_h = inp.slot_h / k
    r = max(0, math.ceil((job.release - inp.start).total_seconds() / 3600.0 / step_h - 1e-9))
    d = math.floor((job.deadline - inp.start).total_seconds() / 3600.0 / step_h + 1e-9) - 1
    return r, d


def work_done(inp: PlanInputs, sched: Schedule, j: int) -> float:
    """GPU-h of work job ``j``'s runs deliver at the cap levels of the slots they run in."""
    p = int(sched.pool[j])
    if p < 0:
        return 0.0
    thr = inp.pools[p].level_thr
    return float(sum(g * thr[sched.level[p, t]] * inp.slot_h * f for t, g, f in sched.runs[j]))


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


def _per_pool(
    inp: PlanInputs, cand: np.ndarray, lv_c: np.ndarray, field: str, F: int
) -> np.ndarray:
    """[C, F] each candidate pool's value of ``field`` (per level) at its level, every step."""
    vals = np.array([getattr(inp.pools[p], field)[lv] for p, lv in zip(cand, lv_c, strict=True)])
    return np.repeat(vals[:, None], F, axis=1)


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
            ``"greedy"`` — the carbon-aware greedy baseline (see :mod:`greencpn.optimize.greedy`).
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
            _extended(np.array([s_.intensity_g_per_kwh for s_ in inp.sites]), T2), k, axis=1
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
    for j in job_order:
        job = inp.jobs[j]
        if job.required_gpu_h <= 0 or job.release_slot >= T:
            continue  # nothing has to happen inside this horizon: deferred
        if j in kept:
            continue
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
                    lv_c = np.array([eff_order[p][min(rk, len(eff_order[p]) - 1)] for p in cand])
                    ok = (lvl_set[cand] == -1) | (lvl_set[cand] == lv_c[:, None])  # [C, T2]
                    return lv_c, dict(
                        thr=_per_pool(inp, cand, lv_c, "level_thr", F),
                        gpu_cost=gpu_cost[cand],
                        cap=np.where(np.repeat(ok, k, axis=1), capc, -1.0),
                        extra_kw=_per_pool(inp, cand, lv_c, "level_extra_kw", F),
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
    return schedule_from_fine(inp, fine_runs, placed, alloc, busy, lev, k, T2)


def schedule_from_fine(
    inp: PlanInputs,
    fine_runs: list[list[tuple[int, float]]],
    placed: np.ndarray,
    alloc: np.ndarray,
    busy: np.ndarray,
    lev: np.ndarray,
    k: int,
    T2: int,
) -> Schedule:
    """A :class:`Schedule` from the placement grid: GPUs held per slot = the most held in any
    of its steps, busy = the time average, runs summed per slot. ``lev`` is [P, T2·k]."""
    P, T, J = len(inp.pools), inp.T, len(inp.jobs)
    dt = inp.slot_h / k
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
        alloc_fine=alloc.copy(),
        subslots=k,
        fine_runs=[[(int(t), float(f)) for t, f in fr] for fr in fine_runs],
    )


def _best_option(
    *,
    job: JobIn,
    W: float,
    r: int,
    D: int,
    mode: str,
    T: int,
    T2: int,
    tidx,
    thr,
    gpu_cost,
    n_free,
    alloc,
    gpn,
    cap,
    extra_kw,
    pue,
    idle_kw,
    head,
    dt,
    w_late,
    extra_cost=None,
    score=None,
    table: bool = False,
):
    """Cheapest (pool, steps, fractions) for one job among candidate pools, or None.

    With ``table`` (contiguous modes only) it returns ``(total, end_idx, frac)`` [C, T2]
    instead: each start's score (inf where not allowed), last step and its busy fraction.

    ``T`` and ``T2`` are in fine steps here (horizon and extended timeline), ``dt`` the step in
    h, ``r`` / ``D`` the job's first step and last step ending by its deadline, ``cap`` [C, T2]
    the GPUs usable per step. Modes: ``plan`` (cheapest by the objective), ``asap`` (earliest
    start), ``greedy`` (contiguous, on time, lowest mean ``score`` = PUE × intensity),
    ``finish`` (contiguous, earliest end).
    """
    g = job.gpus
    rate = g * thr * dt  # [C, T2] work per full step
    fits = (alloc + g <= cap + 1e-9) & (tidx[None, :] >= r)
    free_gpus = n_free * gpn[:, None] - alloc
    extra_nodes = np.ceil(np.maximum(0.0, g - np.maximum(free_gpus, 0.0)) / gpn[:, None] - 1e-9)
    power_need = pue[:, None] * dt * (extra_kw * g + extra_nodes * idle_kw[:, None])
    fits &= (head - power_need >= -1e-9) | (tidx[None, :] >= T)
    late_h = np.maximum(0, tidx - D) * dt  # [T2]
    prio = job.priority
    if mode in ("asap", "finish"):
        slot_cost = np.where(fits, 0.0, BIG) + tidx[None, :] * 1e-6  # earliest wins
        late_cost = np.zeros_like(rate)
    elif mode == "greedy":
        slot_cost = np.where(fits, score, BIG)
        late_cost = np.zeros_like(rate)
    else:
        # gpu_cost already carries each GPU's share of its node's idle power
        slot_cost = np.where(fits, g * gpu_cost, BIG) + tidx[None, :] * 1e-9
        if extra_cost is not None:
            slot_cost = slot_cost + extra_cost
        late_cost = w_late * prio * late_h[None, :] * rate
    if job.checkpointable and mode in ("plan", "asap"):
        # cheapest slots per unit of work, taken until the work is done
        per_work = (slot_cost + late_cost) / np.maximum(rate, 1e-12)
        if mode == "asap":
            per_work = np.where(fits, tidx[None, :].astype(float), BIG)
        order = np.argsort(per_work, axis=1, kind="stable")
        rows = np.arange(order.shape[0])[:, None]
        rate_sorted = np.where(fits[rows, order], rate[rows, order], 0.0)
        cum = np.cumsum(rate_sorted, axis=1)
        enough = cum[:, -1] >= W - 1e-9
        if not enough.any():
            return None
        n_take = np.argmax(cum >= W - 1e-9, axis=1)  # index of last slot taken
        r1 = rows[:, 0]
        prev_cum = np.where(n_take > 0, cum[r1, np.maximum(n_take - 1, 0)], 0.0)
        last_rate = rate_sorted[r1, n_take]
        frac_last = (W - prev_cum) / np.maximum(last_rate, 1e-12)
        if mode == "asap":  # earliest finish; exact ties go to the first candidate (first site)
            last_step = order[r1, n_take]
            totals = np.where(enough, last_step + frac_last, np.inf)
        else:
            # total per candidate: the full slots before the last plus the fraction of the last
            cost_sorted = (slot_cost + late_cost)[rows, order]
            ccum = np.cumsum(np.minimum(cost_sorted, BIG), axis=1)
            prev_cost = np.where(n_take > 0, ccum[r1, np.maximum(n_take - 1, 0)], 0.0)
            last_cost = cost_sorted[r1, n_take]
            totals = np.where(enough, prev_cost + frac_last * last_cost, np.inf)
        c = int(np.argmin(totals))
        n_last = int(n_take[c])
        sl = order[c, : n_last + 1]
        prev = cum[c, n_last - 1] if n_last > 0 else 0.0
        fr = np.ones(n_last + 1)
        fr[-1] = (W - prev) / rate_sorted[c, n_last]
        srt = np.argsort(sl)
        return c, sl[srt], fr[srt]
    # contiguous: for each start s the end slot e(s) where cumulative work reaches W
    nc = rate.shape[0]
    C = np.concatenate([np.zeros((nc, 1)), np.cumsum(rate, axis=1)], axis=1)  # [C, T2+1]
    target = C[:, :-1] + W  # [C, T2] work level to reach when starting at s
    # e = number of full slots needed: first index i with C[i+1] >= target
    # one searchsorted for all rows: lift row i by i·span so the rows stay sorted end to end
    span = float(C[:, -1].max() + W + 1.0)
    lift = np.arange(nc)[:, None] * span
    found = np.searchsorted((C + lift).ravel(), (target - 1e-9 + lift).ravel(), side="left")
    end_idx = found.reshape(target.shape) - np.arange(nc)[:, None] * (T2 + 1) - 1
    valid = end_idx < T2
    end_idx = np.minimum(end_idx, T2 - 1)
    rows = np.arange(nc)[:, None]
    bad = np.concatenate([np.zeros((nc, 1)), np.cumsum(~fits, axis=1)], axis=1)
    # summed over fitting steps only: a window with a step that does not fit is invalid
    # anyway (n_bad), and a BIG in the running sum would wipe out the low digits of every
    # later window's cost (1e18 + 0.1 − 1e18 = 0: such windows looked free)
    step_cost = slot_cost + late_cost
    cost_cum = np.concatenate(
        [np.zeros((nc, 1)), np.cumsum(np.where(fits, step_cost, 0.0), axis=1)], axis=1
    )
    # tidx is 0..T2-1, so a window starting at s reads column s of the running sums
    starts = tidx[None, :]
    n_bad = bad[rows, end_idx + 1] - bad[:, :-1]
    valid &= (n_bad == 0) & (starts >= r)
    if mode == "greedy":
        valid &= end_idx <= D  # on time, or not this level
    if not valid.any() and not table:
        return None
    # cost of full slots [s, e) plus the fraction of slot e
    full_cost = cost_cum[rows, end_idx] - cost_cum[:, :-1]
    done_before_e = C[rows, end_idx] - C[:, :-1]
    last_rate = rate[rows, end_idx]
    frac = np.clip((W - done_before_e) / np.maximum(last_rate, 1e-12), 0.0, 1.0)
    last_cost = step_cost[rows, end_idx] * frac
    total = np.where(valid, full_cost + last_cost, np.inf)
    if mode == "asap":
        total = np.where(valid, starts.astype(float), np.inf)
    elif mode == "finish":
        total = np.where(valid, end_idx + frac, np.inf)
    elif mode == "greedy":  # mean PUE × intensity over the run, earliest on ties
        length = np.maximum(end_idx - starts + frac, 1e-12)
        total = np.where(valid, np.round((full_cost + last_cost) / length, 9), np.inf)
    if table:
        return total, end_idx, frac
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
    anchor: NodeAnchor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cheapest node on/off schedule that covers the placement and obeys the node family.

    Solves family 3 (:mod:`greencpn.optimize.nodes`) alone with ``n[p,t] ≥ need[p,t]`` and the
    boot-time capacity loss, minimising the energy cost of idle and booting nodes. Returns
    ``(n, u, d)`` as integer arrays [P, T].

    With an ``anchor`` (re-planning): ``must_on ≤ n ≤ N − must_off`` from the power history
    (the placement's need wins where they clash), and ``flap_weight · |n − prev_nodes_on|``
    added to the cost over the slots the previous plan covers — the same terms as the MILP's
    (:mod:`greencpn.optimize.stability`).
    """
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
    ub = np.repeat(nodes_arr[:, None], T, axis=1)
    if anchor is not None:
        if anchor.must_on is not None:
            lb = np.maximum(lb, np.minimum(anchor.must_on[:, :T], nodes_arr[:, None]))
        if anchor.must_off is not None:
            ub = np.maximum(np.minimum(ub, nodes_arr[:, None] - anchor.must_off[:, :T]), lb)
    n = mb.new_vars("int", (P, T), lb=lb, ub=ub)
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
    # GPUs of a node that is still booting are not usable: in the boot steps of slot t only
    # the nodes already up (n − u) hold GPUs, exactly at placement resolution
    #     m_p · (n[p,t] − u[p,t]) ≥ max_{i < boot steps} alloc[p, t·k + i]
    k = sched.subslots
    fine = sched.alloc_fine
    for p, pool in enumerate(inp.pools):
        nb = boot_steps(inp, p, k)
        if nb == 0:
            continue
        m_ = float(pool.gpus_per_node)
        for t in range(T):
            if fine is not None:
                held = float(fine[p, t * k : t * k + nb].max())
            else:
                held = float(sched.alloc[p, t])
            if held > 1e-9:
                mb.add_row("boot_capacity", [n[p, t], u[p, t]], [m_, -m_], held, None)
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
    prev = None if anchor is None else anchor.prev_nodes_on
    if prev is not None and anchor is not None and anchor.flap_weight > 0:
        known = [(p, t) for p in range(P) for t in range(T) if np.isfinite(prev[p, t])]
        if known:
            f = mb.new_vars("cont", (len(known),), lb=0.0)
            for i, (p, t) in enumerate(known):
                # f ≥ |n − n̂|
                mb.add_row("flap", [int(f[i]), int(n[p, t])], [1.0, -1.0], -float(prev[p, t]), None)
                mb.add_row("flap", [int(f[i]), int(n[p, t])], [1.0, 1.0], float(prev[p, t]), None)
            flap_ids = f
        else:
            flap_ids = None
    else:
        flap_ids = None
    from greencpn.optimize.builder import solve_direct
    from greencpn.optimize.objective import BUDGET_OVERRUN_WEIGHT_PER_KWH

    # the objective, by variable id (solved with highspy directly: no Pyomo model)
    cost_ids = [v.ravel(), n.ravel(), u.ravel()]
    c_site = np.array(
        [[unit[pool.site, t] * inp.sites[pool.site].pue for t in range(T)] for pool in inp.pools]
    ).reshape(P, T)
    idle = np.array([p.node_idle_kw - p.node_off_kw for p in inp.pools])[:, None]
    boot = np.array([p.boot_extra_kwh for p in inp.pools])[:, None]
    cost_cf = [
        np.full(v.size, BUDGET_OVERRUN_WEIGHT_PER_KWH),
        (c_site * inp.slot_h * idle + 1e-6).ravel(),
        (c_site * boot + 1e-6).ravel(),
    ]
    if flap_ids is not None and anchor is not None:
        cost_ids.append(flap_ids.ravel())
        cost_cf.append(np.full(flap_ids.size, anchor.flap_weight))
    res = solve_direct(
        mb,
        np.concatenate(cost_ids),
        np.concatenate(cost_cf),
        time_limit_s=time_limit_s,
        rel_gap=1e-2,
        options={"mip_heuristic_run_feasibility_jump": False},
    )
    if res.values is None:
        # Always possible: all nodes on from the first slot satisfies every row.
        full = np.repeat(nodes_arr[:, None], T, axis=1).astype(int)
        init = np.array([p.initial_on for p in inp.pools])
        u0 = np.zeros((P, T), dtype=int)
        u0[:, 0] = np.maximum(0, full[:, 0] - init)
        return full, u0, np.zeros((P, T), dtype=int)
    vals = res.values
    return net_switches(
        np.rint(vals[n]).astype(int),
        np.rint(vals[u]).astype(int),
        np.rint(vals[d]).astype(int),
    )


def net_switches(
    n: np.ndarray, u: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cancel nodes started and stopped in the same slot of the same pool.

    ``u = d = 1`` with ``n`` unchanged is a start-up nobody needs (a MIP stopped at its gap
    may return one): removing ``min(u, d)`` from both keeps the balance and only loosens min
    up / min down (their sums of u and d shrink), and saves the boot energy.
    """
    both = np.minimum(u, d)
    return n, u - both, d - both
