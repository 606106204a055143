"""Stage 2b: improve a placed schedule by re-inserting one job at a time (node packing).

A placement decides jobs one after another, each priced against what is already placed: the
first job on a node pays (a share of) its idle power, later ones could have filled it. This
pass takes a finished, executable schedule and sweeps over its jobs: each is taken out and put
back at its cheapest (pool, cap level, start) given all the others, priced by what it really
adds to the objective —

* busy energy at the level's extra power, at the slot's carbon and price (PUE included);
* the nodes it makes necessary: a pool's nodes on are estimated per slot as what the held GPUs
  need, kept on for min up after each start (:func:`node_profile`), plus boot energy per start;
  GPUs on nodes that are on anyway cost nothing, so jobs pack onto them;
* lateness as the placement charges it.

A move is kept only when the job's exact contribution under that node estimate falls. One cap
level per pool and slot stays true: a job may take a level in a slot only where no other job
runs at another one. GPUs, the boot-time capacity of slot 0 and the site budgets (with the
estimated nodes) are respected as in :func:`~greencpn.optimize.placement.place_jobs`. The
result is an ordinary :class:`~greencpn.optimize.placement.Schedule`; the caller repairs its
nodes exactly (:func:`~greencpn.optimize.placement.repair_nodes`) and keeps it only if the
evaluation is better.
"""

from __future__ import annotations

import time

import numpy as np

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.placement import (
    Schedule,
    _best_option,
    _unit_energy_cost,
    boot_steps,
    job_steps,
    node_profile,
    nodes_to_hold,
    schedule_from_fine,
)


def fine_runs_of(sched: Schedule) -> list[list[tuple[int, float]]]:
    """Each job's (placement step, busy fraction) runs: the schedule's own, or, for a schedule
    in whole slots (the job-level MILP's), each slot's busy share as its first steps."""
    if sched.fine_runs is not None:
        return [list(r) for r in sched.fine_runs]
    k = sched.subslots
    out: list[list[tuple[int, float]]] = []
    for rr in sched.runs:
        steps: list[tuple[int, float]] = []
        for t, _g, v in rr:
            left = v * k
            for i in range(k):
                if left <= 1e-9:
                    break
                steps.append((t * k + i, min(1.0, left)))
                left -= 1.0
        out.append(steps)
    return out


def improve_schedule(
    inp: PlanInputs,
    sched: Schedule,
    *,
    carbon_w: float | None = None,
    cost_w: float | None = None,
    sweeps: int = 3,
    time_limit_s: float = 20.0,
    min_gain: float = 1e-4,
) -> tuple[Schedule, dict]:
    """Re-insert every job at its cheapest place given the others, ``sweeps`` times (or until
    a sweep gains less than ``min_gain`` of the estimate, or ``time_limit_s``).

    Returns the improved schedule and what the pass did (moves, estimate before / after, s).
    The input schedule needs ``fine_runs`` (every schedule :func:`place_jobs` returns has it).
    """
    t_start = time.perf_counter()
    P, T = len(inp.pools), inp.T
    k = sched.subslots
    T2 = sched.level.shape[1]
    F = T2 * k
    runs = fine_runs_of(sched)
    dt = inp.slot_h / k
    obj = inp.objective
    cw = obj.carbon_weight_per_kg if carbon_w is None else carbon_w
    pw = obj.cost_weight if cost_w is None else cost_w
    unit_slot = _unit_energy_cost(inp, cw, pw, T2)  # [S, T2]
    unit = np.repeat(unit_slot, k, axis=1)
    pools = inp.pools
    site_of = np.array([p.site for p in pools])
    pue = np.array([inp.sites[p.site].pue for p in pools])
    gpn = np.array([p.gpus_per_node for p in pools], dtype=float)
    idle_kw = np.array([p.node_idle_kw - p.node_off_kw for p in pools])
    n_lv = max(len(p.level_thr) for p in pools)
    # per pool and level (levels beyond a pool's own repeat its last)
    thr_pl = np.array(
        [[p.level_thr[min(lv, len(p.level_thr) - 1)] for lv in range(n_lv)] for p in pools]
    )
    ext_pl = np.array(
        [[p.level_extra_kw[min(lv, len(p.level_thr) - 1)] for lv in range(n_lv)] for p in pools]
    )
    # node cost per slot (idle above off), boot cost per start; nodes past the horizon are free
    node_c = np.zeros((P, T2))
    boot_c = np.zeros((P, T2))
    for p, pool in enumerate(pools):
        node_c[p, :T] = idle_kw[p] * inp.slot_h * pue[p] * unit_slot[pool.site, :T]
        boot_c[p, :T] = pool.boot_extra_kwh * pue[p] * unit_slot[pool.site, :T]
    cap_fine = np.repeat(np.array([p.gpus for p in pools], dtype=float)[:, None], F, axis=1)
    for p, pool in enumerate(pools):
        nb = boot_steps(inp, p, k)
        if nb and pool.initial_on < pool.nodes:
            cap_fine[p, :nb] = pool.initial_on * pool.gpus_per_node
    lev = sched.level.astype(int).copy()  # [P, T2]
    J = len(inp.jobs)
    pool_of = sched.pool.astype(int).copy()
    alloc = np.zeros((P, F))  # GPUs held per step: the reserve, then every job's runs
    for p, pool in enumerate(pools):
        alloc[p, : T * k] = np.repeat(pool.reserve_gpus, k)
    busy = np.zeros((P, F))
    cnt = np.zeros((P, T2), dtype=int)  # jobs running in each pool-slot

    def slots_of(j: int) -> set[int]:
        return {t // k for t, _ in runs[j]}

    for j in range(J):
        p = pool_of[j]
        if p < 0 or not runs[j]:
            continue
        g = inp.jobs[j].gpus
        for t, f in runs[j]:
            busy[p, t] += g * f
            alloc[p, t] += g
        for s_ in slots_of(j):
            cnt[p, s_] += 1
    budget = np.full((len(inp.sites), F), np.inf)
    for s_, site in enumerate(inp.sites):
        budget[s_, : T * k] = np.repeat(site.budget_kw, k) * dt

    def need_of(p: int) -> np.ndarray:
        return np.ceil(alloc[p].reshape(T2, k).max(axis=1) / gpn[p] - 1e-9).astype(int)

    def nodes_cost(p: int, need: np.ndarray) -> tuple[float, list[int]]:
        pool = pools[p]
        prof = node_profile(need[:T].tolist(), pool.initial_on, pool.min_up_slots, pool.spares)
        prev, c = pool.initial_on, 0.0
        for t, n in enumerate(prof):
            c += node_c[p, t] * n + boot_c[p, t] * max(0, n - prev)
            prev = n
        return c, prof

    prof_n = np.zeros((P, T2))
    pool_cost = np.zeros(P)
    for p in range(P):
        pool_cost[p], pr = nodes_cost(p, need_of(p))
        prof_n[p, :T] = pr
        prof_n[p, T:] = pools[p].nodes

    def busy_cost(p: int, j: int, rr) -> float:
        g = inp.jobs[j].gpus
        return float(
            sum(
                g * f * ext_pl[p, lev[p, t // k]] * dt * pue[p] * unit[site_of[p], t] for t, f in rr
            )
        )

    def late_cost(j: int, p: int, rr) -> float:
        job = inp.jobs[j]
        _, d_step = job_steps(job, inp, k)
        return float(
            sum(
                obj.lateness_weight_per_gpu_h
                * job.priority
                * max(0, t - d_step)
                * dt
                * job.gpus
                * thr_pl[p, lev[p, t // k]]
                * dt
                * f
                for t, f in rr
            )
        )

    def apply(j: int, p: int, rr, sign: float, lv: int | None = None) -> None:
        g = inp.jobs[j].gpus
        for t, f in rr:
            alloc[p, t] += sign * g
            busy[p, t] += sign * g * f
        for s_ in {t // k for t, _ in rr}:
            cnt[p, s_] += int(sign)
            if sign > 0 and lv is not None:
                lev[p, s_] = lv

    def pool_used(p: int, prof: np.ndarray) -> np.ndarray:
        """[F] meter energy of pool p per step with nodes ``prof`` [T2] and today's busy."""
        pool = pools[p]
        n_f = np.repeat(prof, k)
        ext_f = np.repeat(ext_pl[p, lev[p]], k)
        return (
            pue[p]
            * dt
            * (pool.node_idle_kw * n_f + pool.node_off_kw * (pool.nodes - n_f) + ext_f * busy[p])
        )

    used = np.stack([pool_used(p, prof_n[p]) for p in range(P)])  # [P, F]
    site_used = np.zeros((len(inp.sites), F))
    np.add.at(site_used, site_of, used)
    limited = np.asarray(np.isfinite(budget).any(axis=1), dtype=bool)  # sites with a budget

    def exact_e(p: int) -> np.ndarray:
        """[T·k] meter kWh per step of pool p with its nodes as the node repair keeps them
        (:func:`nodes_to_hold`: a node on a slot early for a job in its boot steps; min up)."""
        pool = pools[p]
        need = nodes_to_hold(inp, p, alloc[p], k)
        pr = np.array(node_profile(need.tolist(), pool.initial_on, pool.min_up_slots, pool.spares))
        prev = np.concatenate([[pool.initial_on], pr[:-1]])
        per_slot = pue[p] * (
            inp.slot_h * (pool.node_idle_kw * pr + pool.node_off_kw * (pool.nodes - pr))
            + pool.boot_extra_kwh * np.maximum(0, pr - prev)
        )
        ext_f = np.repeat(ext_pl[p, lev[p, :T]], k)
        return np.repeat(per_slot / k, k) + pue[p] * dt * ext_f * busy[p, : T * k]

    # sites with a budget: each pool's exact energy, so a move that adds overrun is undone
    ex_e = np.zeros((P, T * k))
    for p in range(P):
        if limited[site_of[p]]:
            ex_e[p] = exact_e(p)

    def refresh(p: int) -> None:
        new_used = pool_used(p, prof_n[p])
        site_used[site_of[p]] += new_used - used[p]
        used[p] = new_used

    candidates: dict[tuple, np.ndarray] = {}
    tidx = np.arange(F)
    order = sorted(
        (j for j in range(J) if pool_of[j] >= 0 and runs[j]),
        key=lambda i: (-inp.jobs[i].gpus * inp.jobs[i].work_gpu_h, inp.jobs[i].id),
    )
    moves = 0
    est0 = float(pool_cost.sum())
    done_sweeps = 0
    status = "done"
    for _sweep in range(sweeps):
        gain = 0.0
        for j in order:
            if time.perf_counter() - t_start > time_limit_s:
                status = "time limit"
                break
            job = inp.jobs[j]
            p0 = int(pool_of[j])
            rr0 = runs[j]
            g = job.gpus
            W = float(sum(g * thr_pl[p0, lev[p0, t // k]] * dt * f for t, f in rr0))
            if W <= 1e-12:
                continue
            old_busy = busy_cost(p0, j, rr0) + late_cost(j, p0, rr0)
            apply(j, p0, rr0, -1.0)
            c_without0, prof0 = nodes_cost(p0, need_of(p0))
            old_total = old_busy + pool_cost[p0] - c_without0
            key = (job.sites, g)
            cand = candidates.get(key)
            if cand is None:
                cand = candidates[key] = np.array(
                    [
                        p
                        for p, pool in enumerate(pools)
                        if pool.site in job.sites and pool.gpus >= g
                    ],
                    dtype=int,
                )
            r_step, d_step = job_steps(job, inp, k)
            # a job on time stays on time, and work due inside the horizon stays inside it;
            # options are searched in the job's window [lo, hi) of steps only
            limit = min(d_step, T * k - 1)
            lo = max(0, min(r_step, F - 1))
            hi = limit + 1 if rr0[-1][0] <= limit else F
            if hi <= lo:
                apply(j, p0, rr0, 1.0)
                continue
            win = slice(lo, hi)
            sl_lo, sl_hi = lo // k, (hi - 1) // k + 1
            # nodes on by the estimate with the job out (its own pool re-estimated)
            n_on = prof_n[cand].copy()
            n_on[cand == p0, :T] = prof0
            n_on_f = np.repeat(n_on[:, sl_lo:sl_hi], k, axis=1)[:, lo - sl_lo * k : hi - sl_lo * k]
            alloc_c = alloc[cand, win]
            free = n_on_f * gpn[cand, None] - alloc_c
            add_nodes = np.ceil(np.maximum(0.0, g - np.maximum(free, 0.0)) / gpn[cand, None] - 1e-9)
            node_step = add_nodes * np.repeat(node_c[cand], k, axis=1)[:, win] / k
            if limited[site_of[cand]].any():
                # the job's own pool: its old busy power and nodes are out of the estimate
                prof0_full = np.concatenate([np.asarray(prof0, dtype=float), prof_n[p0, T:]])
                su = site_used[:, win].copy()
                su[site_of[p0]] += (pool_used(p0, prof0_full) - used[p0])[win]
                head = budget[site_of[cand], win] - su[site_of[cand]]
            else:
                head = np.full((cand.size, hi - lo), np.inf)
            unit_c = unit[site_of[cand], win] * pue[cand, None] * dt
            cap_c = cap_fine[cand, win]
            ok_all = cnt[cand] == 0
            best = None
            # busy energy alone at each level's cleanest step: no option at that level costs
            # less, so levels are tried cheapest bound first and the rest skipped
            u_min = (unit[site_of[cand], win] * pue[cand, None]).min(axis=1)  # [C]
            lb = (W / thr_pl[cand] * ext_pl[cand] * u_min[:, None]).min(axis=0)  # [L]
            for lv in np.argsort(lb, kind="stable").tolist():
                if lb[lv] >= old_total - 1e-12 or (best is not None and lb[lv] >= best[0]):
                    break
                ok = ok_all | (lev[cand] == lv)
                ok_f = np.repeat(ok[:, sl_lo:sl_hi], k, axis=1)[:, lo - sl_lo * k : hi - sl_lo * k]
                thr_c = np.repeat(thr_pl[cand, lv][:, None], hi - lo, axis=1)
                ext_c = np.repeat(ext_pl[cand, lv][:, None], hi - lo, axis=1)
                opt = _best_option(
                    job=job,
                    W=W,
                    r=r_step - lo,  # the window's own step numbers (0 = lo)
                    D=d_step - lo,
                    mode="plan",
                    T=T * k - lo,
                    T2=hi - lo,
                    tidx=tidx[: hi - lo],
                    thr=thr_c,
                    gpu_cost=ext_c * unit_c,
                    n_free=n_on_f,
                    alloc=alloc_c,
                    gpn=gpn[cand],
                    cap=np.where(ok_f, cap_c, -1.0),
                    extra_kw=ext_c,
                    pue=pue[cand],
                    idle_kw=idle_kw[cand],
                    head=head,
                    dt=dt,
                    w_late=obj.lateness_weight_per_gpu_h,
                    extra_cost=node_step,
                )
                if opt is None:
                    continue
                ci, stp, frs = opt
                stp = stp + lo
                p1 = int(cand[ci])
                rr1 = list(zip(stp.tolist(), frs.tolist(), strict=True))
                # exact contribution at this level under the node estimate
                saved = {s_: int(lev[p1, s_]) for s_ in {t // k for t, _ in rr1}}
                for s_ in saved:
                    lev[p1, s_] = lv
                b1 = busy_cost(p1, j, rr1) + late_cost(j, p1, rr1)
                for s_, v in saved.items():
                    lev[p1, s_] = v
                # adding a job never lowers the nodes' cost: no better than the best so far
                if b1 >= old_total or (best is not None and b1 >= best[0]):
                    continue
                base1 = c_without0 if p1 == p0 else pool_cost[p1]
                alloc_save = alloc[p1].copy()
                for t, _f in rr1:
                    alloc[p1, t] += g
                c_with1, _ = nodes_cost(p1, need_of(p1))
                alloc[p1] = alloc_save
                total = b1 + c_with1 - base1
                if best is None or total < best[0] - 1e-12:
                    best = (total, p1, rr1, lv, c_with1)
            if best is not None and best[0] < old_total - 1e-9 * max(1.0, abs(old_total)):
                total, p1, rr1, lv, c_with1 = best
                lev_save, cost_save, prof_save = lev[p1].copy(), pool_cost.copy(), prof_n.copy()
                pool_cost[p0] = c_without0
                prof_n[p0, :T] = prof0
                apply(j, p1, rr1, 1.0, lv)
                pool_cost[p1], pr = nodes_cost(p1, need_of(p1))
                prof_n[p1, :T] = pr
                refresh(p0)
                if p1 != p0:
                    refresh(p1)
                if limited[site_of[p0]] or limited[site_of[p1]]:
                    touched = sorted({p0, p1})
                    new_e = {p: exact_e(p) for p in touched}
                    adds = False
                    for s_ in {int(site_of[p]) for p in touched}:
                        if not limited[s_]:
                            continue
                        at = site_of == s_
                        old_tot = ex_e[at].sum(axis=0)
                        new_tot = old_tot + sum(
                            new_e[p] - ex_e[p] for p in touched if site_of[p] == s_
                        )
                        lim = budget[s_, : T * k]
                        adds = adds or bool(
                            ((new_tot > lim + 1e-9) & (new_tot > old_tot + 1e-9)).any()
                        )
                    if adds:  # the move adds budget overrun: back as it was
                        apply(j, p1, rr1, -1.0)
                        lev[p1] = lev_save
                        apply(j, p0, rr0, 1.0)
                        pool_cost[:] = cost_save
                        prof_n[:] = prof_save
                        refresh(p0)
                        if p1 != p0:
                            refresh(p1)
                        continue
                    for p in touched:
                        ex_e[p] = new_e[p]
                pool_of[j] = p1
                runs[j] = rr1
                gain += old_total - total
                moves += 1
            else:  # put it back as it was
                apply(j, p0, rr0, 1.0)
        done_sweeps += 1
        if status != "done" or gain < min_gain * max(1.0, est0):
            break
    new = schedule_from_fine(inp, runs, pool_of, alloc, busy, np.repeat(lev, k, axis=1), k, T2)
    return new, {
        "status": status,
        "sweeps": done_sweeps,
        "moves": moves,
        "s": round(time.perf_counter() - t_start, 3),
    }
