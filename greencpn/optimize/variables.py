"""Variables of the plan model, allocated once per model in a fixed order.

Index sets: pools ``p``, cap levels ``l`` (per pool, padded to the largest count with fixed-zero
variables where a model has fewer), slots ``t``, sites ``s``, job groups ``k``.

===========  =======  ===================================================================
name         kind     meaning
===========  =======  ===================================================================
n[p,t]       int      nodes powered on (spares ≤ n ≤ nodes)
u[p,t]       int      nodes started at the beginning of slot t
d[p,t]       int      nodes stopped at the beginning of slot t
y[p,l,t]     bin      cap level l is the pool's power cap in slot t (only with
                      ``solver.exact_cap_levels``)
g[p,l,t]     cont     busy GPUs (time-averaged over the slot) at level l
x[k,s,t]     cont     work of group k done at site s in slot t, GPU-h at full power
q[k]         cont     required work of group k not done inside the horizon (unserved)
e[s,t]       cont     meter energy of site s in slot t, kWh
v[s,t]       cont     budget overrun of site s in slot t, kWh (penalised slack)
===========  =======  ===================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from greencpn.optimize.builder import ModelBuilder
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.residency import work_index


@dataclass
class Vars:
    n: np.ndarray
    u: np.ndarray
    d: np.ndarray
    y: np.ndarray | None  # [P, L, T]; None when every pool has a single level
    g: np.ndarray  # [P, L, T]
    x_id: np.ndarray  # [X]
    x_k: np.ndarray
    x_s: np.ndarray
    x_t: np.ndarray
    q: np.ndarray  # [K]
    e: np.ndarray  # [S, T]
    v: np.ndarray  # [S, T]
    n_levels: np.ndarray  # [P] real level count per pool

    @classmethod
    def nodes_only(cls, n: np.ndarray, u: np.ndarray, d: np.ndarray) -> Vars:
        """The node family's variables alone (``n``, ``u``, ``d`` [P, T]), every other family
        empty: what :func:`greencpn.optimize.nodes.add` needs for a model of the nodes only
        (the node repair, the job-level MILP)."""
        P, T = n.shape
        empty = np.zeros(0, dtype=int)
        return cls(
            n=n,
            u=u,
            d=d,
            y=None,
            g=np.zeros((P, 1, T), dtype=int),
            x_id=empty,
            x_k=empty,
            x_s=empty,
            x_t=empty,
            q=empty,
            e=np.zeros((0, T), dtype=int),
            v=np.zeros((0, T), dtype=int),
            n_levels=np.ones(P, dtype=int),
        )


def allocate(mb: ModelBuilder, inp: PlanInputs) -> Vars:
    P, T, S, K = len(inp.pools), inp.T, len(inp.sites), len(inp.groups)
    nodes = np.array([p.nodes for p in inp.pools], dtype=float)
    spares = np.array([p.spares for p in inp.pools], dtype=float)
    n = mb.new_vars("int", (P, T), lb=spares[:, None], ub=nodes[:, None])
    u = mb.new_vars(
        "int", (P, T), lb=0.0, ub=np.maximum(nodes - spares, 0)[:, None] + 0 * np.zeros((P, T))
    )
    d = mb.new_vars("int", (P, T), lb=0.0, ub=nodes[:, None] + 0 * np.zeros((P, T)))
    n_levels = np.array([len(p.level_thr) for p in inp.pools])
    L = int(n_levels.max()) if P else 1
    real = np.arange(L)[None, :] < n_levels[:, None]  # [P, L]
    gpus = np.array([p.gpus for p in inp.pools], dtype=float)
    g_ub = np.where(real, gpus[:, None], 0.0)[:, :, None] * np.ones((1, 1, T))
    g = mb.new_vars("cont", (P, L, T), lb=0.0, ub=g_ub)
    y = None
    if L > 1 and inp.solver.exact_cap_levels:
        y = mb.new_vars(
            "bin", (P, L, T), lb=0.0, ub=np.where(real, 1.0, 0.0)[:, :, None] * np.ones((1, 1, T))
        )
    xk, xs, xt = work_index(inp)
    grp_gpus = np.array([grp.gpus for grp in inp.groups], dtype=float)
    x_ub = grp_gpus[xk] * inp.slot_h if xk.size else np.zeros(0)
    x_id = mb.new_vars("cont", (xk.size,), lb=0.0, ub=x_ub)
    q = mb.new_vars("cont", (K,), lb=0.0)
    e = mb.new_vars("cont", (S, T), lb=0.0)
    v = mb.new_vars("cont", (S, T), lb=0.0)
    return Vars(
        n=n, u=u, d=d, y=y, g=g, x_id=x_id, x_k=xk, x_s=xs, x_t=xt, q=q, e=e, v=v, n_levels=n_levels
    )
