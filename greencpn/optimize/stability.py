"""Re-planning terms: the previous plan as an anchor, and min up / min down from history.

:class:`StablePlanModel` is :class:`~greencpn.optimize.milp.PlanModel` plus, when an
:class:`Anchor` is given (all arrays indexed like the inputs: pool ``p``, slot ``t``, group
``k``, site ``s``):

    f[p,t] ≥ n[p,t] − n̂[p,t],   f[p,t] ≥ n̂[p,t] − n[p,t]         node flap vs the previous plan
    min  … + w_flap · Σ_{p,t: n̂ known} f[p,t]
           + Σ_{k,s,t} ( w_site · m[k,s] + w_shift · h[k,t] ) · x[k,s,t]

with n̂ the previous plan's nodes on, shifted to this horizon (known for the overlapping slots),
m[k,s] the share of group k's work whose jobs the previous plan put at another site than s, and
h[k,t] the mean distance (slots) from t to the previous planned starts of k's jobs. Two
consecutive plans thus only differ where the gain exceeds these weights.

Min up / min down counted from the power history (the first slots of the horizon, where the
MILP's own ``min_up``/``min_down`` rows cannot see nodes switched before the horizon):

    must_on[p,t] ≤ n[p,t] ≤ N_p − must_off[p,t]

``must_on[p,t]`` counts nodes of pool p started less than ``min_up_h`` before slot t's start
(they may not stop yet); ``must_off`` nodes stopped less than ``min_down_h`` before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo

from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.milp import PlanModel


@dataclass
class Anchor:
    prev_nodes_on: np.ndarray | None = None  # [P, T] float, nan = unknown (no previous plan)
    moved_share: np.ndarray | None = None  # [K, S] in [0, 1]
    shift_slots: np.ndarray | None = None  # [K, T] mean |t − previous start slot|
    must_on: np.ndarray | None = None  # [P, T] int
    must_off: np.ndarray | None = None  # [P, T] int
    flap_weight: float = 0.0
    site_weight_per_gpu_h: float = 0.0
    shift_weight_per_gpu_h_slot: float = 0.0


class StablePlanModel(PlanModel):
    """A plan model with the re-planning terms above (no anchor: exactly :class:`PlanModel`)."""

    def __init__(self, inp: PlanInputs, anchor: Anchor | None = None) -> None:
        super().__init__(inp)
        self.anchor = anchor
        if anchor is not None:
            self._add_history_bounds(anchor)
            self._add_stability(anchor)

    def _add_history_bounds(self, a: Anchor) -> None:
        V, mb = self.V, self.mb
        for p, pool in enumerate(self.inp.pools):
            for t in range(self.inp.T):
                lo = int(a.must_on[p, t]) if a.must_on is not None else 0
                off = int(a.must_off[p, t]) if a.must_off is not None else 0
                var = mb.vars[int(V.n[p, t])]
                if lo > 0:
                    var.setlb(max(var.lb or 0, min(lo, pool.nodes)))
                if off > 0:
                    ub = max(pool.nodes - off, int(var.lb or 0))
                    var.setub(min(var.ub if var.ub is not None else pool.nodes, ub))

    def _add_stability(self, a: Anchor) -> None:
        m, V, mb, inp = self.model, self.V, self.mb, self.inp
        terms: list = []
        P, T = len(inp.pools), inp.T
        if a.prev_nodes_on is not None and a.flap_weight > 0:
            known = [
                (p, t) for p in range(P) for t in range(T) if np.isfinite(a.prev_nodes_on[p, t])
            ]
            if known:
                m.stab_flap = pyo.Var(range(len(known)), domain=pyo.NonNegativeReals)
                m.stab_flap_rows = pyo.ConstraintList()
                for i, (p, t) in enumerate(known):
                    n = mb.vars[int(V.n[p, t])]
                    prev = float(a.prev_nodes_on[p, t])
                    m.stab_flap_rows.add(m.stab_flap[i] >= n - prev)
                    m.stab_flap_rows.add(m.stab_flap[i] >= prev - n)
                terms.append(
                    a.flap_weight * pyo.quicksum(m.stab_flap[i] for i in range(len(known)))
                )
        coef = np.zeros(V.x_id.size)
        if a.moved_share is not None and a.site_weight_per_gpu_h > 0 and V.x_id.size:
            coef += a.site_weight_per_gpu_h * a.moved_share[V.x_k, V.x_s]
        if a.shift_slots is not None and a.shift_weight_per_gpu_h_slot > 0 and V.x_id.size:
            coef += a.shift_weight_per_gpu_h_slot * a.shift_slots[V.x_k, V.x_t]
        nz = np.nonzero(coef > 0)[0]
        if nz.size:
            terms.append(
                pyo.quicksum(float(coef[i]) * mb.vars[int(V.x_id[i])] for i in nz.tolist())
            )
        if terms:
            base = m.objective.expr
            m.objective.deactivate()
            m.objective_stable = pyo.Objective(expr=base + sum(terms), sense=pyo.minimize)
