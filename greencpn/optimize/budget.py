"""Family 5 — site energy and power budget (IT power × PUE at the meter).

Meter energy of site s in slot t (PUE_s, Δ slot hours; per pool: idle node κ_p, off node ω_p,
extra power of a busy GPU at level l ε_{p,l} = π_l − idle GPU power, boot energy b_p per start):

    e[s,t] = PUE_s · Σ_{p at s} ( Δ·κ_p·n[p,t] + Δ·ω_p·(N_p − n[p,t])
                                  + Δ·Σ_l ε_{p,l}·g[p,l,t] + b_p·u[p,t] )

Budget B_{s,t} in kW at the meter, with a penalised overrun slack v (reported per site and
slot, so an unmeetable budget is diagnosed instead of making the model infeasible):

    e[s,t] − v[s,t] ≤ Δ · B_{s,t}                                     ∀s, t with a budget
"""

from __future__ import annotations

import math
from collections import defaultdict

from greencpn.optimize.builder import ModelBuilder
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.variables import Vars


def add(mb: ModelBuilder, inp: PlanInputs, V: Vars) -> None:
    dt = inp.slot_h
    pools_at: dict[int, list[int]] = defaultdict(list)
    for p, pool in enumerate(inp.pools):
        pools_at[pool.site].append(p)
    for s, site in enumerate(inp.sites):
        for t in range(inp.T):
            ids: list[int] = [int(V.e[s, t])]
            coefs: list[float] = [1.0]
            const = 0.0
            for p in pools_at.get(s, []):
                pool = inp.pools[p]
                L = int(V.n_levels[p])
                ids.append(int(V.n[p, t]))
                coefs.append(-site.pue * dt * (pool.node_idle_kw - pool.node_off_kw))
                const += site.pue * dt * pool.node_off_kw * pool.nodes
                ids.extend(V.g[p, :L, t].tolist())
                coefs.extend((-site.pue * dt * pool.level_extra_kw[:L]).tolist())
                if pool.boot_extra_kwh > 0:
                    ids.append(int(V.u[p, t]))
                    coefs.append(-site.pue * pool.boot_extra_kwh)
            mb.add_row("site_energy", ids, coefs, const, const)
            budget = float(site.budget_kw[t])
            if math.isfinite(budget):
                mb.add_row(
                    "site_budget", [int(V.e[s, t]), int(V.v[s, t])], [1.0, -1.0], None, dt * budget
                )
