"""A job-level reference: a time-indexed MILP over every job's pool, cap level and start.

The aggregate MILP (:mod:`greencpn.optimize.milp`) is fluid: a rigid job may spread over
pools, sites and non-adjacent hours. This model is not: every job runs on one pool, at one cap
level, holding its GPUs for whole slots on powered, *booted* nodes. Its optimum is the yardstick
for the executable plan (issue 11); it is small enough for tiny fleets and S, not for L.

Index sets: jobs j, pools p ∈ P_j (allowed sites, enough GPUs), levels l, slots t, sites s.
Duration of job j at level l: D_jl = ⌈W_j / (g_j θ_l Δ)⌉ slots, the last one busy a fraction
f_jl = W_j / (g_j θ_l Δ) − (D_jl − 1). Variables:

    z[j,p,l,s] ∈ {0,1}   rigid job j starts at slot s on pool p at level l (on time only:
                         r_j ≤ s, s + D_jl − 1 ≤ d_j, with r_j / d_j the first slot after the
                         release and the last slot ending by the deadline)
    a[j,p] ∈ {0,1}       checkpointable job j runs on pool p
    x[j,p,l,t] ∈ {0,1}   checkpointable job j holds its GPUs on p at level l in slot t
    b[j,p,l,t] ∈ [0,1]   … and is busy this share of the slot (b ≤ x)
    y[p,l,t] ∈ {0,1}     pool p runs level l in slot t (one level per pool and slot)
    q[j] ∈ [0,1]         share of job j not done (penalised: unserved)
    n, u, d              nodes on / started / stopped (family 3, :mod:`greencpn.optimize.nodes`)
    e[s,t], v[s,t]       meter energy and budget overrun (family 5)

Rows:

    Σ_{p,l,s} z[j,p,l,s] + q[j] = 1                     rigid j
    Σ_p a[j,p] + q[j] = 1,  Σ_l x[j,p,l,t] ≤ a[j,p],  b ≤ x,
    Σ_{l,t} b[j,p,l,t] g_j θ_l Δ = W_j a[j,p]            checkpointable j
    H[p,l,t] := Σ_j g_j (Σ_{s: s ≤ t < s+D_jl} z[j,p,l,s] + x[j,p,l,t]) ≤ G_p y[p,l,t],
    Σ_l y[p,l,t] ≤ 1
    Σ_l H[p,l,t] + R[p,t] ≤ m_p (n[p,t] − u[p,t])       GPUs held on booted nodes (boot > 0;
                                                          else ≤ m_p n[p,t])
    e[s,t] = PUE_s Σ_{p at s} (Δ κ_p n + Δ ω_p (N_p − n) + Δ Σ_l ε_l B[p,l,t] + b_p u)
    e[s,t] − v[s,t] ≤ Δ B_{s,t}

with B[p,l,t] the busy GPUs (z × g × 1 or f_jl in its last slot, b × g). Objective: carbon and
cost of e, + λ_budget Σ v + λ_unserved Σ_j W_j q[j]. Jobs only run on time here (no lateness
term): a job that cannot is unserved and the result says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.repair import net_switches
from greencpn.optimize.schedule import Schedule, job_steps


@dataclass
class JobLevelResult:
    status: str  # optimal / feasible (time limit) / infeasible / no_solution
    objective: float | None  # of the incumbent, as the model prices it
    bound: float | None  # HiGHS's dual bound: no whole-slot job-level plan scores below it
    schedule: Schedule | None
    n: np.ndarray | None
    u: np.ndarray | None
    d: np.ndarray | None
    solve_s: float
    build_s: float
    n_vars: int
    n_rows: int


def solve_joblevel(
    inp: PlanInputs,
    *,
    time_limit_s: float = 60.0,
    rel_gap: float = 1e-4,
    carbon_w: float | None = None,
    cost_w: float | None = None,
    heuristic_effort: float = 0.3,
    start: Schedule | None = None,
    fixed: dict[int, tuple] | None = None,
) -> JobLevelResult:
    """Build and solve the job-level MILP; the incumbent comes back as an executable schedule.

    ``start``: a schedule (e.g. the placement's or the greedy's) given to HiGHS as a partial
    MIP start — each job's pool, level and start slot where the whole-slot model has them;
    HiGHS completes the rest (nodes, levels) and starts its search from there.

    ``fixed``: jobs held to one choice (a sub-MIP for fix-and-optimise): rigid job j →
    ``("rigid", p, l, s)``, checkpointable → ``("ckpt", p, {t: l})``; see :func:`choices`.
    """
    fixed = fixed or {}
    import pyomo.environ as pyo
    from pyomo.contrib.solver.solvers.highs import Highs
    from pyomo.core.expr.numeric_expr import LinearExpression

    from greencpn.optimize import nodes as nodes_family
    from greencpn.optimize.builder import ModelBuilder
    from greencpn.optimize.objective import BUDGET_OVERRUN_WEIGHT_PER_KWH
    from greencpn.optimize.variables import Vars

    t0 = time.perf_counter()
    P, T, S = len(inp.pools), inp.T, len(inp.sites)
    dt = inp.slot_h
    obj = inp.objective
    cw = obj.carbon_weight_per_kg if carbon_w is None else carbon_w
    pw = obj.cost_weight if cost_w is None else cost_w
    mb = ModelBuilder()
    nodes_arr = np.array([p.nodes for p in inp.pools], dtype=float)
    spares = np.array([p.spares for p in inp.pools], dtype=float)
    n = mb.new_vars("int", (P, T), lb=np.repeat(spares[:, None], T, 1), ub=nodes_arr[:, None])
    u = mb.new_vars("int", (P, T), lb=0.0)
    d = mb.new_vars("int", (P, T), lb=0.0)
    L = max(len(p.level_thr) for p in inp.pools)
    y = mb.new_vars("bin", (P, L, T), lb=0.0, ub=1.0)
    e = mb.new_vars("cont", (S, T), lb=0.0)
    v = mb.new_vars("cont", (S, T), lb=0.0)
    # held[p][l][t] / busy[p][l][t]: lists of (var id, coefficient in GPUs)
    held: dict[tuple[int, int, int], list[tuple[int, float]]] = {}
    busy: dict[tuple[int, int, int], list[tuple[int, float]]] = {}
    starts: list[tuple[int, int, int, int, int, int, float]] = []  # (var, j, p, l, s, D, f)
    ck_vars: list[tuple[int, int, int, int, int, int]] = []  # (x var, b var, j, p, l, t)
    q_ids: list[tuple[int, int]] = []
    J = len(inp.jobs)
    for j, job in enumerate(inp.jobs):
        if job.required_gpu_h <= 0 or job.release_slot >= T:
            continue
        W = job.required_gpu_h if job.deadline_slot >= T else job.work_gpu_h
        r, dl = job_steps(job, inp, 1)
        dl = min(dl, T - 1)
        g = float(job.gpus)
        cand = [p for p, pool in enumerate(inp.pools) if pool.site in job.sites and pool.gpus >= g]
        q = int(mb.new_vars("cont", (1,), lb=0.0, ub=1.0)[0])
        q_ids.append((q, j))
        fx = fixed.get(j)
        if fx is not None:
            cand = [fx[1]]
        if not job.checkpointable:
            ids, cf = [q], [1.0]
            for p in cand:
                thr = inp.pools[p].level_thr
                for lv in range(len(thr)) if fx is None else [fx[2]]:
                    slots_f = W / (g * thr[lv] * dt)
                    D = max(1, math.ceil(slots_f - 1e-9))
                    f = slots_f - (D - 1)
                    for s0 in range(r, dl - D + 2) if fx is None else [fx[3]]:
                        zid = int(mb.new_vars("bin", (1,), lb=0.0, ub=1.0)[0])
                        starts.append((zid, j, p, lv, s0, D, f))
                        ids.append(zid)
                        cf.append(1.0)
                        for t in range(s0, s0 + D):
                            held.setdefault((p, lv, t), []).append((zid, g))
                            busy.setdefault((p, lv, t), []).append(
                                (zid, g * (f if t == s0 + D - 1 else 1.0))
                            )
            mb.add_row("job_once", ids, cf, 1.0, 1.0)
        else:
            ids_a, cf_a = [q], [1.0]
            for p in cand:
                a = int(mb.new_vars("bin", (1,), lb=0.0, ub=1.0)[0])
                ids_a.append(a)
                cf_a.append(1.0)
                thr = inp.pools[p].level_thr
                work_ids, work_cf = [a], [-W]
                for t in range(r, dl + 1) if fx is None else sorted(fx[2]):
                    xs = []
                    for lv in range(len(thr)) if fx is None else [fx[2][t]]:
                        x = int(mb.new_vars("bin", (1,), lb=0.0, ub=1.0)[0])
                        b = int(mb.new_vars("cont", (1,), lb=0.0, ub=1.0)[0])
                        ck_vars.append((x, b, j, p, lv, t))
                        mb.add_row("busy_le_held", [b, x], [1.0, -1.0], None, 0.0)
                        held.setdefault((p, lv, t), []).append((x, g))
                        busy.setdefault((p, lv, t), []).append((b, g))
                        work_ids.append(b)
                        work_cf.append(g * thr[lv] * dt)
                        xs.append(x)
                    mb.add_row(
                        "one_level_per_job_slot", [*xs, a], [1.0] * len(xs) + [-1.0], None, 0.0
                    )
                mb.add_row("ckpt_work", work_ids, work_cf, 0.0, 0.0)
            mb.add_row("job_once", ids_a, cf_a, 1.0, 1.0)
    # levels, capacity on booted nodes
    for p, pool in enumerate(inp.pools):
        m_ = float(pool.gpus_per_node)
        nl = len(pool.level_thr)
        for t in range(T):
            cap_ids: list[int] = []
            cap_cf: list[float] = []
            used = [lv for lv in range(nl) if (p, lv, t) in held]
            if not used:
                continue
            mb.add_row("one_level", [int(y[p, lv, t]) for lv in range(nl)], [1.0] * nl, None, 1.0)
            for lv in used:
                hs = held[(p, lv, t)]
                mb.add_row(
                    "level_link",
                    [i for i, _ in hs] + [int(y[p, lv, t])],
                    [c for _, c in hs] + [-float(pool.gpus)],
                    None,
                    0.0,
                )
                cap_ids += [i for i, _ in hs]
                cap_cf += [c for _, c in hs]
            if pool.boot_frac > 0:
                ids = cap_ids + [int(n[p, t]), int(u[p, t])]
                cf = cap_cf + [-m_, m_]
            else:
                ids = cap_ids + [int(n[p, t])]
                cf = cap_cf + [-m_]
            mb.add_row("gpus_on_booted_nodes", ids, cf, None, -float(pool.reserve_gpus[t]))
    V = Vars.nodes_only(n, u, d)
    nodes_family.add(mb, inp, V)
    for s_, site in enumerate(inp.sites):
        for t in range(T):
            ids, cf = [int(e[s_, t])], [1.0]
            const = 0.0
            for p, pool in enumerate(inp.pools):
                if pool.site != s_:
                    continue
                ids.append(int(n[p, t]))
                cf.append(-site.pue * dt * (pool.node_idle_kw - pool.node_off_kw))
                const += site.pue * dt * pool.node_off_kw * pool.nodes
                ids.append(int(u[p, t]))
                cf.append(-site.pue * pool.boot_extra_kwh)
                const += site.pue * dt * pool.gpu_idle_kw * 0.0
                for lv in range(len(pool.level_thr)):
                    for i, c in busy.get((p, lv, t), []):
                        ids.append(i)
                        cf.append(-site.pue * dt * pool.level_extra_kw[lv] * c)
            mb.add_row("site_energy", ids, cf, const, const)
            if math.isfinite(site.budget_kw[t]):
                mb.add_row(
                    "site_budget",
                    [int(e[s_, t]), int(v[s_, t])],
                    [1.0, -1.0],
                    None,
                    dt * site.budget_kw[t],
                )
    mb.finalize()
    coefs, vars_ = [], []
    for s_, site in enumerate(inp.sites):
        unit = cw * site.planning_intensity / 1000.0 + pw * site.price_per_kwh
        for t in range(T):
            coefs.append(float(unit[t]))
            vars_.append(mb.vars[int(e[s_, t])])
            coefs.append(BUDGET_OVERRUN_WEIGHT_PER_KWH)
            vars_.append(mb.vars[int(v[s_, t])])
    for q, j in q_ids:
        job = inp.jobs[j]
        W = job.required_gpu_h if job.deadline_slot >= T else job.work_gpu_h
        coefs.append(obj.unserved_weight_per_gpu_h * W)
        vars_.append(mb.vars[q])
    mb.m.objective = pyo.Objective(
        expr=LinearExpression(constant=0, linear_coefs=coefs, linear_vars=vars_)
    )
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    opt = Highs()
    opt.set_instance(mb.m)
    if start is not None:
        hint = _start_hint(inp, start, starts, ck_vars)
        if hint:
            col = opt._pyomo_var_to_solver_var_map  # Pyomo var → HiGHS column
            idx = np.array([col[id(mb.vars[i])] for i in hint], dtype=np.int32)
            opt._solver_model.setSolution(len(idx), idx, np.array(list(hint.values()), dtype=float))
    res = opt.solve(
        mb.m,
        time_limit=time_limit_s,
        rel_gap=rel_gap,
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
        solver_options={"output_flag": False, "mip_heuristic_effort": heuristic_effort},
    )
    solve_s = time.perf_counter() - t1
    status = str(res.solution_status.name)
    bound = res.objective_bound
    n_vars, n_rows = len(mb.vars), mb.n_rows()
    if status not in ("optimal", "feasible"):
        return JobLevelResult(
            status, None, bound, None, None, None, None, solve_s, build_s, n_vars, n_rows
        )
    res.solution_loader.load_vars()
    val = mb.value
    # the incumbent as a schedule (one step per slot: GPUs held for whole slots)
    T2 = T + 1
    pool_of = np.full(J, -1)
    runs: list[list[tuple[int, int, float]]] = [[] for _ in range(J)]
    alloc = np.zeros((P, T2))
    bsy = np.zeros((P, T2))
    level = np.zeros((P, T2), dtype=int)
    yv = np.rint(val(y)).reshape(P, L, T)
    for p in range(P):
        for t in range(T):
            if yv[p, :, t].max() > 0.5:
                level[p, t] = int(np.argmax(yv[p, :, t]))
    start_h = np.full(J, np.nan)
    end_h = np.full(J, np.nan)
    zval = val(np.array([z for z, *_ in starts], dtype=int)) if starts else np.zeros(0)
    for (_, j, p, lv, s0, D, f), zv in zip(starts, zval, strict=True):
        if zv < 0.5:
            continue
        g = inp.jobs[j].gpus
        pool_of[j] = p
        level[p, s0 : s0 + D] = lv
        for t in range(s0, s0 + D):
            fr = f if t == s0 + D - 1 else 1.0
            runs[j].append((t, g, fr))
            alloc[p, t] += g
            bsy[p, t] += g * fr
        start_h[j] = s0 * dt
        end_h[j] = (s0 + D - 1 + f) * dt
    if ck_vars:
        xv = val(np.array([c[0] for c in ck_vars], dtype=int))
        bv = val(np.array([c[1] for c in ck_vars], dtype=int))
        per_job: dict[int, list[tuple[int, int, int, float]]] = {}
        for (_, _, j, p, lv, t), xx, bb in zip(ck_vars, xv, bv, strict=True):
            if xx > 0.5 and bb > 1e-7:
                per_job.setdefault(j, []).append((t, p, lv, float(min(1.0, bb))))
        for j, items in per_job.items():
            g = inp.jobs[j].gpus
            items.sort()
            pool_of[j] = items[0][1]
            for t, p, lv, bb in items:
                level[p, t] = lv
                runs[j].append((t, g, bb))
                alloc[p, t] += g
                bsy[p, t] += g * bb
            start_h[j] = items[0][0] * dt
            end_h[j] = (items[-1][0] + items[-1][3]) * dt
    for p, pool in enumerate(inp.pools):
        alloc[p, :T] += pool.reserve_gpus
    sched = Schedule(
        pool=pool_of,
        runs=runs,
        alloc=alloc,
        busy=bsy,
        level=level,
        T=T,
        start_h=start_h,
        end_h=end_h,
        alloc_fine=alloc.copy(),
        subslots=1,
    )
    nn, uu, dd = net_switches(
        np.rint(val(n)).astype(int), np.rint(val(u)).astype(int), np.rint(val(d)).astype(int)
    )
    objective = float(sum(float(c) * pyo.value(x_) for c, x_ in zip(coefs, vars_, strict=True)))
    return JobLevelResult(
        status, objective, bound, sched, nn, uu, dd, solve_s, build_s, n_vars, n_rows
    )


def joblevel_size(inp: PlanInputs) -> int:
    """Binary variables :func:`solve_joblevel` would build (starts and checkpointable slots),
    counted without building anything."""
    T = inp.T
    total = 0
    for job in inp.jobs:
        if job.required_gpu_h <= 0 or job.release_slot >= T:
            continue
        r, dl = job_steps(job, inp, 1)
        span = max(0, min(dl, T - 1) - r + 1)
        for pool in inp.pools:
            if pool.site in job.sites and pool.gpus >= job.gpus:
                total += span * len(pool.level_thr)
    return total


def _start_hint(inp: PlanInputs, sched: Schedule, starts: list, ck_vars: list) -> dict[int, float]:
    """Binary values for a partial MIP start from a schedule: per job, 1 on the start (rigid)
    or the pool and slots (checkpointable) it uses, 0 on its other choices; jobs whose run
    has no whole-slot counterpart are left to the solver."""
    dt = inp.slot_h
    by_job: dict[int, dict[tuple[int, int, int], int]] = {}
    for zid, j, p, lv, s0, _D, _f in starts:
        by_job.setdefault(j, {})[(p, lv, s0)] = zid
    hint: dict[int, float] = {}
    for j, opts in by_job.items():
        p = int(sched.pool[j])
        if p < 0 or not np.isfinite(sched.start_h[j]):
            continue
        s0 = int(math.floor(sched.start_h[j] / dt + 1e-9))
        lv = int(sched.level[p, s0]) if s0 < sched.level.shape[1] else 0
        pick = None
        for key in ((p, lv, s0), (p, 0, s0), (p, lv, s0 - 1), (p, 0, s0 - 1), (p, lv, s0 + 1)):
            if key in opts:
                pick = opts[key]
                break
        if pick is None:
            continue
        for zid in opts.values():
            hint[zid] = 1.0 if zid == pick else 0.0
    ck_by_job: dict[int, list] = {}
    for x, _b, j, p, lv, t in ck_vars:
        ck_by_job.setdefault(j, []).append((x, p, lv, t))
    for j, items in ck_by_job.items():
        p = int(sched.pool[j])
        if p < 0:
            continue
        used = {t for t, _g, _f in sched.runs[j]}
        ok = all(any(pp == p and tt == t for _, pp, _, tt in items) for t in used)
        if not ok:
            continue
        for x, pp, lv, t in items:
            hint[x] = 1.0 if (pp == p and t in used and lv == int(sched.level[p, t])) else 0.0
    return hint


def choices(inp: PlanInputs, sched: Schedule) -> dict[int, tuple]:
    """Each job's choice in a whole-slot schedule (one from :func:`solve_joblevel`), in the
    form ``fixed`` takes."""
    out: dict[int, tuple] = {}
    dt = inp.slot_h
    for j, job in enumerate(inp.jobs):
        p = int(sched.pool[j])
        if p < 0 or not sched.runs[j]:
            continue
        if job.checkpointable:
            out[j] = ("ckpt", p, {t: int(sched.level[p, t]) for t, _g, _f in sched.runs[j]})
        else:
            s0 = int(round(sched.start_h[j] / dt))
            out[j] = ("rigid", p, int(sched.level[p, s0]), s0)
    return out


def fix_and_optimise(
    inp: PlanInputs,
    first: JobLevelResult,
    *,
    block_jobs: int = 40,
    sub_time_limit_s: float = 5.0,
    time_budget_s: float = 60.0,
    seed: int = 0,
) -> tuple[JobLevelResult, list[dict]]:
    """Large-neighbourhood search on the job-level model: free one block of jobs at a time
    (jobs that overlap in time and share sites, so that moving them can pay), hold the others
    to the incumbent, solve that small exact sub-MIP warm-started from the incumbent, keep it
    when it scores lower. Returns the best result and a log per sub-MIP."""
    assert first.schedule is not None
    best = first
    log: list[dict] = []
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    jobs = [j for j in range(len(inp.jobs)) if first.schedule.pool[j] >= 0]
    # blocks: jobs sorted by the middle of their window, cut into runs of block_jobs; each
    # round shifts the cut so neighbours meet in some block
    mid = {
        j: (inp.jobs[j].release - inp.start).total_seconds()
        + (inp.jobs[j].deadline - inp.start).total_seconds()
        for j in jobs
    }
    ordered = sorted(jobs, key=lambda j: mid[j])
    rnd = 0
    while time.perf_counter() - t0 < time_budget_s:
        shift = (rnd * block_jobs) // 2 % max(1, block_jobs)
        blocks = [ordered[i : i + block_jobs] for i in range(-shift, len(ordered), block_jobs)]
        blocks = [[j for j in b if j >= 0] for b in blocks]
        rng.shuffle(blocks)
        improved = False
        for blk in blocks:
            if not blk or time.perf_counter() - t0 >= time_budget_s:
                break
            assert best.schedule is not None
            fx = choices(inp, best.schedule)
            for j in blk:
                fx.pop(j, None)
            res = solve_joblevel(
                inp,
                time_limit_s=min(
                    sub_time_limit_s, max(0.5, time_budget_s - (time.perf_counter() - t0))
                ),
                rel_gap=1e-4,
                start=best.schedule,
                fixed=fx,
            )
            log.append(
                {
                    "jobs_free": len(blk),
                    "status": res.status,
                    "objective": res.objective,
                    "s": res.solve_s + res.build_s,
                }
            )
            if (
                res.schedule is not None
                and res.objective is not None
                and best.objective is not None
                and res.objective < best.objective - 1e-6
            ):
                best = JobLevelResult(
                    res.status,
                    res.objective,
                    first.bound,
                    res.schedule,
                    res.n,
                    res.u,
                    res.d,
                    best.solve_s + res.solve_s,
                    best.build_s + res.build_s,
                    first.n_vars,
                    first.n_rows,
                )
                improved = True
        rnd += 1
        if not improved and rnd > 1:
            break
    return best, log
