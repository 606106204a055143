"""Node repair: the exact node on/off schedule under a fixed placement (a small MIP).

After placement every allocated GPU needs its node on: ``need[p, t] = ⌈alloc[p, t] /
gpus_per_node⌉`` (:func:`needed_nodes`). :func:`repair_nodes` solves the node family
(:mod:`greencpn.optimize.nodes`: ``n[p,t] − n[p,t−1] = u[p,t] − d[p,t]``, min up / min down,
spares, the initial state, the boot-time capacity loss) alone with ``n ≥ need`` on Pyomo +
HiGHS, minimising the meter energy cost of idle, off and booting nodes; with a
:class:`~greencpn.optimize.schedule.NodeAnchor` (re-planning) the power history bounds ``n`` and
``flap_weight · |n − prev_nodes_on|`` joins the cost, as in the MILP
(:mod:`greencpn.optimize.stability`). :func:`net_switches` cancels ``min(u, d)`` start/stop
pairs in one slot (a MIP stopped at its gap may return them).
"""

from __future__ import annotations

import math

import numpy as np

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.schedule import NodeAnchor, Schedule, boot_steps, unit_energy_cost


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
    unit = unit_energy_cost(inp, cw, pw, T)
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
    V = Vars.nodes_only(n, u, d)
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
