"""Stage 2b: improve a placed schedule by re-inserting jobs (node packing).

A placement decides jobs one after another, each priced against what is already placed: the
first job on a node pays (a share of) its idle power, later ones could have filled it. This
pass takes a finished, executable schedule and moves its jobs: each is taken out and put
back at its cheapest (pool, cap level, start) given all the others, priced by what it really
adds to the objective —

* busy energy at the level's extra power, at the slot's carbon and price (PUE included);
* the nodes it makes necessary: a pool's nodes on are estimated per slot as what the held GPUs
  need, kept on for min up after each start (:func:`node_profile`), plus boot energy per start;
  GPUs on nodes that are on anyway cost nothing, so jobs pack onto them;
* lateness as the placement charges it.

Two neighbourhoods, both judged by that same estimate (a move is kept only when the estimate
of the whole schedule falls):

* **one job** (:func:`improve_schedule`): each job alone is re-inserted at its cheapest place;
* **node spans** (:func:`empty_node_spans`): every job holding GPUs of a pool during a span
  in which that pool keeps nodes on beyond its spares is taken out at once, then all are put
  back one after another (several orders tried). Several jobs move together, so a node-span
  can be emptied — and stay off — where no single job's move frees it (each alone leaves the
  node on for the others), and the span's pool-slots lose their cap level while empty, so the
  jobs put back may run there at another one.

One cap level per pool and slot stays true: a job may take a level in a slot only where no
other job runs at another one. GPUs, the boot-time capacity of slot 0 and the site budgets
(with the estimated nodes) are respected as in :func:`~greencpn.optimize.placement.place_jobs`.
The result is an ordinary :class:`~greencpn.optimize.schedule.Schedule`; the caller repairs
its nodes exactly (:func:`~greencpn.optimize.repair.repair_nodes`) and keeps it only if the
evaluation is better.
"""

from __future__ import annotations

import time

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


class _Packer:
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


def _sweeps(pk: _Packer, sweeps: int, deadline: float, min_gain: float) -> tuple[int, int, str]:
    """One-job re-insertion sweeps; returns (sweeps done, moves, status)."""
    inp = pk.inp
    order = sorted(
        pk.movable(), key=lambda i: (-inp.jobs[i].gpus * inp.jobs[i].work_gpu_h, inp.jobs[i].id)
    )
    moves = 0
    est0 = pk.estimate()
    done = 0
    status = "done"
    for _sweep in range(sweeps):
        gain = 0.0
        for j in order:
            if time.perf_counter() > deadline:
                status = "time limit"
                break
            if pk.work[j] <= 1e-12:
                continue
            p0, rr0 = int(pk.pool_of[j]), pk.runs[j]
            kept = pk.pool_state(p0, j)
            old_total = pk.take_out(j)
            best = pk.cheapest(j, old_total)
            if best is not None and best[0] < old_total - 1e-9 * max(1.0, abs(old_total)):
                total, p1, rr1, lv = best
                pk.put(j, p1, rr1, lv)
                gain += old_total - total
                moves += 1
            else:  # put it back as it was
                pk.put_back(j, p0, rr0, kept)
        done += 1
        if status != "done" or gain < min_gain * max(1.0, est0):
            break
    return done, moves, status


def improve_schedule(
    inp: PlanInputs,
    sched: Schedule,
    *,
    carbon_w: float | None = None,
    cost_w: float | None = None,
    sweeps: int = 3,
    time_limit_s: float = 20.0,
    min_gain: float = 1e-4,
    group_moves_s: float = 0.0,
    span_moves: bool = True,
    group_size: int = 8,
    max_span_jobs: int = 12,
) -> tuple[Schedule, dict]:
    """Re-insert every job at its cheapest place given the others, ``sweeps`` times (or until
    a sweep gains less than ``min_gain`` of the estimate, or ``time_limit_s``); then, for
    ``group_moves_s`` more, the multi-job moves (node spans of at most ``max_span_jobs`` jobs,
    unless ``span_moves`` is off, then related jobs ``group_size`` at a time; 80 % of that
    time) and one last sweep when they moved anything (the rest).

    Returns the improved schedule and what the pass did (moves, estimate before / after, s).
    The input schedule needs ``fine_runs`` (every schedule :func:`place_jobs` returns has it).
    """
    t_start = time.perf_counter()
    pk = _Packer(inp, sched, carbon_w, cost_w)
    e0 = pk.estimate()
    done, moves, status = _sweeps(pk, sweeps, t_start + time_limit_s, min_gain)
    info: dict = {"status": status, "sweeps": done, "moves": moves}
    span_t = span_k = rel_t = rel_k = 0
    if group_moves_s > 0:
        t_g = time.perf_counter()
        end = t_g + group_moves_s
        moves_end = t_g + 0.8 * group_moves_s  # the rest for a last sweep
        if span_moves:
            span_t, span_k, _g, _st = _span_moves(pk, moves_end, max_span_jobs, rounds=3)
        rel_t, rel_k, _g, st = _related_moves(pk, moves_end, group_size)
        if span_k or rel_k:
            d2, m2, _st2 = _sweeps(pk, 1, end, min_gain)
            info["sweeps"] += d2
            info["moves"] += m2
        info["group_status"] = st
        info["group_s"] = round(time.perf_counter() - t_g, 3)
    info.update(
        spans_tried=span_t,
        spans_emptied=span_k,
        related_tried=rel_t,
        related_kept=rel_k,
        estimate_before=round(e0, 6),
        estimate_after=round(pk.estimate(), 6),
        s=round(time.perf_counter() - t_start, 3),
    )
    return pk.schedule(), info


def _spans(pk: _Packer, p: int) -> list[tuple[int, int]]:
    """Maximal runs of slots [a, b) in which pool p keeps nodes on beyond its spares."""
    over = pk.prof_n[p, : pk.T] > pk.pools[p].spares
    out, a = [], None
    for t, o in enumerate(over.tolist() + [False]):
        if o and a is None:
            a = t
        elif not o and a is not None:
            out.append((a, t))
            a = None
    return out


def _orders(pk: _Packer, jobs: list[int]) -> list[list[int]]:
    jb = pk.inp.jobs

    def slack(i: int) -> float:
        lo, hi = pk.window[i]
        return (hi - lo) * pk.dt - jb[i].work_gpu_h / jb[i].gpus

    largest = sorted(jobs, key=lambda i: (-jb[i].gpus * jb[i].work_gpu_h, jb[i].id))
    tight = sorted(jobs, key=lambda i: (slack(i), -jb[i].gpus * jb[i].work_gpu_h, jb[i].id))
    out = [largest]
    for o in (tight, largest[::-1]):
        if o not in out:
            out.append(o)
    return out


def _span_moves(
    pk: _Packer, deadline: float, max_jobs: int, rounds: int
) -> tuple[int, int, float, str]:
    """Empty node-spans: all jobs of a pool-span with nodes beyond the spares out at once, put
    back one by one (several orders), kept when the estimate falls. Returns (tried, kept,
    gain, status)."""
    tried = kept = 0
    gain = 0.0
    status = "done"
    jobs_on: list[set[int]] = [set() for _ in range(pk.P)]
    for j in pk.movable():
        jobs_on[int(pk.pool_of[j])].add(j)
    k = pk.k
    for _round in range(rounds):
        kept_round = 0
        # dearest spans first: what the pool's nodes beyond its spares cost there
        spans = []
        for p in range(pk.P):
            sp = pk.pools[p].spares
            for a, b in _spans(pk, p):
                c = float(((pk.prof_n[p, a:b] - sp) * pk.node_c[p, a:b]).sum())
                spans.append((-c, p, a, b))
        spans.sort()
        seen: set[tuple] = set()
        for _c, p, a, b in spans:
            if time.perf_counter() > deadline:
                return tried, kept, gain, "time limit"
            members = sorted(j for j in jobs_on[p] if any(a <= t // k < b for t, _ in pk.runs[j]))
            if not members or len(members) > max_jobs or pk.prof_n[p, a] <= pk.pools[p].spares:
                continue
            key = (p, tuple(members))
            if key in seen:
                continue
            seen.add(key)
            tried += 1
            g = _ruin_recreate(pk, members)
            if g is not None:
                for j in members:
                    jobs_on[p].discard(j)
                    jobs_on[int(pk.pool_of[j])].add(j)
                gain += g
                kept += 1
                kept_round += 1
        if kept_round == 0:
            break
    return tried, kept, gain, status


def _ruin_recreate(pk: _Packer, members: list[int]) -> float | None:
    """Take ``members`` out together and put them back one by one (several orders); keep the
    first order that lowers the estimate. Returns the gain, or None (all undone)."""
    e0 = pk.estimate()
    snap = pk.snapshot(members)
    for order in _orders(pk, members):
        for j in members:
            pk.take_out(j)
        ok = True
        for j in order:
            best = pk.cheapest(j)
            if best is None:
                ok = False
                break
            pk.put(j, best[1], best[2], best[3])
        e1 = pk.estimate()
        if ok and e1 < e0 - 1e-9 * max(1.0, abs(e0)):
            return e0 - e1
        pk.restore(snap)
        snap = pk.snapshot(members)
    return None


def _related_moves(
    pk: _Packer, deadline: float, size: int, seed: int = 0
) -> tuple[int, int, float, str]:
    """Related-job moves: a seed job and the ``size`` − 1 jobs of its site that overlap it in
    time most, out together and put back (:func:`_ruin_recreate`). Seeds are taken in a
    shuffled order (fixed ``seed``: the same schedule gives the same result); stops after a
    pass over every seed keeps no move. Returns (tried, kept, gain, status)."""
    rng = np.random.default_rng(seed)
    jobs = pk.movable()
    tried = kept = 0
    gain = 0.0
    k = pk.k
    while True:
        kept_pass = 0
        for j0 in rng.permutation(jobs).tolist():
            if time.perf_counter() > deadline:
                return tried, kept, gain, "time limit"
            s0 = pk.site_of[pk.pool_of[j0]]
            t0 = {t // k for t, _ in pk.runs[j0]}
            lo0, hi0 = pk.window[j0]
            near = []
            for j in jobs:
                if j == j0 or pk.site_of[pk.pool_of[j]] != s0:
                    continue
                lo, hi = pk.window[j]
                ov = min(hi, hi0) - max(lo, lo0)
                if ov <= 0:
                    continue
                same = len(t0 & {t // k for t, _ in pk.runs[j]})
                near.append((-same, -ov, j))
            near.sort()
            members = [j0] + [j for *_x, j in near[: size - 1]]
            tried += 1
            g = _ruin_recreate(pk, members)
            if g is not None:
                kept += 1
                kept_pass += 1
                gain += g
        if kept_pass == 0:
            return tried, kept, gain, "done"
