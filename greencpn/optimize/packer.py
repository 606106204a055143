"""The re-insertion pass's working state: a schedule on the placement grid with its cost
estimate (:class:`Packer`), used by the moves of :mod:`greencpn.optimize.improve`.

A packer holds each job's fine runs, the GPUs held and busy per pool and step, the cap level
per pool and slot and each pool's estimated nodes on. The estimate of the whole schedule is

``Σ_jobs busy energy · (carbon + price) + Σ_pools node energy(node_profile(need)) + lateness``

where a pool's nodes on are what its held GPUs need (``⌈held / gpus_per_node⌉``, a slot early
for a job in its boot steps), kept on for min up after each start
(:func:`~greencpn.optimize.schedule.node_profile`), plus boot energy per start. Every move is
made of two operations: :meth:`Packer.take_out` a job and :meth:`Packer.put` it back — at the
cheapest place given the others (:meth:`Packer.cheapest`, GPUs, slot 0's boot capacity, the
site budgets with the estimated nodes, one cap level per pool and slot) or at a given one;
:meth:`Packer.snapshot` / :meth:`Packer.restore` undo a move that did not lower the estimate.
"""

from __future__ import annotations

import numpy as np

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.options import _best_option
from greencpn.optimize.schedule import (
    Schedule,
    boot_steps,
    job_steps,
    node_profile,
    schedule_from_fine,
    unit_energy_cost,
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


Run = list[tuple[int, float]]


class Packer:
    """A schedule on the placement grid with the estimate of what each job and pool costs,
    and the two operations every move is made of: take a job out, put it in (the cheapest
    place given the others, or a given one)."""

    def __init__(self, inp: PlanInputs, sched: Schedule, carbon_w, cost_w) -> None:
        self.inp = inp
        P, T = len(inp.pools), inp.T
        self.P, self.T = P, T
        k = self.k = sched.subslots
        T2 = self.T2 = sched.level.shape[1]
        F = self.F = T2 * k
        self.runs: list[Run] = fine_runs_of(sched)
        self.dt = dt = inp.slot_h / k
        obj = self.obj = inp.objective
        cw = obj.carbon_weight_per_kg if carbon_w is None else carbon_w
        pw = obj.cost_weight if cost_w is None else cost_w
        unit_slot = unit_energy_cost(inp, cw, pw, T2)  # [S, T2]
        self.unit = np.repeat(unit_slot, k, axis=1)
        pools = self.pools = inp.pools
        self.site_of = np.array([p.site for p in pools])
        self.pue = np.array([inp.sites[p.site].pue for p in pools])
        self.gpn = np.array([p.gpus_per_node for p in pools], dtype=float)
        self.idle_kw = np.array([p.node_idle_kw - p.node_off_kw for p in pools])
        n_lv = max(len(p.level_thr) for p in pools)
        # per pool and level (levels beyond a pool's own repeat its last)
        self.thr_pl = np.array(
            [[p.level_thr[min(lv, len(p.level_thr) - 1)] for lv in range(n_lv)] for p in pools]
        )
        self.ext_pl = np.array(
            [[p.level_extra_kw[min(lv, len(p.level_thr) - 1)] for lv in range(n_lv)] for p in pools]
        )
        # node cost per slot (idle above off), boot cost per start; nodes past the horizon are
        # free
        self.node_c = np.zeros((P, T2))
        self.boot_c = np.zeros((P, T2))
        for p, pool in enumerate(pools):
            self.node_c[p, :T] = (
                self.idle_kw[p] * inp.slot_h * self.pue[p] * unit_slot[pool.site, :T]
            )
            self.boot_c[p, :T] = pool.boot_extra_kwh * self.pue[p] * unit_slot[pool.site, :T]
        self.nb = [boot_steps(inp, p, k) for p in range(P)]
        self.cap_fine = np.repeat(
            np.array([p.gpus for p in pools], dtype=float)[:, None], F, axis=1
        )
        for p, pool in enumerate(pools):
            nb = boot_steps(inp, p, k)
            if nb and pool.initial_on < pool.nodes:
                self.cap_fine[p, :nb] = pool.initial_on * pool.gpus_per_node
        self.lev = sched.level.astype(int).copy()  # [P, T2]
        J = self.J = len(inp.jobs)
        self.pool_of = sched.pool.astype(int).copy()
        self.alloc = np.zeros((P, F))  # GPUs held per step: the reserve, then every job's runs
        for p, pool in enumerate(pools):
            self.alloc[p, : T * k] = np.repeat(pool.reserve_gpus, k)
        self.busy = np.zeros((P, F))
        self.cnt = np.zeros((P, T2), dtype=int)  # jobs running in each pool-slot
        for j in range(J):
            p = self.pool_of[j]
            if p < 0 or not self.runs[j]:
                continue
            self._apply(j, p, self.runs[j], 1.0)
        self.budget = np.full((len(inp.sites), F), np.inf)
        for s_, site in enumerate(inp.sites):
            self.budget[s_, : T * k] = np.repeat(site.budget_kw, k) * dt
        self.prof_n = np.zeros((P, T2))
        self.pool_cost = np.zeros(P)
        for p in range(P):
            self.pool_cost[p], pr = self.nodes_cost(p, self.need_of(p))
            self.prof_n[p, :T] = pr
            self.prof_n[p, T:] = pools[p].nodes
        self.used = np.stack([self.pool_used(p, self.prof_n[p]) for p in range(P)])  # [P, F]
        self.site_used = np.zeros((len(inp.sites), F))
        np.add.at(self.site_used, self.site_of, self.used)
        self.limited = np.asarray(np.isfinite(self.budget).any(axis=1), dtype=bool)
        self.candidates: dict[tuple, np.ndarray] = {}
        self.tidx = np.arange(F)
        # each placed job's work (GPU-h at its levels) and search window, fixed at the start:
        # a job on time stays on time, and work due inside the horizon stays inside it
        self.work = np.zeros(J)
        self.window: list[tuple[int, int]] = [(0, 0)] * J
        self.jcost = np.zeros(J)
        for j in range(J):
            p = int(self.pool_of[j])
            if p < 0 or not self.runs[j]:
                continue
            rr = self.runs[j]
            job = inp.jobs[j]
            self.work[j] = float(
                sum(job.gpus * self.thr_pl[p, self.lev[p, t // k]] * dt * f for t, f in rr)
            )
            r_step, d_step = job_steps(job, inp, k)
            limit = min(d_step, T * k - 1)
            lo = max(0, min(r_step, F - 1))
            hi = limit + 1 if rr[-1][0] <= limit else F
            self.window[j] = (lo, hi)
            self.jcost[j] = self.job_cost(p, j, rr)

    # -- the estimate ---------------------------------------------------------------------
    def need_of(self, p: int) -> np.ndarray:
        """[T2] nodes pool p needs per slot: for the GPUs held in the slot, and for those held
        in the next slot's boot steps — a node started there is still booting, so the nodes
        holding them must already be on (the node repair's boot-capacity rows)."""
        k = self.k
        a = self.alloc[p].reshape(self.T2, k)
        need = np.ceil(a.max(axis=1) / self.gpn[p] - 1e-9).astype(int)
        nb = self.nb[p]
        if nb:
            early = np.ceil(a[:, :nb].max(axis=1) / self.gpn[p] - 1e-9).astype(int)
            need[:-1] = np.maximum(need[:-1], early[1:])
        return need

    def nodes_cost(self, p: int, need: np.ndarray) -> tuple[float, list[int]]:
        pool = self.pools[p]
        T = self.T
        prof = node_profile(need[:T].tolist(), pool.initial_on, pool.min_up_slots, pool.spares)
        n = np.asarray(prof, dtype=float)
        starts = np.maximum(0.0, np.diff(n, prepend=float(pool.initial_on)))
        c = float(self.node_c[p, :T] @ n + self.boot_c[p, :T] @ starts)
        return c, prof

    def job_cost(self, p: int, j: int, rr: Run) -> float:
        """Busy energy and lateness of job j's runs ``rr`` on pool p at today's levels."""
        job = self.inp.jobs[j]
        k, dt = self.k, self.dt
        ts = np.fromiter((t for t, _ in rr), dtype=int, count=len(rr))
        fs = np.fromiter((f for _, f in rr), dtype=float, count=len(rr))
        lv = self.lev[p, ts // k]
        busy = (
            job.gpus
            * dt
            * self.pue[p]
            * float(fs @ (self.ext_pl[p, lv] * self.unit[self.site_of[p], ts]))
        )
        _, d_step = job_steps(job, self.inp, k)
        late = np.maximum(0, ts - d_step)
        if not late.any():
            return busy
        w = self.obj.lateness_weight_per_gpu_h * job.priority * dt * job.gpus * dt
        return busy + w * float(fs @ (late * self.thr_pl[p, lv]))

    def estimate(self) -> float:
        return float(self.pool_cost.sum() + self.jcost.sum())

    def _apply(self, j: int, p: int, rr: Run, sign: float, lv: int | None = None) -> None:
        g = self.inp.jobs[j].gpus
        k = self.k
        for t, f in rr:
            self.alloc[p, t] += sign * g
            self.busy[p, t] += sign * g * f
        for s_ in {t // k for t, _ in rr}:
            self.cnt[p, s_] += int(sign)
            if sign > 0 and lv is not None:
                self.lev[p, s_] = lv

    def pool_used(self, p: int, prof: np.ndarray) -> np.ndarray:
        """[F] meter energy of pool p per step with nodes ``prof`` [T2] and today's busy."""
        pool = self.pools[p]
        k = self.k
        n_f = np.repeat(prof, k)
        ext_f = np.repeat(self.ext_pl[p, self.lev[p]], k)
        # start-ups' boot energy, as the evaluation charges it in their slot (spread over it)
        starts = np.zeros(self.T2)
        starts[: self.T] = np.maximum(0.0, np.diff(prof[: self.T], prepend=float(pool.initial_on)))
        boot_f = np.repeat(starts * pool.boot_extra_kwh / k, k)
        return self.pue[p] * (
            self.dt
            * (
                pool.node_idle_kw * n_f
                + pool.node_off_kw * (pool.nodes - n_f)
                + ext_f * self.busy[p]
            )
            + boot_f
        )

    def within_budget(self, j: int, p: int, rr: Run, lv: int | None) -> bool:
        """Whether job j on pool p in these steps keeps its site's estimated energy within
        the budget in every step (a step already over it by the schedule given may not get
        worse): nodes it starts and their boot energy included."""
        s_ = self.site_of[p]
        if not self.limited[s_]:
            return True
        saved = {x: int(self.lev[p, x]) for x in {t // self.k for t, _ in rr}}
        self._apply(j, p, rr, 1.0, lv)
        _c, pr = self.nodes_cost(p, self.need_of(p))
        prof = self.prof_n[p].copy()
        prof[: self.T] = pr
        new = self.site_used[s_] + self.pool_used(p, prof) - self.used[p]
        self._apply(j, p, rr, -1.0)
        for x, v in saved.items():
            self.lev[p, x] = v
        budget = self.budget[s_]
        was = np.maximum(self.site_used[s_] - budget, 0.0)
        return bool((new - budget <= was + 1e-9).all())

    def _renode(self, p: int) -> None:
        """Re-estimate pool p's nodes and its share of its site's energy."""
        self.pool_cost[p], pr = self.nodes_cost(p, self.need_of(p))
        self.prof_n[p, : self.T] = pr
        new_used = self.pool_used(p, self.prof_n[p])
        self.site_used[self.site_of[p]] += new_used - self.used[p]
        self.used[p] = new_used

    # -- the two operations ---------------------------------------------------------------
    def take_out(self, j: int) -> float:
        """Remove job j; returns what it contributed to the estimate."""
        p = int(self.pool_of[j])
        before = self.pool_cost[p] + self.jcost[j]
        self._apply(j, p, self.runs[j], -1.0)
        self._renode(p)
        self.jcost[j] = 0.0
        return float(before - self.pool_cost[p])

    def put(self, j: int, p: int, rr: Run, lv: int | None) -> None:
        """Put job j on pool p in these steps (``lv``: the level it sets in empty slots)."""
        self._apply(j, p, rr, 1.0, lv)
        self._renode(p)
        self.pool_of[j] = p
        self.runs[j] = rr
        self.jcost[j] = self.job_cost(p, j, rr)

    def pool_state(self, p: int, j: int) -> tuple:
        """What :meth:`put_back` needs to undo taking job j out of pool p."""
        return (
            self.pool_cost[p],
            self.prof_n[p].copy(),
            self.used[p].copy(),
            self.site_used[self.site_of[p]].copy(),
            self.jcost[j],
        )

    def put_back(self, j: int, p: int, rr: Run, state: tuple) -> None:
        """Job j back where it was taken out from, with the pool's state as it was."""
        self._apply(j, p, rr, 1.0)
        self.pool_cost[p], prof, used, site_used, self.jcost[j] = state
        self.prof_n[p] = prof
        self.used[p] = used
        self.site_used[self.site_of[p]] = site_used
        self.pool_of[j] = p
        self.runs[j] = rr

    def cheapest(self, j: int, bound: float = np.inf):
        """The cheapest place for job j (taken out) given all the others, if it adds less than
        ``bound`` to the estimate: ``(adds, pool, steps, level)`` or None."""
        inp, k, T, dt = self.inp, self.k, self.T, self.dt
        job = inp.jobs[j]
        g = job.gpus
        W = self.work[j]
        lo, hi = self.window[j]
        if hi <= lo or W <= 1e-12:
            return None
        key = (job.sites, g)
        cand = self.candidates.get(key)
        if cand is None:
            cand = self.candidates[key] = np.array(
                [
                    p
                    for p, pool in enumerate(self.pools)
                    if pool.site in job.sites and pool.gpus >= g
                ],
                dtype=int,
            )
        if cand.size == 0:
            return None
        r_step, d_step = job_steps(job, inp, k)
        win = slice(lo, hi)
        sl_lo, sl_hi = lo // k, (hi - 1) // k + 1
        gpn, site_of, pue, unit = self.gpn, self.site_of, self.pue, self.unit
        thr_pl, ext_pl, lev = self.thr_pl, self.ext_pl, self.lev
        n_on = self.prof_n[cand]
        cut = slice(lo - sl_lo * k, hi - sl_lo * k)
        n_on_f = np.repeat(n_on[:, sl_lo:sl_hi], k, axis=1)[:, cut]
        alloc_c = self.alloc[cand, win]
        free = n_on_f * gpn[cand, None] - alloc_c
        add_nodes = np.ceil(np.maximum(0.0, g - np.maximum(free, 0.0)) / gpn[cand, None] - 1e-9)
        node_step = add_nodes * np.repeat(self.node_c[cand], k, axis=1)[:, win] / k
        # GPUs held in a slot's boot steps need nodes already on in the slot before
        nbs = np.array([self.nb[p] for p in cand])
        if nbs.any():
            steps = np.arange(lo, hi)
            boot = (steps % k)[None, :] < nbs[:, None]  # [C, steps]
            boot &= (steps >= k)[None, :]
            prev_sl = np.maximum(steps // k - 1, 0)
            n_prev = self.prof_n[cand][:, prev_sl]
            free_prev = n_prev * gpn[cand, None] - alloc_c
            add_prev = np.ceil(
                np.maximum(0.0, g - np.maximum(free_prev, 0.0)) / gpn[cand, None] - 1e-9
            )
            node_step = node_step + np.where(boot, add_prev * self.node_c[cand][:, prev_sl], 0.0)
        if self.limited[site_of[cand]].any():
            head = self.budget[site_of[cand], win] - self.site_used[site_of[cand], win]
        else:
            head = np.full((cand.size, hi - lo), np.inf)
        unit_c = unit[site_of[cand], win] * pue[cand, None] * dt
        cap_c = self.cap_fine[cand, win]
        ok_all = self.cnt[cand] == 0
        best = None
        # busy energy alone at each level's cleanest step: no option at that level costs
        # less, so levels are tried cheapest bound first and the rest skipped
        u_min = (unit[site_of[cand], win] * pue[cand, None]).min(axis=1)  # [C]
        lb = (W / thr_pl[cand] * ext_pl[cand] * u_min[:, None]).min(axis=0)  # [L]
        for lv in np.argsort(lb, kind="stable").tolist():
            if lb[lv] >= bound - 1e-12 or (best is not None and lb[lv] >= best[0]):
                break
            ok = ok_all | (lev[cand] == lv)
            ok_f = np.repeat(ok[:, sl_lo:sl_hi], k, axis=1)[:, cut]
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
                tidx=self.tidx[: hi - lo],
                thr=thr_c,
                gpu_cost=ext_c * unit_c,
                n_free=n_on_f,
                alloc=alloc_c,
                gpn=gpn[cand],
                cap=np.where(ok_f, cap_c, -1.0),
                extra_kw=ext_c,
                pue=pue[cand],
                idle_kw=self.idle_kw[cand],
                head=head,
                dt=dt,
                w_late=self.obj.lateness_weight_per_gpu_h,
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
            b1 = self.job_cost(p1, j, rr1)
            for s_, v in saved.items():
                lev[p1, s_] = v
            # adding a job never lowers the nodes' cost: no better than the best so far
            if b1 >= bound or (best is not None and b1 >= best[0]):
                continue
            alloc_save = self.alloc[p1].copy()
            for t, _f in rr1:
                self.alloc[p1, t] += g
            c_with1, _ = self.nodes_cost(p1, self.need_of(p1))
            self.alloc[p1] = alloc_save
            total = b1 + c_with1 - self.pool_cost[p1]
            if best is None or total < best[0] - 1e-12:
                best = (total, p1, rr1, lv)
        if best is not None and not self.within_budget(j, best[1], best[2], best[3]):
            return None
        return best

    # -- snapshots (a multi-job move that does not pay is undone) -------------------------
    _ARRAYS = (
        "alloc",
        "busy",
        "cnt",
        "lev",
        "prof_n",
        "pool_cost",
        "used",
        "site_used",
        "pool_of",
        "jcost",
    )

    def snapshot(self, jobs: list[int]) -> tuple:
        return (
            {a: getattr(self, a).copy() for a in self._ARRAYS},
            {j: self.runs[j] for j in jobs},
        )

    def restore(self, snap: tuple) -> None:
        arrays, runs = snap
        for a, v in arrays.items():
            setattr(self, a, v)
        for j, rr in runs.items():
            self.runs[j] = rr

    def schedule(self) -> Schedule:
        return schedule_from_fine(
            self.inp,
            self.runs,
            self.pool_of,
            self.alloc,
            self.busy,
            np.repeat(self.lev, self.k, axis=1),
            self.k,
            self.T2,
        )

    def movable(self) -> list[int]:
        return [j for j in range(self.J) if self.pool_of[j] >= 0 and self.runs[j]]
