"""Family 2 — GPU capacity: work placed at a site ≤ what its powered-on GPUs can do.

Pool capacity (GPUs of powered-on nodes, less the share of a slot that starting nodes spend
booting, β_p = boot time / slot length, capped at 1; m_p GPUs per node):

    Σ_l g[p,l,t] − m_p · n[p,t] + m_p · β_p · u[p,t] ≤ −R[p,t]      ∀p, t

(R = GPUs kept free for the pool's forecast interactive load, the ``load_quantile`` of its
``load_history`` forecast; 0 without one)

Site work capacity (Δ = slot length in h, θ_{p,l} = throughput of level l):

    Σ_{k: s∈S_k, t≥r_k} x[k,s,t] − Δ · Σ_{p at s} Σ_l θ_{p,l} · g[p,l,t] ≤ 0     ∀s, t

Group rate (a group cannot use more GPUs than its jobs ask for):

    Σ_{s∈S_k} x[k,s,t] ≤ Δ · GPUs_k                                   ∀k, t ≥ r_k

(single-site groups get it as a variable bound instead of a row).
"""

from __future__ import annotations

from collections import defaultdict

from greencpn.optimize.builder import ModelBuilder
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.variables import Vars


def add(mb: ModelBuilder, inp: PlanInputs, V: Vars) -> None:
    T, dt = inp.T, inp.slot_h
    pools_at: dict[int, list[int]] = defaultdict(list)
    for p, pool in enumerate(inp.pools):
        pools_at[pool.site].append(p)
        L = int(V.n_levels[p])
        m = float(pool.gpus_per_node)
        for t in range(inp.T):
            ids = [*V.g[p, :L, t], V.n[p, t], V.u[p, t]]
            coefs = [1.0] * L + [-m, m * pool.boot_frac]
            mb.add_row("pool_gpus", ids, coefs, None, -float(pool.reserve_gpus[t]))
    # work at each (s, t), grouped beforehand
    by_st: dict[tuple[int, int], list[int]] = defaultdict(list)
    by_kt: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (k, s, t) in enumerate(zip(V.x_k.tolist(), V.x_s.tolist(), V.x_t.tolist(), strict=True)):
        by_st[(s, t)].append(int(V.x_id[i]))
        by_kt[(k, t)].append(int(V.x_id[i]))
    for s in range(len(inp.sites)):
        for t in range(T):
            work = by_st.get((s, t), [])
            if not work:
                continue
            ids = list(work)
            coefs = [1.0] * len(work)
            for p in pools_at.get(s, []):
                L = int(V.n_levels[p])
                thr = inp.pools[p].level_thr
                ids.extend(V.g[p, :L, t].tolist())
                coefs.extend((-dt * thr[:L]).tolist())
            mb.add_row("site_work", ids, coefs, None, 0.0)
    for (k, _t), ids in by_kt.items():
        if len(ids) > 1:
            mb.add_row("group_rate", ids, [1.0] * len(ids), None, dt * inp.groups[k].gpus)
