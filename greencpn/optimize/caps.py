"""Family 4 — one discrete GPU power-cap level per pool and slot.

For pool p with levels l ∈ L_p (cap c_l in W, throughput θ_l ≤ 1, busy power π_l in kW) and
G_p GPUs:

    Σ_l y[p,l,t] = 1                                    ∀p, t
    g[p,l,t] − G_p · y[p,l,t] ≤ 0                       ∀p, l, t

Busy GPUs may only run at the chosen level. These rows (and the binaries y) are built only with
``solver.exact_cap_levels = true``. By default the MILP carries cap levels as GPU counts per
pool, level and slot (g[p,l,t] without y: a relaxation, so its bound stays valid) and the
executed plan gives each pool and slot the level that carries most of its planned busy GPUs —
measured several times faster on the example and the benchmark fleets. Throughput θ_l enters the capacity family and the
busy power π_l the energy family, so a lower cap is chosen exactly when its energy saving
(carbon, cost) outweighs the extra GPU-time and idle power its slowdown costs. Pools whose GPU
model has a single level need no binaries.
"""

from __future__ import annotations

from greencpn.optimize.builder import ModelBuilder
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.variables import Vars


def add(mb: ModelBuilder, inp: PlanInputs, V: Vars) -> None:
    if V.y is None:
        return
    for p, pool in enumerate(inp.pools):
        L = int(V.n_levels[p])
        for t in range(inp.T):
            mb.add_row("cap_one_level", [V.y[p, lv, t] for lv in range(L)], [1.0] * L, 1.0, 1.0)
            for lv in range(L):
                mb.add_row(
                    "cap_link", [V.g[p, lv, t], V.y[p, lv, t]], [1.0, -float(pool.gpus)], None, 0.0
                )
