"""Family 3 — node on/off with start-ups, boot energy, min up / min down, spares, initial state.

For pool p with N_p nodes, spares σ_p, initial state n⁰_p, min up UT_p and min down DT_p slots:

    n[p,t] − n[p,t−1] − u[p,t] + d[p,t] = 0            ∀p, t ≥ 1
    n[p,0]            − u[p,0] + d[p,0] = n⁰_p          (explicit initial state)
    n[p,t] − Σ_{τ=t−UT_p+1..t} u[p,τ] ≥ 0               ∀p, t   (if UT_p > 1)
    n[p,t] + Σ_{τ=t−DT_p+1..t} d[p,τ] ≤ N_p             ∀p, t   (if DT_p > 1)
    σ_p ≤ n[p,t] ≤ N_p                                  (variable bounds)

The aggregated (integer count) form of the classic unit-commitment constraints: a node started
in the last UT slots is still on; a node stopped in the last DT slots is still off. Nodes that
were on or off before the horizon are assumed to have served their minimum times. Boot energy
and the boot-time loss of capacity are charged in the budget and capacity families.
"""

from __future__ import annotations

from greencpn.optimize.builder import ModelBuilder
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.variables import Vars


def add(mb: ModelBuilder, inp: PlanInputs, V: Vars) -> None:
    T = inp.T
    for p, pool in enumerate(inp.pools):
        n, u, d = V.n[p], V.u[p], V.d[p]
        mb.add_row(
            "node_balance", [n[0], u[0], d[0]], [1.0, -1.0, 1.0], pool.initial_on, pool.initial_on
        )
        for t in range(1, T):
            mb.add_row(
                "node_balance", [n[t], n[t - 1], u[t], d[t]], [1.0, -1.0, -1.0, 1.0], 0.0, 0.0
            )
        UT, DT = pool.min_up_slots, pool.min_down_slots
        if UT > 1:
            for t in range(T):
                lo = max(0, t - UT + 1)
                ids = [n[t], *u[lo : t + 1]]
                mb.add_row("min_up", ids, [1.0] + [-1.0] * (t + 1 - lo), 0.0, None)
        if DT > 1:
            for t in range(T):
                lo = max(0, t - DT + 1)
                ids = [n[t], *d[lo : t + 1]]
                mb.add_row("min_down", ids, [1.0] * (t + 2 - lo), None, float(pool.nodes))
